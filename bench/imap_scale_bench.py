#!/usr/bin/env python3
"""imap_scale_bench - pymta's IMAP server at scale: a huge folder, many idle sessions.

SYNOPSIS
    python bench/imap_scale_bench.py [--messages 100000] [--connections 2000]
        [--users 20] [--only big|idle] [--wake-timeout 60] [--workdir /var/tmp]
        [--keep]

DESCRIPTION
    The "Speed and scale" figures of issue 4 that imap_bench.py (the mixed
    workload) does not give, on loopback only, against a real
    ``twistd pymta`` with an imapd listener (bench/retrieval_pymta.py).

    big: one user's INBOX holds --messages messages, written straight
    into the Maildir's cur/ with ``,S=``/``,W=`` names (no index yet: the
    server indexes them on first use). Every 1,000th message has the
    Subject word "needle". Over Python's imaplib, one session after the
    other, it times

        SELECT INBOX (first)       the server builds the folder's index (and
                                   the slowest NOOP of another session meanwhile)
        SELECT INBOX (second)      a new session, index in memory
        FETCH 1:* (FLAGS UID)      the index only; imaplib's parsing included
        UID SEARCH SUBJECT needle  cold header cache (every file read), then
                                   warm (the cache filled by the cold run)

    and checks the answers (EXISTS, one FETCH line per message, the
    needles' UIDs).

    idle: --connections sessions over --users users (INBOXes of 10
    messages), each LOGIN, SELECT INBOX, IDLE, opened by an asyncio
    client at most 200 at a time. The server's VmRSS (/proc/PID/status)
    is read after one warm-up session per user (folders loaded) and again
    when every session idles: the growth divided by the sessions is the
    memory of one idle session, compared with Dovecot's ~100 kB per
    connection (issue 4). Then one message is delivered to each INBOX the
    way any MDA does (tmp/, rename into new/), and every session must
    receive ``* N EXISTS`` within --wake-timeout seconds; the count of
    woken sessions and the time until the last was woken (ms) are printed.

    The bench raises its own RLIMIT_NOFILE (soft and hard) for the client
    sockets; the server, started from it, inherits the raised limit (the
    ``ulimit -n`` of its shell).

REQUIREMENTS
    root or enough RLIMIT_NOFILE; this checkout's twistd plugin; about
    500 MB of disk in --workdir for 100,000 messages.

EXAMPLE
    python bench/imap_scale_bench.py --messages 100000 --connections 2000
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import os
import re
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from retrieval_corpus import DOMAIN
from retrieval_pymta import PymtaRetrievalServer
from retrieval_run import LISTEN_HOST

BIG_USER = f"big@{DOMAIN}"
PASSWORD = "bench-pw"
SETUP_CONCURRENCY = 200
DOVECOT_KB_PER_CONNECTION = 100
_EXISTS = re.compile(rb"\* \d+ EXISTS\r\n")


def message(index: int, subject: str) -> bytes:
    """One small message with LF line ends, as a Maildir stores it."""
    return (
        f"From: sender{index % 97}@client.test\n"
        f"To: {BIG_USER}\n"
        f"Subject: {subject}\n"
        f"Date: Mon, 02 Nov 2026 10:{index // 60 % 60:02d}:{index % 60:02d} +0000\n"
        f"Message-ID: <{index}.bench@client.test>\n"
        "\n"
        f"Body of message {index}.\nSecond line.\n"
    ).encode()


def write_maildir(path: Path, count: int, needle_every: int = 1000) -> list[int]:
    """Fill path/cur with count messages named like Dovecot's (time order =
    UID order); return the 1-based positions whose Subject has "needle"."""
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    start = 1_790_000_000
    needles = []
    cur = path / "cur"
    for i in range(1, count + 1):
        needle = i % needle_every == 0
        if needle:
            needles.append(i)
        data = message(i, f"needle {i}" if needle else f"message {i}")
        flags = "S" if i % 3 else ""
        vsize = len(data) + data.count(b"\n")
        name = f"{start + i}.M{i}P1.bench,S={len(data)},W={vsize}:2,{flags}"
        with open(cur / name, "wb") as f:
            f.write(data)
    return needles


def deliver(maildir: Path, index: int) -> None:
    """A Maildir delivery: write in tmp/, rename into new/."""
    name = f"{int(time.time())}.M{index}P{os.getpid()}.wake"
    tmp = maildir / "tmp" / name
    tmp.write_bytes(message(index, f"wake {index}"))
    os.rename(tmp, maildir / "new" / name)


def vm_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(wanted, soft)
    if hard != resource.RLIM_INFINITY and hard < target:
        hard = target  # needs CAP_SYS_RESOURCE (root)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


class Timer:
    """Records how long each labelled block took."""

    def __init__(self) -> None:
        self.results: dict[str, float] = {}
        self._label = ""
        self._t0 = 0.0

    def __call__(self, label: str) -> Timer:
        self._label = label
        return self

    def __enter__(self) -> None:
        self._t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.results[self._label] = time.perf_counter() - self._t0


# big folder -------------------------------------------------------------------


class NoopProbe:
    """Another session sending NOOP after NOOP while a command runs: the
    slowest answer shows how long the server's reactor was blocked."""

    def __init__(self, server: PymtaRetrievalServer) -> None:
        self.client = imaplib.IMAP4(LISTEN_HOST, server.imap_port, timeout=600)
        self.client.login(BIG_USER, PASSWORD)
        self.done = threading.Event()
        self.slowest = 0.0
        self.thread = threading.Thread(target=self._run)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            t0 = time.perf_counter()
            self.client.noop()
            self.slowest = max(self.slowest, time.perf_counter() - t0)

    def stop(self) -> float:
        self.done.set()
        self.thread.join()
        self.client.logout()
        return self.slowest


