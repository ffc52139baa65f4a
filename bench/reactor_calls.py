#!/usr/bin/env python3
"""reactor_calls - cProfile's call counts per message on pymta's reactor thread.

SYNOPSIS
    python bench/reactor_calls.py [--messages 2000] [--connections 1]
        [--size 1024] [--warmup 200] [--workdir /var/tmp] [--checkout DIR]
        [--top 40] [--sort calls|tottime] [--save FILE]

DESCRIPTION
    Deterministic like bench/reactor_instructions.py, but by Python
    function: how many calls of each function one message costs the
    reactor thread (and their share of its own time, which the machine's
    load does move). It builds the bench's pymta instance (bench_pymta,
    bench_setup) from --checkout, sends --warmup messages with Postfix's
    smtp-source, switches cProfile on in the reactor thread (SIGUSR2: the
    twistd process runs under this file as a wrapper, which installs the
    handler before twistd starts), sends --messages messages of --size
    bytes over --connections connections, waits until all are in the
    Maildir, switches it off (SIGUSR2 again: the wrapper writes the
    statistics) and prints the total calls per message and the --top
    functions by calls (or by own time) per message. --save keeps the
    statistics for pstats (callers, callees).

    Only the reactor thread is profiled (cProfile follows the thread
    that enabled it; the signal handler runs in the main thread).

REQUIREMENTS
    root; Debian's postfix package (smtp-source).

EXAMPLES
    python bench/reactor_calls.py --connections 1
    python bench/reactor_calls.py --connections 1 --checkout /tmp/main-export
"""

from __future__ import annotations

import os
import pstats
import shutil
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Set in the wrapped twistd's environment: where the statistics go.
_STATS_ENV = "PYMTA_BENCH_PROFILE_STATS"


def _wrapped_twistd() -> None:
    """Run as ``python reactor_calls.py --wrap PYTHON -c CODE ARGS``: twistd
    in this process, with SIGUSR2 switching cProfile on, then off (and
    writing the statistics to the file named by the environment)."""
    import cProfile

    profiler = cProfile.Profile()
    state = {"on": False}

    def toggle(signum: int, frame: object) -> None:
        if not state["on"]:
            state["on"] = True
            profiler.enable()
        else:
            profiler.disable()
            state["on"] = False
            profiler.dump_stats(os.environ[_STATS_ENV])

    signal.signal(signal.SIGUSR2, toggle)
    # argv: --wrap, python, -c, code, twistd's arguments
    sys.argv = ["twistd", *sys.argv[5:]]
    from twisted.scripts.twistd import run

    run()


def main(argv: list[str] | None = None) -> int:
    from bench_load import load_arguments, load_directory, smtp_source_missing, warmed_up

    parser = load_arguments(__doc__.split("\n", 1)[0], messages=2000, warmup=200)
    parser.set_defaults(connections=1)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--sort", choices=("calls", "tottime"), default="calls")
    parser.add_argument("--save", type=Path, help="also keep the pstats file here")
    args = parser.parse_args(argv)
    if smtp_source_missing():
        return 2
    workdir = load_directory(args, "reactor-calls.")
    stats_file = workdir / "reactor.pstats"
    os.environ[_STATS_ENV] = str(stats_file)
    wrapper = (sys.executable, str(Path(__file__).resolve()), "--wrap")
    with warmed_up(args, workdir, wrapper) as run:
        os.kill(run.pid, signal.SIGUSR2)
        run.measure()
        os.kill(run.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 60
        while not stats_file.exists() or stats_file.stat().st_size == 0:
            if time.monotonic() > deadline:
                raise TimeoutError("no statistics written")
            time.sleep(0.1)  # written by the signal handler: no event to wait on
        time.sleep(0.5)
        stats = pstats.Stats(str(stats_file))
        if args.save is not None:
            shutil.copyfile(stats_file, args.save)
    n = args.messages
    raw: dict = stats.stats  # type: ignore[attr-defined]
    total_calls = sum(v[1] for v in raw.values())
    print(
        f"pymta ({args.checkout}): {n} x {args.size} B over {args.connections}"
        f" connection(s), reactor thread: {total_calls / n:,.1f} calls per message"
    )
    key = 1 if args.sort == "calls" else 2
    rows = sorted(raw.items(), key=lambda item: item[1][key], reverse=True)[: args.top]
    print(f"  {'calls/msg':>9} {'own µs/msg':>10}  function")
    for (filename, line, name), (_, calls, tottime, _, _) in rows:
        where = f"{Path(filename).name}:{line}" if line else filename
        print(f"  {calls / n:9.2f} {tottime / n * 1e6:10.2f}  {name} ({where})")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--wrap":
        _wrapped_twistd()
    else:
        sys.exit(main())
