#!/usr/bin/env python3
"""submission_bench - Postfix and pymta side by side: authenticated submission
through Dovecot SASL.

SYNOPSIS
    python bench/submission_bench.py [--messages 600] [--clients 6]
        [--no-tls] [--pymta-processes 1] [--repeat 1] [--warmup 30]
        [--only postfix|pymta] [--timeout 600] [--workdir /var/tmp] [--keep]

DESCRIPTION
    In one run, on loopback only, as root:

    1. builds a private Postfix instance (bench/bench_postfix.py) and pymta
       with the same main.cf (bench/bench_pymta.py), both with
       "smtpd_sasl_auth_enable = yes", "smtpd_sasl_type = dovecot",
       "smtpd_sasl_path = private/auth" (a socket under each one's
       queue_directory, as Postfix sites have it), "mynetworks =" and
       "smtpd_recipient_restrictions = permit_sasl_authenticated, reject"
       (no relay without a login), and, unless --no-tls, STARTTLS with
       the same self-signed EC certificate and "smtpd_tls_auth_only = yes";
    2. starts one private Dovecot 2.3 ("dovecot -F -c FILE" in the
       temporary directory) whose auth service serves a passwd-file of
       --clients users ({PLAIN} passwords: the hashing cost is Dovecot's and
       the same for both) on two unix_listeners, one in each server's
       queue_directory/private;
    3. for each server in turn (every other repetition pymta first) forks
       --clients client processes; each, as user N, sends its share of
       --messages messages with Python's smtplib, one session per
       message: EHLO, STARTTLS, EHLO, AUTH PLAIN, MAIL, RCPT, DATA (1 KiB),
       QUIT. It measures the time from the release of the clients until
       the last one is done (every message accepted with 250), and the CPU
       time of the server's processes and of Dovecot;
    4. prints one line per server and repetition, and a summary: median
       submissions per second of each, the ratio pymta/postfix, and CPU
       milliseconds per submission (server, and Dovecot's auth).

    The clients run on the same 2 cores as the servers: the absolute
    figures include their cost, the ratio compares like with like.

REQUIREMENTS
    root; Debian's postfix and dovecot-core packages; pymta's twistd
    plugin in this checkout. Nothing leaves loopback; the temporary
    directory is removed unless --keep is given.
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import shutil
import smtplib
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_measure import stop_session, tree_cpu_seconds
from bench_postfix import PostfixServer, postfix_missing
from bench_pymta import PymtaServer
from bench_setup import DOMAIN, LISTEN_HOST, MailSetup
from dovecot_setup import dovecot_missing

BODY = b"Subject: submission bench\r\n\r\n" + b"x" * 1000 + b"\r\n"


def sasl_main_cf(cert: Path | None) -> str:
    """The main.cf lines both servers get on top of MailSetup's."""
    text = (
        "smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\n"
        "smtpd_sasl_path = private/auth\nmynetworks =\n"
        "smtpd_recipient_restrictions = permit_sasl_authenticated, reject\n"
    )
    if cert is None:
        return text + "smtpd_tls_security_level = none\nsmtpd_tls_auth_only = no\n"
    return text + (
        f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {cert}\n"
        f"smtpd_tls_key_file = {cert}\nsmtpd_tls_auth_only = yes\n"
    )


def merge_main_cf(path: Path, extra: str) -> None:
    """Set extra's parameters in main.cf, replacing the lines that set them
    (Postfix warns about a parameter set twice)."""
    names = {line.partition("=")[0].strip() for line in extra.splitlines() if "=" in line}
    kept = [
        line
        for line in path.read_text().splitlines(keepends=True)
        if line.partition("=")[0].strip() not in names
    ]
    path.write_text("".join(kept) + extra)


class SaslPostfix(PostfixServer):
    """The bench's Postfix with the SASL lines in main.cf."""

    extra_main_cf = ""

    def write_config(self) -> None:
        super().write_config()
        merge_main_cf(self.config / "main.cf", self.extra_main_cf)