def bench_big(server: PymtaRetrievalServer, count: int, needles: list[int]) -> dict[str, float]:
    timer = Timer()
    for run in ("first", "second"):
        client = imaplib.IMAP4(LISTEN_HOST, server.imap_port, timeout=600)
        client.login(BIG_USER, PASSWORD)
        probe = NoopProbe(server) if run == "first" else None
        with timer(f"SELECT INBOX ({run})"):
            if probe is not None:
                probe.start()
            typ, data = client.select("INBOX")
        if probe is not None:
            timer.results["  slowest NOOP of another session meanwhile (first SELECT)"] = (
                probe.stop()
            )
        assert typ == "OK" and data == [str(count).encode()], (typ, data)
        if run == "second":
            with timer("FETCH 1:* (FLAGS UID)"):
                typ, flags = client.fetch("1:*", "(FLAGS UID)")
            assert typ == "OK" and len(flags) == count, (typ, len(flags))
            for cache in ("cold", "warm"):
                probe = NoopProbe(server)
                with timer(f"UID SEARCH SUBJECT needle ({cache} cache)"):
                    probe.start()
                    typ, hits = client.uid("SEARCH", "SUBJECT", "needle")
                timer.results[f"  slowest NOOP of another session meanwhile ({cache})"] = (
                    probe.stop()
                )
                assert isinstance(hits[0], bytes), hits
                found = [int(n) for n in hits[0].split()]
                assert typ == "OK" and found == needles, (typ, found[:5])
        client.logout()
    return timer.results


# idle sessions ----------------------------------------------------------------


