#!/usr/bin/env python3
"""intake_checkpoints - how long the queue's intake log checkpoints take under load.

SYNOPSIS
    python bench/intake_checkpoints.py
        [--messages 3000] [--size 1024] [--connections 1,20]
        [--workdir /var/tmp] [--pymta-main-cf LINE]...

DESCRIPTION
    Starts one pymta (bench/smtp_phases.py's, with its metrics endpoint),
    drives it with Postfix's smtp-source at each connection count, and
    prints from the queue barrier's metrics (pymta_sync_seconds) what the
    intake log (pymta/queue/intake.py) did meanwhile: the batches and
    their mean sync (the log's fdatasync, or the files' sync for what the
    log did not take), and the checkpoints (one syncfs of the queue file
    system and the log's header each): how many, their mean, and how many
    took longer than 5 and 10 ms (the histogram's buckets). A checkpoint
    runs on the barrier's thread after its batch's 250s, so commits that
    arrive during one wait for it: its length is the stall.

    Times are wall-clock on a shared machine: compare within one run.

REQUIREMENTS
    As bench/smtp_bench.py (root, Debian's postfix for smtp-source).
"""

from __future__ import annotations

import argparse
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_setup import DOMAIN, LISTEN_HOST, MailSetup
from smtp_bench import smtp_source_argv
from smtp_phases import MeasuredPymta


def queue_figures(server: MeasuredPymta) -> dict[str, float]:
    """The queue barrier's sync families, buckets included."""
    url = f"http://{LISTEN_HOST}:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    figures: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("pymta_sync", "pymta_syncs")) and 'barrier="queue"' in line:
            name, _, value = line.rpartition(" ")
            figures[name] = float(value)
    return figures


def report(before: dict[str, float], after: dict[str, float], connections: int, rate: float) -> str:
    """One line: the run's batches and checkpoints (see the module doc)."""

    def phase(name: str, suffix: str, le: str = "") -> float:
        # The exposition sorts the labels: barrier, le, phase.
        labels = (
            f'barrier="queue",le="{le}",phase="{name}"' if le else f'barrier="queue",phase="{name}"'
        )
        key = f"pymta_sync_seconds_{suffix}{{{labels}}}"
        return after.get(key, 0.0) - before.get(key, 0.0)

    syncs = phase("sync", "count")
    checkpoints = phase("checkpoint", "count")
    bounds = sorted(
        float(key.split('le="')[1].split('"')[0])
        for key in after
        if 'phase="checkpoint"' in key and "_bucket" in key and "+Inf" not in key
    )

    def over(limit: float) -> float:
        under = [bound for bound in bounds if bound <= limit]
        if not under:
            return checkpoints
        return checkpoints - phase("checkpoint", "bucket", repr(under[-1]))

    return (
        f"{connections:>3} connections: {rate:7.0f} accepted/s;"
        f" {syncs:6.0f} batches, sync {1e6 * phase('sync', 'sum') / max(syncs, 1):5.0f}"
        f" us mean; {checkpoints:3.0f} checkpoints,"
        f" {1e6 * phase('checkpoint', 'sum') / max(checkpoints, 1):6.0f} us mean,"
        f" {over(0.005):.0f} over 5 ms, {over(0.01):.0f} over 10 ms"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--messages", type=int, default=3000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--connections", default="1,20")
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    p.add_argument("--mailbox-user", default="nobody")
    p.add_argument("--pymta-main-cf", action="append", default=[], metavar="LINE")
    args = p.parse_args(argv)
    owner = pwd.getpwnam(args.mailbox_user)
    recipient = f"run1@{DOMAIN}"
    setup = MailSetup((recipient,), owner.pw_uid, owner.pw_gid)
    args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="intake-checkpoints.", dir=args.workdir))
    extra = "".join(f"{line}\n" for line in args.pymta_main_cf)
    server = MeasuredPymta(workdir, setup, extra_main_cf=extra)
    try:
        server.start()
        for connections in (int(n) for n in args.connections.split(",")):
            before = queue_figures(server)
            started = time.monotonic()
            subprocess.run(
                smtp_source_argv(server.port, connections, args.messages, args.size, recipient),
                check=True,
                stdout=subprocess.DEVNULL,
            )
            seconds = time.monotonic() - started
            after = queue_figures(server)

            print(report(before, after, connections, args.messages / seconds))
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
