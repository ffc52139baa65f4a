#!/usr/bin/env python3
"""relay_bench - pymta relaying to Postfix's smtp-sink: messages per second.

SYNOPSIS
    python bench/relay_bench.py [--messages 300] [--concurrency 1,20]
        [--reuse on,off] [--size 1024] [--timeout 300]

DESCRIPTION
    On loopback only: starts Postfix's smtp-sink (the Debian postfix
    package's /usr/sbin/smtp-sink, as "nobody") on a free 127.0.0.1 port,
    and for every (concurrency, reuse) pair a fresh pymta ("twistd -n
    pymta", through tests/harness.py) with

        relayhost = [127.0.0.1]:SINK_PORT
        smtp_destination_concurrency_limit = CONCURRENCY
        smtp_connection_cache_on_demand = yes | no   (connection reuse)

    Postfix's load generator smtp-source then submits MESSAGES messages of
    SIZE bytes from 20 connections to pymta (mail for remote.test, relayed
    because the client is in mynetworks), and the run is timed from
    smtp-source's start until pymta has logged "status=sent" for every
    message: the figure is end-to-end relay throughput (accept, queue,
    deliver over SMTP, remove), the relay at CONCURRENCY parallel
    deliveries being the part that changes between rows.

    Prints one row per run: concurrency, reuse, seconds, messages/s.
    Needs root only for smtp-sink's -u; takes about 10-60 s per row on a
    2-core machine at the default size.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness import DEFAULT_MASTER_CF, PymtaServer  # noqa: E402

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
MASTER_CF = DEFAULT_MASTER_CF + "smtp unix - - n - - smtp\n"
SENT = re.compile(r"smtp: \S+: to=<.*status=sent")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_sent(server: PymtaServer, count: int, timeout: float) -> None:
    """Wait until `count` delivery lines with status=sent were logged
    (scanning each new line once: the harness reader thread appends them)."""
    seen = 0
    index = 0
    deadline = time.monotonic() + timeout
    with server._changed:
        while seen < count:
            lines = server.lines
            while index < len(lines):
                if SENT.search(lines[index]):
                    seen += 1
                index += 1
            if seen >= count:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{seen}/{count} sent after {timeout}s")
            server._changed.wait(min(remaining, 1.0))


def run(
    root: Path,
    sink_port: int,
    messages: int,
    size: int,
    concurrency: int,
    reuse: bool,
    timeout: float,
) -> float:
    main_cf = (
        f"relayhost = [127.0.0.1]:{sink_port}\n"
        f"smtp_destination_concurrency_limit = {concurrency}\n"
        f"smtp_connection_cache_on_demand = {'yes' if reuse else 'no'}\n"
        "smtp_tls_security_level = none\n"
    )
    with PymtaServer(root, main_cf_extra=main_cf, master_cf=MASTER_CF) as server:
        server.start()
        argv = [
            SMTP_SOURCE, "-s", "20", "-m", str(messages), "-l", str(size), "-c",
            "-f", "sender@example.test", "-t", "rcpt@remote.test",
            f"127.0.0.1:{server.smtp_port}",
        ]  # fmt: skip
        started = time.monotonic()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_sent(server, messages, timeout)
        elapsed = time.monotonic() - started
        server.stop()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--concurrency", default="1,20")
    parser.add_argument("--reuse", default="on,off")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    sink_port = free_port()
    sink = subprocess.Popen([SMTP_SINK, "-u", "nobody", f"127.0.0.1:{sink_port}", "256"])
    try:
        print(f"{'concurrency':>11} {'reuse':>5} {'seconds':>8} {'msg/s':>8}")
        with tempfile.TemporaryDirectory(prefix="relay-bench-") as scratch:
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                for reuse_text in args.reuse.split(","):
                    reuse = reuse_text == "on"
                    root = Path(scratch) / f"c{concurrency}-{reuse_text}"
                    elapsed = run(
                        root, sink_port, args.messages, args.size, concurrency, reuse, args.timeout
                    )
                    rate = args.messages / elapsed
                    print(
                        f"{concurrency:>11} {reuse_text:>5} {elapsed:>8.2f} {rate:>8.1f}",
                        flush=True,
                    )
    finally:
        sink.terminate()
        sink.wait(10)


if __name__ == "__main__":
    main()