def write_certificate(path: Path) -> None:
    """A self-signed EC certificate and its key in one PEM file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"mx.{DOMAIN}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    path.chmod(0o600)


class SaslPymta(PymtaServer):
    """The bench's pymta with the same lines (bench_pymta.PymtaServer leaves
    out the virtual_uid_maps it would refuse)."""

    def write_config(self) -> None:
        extra, self.extra_main_cf = self.extra_main_cf, ""
        super().write_config()
        self.extra_main_cf = extra
        main_cf = self.config / "main.cf"
        merge_main_cf(main_cf, extra)


class DovecotAuth:
    """A Dovecot auth service only, with a listener per server queue."""

    def __init__(self, root: Path, users: list[str], sockets: list[tuple[Path, str]]) -> None:
        self.root = root
        self.users = users
        self.sockets = sockets
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        passwd = self.root / "users"
        passwd.write_text("".join(f"{u}:{{PLAIN}}pw-{u}::::::\n" for u in self.users))
        passwd.chmod(0o644)
        listeners = "".join(
            f"  unix_listener {path} {{\n    mode = 0660\n    user = {owner}\n  }}\n"
            for path, owner in self.sockets
        )
        conf = self.root / "dovecot.conf"
        conf.write_text(
            f"base_dir = {self.root}/run\nstate_dir = {self.root}/state\n"
            f"log_path = {self.root}/dovecot.log\ninstance_name = bench-auth-{self.root.name}\n"
            "protocols =\nlisten = 127.0.0.1\nssl = no\nauth_mechanisms = plain login\n"
            "disable_plaintext_auth = no\n"
            f"passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN {passwd}\n}}\n"
            "userdb {\n  driver = static\n  args = uid=65534 gid=65534 home=/nonexistent\n}\n"
            f"service auth {{\n{listeners}}}\n"
        )
        self._proc = subprocess.Popen(
            ["dovecot", "-F", "-c", str(conf)], start_new_session=True, cwd=self.root
        )
        deadline = time.monotonic() + timeout
        # No readiness signal: poll for the sockets, with a deadline.
        while not all(path.exists() for path, _ in self.sockets):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("dovecot did not start: " + self.log_tail())
            time.sleep(0.05)

    def log_tail(self) -> str:
        try:
            return "\n".join((self.root / "dovecot.log").read_text().splitlines()[-10:])
        except OSError:
            return ""

    def root_pids(self) -> list[int]:
        return [self._proc.pid] if self._proc is not None and self._proc.poll() is None else []

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        stop_session(proc)


def client(port: int, user: str, count: int, tls: bool, start: float, out: object) -> None:
    """One client process: wait for the common start, then submit count messages."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    while time.time() < start:
        time.sleep(0.001)
    failures = 0
    for _ in range(count):
        try:
            with smtplib.SMTP(LISTEN_HOST, port, timeout=60) as smtp:
                smtp.ehlo("client.bench")
                if tls:
                    smtp.starttls(context=context)
                    smtp.ehlo("client.bench")
                smtp.login(user, f"pw-{user}")
                smtp.sendmail(user, [user], BODY)
        except (smtplib.SMTPException, OSError):
            failures += 1
    out.put(failures)  # type: ignore[attr-defined]


