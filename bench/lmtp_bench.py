#!/usr/bin/env python3
"""lmtp_bench - LMTP delivery rate: pymta's lmtpd and Dovecot's LMTP side by side.

SYNOPSIS
    python bench/lmtp_bench.py [--connections 8] [--messages 2000]
        [--recipients 1] [--users 20] [--size 4096] [--repeat 3]
        [--only dovecot|pymta] [--workdir /var/tmp] [--keep]

DESCRIPTION
    On loopback only, as root:

    1. starts a private Dovecot 2.3 (``dovecot -F -c FILE``, protocols =
       lmtp, passdb/userdb passwd-file, mail_location = maildir:~, its
       default mail_fsync = optimized: a delivered message is fsync'd
       before the 250) and a private pymta (``twistd -n pymta`` with an
       ``lmtpd`` inet listener; the same users in its passwd-file, home =
       Maildir), each with its own Maildirs;
    2. per repetition and server, --connections LMTP clients (asyncio, in
       this process) each send their share of --messages messages of about
       --size bytes, --recipients recipients each (users chosen round
       robin), MAIL/RCPT/DATA pipelined, and wait for every per-recipient
       answer after the data (each must be 250);
    3. measures the time from the first connection to the last answer and
       the CPU time of the server's process tree (reaped children included),
       then checks that every delivered copy is in the Maildirs;
    4. prints, per server, messages/s, deliveries/s, server CPU ms per
       message, each repetition's rate, and the ratio pymta/dovecot of the
       median rates.

    Repetition 0 of each server is an unmeasured warm-up; repetitions
    alternate which server goes first. Both servers are always stopped at
    the end, and the temporary directory is removed unless --keep.

REQUIREMENTS
    root; Debian's dovecot-lmtpd (Dovecot 2.3).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_measure import free_loopback_port, stop_session, tree_cpu_seconds

from pymta.testing.process import DEFAULT_MASTER_CF, PymtaProcess

HOST = "127.0.0.1"
DOMAIN = "bench.test"
DOVECOT = "/usr/sbin/dovecot"
LMTP_BINARY = "/usr/lib/dovecot/lmtp"


def missing() -> str | None:
    if os.geteuid() != 0:
        return "must run as root (Dovecot's master)"
    if not os.path.exists(DOVECOT) or not os.path.exists(LMTP_BINARY):
        return "apt-get install -y dovecot-lmtpd"
    return None


def users(count: int) -> list[str]:
    return [f"u{i:03d}@{DOMAIN}" for i in range(count)]


def passwd_text(addresses: list[str], mail_root: Path, uid: int, gid: int) -> str:
    return "".join(
        f"{a}:{{PLAIN}}pw:{uid}:{gid}::{mail_root / a.split('@')[0]}::\n" for a in addresses
    )


def message(size: int, n: int) -> bytes:
    line = b"abcdefghijklmnopqrstuvwxyz0123456789 " * 2 + b"\r\n"
    body = line * max(1, size // len(line))
    return (
        f"From: load@example.org\r\nTo: {DOMAIN}\r\nSubject: lmtp bench {n}\r\n"
        f"Message-ID: <{n}.{time.time_ns()}@bench>\r\n\r\n"
    ).encode() + body


class Dovecot:
    name = "dovecot"

    def __init__(self, root: Path, addresses: list[str], uid: int, gid: int) -> None:
        self.root = root
        self.mail = root / "mail"
        self.port = free_loopback_port(HOST)
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True)
        root.chmod(0o755)
        self.mail.mkdir()
        os.chown(self.mail, uid, gid)
        passwd = root / "passwd"
        passwd.write_text(passwd_text(addresses, self.mail, uid, gid))
        passwd.chmod(0o644)
        (root / "dovecot.conf").write_text(
            f"""\
