#!/usr/bin/env python3
"""content_path_bench - CPU of the per-byte steps of one message's content.

SYNOPSIS
    python bench/content_path_bench.py [--sizes 1024,10240,102400]
        [--checkout DIR ...] [--workdir /var/tmp]

DESCRIPTION
    What a message's size costs pymta's CPU, without sockets and without
    the rest of the hot path: the two steps that touch every byte of the
    content in Python's hands, in process, timed with timeit (best of 5):

    data reader     smtpd's DATA reader (pymta.smtpd.datareader) over the
                    content as Postfix's smtp-source sends it (a few
                    headers, lines of 80 bytes, CR LF), in one read;
    maildir write   the Maildir delivery of one queued message
                    (pymta.mailstore.deliver.MaildirDelivery with a
                    barrier that runs at once and syncs nothing: create
                    in tmp/, write, rename into new/), from a queue file
                    written by pymta.queue.store.FileQueueStore.

    Each --checkout (default: this tree) runs in a child process with
    that tree first on PYTHONPATH, so two trees (e.g. an export of main
    and this one) are compared in one run; give the same arguments, and
    run it alone on a shared machine.

EXAMPLES
    python bench/content_path_bench.py
    git archive main | tar -x -C /tmp/main
    python bench/content_path_bench.py --checkout /tmp/main --checkout .
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path


def smtp_source_content(size: int) -> bytes:
    """Wire content shaped like smtp-source -l SIZE: headers, X lines."""
    head = (
        b"From: <sender@example.com>\r\nTo: <run1@example.org>\r\n"
        b"Date: Tue,  8 Dec 2026 00:56:36 +0000 (UTC)\r\n"
        b"Message-Id: <6f80.0003.0000@client>\r\n\r\n"
    )
    lines: list[bytes] = []
    total = 0
    number = 1
    while total < size:
        line = str(number).encode() + b"X" * (78 - len(str(number))) + b"\r\n"
        lines.append(line)
        total += len(line)
        number += 1
    return head + b"".join(lines) + b".\r\n"


def best(function: object, number: int) -> float:
    """Microseconds per call, the best of five rounds."""
    return min(timeit.repeat(function, number=number, repeat=5)) / number * 1e6  # type: ignore[arg-type]


def measure_size(size: int, root: Path) -> dict[str, float]:
    """In the child: one size's figures, with the tree on sys.path."""
    from twisted.internet.task import Clock

    from pymta.mailstore.deliver import MaildirDelivery
    from pymta.queue.model import Envelope, Recipient
    from pymta.queue.store import FileQueueStore
    from pymta.smtpd.datareader import DataReader
    from pymta.sync import ImmediateSyncBarrier

    wire = smtp_source_content(size)
    number = max(20, 200_000 // max(size, 1024))

    def read() -> None:
        DataReader().feed(wire)

    reader = DataReader()
    pieces, done, _ = reader.feed(wire)
    assert done
    content = b"".join(pieces)
    store = FileQueueStore(str(root / f"queue{size}"), ImmediateSyncBarrier(), Clock())
    ids: list[str] = []
    envelope = Envelope("sender@example.com", [Recipient("run1@example.org")])
    store.enqueue(envelope, content).addCallback(ids.append)
    message = store.reference(ids[0], "incoming")
    delivery = MaildirDelivery(ImmediateSyncBarrier(), Clock(), "bench")
    maildir = str(root / f"maildir{size}")
    prefix = b"Return-Path: <sender@example.com>\nDelivered-To: run1@example.org\n"

    def deliver() -> None:
        delivery.deliver(maildir, prefix, message)

    deliver()  # the Maildir's directories
    return {
        "data reader": best(read, number),
        "maildir write": best(deliver, max(10, number // 4)),
    }


def measure(sizes: list[int], workdir: Path) -> dict[str, dict[str, float]]:
    """In the child: the figures of the tree on sys.path."""
    root = Path(tempfile.mkdtemp(prefix="content-path.", dir=workdir))
    try:
        return {str(size): measure_size(size, root) for size in sizes}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--sizes", default="1024,10240,102400")
    p.add_argument("--checkout", type=Path, action="append")
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.child:
        print(json.dumps(measure(sizes, args.workdir)))
        return 0
    checkouts = args.checkout or [Path(__file__).resolve().parent.parent]
    results = []
    for checkout in checkouts:
        env = dict(os.environ, PYTHONPATH=str(checkout.resolve()))
        run = subprocess.run(
            [sys.executable, __file__, "--child", "--sizes", args.sizes, "--workdir", args.workdir],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(run.stdout))
    print("microseconds per message (best of 5)")
    for step in ("data reader", "maildir write"):
        for size in sizes:
            cells = "  ".join(f"{result[str(size)][step]:8.1f}" for result in results)
            print(f"  {step:14s} {size:>7d} B  {cells}")
    print("columns: " + ", ".join(str(c) for c in checkouts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