class IdleSession:
    """One asyncio IMAP connection: login, select, idle, wait for EXISTS."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _until(self, prefix: bytes) -> None:
        assert self.reader is not None
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError(f"{self.user}: closed while waiting for {prefix!r}")
            if line.startswith(prefix):
                if b" OK" not in line and prefix != b"+":
                    raise RuntimeError(f"{self.user}: {line!r}")
                return

    async def open(self, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection(LISTEN_HOST, port)
        await self._until(b"* OK")
        self.writer.write(f"a LOGIN {self.user} {PASSWORD}\r\n".encode())
        await self._until(b"a ")
        self.writer.write(b"b SELECT INBOX\r\n")
        await self._until(b"b ")
        self.writer.write(b"c IDLE\r\n")
        await self._until(b"+")

    async def woken(self) -> float:
        assert self.reader is not None
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("closed in IDLE")
            if _EXISTS.match(line):
                return time.perf_counter()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.write(b"DONE\r\nd LOGOUT\r\n")
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass


async def bench_idle(
    server: PymtaRetrievalServer,
    pid: int,
    users: list[str],
    maildirs: list[Path],
    connections: int,
    wake_timeout: float,
) -> dict[str, float]:
    # One warm-up session per user: the folders are open and indexed
    # before the baseline is read.
    for user in users:
        s = IdleSession(user)
        await s.open(server.imap_port)
        await s.close()
    await asyncio.sleep(0)  # let the closes go out
    before = vm_rss_kb(pid)
    sessions = [IdleSession(users[i % len(users)]) for i in range(connections)]
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def open_one(s: IdleSession) -> None:
        async with gate:
            await s.open(server.imap_port)

    t0 = time.perf_counter()
    await asyncio.gather(*(open_one(s) for s in sessions))
    setup = time.perf_counter() - t0
    after = vm_rss_kb(pid)
    waits = [asyncio.ensure_future(s.woken()) for s in sessions]
    t1 = time.perf_counter()
    for n, maildir in enumerate(maildirs):
        deliver(maildir, 1_000_000 + n)
    done, pending = await asyncio.wait(waits, timeout=wake_timeout)
    woken = [w.result() for w in done if not w.exception()]
    for w in pending:
        w.cancel()
    last = (max(woken) - t1) * 1000 if woken else float("nan")
    await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
    return {
        "sessions": connections,
        "setup seconds": setup,
        "RSS before (kB)": before,
        "RSS with sessions idle (kB)": after,
        "kB per idle session": (after - before) / connections,
        "sessions woken by delivery": len(woken),
        "ms until last woken": last,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--only", choices=("big", "idle"))
    ap.add_argument("--wake-timeout", type=float, default=60.0)
    ap.add_argument("--workdir", default="/var/tmp")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    limit = raise_fd_limit(args.connections * 2 + 1024)
    workdir = Path(tempfile.mkdtemp(prefix="imap-scale-", dir=args.workdir))
    mail_root = workdir / "pymta" / "mail"
    idle_users = [f"idle{n:03d}@{DOMAIN}" for n in range(args.users)]
    uid, gid = os.getuid(), os.getgid()
    homes = {u: mail_root / DOMAIN / u.split("@")[0] for u in [BIG_USER, *idle_users]}
    passwd = "".join(
        f"{u}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{home}::\n" for u, home in homes.items()
    )
    needles: list[int] = []
    if args.only != "idle":
        t0 = time.perf_counter()
        needles = write_maildir(homes[BIG_USER], args.messages)
        print(f"wrote {args.messages} messages in {time.perf_counter() - t0:.1f} s")
    for u in idle_users:
        write_maildir(homes[u], 10)
    # Its sessions all come from one address, up to SETUP_CONCURRENCY of them
    # before login at once: lift the per-client caps (a slowloris defence,
    # and the logins in progress per client, a guessing defence).
    server = PymtaRetrievalServer(
        workdir,
        passwd,
        imap=True,
        extra_main_cf=(
            "imapd_max_login_ip_connections = 0\n"
            f"pymta_auth_client_concurrency_limit = {SETUP_CONCURRENCY}\n"
        ),
    )
    server.start()
    try:
        [pid] = server.root_pids()
        print(f"pymta imapd pid {pid}, RLIMIT_NOFILE {limit}, workdir {workdir}")
        if args.only != "idle":
            print(f"\n{args.messages}-message folder (imaplib, seconds):")
            for label, seconds in bench_big(server, args.messages, needles).items():
                print(f"  {label:<42} {seconds:8.3f}")
        if args.only != "big":
            figures = asyncio.run(
                bench_idle(
                    server,
                    pid,
                    idle_users,
                    [homes[u] for u in idle_users],
                    args.connections,
                    args.wake_timeout,
                )
            )
            print(f"\n{args.connections} idle sessions over {args.users} users:")
            for label, value in figures.items():
                print(f"  {label:<42} {value:10.1f}")
            per = figures["kB per idle session"]
            print(
                f"  Dovecot (issue 4): ~{DOVECOT_KB_PER_CONNECTION} kB per connection; "
                f"pymta {per:.1f} kB ({per / DOVECOT_KB_PER_CONNECTION:.2f}x)"
            )
            if figures["sessions woken by delivery"] != args.connections:
                print("  NOT every session was woken")
                return 1
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
