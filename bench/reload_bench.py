#!/usr/bin/env python3
"""reload_bench - how long a SIGHUP reload takes, and that sessions go on.

SYNOPSIS
    python bench/reload_bench.py [--reloads 10] [--listeners 3] [--processes 1]

DESCRIPTION
    On loopback only: starts a pymta ("twistd -n pymta" through
    tests/harness.py) with LISTENERS smtpd listeners on kernel-chosen ports
    and PROCESSES reactor processes, opens one SMTP session that stays open,
    then sends SIGHUP RELOADS times, each after changing smtpd_banner, and
    times each from the signal until every process has logged
    "reload: done" (the master's reload runs in its reactor thread: that
    is how long it does not serve its clients). After the last reload the
    open session sends a message, which must be accepted.

    Prints one line: reloads, listeners, processes, median and worst
    seconds per reload, and whether the open session's message was
    accepted.
"""

from __future__ import annotations

import argparse
import signal
import smtplib
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness import DEFAULT_MASTER_CF, PymtaServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reloads", type=int, default=10)
    parser.add_argument("--listeners", type=int, default=3)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    extra = "".join(f"127.0.0.{n}:0 inet n - n - - smtpd\n" for n in range(2, args.listeners + 1))
    with tempfile.TemporaryDirectory(prefix="pymta-reload-") as root:
        server = PymtaServer(
            Path(root),
            main_cf_extra=f"pymta_processes = {args.processes}\n",
            master_cf=DEFAULT_MASTER_CF + extra,
        )
        with server:
            server.start()
            if args.processes > 1:
                server.wait_for_log(r"worker \d+ running", count=args.processes - 1)
            session = smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=60)
            session.ehlo("bench.test")
            main_cf = server.config_dir / "main.cf"
            base = main_cf.read_text()
            assert server.process is not None
            times: list[float] = []
            for n in range(1, args.reloads + 1):
                main_cf.write_text(base + f"smtpd_banner = $myhostname ESMTP reload {n}\n")
                started = time.monotonic()
                server.process.send_signal(signal.SIGHUP)
                server.wait_for_log(r"reload: done", count=n * args.processes)
                times.append(time.monotonic() - started)
            session.mail("bench@example.test")
            session.rcpt("alice@example.test")
            code, _ = session.data(b"Subject: bench\r\n\r\nafter the reloads\r\n")
            session.quit()
            server.stop()
    print(
        f"reloads={args.reloads} listeners={args.listeners} processes={args.processes} "
        f"median={statistics.median(times):.3f}s worst={max(times):.3f}s "
        f"open_session_message={'accepted' if code == 250 else f'refused {code}'}"
    )
    return 0 if code == 250 else 1


if __name__ == "__main__":
    sys.exit(main())