def run_load(server: object, users: list[str], messages: int, tls: bool) -> tuple[float, int]:
    """(seconds, failures) of messages submissions by len(users) clients."""
    port = server.port  # type: ignore[attr-defined]
    queue: multiprocessing.Queue[int] = multiprocessing.Queue()
    share = [messages // len(users) + (i < messages % len(users)) for i in range(len(users))]
    start = time.time() + 0.5
    procs = [
        multiprocessing.Process(target=client, args=(port, u, n, tls, start, queue))
        for u, n in zip(users, share, strict=True)
    ]
    for p in procs:
        p.start()
    failures = sum(queue.get() for _ in procs)
    for p in procs:
        p.join()
    return time.time() - start, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--no-tls", action="store_true")
    parser.add_argument("--pymta-processes", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--only", choices=("postfix", "pymta"))
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--workdir", default="/var/tmp")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    for why in (postfix_missing(), dovecot_missing()):
        if why:
            print(f"submission_bench: {why}", file=sys.stderr)
            return 2
    tls = not args.no_tls
    users = [f"user{i}@{DOMAIN}" for i in range(args.clients)]
    setup = MailSetup(tuple(users), 65534, 65534)
    work = Path(tempfile.mkdtemp(prefix="submission-bench-", dir=args.workdir))
    work.chmod(0o711)
    cert = work / "cert.pem" if tls else None
    if cert is not None:
        write_certificate(cert)
    extra = sasl_main_cf(cert) + f"pymta_processes = {args.pymta_processes}\n"
    postfix = SaslPostfix(work, setup)
    postfix.extra_main_cf = sasl_main_cf(cert)
    pymta = SaslPymta(work, setup, extra_main_cf=extra)
    servers = [s for s in (postfix, pymta) if args.only in (None, s.name)]
    dovecot: DovecotAuth | None = None
    rates: dict[str, list[float]] = {s.name: [] for s in servers}
    cpu: dict[str, list[float]] = {s.name: [] for s in servers}
    auth_cpu: dict[str, list[float]] = {s.name: [] for s in servers}
    try:
        postfix.write_config()
        subprocess.run(["postfix", "-c", str(postfix.config), "check"], check=True)
        (pymta.queue / "private").mkdir(parents=True, exist_ok=True)
        dovecot = DovecotAuth(
            work / "dovecot",
            users,
            [
                (postfix.queue / "private" / "auth", "postfix"),
                (pymta.queue / "private" / "auth", "root"),
            ],
        )
        dovecot.start()
        for server in servers:
            server.start()
            run_load(server, users, args.warmup, tls)
        for rep in range(args.repeat):
            order = servers if rep % 2 == 0 else servers[::-1]
            for server in order:
                before = tree_cpu_seconds(server.root_pids())
                before_auth = tree_cpu_seconds(dovecot.root_pids())
                seconds, failures = run_load(server, users, args.messages, tls)
                used = tree_cpu_seconds(server.root_pids()) - before
                used_auth = tree_cpu_seconds(dovecot.root_pids()) - before_auth
                rate = (args.messages - failures) / seconds
                rates[server.name].append(rate)
                cpu[server.name].append(used * 1000 / args.messages)
                auth_cpu[server.name].append(used_auth * 1000 / args.messages)
                print(
                    f"rep {rep + 1} {server.name:8} {args.messages} submissions "
                    f"({'STARTTLS + ' if tls else ''}AUTH PLAIN via Dovecot, {args.clients} "
                    f"clients): {rate:7.1f}/s, {failures} failed, server CPU "
                    f"{used * 1000 / args.messages:.2f} ms/msg, Dovecot CPU "
                    f"{used_auth * 1000 / args.messages:.2f} ms/msg",
                    flush=True,
                )
    finally:
        for server in servers:
            try:
                server.stop()
            except Exception as e:  # keep stopping the others
                print(f"stopping {server.name}: {e}", file=sys.stderr)
        if dovecot is not None:
            dovecot.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    medians = {name: statistics.median(r) for name, r in rates.items() if r}
    for name, value in medians.items():
        print(
            f"{name}: median {value:.1f} submissions/s, server CPU "
            f"{statistics.median(cpu[name]):.2f} ms/msg, Dovecot CPU "
            f"{statistics.median(auth_cpu[name]):.2f} ms/msg"
        )
    if "postfix" in medians and "pymta" in medians:
        print(f"ratio pymta/postfix: {medians['pymta'] / medians['postfix']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
