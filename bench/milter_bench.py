"""milter_bench - DKIM signing and verification: pymta's own vs Postfix + OpenDKIM's milter.

SYNOPSIS
    python bench/milter_bench.py [--messages N] [--connections C]
                                 [--mailbox-user USER] [--only pymta|postfix]

DESCRIPTION
    The same load against two servers configured alike (bench_setup's
    virtual mailbox domain bench.test, Maildir delivery, fsync on):

    - pymta with its built-in checks: pymta_dkim_key_table /
      pymta_dkim_signing_table (rsa-sha256, 2048-bit key) and
      pymta_mailauth_verify = yes (SPF of MAIL FROM and HELO, the DKIM
      signature, DMARC; the records served by a loopback DNS server,
      tests/dnsserver.py), mynetworks = 127.0.0.1/32;
    - a private Postfix (bench_postfix.py) with smtpd_milters naming a
      private OpenDKIM (Debian's opendkim, Mode sv, the same key in its
      KeyTable/SigningTable, InternalHosts 127.0.0.1, the outside key in
      TestPublicKeys: no DNS), milter_default_action = tempfail.

    Each server also runs once without the checks (pymta) or the milter
    (Postfix), unless --no-baseline, so the cost the checks add shows.

    Two batches per server: N messages from 127.0.0.1 with From:
    sender@bench.test (signed), then N messages from 127.0.0.2 carrying an
    rsa-sha256 signature of outside.test (verified), each over C
    concurrent SMTP sessions (smtplib, one thread each), timed from the
    first connection until every message is in the Maildir. CPU is that
    of the server's whole process tree (pymta's twistd; Postfix's master
    and its children plus opendkim), from /proc. Prints, per batch,
    msgs/s and CPU ms per message for both, and pymta/Postfix ratios.
    pymta's verification does more than OpenDKIM's (SPF and DMARC too).

    Requires root (Postfix's master), postfix and opendkim installed.

TRUST
    Loopback only; everything under a temporary directory, removed after.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import dkim  # noqa: E402
from bench_measure import count_maildir_new, free_loopback_port, tree_cpu_seconds  # noqa: E402
from bench_postfix import PostfixServer, postfix_missing  # noqa: E402
from bench_pymta import PymtaServer  # noqa: E402
from bench_setup import DOMAIN, MailSetup  # noqa: E402

from pymta.mailauth import keys  # noqa: E402
from tests.dnsserver import LoopbackDNS  # noqa: E402

OPENDKIM = shutil.which("opendkim") or "/usr/sbin/opendkim"
BODY = ("This is line %d of a benchmark message, long enough to look like mail.\n" * 28).encode()


def message(sender: str, n: int) -> bytes:
    return (
        f"From: Sender <{sender}>\r\nTo: rcpt@{DOMAIN}\r\nSubject: message {n}\r\n"
        f"Date: Mon, 7 Dec 2026 12:00:00 +0000\r\nMessage-ID: <{n}.{sender}>\r\n\r\n"
    ).encode() + BODY.replace(b"\n", b"\r\n")


class OpenDKIM:
    """A private opendkim in the foreground (see the module docstring)."""

    def __init__(self, root: Path, key_file: Path, outside_record: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.port = free_loopback_port()
        (root / "keytable").write_text(f"k {DOMAIN}:s:{key_file}\n")
        (root / "signingtable").write_text(f"{DOMAIN} k\n")
        (root / "testkeys").write_text(f"b._domainkey.outside.test {outside_record}\n")
        (root / "opendkim.conf").write_text(
            f"Syslog no\nBackground no\nMode sv\nSocket inet:{self.port}@127.0.0.1\n"
            f"KeyTable file:{root / 'keytable'}\nSigningTable file:{root / 'signingtable'}\n"
            f"InternalHosts 127.0.0.1\nTestPublicKeys {root / 'testkeys'}\n"
            f"RequireSafeKeys no\nAuthservID mx.{DOMAIN}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import socket

        self.process = subprocess.Popen(
            [OPENDKIM, "-f", "-x", str(self.root / "opendkim.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:  # opendkim tells nobody when it listens: poll with a deadline
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("opendkim did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(15)
            self.process = None


class PostfixWithMilter(PostfixServer):
    """The private Postfix with smtpd_milters set (milter_port 0: none)."""

    def __init__(self, workdir: Path, setup: MailSetup, milter_port: int) -> None:
        super().__init__(workdir, setup)
        self.milter_port = milter_port

    def write_config(self) -> None:
        super().write_config()
        if not self.milter_port:
            return
        with open(self.config / "main.cf", "a") as f:
            f.write(
                f"smtpd_milters = inet:127.0.0.1:{self.milter_port}\n"
                "non_smtpd_milters =\nmilter_default_action = tempfail\n"
            )


def send_batch(
    port: int, source: str, sender: str, contents: list[bytes], connections: int, rcpt: str
) -> None:
    """contents over ``connections`` concurrent sessions from ``source``."""
    errors: list[BaseException] = []

    def worker(share: list[bytes]) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=120, source_address=(source, 0)) as s:
                s.ehlo("mail.outside.test")
                for content in share:
                    s.sendmail(sender, [rcpt], content)
        except BaseException as e:  # reported after the batch
            errors.append(e)

    threads = [
        threading.Thread(target=worker, args=(contents[i::connections],))
        for i in range(connections)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} sessions failed: {errors[0]!r}")


def run_server(
    name: str,
    port: int,
    roots: list[int],
    maildir: Path,
    batches: list[tuple[str, str, str, list[bytes]]],
    connections: int,
    rcpt: str,
) -> dict[str, tuple[float, float]]:
    figures: dict[str, tuple[float, float]] = {}
    done = count_maildir_new(maildir)
    for batch, source, sender, contents in batches:
        cpu0, wall0 = tree_cpu_seconds(roots), time.perf_counter()
        send_batch(port, source, sender, contents, connections, rcpt)
        done += len(contents)
        deadline = time.monotonic() + 600
        while count_maildir_new(maildir) < done:  # no event for another process's Maildir
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: {batch} not delivered in time")
            time.sleep(0.01)
        wall = time.perf_counter() - wall0
        cpu = tree_cpu_seconds(roots) - cpu0
        figures[batch] = (len(contents) / wall, 1000 * cpu / len(contents))
        print(
            f"{name:<17} {batch:<7} {len(contents) / wall:8.1f} msgs/s "
            f"{1000 * cpu / len(contents):8.2f} ms CPU/msg",
            flush=True,
        )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--mailbox-user", default="nobody")
    parser.add_argument("--only", choices=("pymta", "postfix"))
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the runs without checks/milter"
    )
    args = parser.parse_args()
    wanted = [args.only] if args.only else ["pymta", "postfix"]
    if "postfix" in wanted:
        why = postfix_missing() or (None if Path(OPENDKIM).exists() else "opendkim not installed")
        if why:
            print(why)
            return 2
    owner = pwd.getpwnam(args.mailbox_user)
    rcpt = f"rcpt@{DOMAIN}"
    setup = MailSetup((rcpt,), owner.pw_uid, owner.pw_gid)
    workdir = Path(tempfile.mkdtemp(prefix="milter-bench."))
    workdir.chmod(0o711)  # Postfix's daemons (user postfix) pass through it
    key = keys.generate_key("rsa", 2048)
    key_file = workdir / "s.private"
    keys.write_key(key, str(key_file))
    os.chmod(key_file, 0o644)  # opendkim runs as root here; Postfix never reads it
    outside = keys.generate_key("rsa", 2048)
    n = args.messages
    signed_in = [
        dkim.sign(message("joe@outside.test", i), b"b", b"outside.test", outside.private)
        + message("joe@outside.test", i)
        for i in range(n)
    ]
    batches = [
        (
            "sign",
            "127.0.0.1",
            f"sender@{DOMAIN}",
            [message(f"sender@{DOMAIN}", i) for i in range(n)],
        ),
        ("verify", "127.0.0.2", "joe@outside.test", signed_in),
    ]
    results: dict[str, dict[str, tuple[float, float]]] = {}
    zone = LoopbackDNS().start()
    try:
        zone.txt(f"s._domainkey.{DOMAIN}", keys.record_value(key))
        zone.txt("b._domainkey.outside.test", keys.record_value(outside))
        zone.txt("outside.test", "v=spf1 ip4:127.0.0.2 -all")
        zone.txt("_dmarc.outside.test", "v=DMARC1; p=none")
        (workdir / "kt").write_text(f"k {DOMAIN}:s:{key_file}\n")
        (workdir / "st").write_text(f"{DOMAIN} k\n")
        base = (
            "virtual_minimum_uid = 100\n"
            f"mynetworks = 127.0.0.1/32\npymta_dns_servers = 127.0.0.1:{zone.port}\n"
        )
        checks = (
            f"pymta_mailauth_verify = yes\npymta_dkim_key_table = {workdir / 'kt'}\n"
            f"pymta_dkim_signing_table = {workdir / 'st'}\n"
        )
        for state in ("off", "on") if "pymta" in wanted else ():
            if state == "off" and args.no_baseline:
                continue
            extra = base + (checks if state == "on" else "")
            server = PymtaServer(workdir / f"p-{state}", setup, extra_main_cf=extra)
            try:
                server.start()
                results[f"pymta-{state}"] = run_server(
                    "pymta (built-in)" if state == "on" else "pymta, no checks",
                    server.port,
                    server.root_pids(),
                    server.maildir_new(rcpt),
                    batches,
                    args.connections,
                    rcpt,
                )
            finally:
                server.stop()
        for state in ("off", "on") if "postfix" in wanted else ():
            if state == "off" and args.no_baseline:
                continue
            milter = None
            if state == "on":
                milter = OpenDKIM(workdir / "opendkim", key_file, keys.record_value(outside))
                milter.start()
            port = milter.port if milter is not None else 0
            postfix = PostfixWithMilter(workdir / f"pf-{state}", setup, port)
            try:
                postfix.start()
                extra_pids = [milter.process.pid] if milter and milter.process else []
                results[f"postfix-{state}"] = run_server(
                    "Postfix+OpenDKIM" if state == "on" else "Postfix, no milter",
                    postfix.port,
                    [*postfix.root_pids(), *extra_pids],
                    postfix.maildir_new(rcpt),
                    batches,
                    args.connections,
                    rcpt,
                )
            finally:
                postfix.stop()
                if milter is not None:
                    milter.stop()
    finally:
        zone.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if "pymta-on" in results and "postfix-on" in results:
        for batch in ("sign", "verify"):
            (p_rate, p_cpu) = results["pymta-on"][batch]
            (f_rate, f_cpu) = results["postfix-on"][batch]
            line = (
                f"{batch:<7} pymta/Postfix+OpenDKIM: throughput x{p_rate / f_rate:.2f}, "
                f"CPU/msg x{p_cpu / f_cpu:.2f}"
            )
            if "pymta-off" in results and "postfix-off" in results:
                p_added = p_cpu - results["pymta-off"][batch][1]
                f_added = f_cpu - results["postfix-off"][batch][1]
                line += f"; CPU the checks add: pymta {p_added:+.2f} ms, Postfix {f_added:+.2f} ms"
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
