#!/usr/bin/env python3
"""reactor_instructions - instructions per message of pymta's threads, under callgrind.

SYNOPSIS
    python bench/reactor_instructions.py [--messages 300] [--connections 20]
        [--size 1024] [--warmup 50] [--workdir /var/tmp] [--checkout DIR]

DESCRIPTION
    CPU seconds per message on a shared machine swing with the other
    programs' load (caches, frequency, hyperthreads): a 10% change in the
    reactor's work cannot be told from the noise. This bench counts
    instructions instead, which the load does not change.

    It builds the pymta instance of bench/smtp_bench.py (bench_pymta,
    bench_setup) and runs its twistd under

        valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes

    (start-up is not instrumented). After --warmup messages it switches
    the instrumentation on (callgrind_control -i on), sends --messages
    messages of --size bytes with Postfix's smtp-source over
    --connections connections, waits until all are in the Maildir, dumps
    the counts (callgrind_control -d) and prints, for each thread of the
    twistd process, the instructions executed per message: thread 1 is
    the reactor; the others are the queue's and the mailbox's sync
    threads and the thread pool. Kernel work (system calls) is not
    counted: bench/smtp_bench.py's CPU figures hold it.

    Under valgrind everything runs some fifty times slower, so group
    commit batches differ from a real run: compare checkouts with the same
    arguments (--checkout runs another tree's pymta, e.g. an export of
    main), never these counts with CPU times.

REQUIREMENTS
    root; Debian's valgrind (callgrind, callgrind_control) and postfix
    (smtp-source) packages.

EXAMPLES
    python bench/reactor_instructions.py
    python bench/reactor_instructions.py --checkout /tmp/main-export --messages 300
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_load import load_arguments, load_directory, smtp_source_missing, warmed_up

CALLGRIND = (
    "valgrind",
    "--tool=callgrind",
    "--instr-atstart=no",
    "--separate-threads=yes",
    "--dump-instr=no",
)


def totals(prefix: Path) -> dict[int, int]:
    """thread number -> instructions, from the dump's per-thread files."""
    found: dict[int, int] = {}
    for path in prefix.parent.glob(prefix.name + ".*.1-*"):
        thread = int(path.name.rsplit("-", 1)[1])
        match = re.search(r"^totals:\s+(\d+)", path.read_text(errors="replace"), re.MULTILINE)
        found[thread] = int(match.group(1)) if match else 0
    return found


def main(argv: list[str] | None = None) -> int:
    args = load_arguments(__doc__.split("\n", 1)[0], messages=300, warmup=50).parse_args(argv)
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: apt-get install -y valgrind", file=sys.stderr)
            return 2
    if smtp_source_missing():
        return 2
    workdir = load_directory(args, "reactor-instr.")
    out = workdir / "callgrind.out"
    wrapper = (*CALLGRIND, f"--callgrind-out-file={out}.%p")
    with warmed_up(args, workdir, wrapper, startup_timeout=900.0) as run:
        pid = str(run.pid)
        subprocess.run(
            ["callgrind_control", "-i", "on", pid],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        run.measure()
        subprocess.run(
            ["callgrind_control", "-d", "measured", pid],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        found = totals(out)
    print(
        f"pymta ({args.checkout}): {args.messages} x {args.size} B over"
        f" {args.connections} connection(s), instructions per message by thread"
    )
    for thread in sorted(found):
        role = "reactor" if thread == 1 else "worker"
        print(f"  thread {thread} ({role}): {found[thread] / args.messages:,.0f}")
    print(f"  all threads: {sum(found.values()) / args.messages:,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