instance_name = lmtpbench-{root.name}
protocols = lmtp
listen = {HOST}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot-info.log
ssl = no
mail_location = maildir:~
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = 1
first_valid_gid = 1
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = {passwd}
}}
userdb {{
  driver = passwd-file
  args = {passwd}
}}
service lmtp {{
  inet_listener lmtp {{
    address = {HOST}
    port = {self.port}
  }}
}}
"""
        )

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.root / "dovecot.conf")],
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=open(self.root / "stdout.log", "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_greeting(self.port, lambda: self.proc is not None and self.proc.poll() is None)

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []

    def maildir_new(self, address: str) -> Path:
        return self.mail / address.split("@")[0] / "new"

    def stop(self) -> None:
        stop_session(self.proc)


class Pymta:
    name = "pymta"

    def __init__(self, root: Path, addresses: list[str]) -> None:
        self.root = root
        self.mail = root / "mail-users"
        master = DEFAULT_MASTER_CF.replace("127.0.0.1:0 inet n - n - - smtpd\n", "")
        self.server = PymtaProcess(
            root,
            master_cf=master + "127.0.0.1:0 inet n - n - - lmtpd\n",
            passwd=passwd_text(addresses, self.mail, 0, 0),
            main_cf_extra="maillog_file =\n",
        )

    def start(self) -> None:
        self.server.start()
        self.port = self.server.ports["127.0.0.1:0"]

    def pids(self) -> list[int]:
        return [self.server.process.pid] if self.server.process is not None else []

    def maildir_new(self, address: str) -> Path:
        return self.mail / address.split("@")[0] / "new"

    def stop(self) -> None:
        self.server.stop()


def wait_greeting(port: int, alive: object, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=5) as s:
                if s.recv(100).startswith(b"220"):
                    return
        except OSError:
            pass
        if not alive():  # type: ignore[operator]
            raise RuntimeError("server exited at start")
        time.sleep(0.05)  # no event: a port that starts listening
    raise TimeoutError(f"no LMTP greeting on port {port}")


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != b"-":
            return line


async def client(
    port: int, jobs: list[tuple[int, list[str]]], size: int, failures: list[bytes]
) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    await read_reply(reader)
    writer.write(b"LHLO bench.client\r\n")
    await read_reply(reader)
    for n, rcpts in jobs:
        writer.write(
            b"MAIL FROM:<load@example.org>\r\n"
            + b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in rcpts)
            + b"DATA\r\n"
        )
        for _ in range(len(rcpts) + 2):
            reply = await read_reply(reader)
            if reply[:1] not in (b"2", b"3"):
                failures.append(reply)
        writer.write(message(size, n) + b"\r\n.\r\n")
        for _ in rcpts:
            reply = await read_reply(reader)
            if not reply.startswith(b"250"):
                failures.append(reply)
    writer.write(b"QUIT\r\n")
    await read_reply(reader)
    writer.close()


def run_once(
    server: Dovecot | Pymta, args: argparse.Namespace, addresses: list[str]
) -> dict[str, float]:
    before = {a: count(server.maildir_new(a)) for a in addresses}
    jobs: list[list[tuple[int, list[str]]]] = [[] for _ in range(args.connections)]
    k = 0
    for n in range(args.messages):
        rcpts = [addresses[(k + i) % len(addresses)] for i in range(args.recipients)]
        k += args.recipients
        jobs[n % args.connections].append((n, rcpts))
    failures: list[bytes] = []

    async def all_clients() -> None:
        await asyncio.gather(*(client(server.port, j, args.size, failures) for j in jobs))

    cpu0 = tree_cpu_seconds(server.pids())
    t0 = time.monotonic()
    asyncio.run(all_clients())
    elapsed = time.monotonic() - t0
    cpu = tree_cpu_seconds(server.pids()) - cpu0
    if failures:
        raise RuntimeError(f"{server.name}: {len(failures)} failures, e.g. {failures[0]!r}")
    delivered = sum(count(server.maildir_new(a)) - before[a] for a in addresses)
    expected = args.messages * args.recipients
    if delivered != expected:
        raise RuntimeError(
            f"{server.name}: {delivered} copies in the Maildirs, {expected} expected"
        )
    return {
        "seconds": elapsed,
        "messages_per_s": args.messages / elapsed,
        "deliveries_per_s": expected / elapsed,
        "cpu_ms_per_message": 1000 * cpu / args.messages,
    }


def count(path: Path) -> int:
    try:
        return sum(1 for _ in os.scandir(path))
    except FileNotFoundError:
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--recipients", type=int, default=1)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=("dovecot", "pymta"))
    parser.add_argument("--workdir", default="/var/tmp")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    why = missing()
    if why:
        print(f"lmtp_bench: skipped: {why}")
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="lmtp-bench-", dir=args.workdir))
    workdir.chmod(0o755)
    addresses = users(args.users)
    nobody = pwd.getpwnam("nobody")
    servers: list[Dovecot | Pymta] = []
    if args.only != "pymta":
        servers.append(Dovecot(workdir / "dovecot", addresses, nobody.pw_uid, nobody.pw_gid))
    if args.only != "dovecot":
        servers.append(Pymta(workdir / "pymta", addresses))
    results: dict[str, list[dict[str, float]]] = {s.name: [] for s in servers}
    try:
        for s in servers:
            s.start()
        for rep in range(args.repeat + 1):
            order = servers if rep % 2 == 0 else list(reversed(servers))
            for s in order:
                r = run_once(s, args, addresses)
                if rep > 0:
                    results[s.name].append(r)
    finally:
        for s in servers:
            s.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"LMTP delivery: {args.messages} messages of {args.size} B, {args.recipients} "
        f"recipient(s) each, {args.connections} connections, {args.repeat} runs (median)"
    )
    medians: dict[str, float] = {}
    for name, runs in results.items():
        rate = statistics.median(r["messages_per_s"] for r in runs)
        medians[name] = rate
        cpu = statistics.median(r["cpu_ms_per_message"] for r in runs)
        each = ", ".join(f"{r['messages_per_s']:.0f}" for r in runs)
        dps = statistics.median(r["deliveries_per_s"] for r in runs)
        print(
            f"  {name:8s} {rate:8.0f} msg/s  {dps:8.0f} deliveries/s  "
            f"{cpu:6.2f} ms CPU/msg  (runs: {each})"
        )
    if len(medians) == 2:
        print(f"  ratio pymta/dovecot: {medians['pymta'] / medians['dovecot']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
