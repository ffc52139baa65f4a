"""mailauth_bench - the cost of DKIM signing and SPF/DKIM/DMARC verification per message.

SYNOPSIS
    python bench/mailauth_bench.py [--messages N] [--skip-e2e]

DESCRIPTION
    Part 1, in process: pymta.mailauth's signing (rsa-sha256 with a 2048-bit
    key, ed25519-sha256) and verification (SPF of MAIL FROM and HELO, one
    DKIM signature, DMARC; DNS answered from memory) on a 2 KiB message,
    N times each, exactly as cleanup's worker thread runs them. Prints
    messages per second and CPU milliseconds per message.

    Part 2, end to end: a real pymta (tests/harness.py) with the checks off
    and then on (pymta_mailauth_verify = yes and a key table), a loopback
    DNS server (tests/dnsserver.py) publishing the records. N messages over
    one SMTP session from 127.0.0.1 (mynetworks: signed, rsa-sha256) and N
    rsa-sha256-signed ones from 127.0.0.2 (outside: verified), each batch
    timed until every message is in the Maildir, while a probe connects
    again and again and times the 220 greeting (a stalled reactor would
    show there; the checks run in the thread pool). Prints msgs/s, server
    CPU per message (the whole twistd process tree, from /proc) and the
    greeting times for off and on, and the on/off ratios.

    Postfix + OpenDKIM is not run side by side: pymta has no milter client
    yet, so that comparison would measure Postfix alone.

TRUST
    Loopback only; everything under a temporary directory.
"""

from __future__ import annotations

import argparse
import smtplib
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import dkim  # noqa: E402
from bench_measure import tree_cpu_seconds  # noqa: E402
from twisted.internet.defer import maybeDeferred  # noqa: E402

from pymta.config import Config  # noqa: E402
from pymta.mailauth import keys  # noqa: E402
from pymta.mailauth.resolver import MemoryLookup  # noqa: E402
from pymta.mailauth.service import MailAuth  # noqa: E402
from pymta.queue.model import Envelope, Recipient  # noqa: E402
from tests.dnsserver import LoopbackDNS  # noqa: E402
from tests.harness import PymtaServer, wait_for_file  # noqa: E402

BODY = ("This is line %d of a benchmark message, long enough to look like mail.\n" * 28).encode()


def message(sender_domain: str, n: int) -> bytes:
    head = (
        f"From: Sender <s@{sender_domain}>\nTo: bob@example.test\nSubject: bench {n}\n"
        f"Date: Mon, 7 Dec 2026 12:00:00 +0000\nMessage-ID: <{n}@{sender_domain}>\n"
        "MIME-Version: 1.0\nContent-Type: text/plain\n\n"
    ).encode()
    return head + BODY


def measure(label: str, count: int, work: Callable[[int], object]) -> None:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for n in range(count):
        work(n)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print(f"{label:<44} {count / wall:9.0f} msgs/s {1000 * cpu / count:8.3f} ms CPU/msg")


