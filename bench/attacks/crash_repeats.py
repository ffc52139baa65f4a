#!/usr/bin/env python3
"""crash_repeats - kill -9 under load, count deliveries repeated after a restart.

SYNOPSIS
    python bench/attacks/crash_repeats.py [--runs 50] [--workdir /var/tmp]

DESCRIPTION
    Issue 11's crash case. Each run starts its own pymta on loopback
    (tests/harness.py: twistd from this checkout, a temporary directory),
    sends bursts of 20 messages per connection from three smtplib clients,
    kills the server with SIGKILL once N deliveries are logged
    ``status=sent`` (N differs from run to run, so the kill lands at many
    points of the load), restarts it, waits until every acknowledged
    message has left the queue and counts each message's copies in the
    Maildir (tests/crashload.py).

    Prints one line: the case, HELD when no message logged as sent before
    a kill arrived twice and none acknowledged was lost (else NOT HELD),
    and the figures: repeats of logged-as-sent deliveries, all extra
    copies (deliveries in flight at a kill may repeat: at-least-once),
    and the messages acknowledged. Bounded: --runs runs of at most 180
    messages each.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.crashload import crash_run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--runs", type=int, default=50, help="kill -9 runs")
    parser.add_argument("--workdir", default=None, help="temp dir parent (a real disk)")
    args = parser.parse_args()
    repeats = extra = lost = acknowledged = sent = 0
    with tempfile.TemporaryDirectory(prefix="crash-repeats-", dir=args.workdir) as tmp:
        for run in range(args.runs):
            result = crash_run(Path(tmp) / f"run{run}", kill_after=1 + (run * 7) % 60)
            repeats += len(result.repeated_after_sent)
            extra += result.extra_copies
            lost += len(result.lost)
            acknowledged += len(result.acknowledged)
            sent += len(result.sent_before_kill)
    held = "HELD" if repeats == 0 and lost == 0 else "NOT HELD"
    print(
        f"crash_repeats {held} repeats_of_logged_sent={repeats}/{sent}"
        f" extra_copies={extra} lost={lost} acknowledged={acknowledged} runs={args.runs}"
    )
    return 0 if held == "HELD" else 1


if __name__ == "__main__":
    sys.exit(main())
