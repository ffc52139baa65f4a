#!/usr/bin/env python3
"""fetch_memory - does a huge answer to a slow reader grow the server's memory?

SYNOPSIS
    python bench/attacks/fetch_memory.py [--messages 100] [--size 5000000]
        [--case imap|pop3|both] [--rate 50] [--stall 3] [--limit 50]
        [--timeout 300] [--workdir /var/tmp] [--keep]

DESCRIPTION
    The large-answer attack: a client asks for far
    more than it reads.  The replay starts its own pymta on loopback
    (bench/retrieval_pymta.py: pop3d and imapd, no TLS, one reactor
    process), writes --messages messages of about --size bytes into one
    user's Maildir (cur/, base64 lines, so about 500 MB by default), logs
    in, SELECTs (which indexes the folder) and takes the server's resident
    memory (VmRSS of twistd and its children) as the baseline.  Then:

      imap  FETCH 1:* BODY.PEEK[] - the whole folder in one command.
      pop3  RETR of every message, pipelined in one write.

    The client reads nothing for --stall seconds (a server that builds or
    buffers the whole answer shows it now), then reads at about --rate
    MB/s until the answer ends, checking it is complete.  A thread
    samples the server's memory every 50 ms.  One line per case:

        fetch_memory imap: HELD  rss +12.3 MB (limit 50 MB) ...

    HELD when the growth over the baseline stayed under --limit MB, NOT
    HELD otherwise (or when the answer was incomplete or timed out).  The
    reading is bounded by --timeout seconds.  Network traffic: loopback
    only.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BENCH))

from bench_measure import descendants, read_proc_table  # noqa: E402
from retrieval_corpus import DOMAIN  # noqa: E402
from retrieval_pymta import PymtaRetrievalServer  # noqa: E402
from retrieval_run import LISTEN_HOST  # noqa: E402

USER = f"victim@{DOMAIN}"
PASSWORD = "pw-victim"


def rss_bytes(roots: list[int]) -> int:
    """Resident memory of the server's process tree (VmRSS, bytes)."""
    pids = descendants(read_proc_table(), roots) | set(roots)
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


class Sampler(threading.Thread):
    """The highest memory of the server's tree, sampled every 50 ms."""

    def __init__(self, roots: list[int]) -> None:
        super().__init__(daemon=True)
        self.roots = roots
        self.peak = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_bytes(self.roots))
            time.sleep(0.05)

    def stop(self) -> int:
        self.running = False
        self.join()
        return self.peak


def write_maildir(maildir: Path, count: int, size: int) -> int:
    """count messages of about size bytes in maildir/cur; their total bytes."""
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    rng = random.Random(11)
    block = base64.encodebytes(rng.randbytes(size * 3 // 4))
    total = 0
    now = int(time.time())
    for n in range(count):
        header = (
            f"From: sender@client.test\nTo: {USER}\nSubject: big {n}\n"
            f"Message-ID: <big{n}@client.test>\nMIME-Version: 1.0\n"
            "Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
        ).encode()
        # Each message differs in its first body line.
        content = header + b"%08d" % n + block[8:]
        (maildir / "cur" / f"{now - count + n}.M{n}P1.fetchmemory:2,").write_bytes(content)
        total += len(content)
    return total


class Client:
    """A raw loopback client that reads at a chosen pace."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((LISTEN_HOST, port), timeout=60)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.buffer = b""

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed")
            self.buffer += data
        end = self.buffer.index(marker) + len(marker)
        head, self.buffer = self.buffer[:end], self.buffer[end:]
        return head

    def slow_read(self, end: bytes, rate: float, deadline: float) -> tuple[int, bool]:
        """Read at about rate bytes/s until the stream ends with end; (bytes, found).
        Only the last bytes are kept: the client must not be the one that grows."""
        received = len(self.buffer)
        tail = self.buffer[-len(end) :]
        self.buffer = b""
        started = time.monotonic()
        while time.monotonic() < deadline:
            data = self.sock.recv(256 * 1024)
            if not data:
                return received, False
            received += len(data)
            tail = (tail + data)[-len(end) :]
            if tail == end:
                return received, True
            ahead = received / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        return received, False


def run_case(case: str, server: PymtaRetrievalServer, args: argparse.Namespace, total: int) -> None:
    roots = server.root_pids()
    if case == "imap":
        client = Client(server.imap_port)
        client.until(b"\r\n")
        client.sock.sendall(f"a LOGIN {USER} {PASSWORD}\r\nb SELECT INBOX\r\n".encode())
        client.until(b"b OK")
        client.until(b"\r\n")
        request = b"c FETCH 1:* BODY.PEEK[]\r\n"
        end = b"c OK Fetch completed.\r\n"
    else:
        client = Client(server.pop3_port)
        client.until(b"\r\n")
        client.sock.sendall(f"USER {USER}\r\nPASS {PASSWORD}\r\n".encode())
        client.until(b"Logged in.\r\n")
        request = b"".join(b"RETR %d\r\n" % n for n in range(1, args.messages + 1))
        request += b"NOOP\r\n"
        end = b".\r\n+OK\r\n"
    time.sleep(0.5)  # let the login's work settle before the baseline
    baseline = rss_bytes(roots)
    sampler = Sampler(roots)
    sampler.start()
    started = time.monotonic()
    client.sock.sendall(request)
    time.sleep(args.stall)  # a client that asks and does not read
    stalled_peak = sampler.peak
    received, complete = client.slow_read(end, args.rate * 1e6, time.monotonic() + args.timeout)
    elapsed = time.monotonic() - started
    peak = sampler.stop()
    client.sock.close()
    growth = (peak - baseline) / 1e6
    held = complete and growth < args.limit
    print(
        f"fetch_memory {case}: {'HELD' if held else 'NOT HELD'}  "
        f"rss +{growth:.1f} MB (limit {args.limit} MB; +{(stalled_peak - baseline) / 1e6:.1f} MB "
        f"while the client did not read; baseline {baseline / 1e6:.1f} MB)  "
        f"{received / 1e6:.0f} MB of a {total / 1e6:.0f} MB folder in {elapsed:.1f} s"
        + ("" if complete else "  INCOMPLETE"),
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--size", type=int, default=5_000_000, help="bytes per message")
    parser.add_argument("--case", choices=("imap", "pop3", "both"), default="both")
    parser.add_argument("--rate", type=float, default=50.0, help="client reading, MB/s")
    parser.add_argument("--stall", type=float, default=3.0, help="seconds before reading")
    parser.add_argument("--limit", type=float, default=50.0, help="MB of growth that holds")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds of reading")
    parser.add_argument("--workdir", default="/var/tmp")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="fetchmemory.", dir=args.workdir))
    mail_root = workdir / "pymta" / "mail"
    maildir = mail_root / DOMAIN / "victim"
    total = write_maildir(maildir, args.messages, args.size)
    passwd = f"{USER}:{{PLAIN}}{PASSWORD}:{os.getuid()}:{os.getgid()}::{maildir}::\n"
    server = PymtaRetrievalServer(workdir, passwd, imap=True)
    try:
        server.start()
        cases = ("imap", "pop3") if args.case == "both" else (args.case,)
        for case in cases:
            run_case(case, server, args, total)
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