def in_process(count: int, tmp: Path) -> None:
    print("== in process (the work of cleanup's worker thread) ==")
    zone = MemoryLookup()
    zone.add("bank.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    zone.add("_dmarc.bank.test", "TXT", "v=DMARC1; p=reject")
    for key_type in ("rsa", "ed25519"):
        key = keys.generate_key(key_type)
        path = tmp / f"{key_type}.private"
        keys.write_key(key, str(path))
        (tmp / f"kt-{key_type}").write_text(f"k example.org:s:{path}\n")
        (tmp / f"st-{key_type}").write_text("example.org k\n")
        zone.add(f"{key_type}._domainkey.bank.test", "TXT", keys.record_value(key))
        config = Config.from_text(
            "myhostname = mx.example.org\nmynetworks = 10.0.0.0/8\npymta_mailauth_verify = yes\n"
            f"pymta_dkim_key_table = {tmp / f'kt-{key_type}'}\n"
            f"pymta_dkim_signing_table = {tmp / f'st-{key_type}'}\n"
        )
        auth = MailAuth(config, run=maybeDeferred, lookup=zone)
        local = Envelope("s@example.org", [Recipient("b@x.test")], 0, {"protocol": "sendmail"})
        outside = {"client_address": "192.0.2.9", "helo_name": "mail.bank.test"}
        inbound = Envelope("s@bank.test", [Recipient("b@x.test")], 0, outside)
        alg = key.algorithm.decode()
        measure(
            f"sign {alg}", count, lambda n, a=auth, e=local: a._sign(e, message("example.org", n))
        )
        signed = [
            dkim.sign(
                m, key_type.encode(), b"bank.test", key.private, signature_algorithm=key.algorithm
            )
            + m
            for m in (message("bank.test", n) for n in range(count))
        ]
        measure(
            f"verify SPF + DKIM {alg} + DMARC",
            count,
            lambda n, a=auth, e=inbound, m=signed: a._check(e, m[n]),
        )


class GreetingProbe:
    """New SMTP connections, one after another, while a batch runs: the time
    to the 220 greeting shows whether the reactor waits for the checks.
    (Not NOOPs on one session: smtpd counts them as junk commands and, as
    Postfix does, delays its replies after smtpd_junk_command_limit.)"""

    def __init__(self, port: int) -> None:
        self._port = port
        self._times: list[float] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            start = time.perf_counter()
            client = smtplib.SMTP("127.0.0.1", self._port, timeout=60)
            self._times.append(1000 * (time.perf_counter() - start))
            client.quit()
            self._stopped.wait(0.05)  # 20 connections per second: little load of its own

    def stop(self) -> tuple[float, float]:
        """(median, max) time to the greeting in ms."""
        self._stopped.set()
        self._thread.join()
        return statistics.median(self._times), max(self._times)


def end_to_end(count: int, tmp: Path) -> None:
    print(f"== end to end: {count} messages per batch over one SMTP session ==")
    zone = LoopbackDNS().start()
    key = keys.generate_key("rsa")
    keys.write_key(key, str(tmp / "e2e.private"))
    zone.txt("s._domainkey.example.test", keys.record_value(key))
    zone.txt("bank.test", "v=spf1 ip4:127.0.0.2 -all")
    zone.txt("_dmarc.bank.test", "v=DMARC1; p=none")
    bank = keys.generate_key("rsa")
    zone.txt("b._domainkey.bank.test", keys.record_value(bank))
    inbound = [
        dkim.sign(message("bank.test", n), b"b", b"bank.test", bank.private)
        + message("bank.test", n)
        for n in range(count)
    ]
    (tmp / "kt").write_text(f"k example.test:s:{tmp / 'e2e.private'}\n")
    (tmp / "st").write_text("example.test k\n")
    checks = (
        f"pymta_mailauth_verify = yes\npymta_dkim_key_table = {tmp / 'kt'}\n"
        f"pymta_dkim_signing_table = {tmp / 'st'}\n"
    )
    figures: dict[tuple[str, str], tuple[float, float]] = {}
    try:
        for state, extra in (("off", ""), ("on", checks)):
            cf = f"mynetworks = 127.0.0.1/32\npymta_dns_servers = 127.0.0.1:{zone.port}\n" + extra
            with PymtaServer(tmp / f"pymta-{state}", main_cf_extra=cf).start() as server:
                assert server.process is not None
                done = 0
                for batch, source, domain in (
                    ("sign", "127.0.0.1", "example.test"),
                    ("verify", "127.0.0.2", "bank.test"),
                ):
                    probe = GreetingProbe(server.smtp_port)
                    cpu0, wall0 = tree_cpu_seconds([server.process.pid]), time.perf_counter()
                    with smtplib.SMTP(
                        "127.0.0.1", server.smtp_port, timeout=60, source_address=(source, 0)
                    ) as client:
                        client.ehlo("mail.bank.test")
                        for n in range(count):
                            content = inbound[n] if batch == "verify" else message(domain, n)
                            client.sendmail(f"s@{domain}", ["bob@example.test"], content)
                    done += count
                    wait_for_file(
                        server.maildir("bob") / "new",
                        lambda d=done: len(server.messages("bob")) >= d,
                        timeout=600,
                    )
                    wall = time.perf_counter() - wall0
                    cpu = tree_cpu_seconds([server.process.pid]) - cpu0
                    median, worst = probe.stop()
                    figures[(batch, state)] = (count / wall, 1000 * cpu / count)
                    print(
                        f"{batch:<6} checks {state:<3} {count / wall:9.1f} msgs/s "
                        f"{1000 * cpu / count:8.2f} ms server CPU/msg; "
                        f"greeting meanwhile: median {median:.2f} ms, max {worst:.1f} ms"
                    )
    finally:
        zone.stop()
    for batch in ("sign", "verify"):
        (rate_off, cpu_off), (rate_on, cpu_on) = figures[(batch, "off")], figures[(batch, "on")]
        print(
            f"{batch:<6} on/off: throughput x{rate_on / rate_off:.2f}, "
            f"CPU/msg x{cpu_on / cpu_off:.2f} (+{cpu_on - cpu_off:.2f} ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--skip-e2e", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailauth-bench-") as tmp:
        in_process(args.messages, Path(tmp))
        if not args.skip_e2e:
            end_to_end(args.messages, Path(tmp))


if __name__ == "__main__":
    main()
