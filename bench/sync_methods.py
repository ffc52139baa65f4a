#!/usr/bin/env python3
"""sync_methods - pymta's group-commit settings side by side under SMTP load.

SYNOPSIS
    python bench/sync_methods.py [--messages 2000] [--sizes 1024]
        [--connections 1,20] [--repeat 3] [--variant NAME=LINE[;LINE]]...
        [--workdir /var/tmp]

DESCRIPTION
    Runs bench/smtp_bench.py --only pymta once per variant (a set of
    main.cf lines), the variants interleaved and their order rotated in
    each of --repeat rounds, so that a shared machine's changing load hits
    them alike, and prints each variant's median delivered messages per
    second and CPU milliseconds per message per cell (size, connections).

    The default variants are the sync methods of pymta.sync:

        syncfs   pymta_sync_method = syncfs
        fsync    pymta_sync_method = fsync

    More with --variant, e.g. --variant 'fsync0=pymta_sync_method =
    fsync;pymta_mailbox_sync_delay = 0'.  The figures compare variants of
    one run only; quote Postfix from bench/smtp_bench.py.

    Time it alone on the machine: python
    bench/sync_methods.py ...

REQUIREMENTS
    As bench/smtp_bench.py (root, a real disk under /var/tmp).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_VARIANTS = {
    "syncfs": ["pymta_sync_method = syncfs"],
    "fsync": ["pymta_sync_method = fsync"],
}


def run_variant(lines: list[str], args: argparse.Namespace) -> list[dict[str, object]]:
    command = [
        sys.executable,
        str(HERE / "smtp_bench.py"),
        "--only",
        "pymta",
        "--json",
        "--messages",
        str(args.messages),
        "--sizes",
        args.sizes,
        "--connections",
        args.connections,
        "--workdir",
        str(args.workdir),
    ]
    for line in lines:
        command += ["--pymta-main-cf", line]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    runs: list[dict[str, object]] = json.loads(done.stdout)["runs"]
    return runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--sizes", default="1024")
    p.add_argument("--connections", default="1,20")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    p.add_argument("--variant", action="append", default=[], metavar="NAME=LINE[;LINE]")
    args = p.parse_args(argv)
    variants = dict(DEFAULT_VARIANTS)
    if args.variant:
        variants = {}
        for spec in args.variant:
            name, _, lines = spec.partition("=")
            variants[name] = [line.strip() for line in lines.split(";") if line.strip()]
    names = list(variants)
    figures: dict[tuple[str, int, int], list[tuple[float, float]]] = {}
    for round_number in range(args.repeat):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            for run in run_variant(variants[name], args):
                key = (name, int(run["size"]), int(run["connections"]))  # type: ignore[call-overload]
                rate = float(run["rate"] or 0.0)  # type: ignore[arg-type]
                cpu = float(run["cpu_ms_per_message"])  # type: ignore[arg-type]
                figures.setdefault(key, []).append((rate, cpu))
                print(
                    f"round {round_number + 1} {name:10} {key[1]:>6} B {key[2]:>3} conn: "
                    f"{rate:7.0f} msg/s {cpu:5.2f} ms CPU/msg",
                    file=sys.stderr,
                    flush=True,
                )
    print(f"{'variant':<10} {'size':>6} {'conns':>5} | {'median msg/s':>12} {'runs':<24} | cpu ms")
    for (name, size, conns), values in sorted(
        figures.items(), key=lambda kv: kv[0][1:] + kv[0][:1]
    ):
        rates = [v[0] for v in values]
        cpu = statistics.median(v[1] for v in values)
        shown = ",".join(f"{r:.0f}" for r in rates)
        median = statistics.median(rates)
        print(f"{name:<10} {size:>6} {conns:>5} | {median:>12.0f} {shown:<24} | {cpu:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
