#!/usr/bin/env python3
"""syscall_counts - system calls per message of pymta's process, by strace.

SYNOPSIS
    python bench/syscall_counts.py [--messages 2000] [--connections 20]
        [--size 1024] [--warmup 200] [--workdir /var/tmp] [--checkout DIR]

DESCRIPTION
    A deterministic companion of bench/smtp_bench.py's CPU figures: how
    many system calls of each kind one message costs the server, whatever
    the machine's load. It builds the bench's pymta instance (bench_pymta,
    bench_setup) from --checkout (default: this tree), sends --warmup
    messages with Postfix's smtp-source, then attaches

        strace -f -c -p PID

    to the twistd process (all its threads), sends --messages messages of
    --size bytes over --connections connections, waits until all are in
    the Maildir, detaches and prints each system call's count per message
    (those above 0.05), and the total. Group commit batches vary a little
    with timing (syncfs, futex, the hand-offs to the sync threads): compare
    two trees in the same session, with the same arguments.

REQUIREMENTS
    root; Debian's strace and postfix (smtp-source) packages.

EXAMPLES
    python bench/syscall_counts.py --size 10240
    python bench/syscall_counts.py --size 10240 --checkout /tmp/main-export
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_load import load_arguments, load_directory, smtp_source_missing, warmed_up

_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")


def wait_queue_empty(queue: Path, timeout: float) -> None:
    """Poll until incoming/ and active/ hold no queue file."""
    deadline = time.monotonic() + timeout
    while any(os.listdir(queue / name) for name in ("incoming", "active")):
        if time.monotonic() > deadline:
            raise TimeoutError(f"queue {queue} not empty after {timeout:.0f}s")
        time.sleep(0.05)


def parse_counts(text: str) -> dict[str, int]:
    """syscall -> calls, from strace -c's summary table."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        match = _ROW.match(line)
        if match and match.group(2) != "total":
            counts[match.group(2)] = int(match.group(1))
    return counts


def main(argv: list[str] | None = None) -> int:
    args = load_arguments(__doc__.split("\n", 1)[0], messages=2000, warmup=200).parse_args(argv)
    if shutil.which("strace") is None:
        print("strace not found: apt-get install -y strace", file=sys.stderr)
        return 2
    if smtp_source_missing():
        return 2
    workdir = load_directory(args, "syscalls.")
    out = workdir / "strace.out"
    with warmed_up(args, workdir) as run:
        tracer = subprocess.Popen(
            ["strace", "-f", "-c", "-o", str(out), "-p", str(run.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            # strace says "Process N attached" once it traces: wait for it.
            assert tracer.stderr is not None
            tracer.stderr.readline()
            run.measure()
            # The last delivery's done mark and the queue file's removal
            # follow the Maildir file's rename: counted once the queue is empty.
            wait_queue_empty(run.server.queue, 60)
            tracer.send_signal(signal.SIGINT)
            tracer.wait(60)
            counts = parse_counts(out.read_text(errors="replace"))
        finally:
            if tracer.poll() is None:
                tracer.kill()
                tracer.wait()
    print(
        f"pymta ({args.checkout}): {args.messages} x {args.size} B over"
        f" {args.connections} connection(s), system calls per message (strace -f -c)"
    )
    for name, calls in sorted(counts.items(), key=lambda item: -item[1]):
        if calls / args.messages >= 0.05:
            print(f"  {name:20s} {calls / args.messages:6.2f}")
    print(f"  {'total':20s} {sum(counts.values()) / args.messages:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
