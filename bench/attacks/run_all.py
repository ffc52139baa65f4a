#!/usr/bin/env python3
"""run_all - the reliability bench: every hostile-load attack, one line each.

SYNOPSIS
    python bench/attacks/run_all.py [--quick]

DESCRIPTION
    Runs each replay under bench/attacks/ in turn (each starts its own
    pymta on loopback and stops it) and prints its verdict lines: the case,
    HELD or NOT HELD, and the figure (stall time of other sessions, RSS
    growth, guesses per second, repeats after kills, ...). Not run in CI:
    the whole bench takes several minutes and wants an otherwise idle
    machine. --quick runs shorter versions (fewer messages, shorter
    times) whose figures are rougher but whose verdicts mean the same.

    Replays that need root (tmpfs mounts) are skipped when not root.
    Exits 1 when any case is not held or a replay fails.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: (script, full arguments, --quick arguments, needs root)
REPLAYS: list[tuple[str, list[str], list[str], bool]] = [
    ("protocol_cases.py", [], [], False),
    ("fast_guess.py", ["--give-up", "0.3", "--seconds", "30", "--warmup", "10"],
     ["--give-up", "0.3", "--seconds", "10", "--warmup", "5"], False),
    ("fast_guess.py",
     ["--protocol", "imap", "--give-up", "0.3", "--seconds", "30", "--warmup", "10"],
     ["--protocol", "imap", "--give-up", "0.3", "--seconds", "10", "--warmup", "5"], False),
    ("smtp_guess.py", [], ["--guesses", "8", "--auth-limit", "5", "--max-delay", "2s"], False),
    ("slowloris.py", ["--hold", "10"], ["--connections", "200", "--hold", "3"], False),
    ("pregreet_flood.py", [], ["--connections", "400"], False),
    ("slowloris.py", ["--protocol", "pop3", "--hold", "10"],
     ["--protocol", "pop3", "--connections", "200", "--hold", "3"], False),
    ("search_stall.py", [], ["--messages", "2000", "--duration", "8"], False),
    ("fetch_memory.py", [], ["--messages", "20"], False),
    ("data_memory.py", [], ["--connections", "10"], False),
    ("crash_repeats.py", [], ["--runs", "5"], False),
    ("full_queue.py", [], [], True),
    ("full_mailstore.py", [], [], True),
]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    failed = 0
    for script, full, quick, needs_root in REPLAYS:
        path = HERE / script
        if not path.exists():
            print(f"{script:<18} SKIPPED   not in this checkout", flush=True)
            continue
        if needs_root and os.geteuid() != 0:
            print(f"{script:<18} SKIPPED   needs root (mounts a tmpfs)", flush=True)
            continue
        argv = [sys.executable, str(path), *(quick if args.quick else full)]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
        lines = [line for line in result.stdout.splitlines() if "HELD" in line]
        for line in lines:
            print(line, flush=True)
        if result.returncode != 0 or not lines:
            failed += 1
            if not lines:
                tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
                print(f"{script:<18} FAILED    exit {result.returncode}: {' / '.join(tail)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
