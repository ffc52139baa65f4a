#!/usr/bin/env python3
"""first_scan - a folder's first scan (what a first SELECT does), in process.

SYNOPSIS
    python bench/first_scan.py MAILDIR [--messages 100000] [--skip-scan]

DESCRIPTION
    MAILDIR, made with --messages messages in cur/ (Dovecot's names, as
    bench/imap_sort_bench.py writes them) when it does not exist, loses its
    pymta index files; then the Maildir store opens its INBOX and does what
    IMAP SELECT asks of it: changed_on_disk, rescan (the first scan:
    listing, numbering, the index written), summary, status; then the
    records (messages), which a SELECT has made after its answer. Prints
    the CPU seconds (user and system) of the scan's phases: the general
    scan's listing of new/ and cur/ (_list), names parsed and put in
    arrival order (_measure_new) and numbering with the index write
    (_scan_locked, which holds the column path's too); the column path's
    listing parsed and ordered (list_columns) and numbering with the
    index lines and write (_number_listing); the summary and status, and
    the records made.

    With --skip-scan it stops before opening the folder: the same
    interpreter start and imports, for a baseline. Instruction counts of
    the scan alone are the difference of two runs:

        valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \\
            python3 bench/first_scan.py DIR --messages 20000 [--skip-scan]

    (python3 the interpreter itself, not a wrapper script; PYTHONHASHSEED=0
    makes the counts repeat). System calls: ``strace -f -c -e
    trace=newfstatat,openat,getdents64`` the same way.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import reactor

from pymta.mailstore import folder_scan
from pymta.mailstore.maildir import MaildirStore

#: The general scan's phases, then a first scan's column path's
#: (pymta.mailstore.freshscan): its listing parsed and ordered, and
#: the numbering with the index lines and their write.
PHASES = ("_list", "_measure_new", "_scan_locked", "list_columns", "_number_listing")


def write_maildir(path: Path, count: int) -> None:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    start = 1_790_000_000
    for i in range(1, count + 1):
        data = f"From: a{i}@example.org\nSubject: message {i}\n\nBody {i}.\n".encode()
        name = f"{start + i}.M{i}P1.bench,S={len(data)},W={len(data) + 4}:2,S"
        (path / "cur" / name).write_bytes(data)


def timed_phases(spent: dict[str, float]) -> None:
    """Wrap the scan's phases so that their CPU seconds add up in ``spent``."""
    for name in PHASES:
        owner: Any = folder_scan if name == "list_columns" else folder_scan.FolderScan
        real: Callable[..., Any] = getattr(owner, name)

        def wrapper(
            self: Any, *args: Any, _real: Any = real, _name: str = name, **kwargs: Any
        ) -> Any:
            t0 = time.process_time()
            try:
                return _real(self, *args, **kwargs)
            finally:
                spent[_name] = spent.get(_name, 0.0) + time.process_time() - t0

        if owner is folder_scan:
            # A function, not a method: no self to pass on.
            def function(*args: Any, _real: Any = real, _name: str = name) -> Any:
                t0 = time.process_time()
                try:
                    return _real(*args)
                finally:
                    spent[_name] = spent.get(_name, 0.0) + time.process_time() - t0

            setattr(owner, name, function)
        else:
            setattr(owner, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("maildir", type=Path)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--skip-scan", action="store_true")
    args = ap.parse_args()
    if not (args.maildir / "cur").is_dir():
        write_maildir(args.maildir, args.messages)
        # Quiet directories: their mtimes are trusted at once.
        for sub in ("new", "cur"):
            os.utime(args.maildir / sub, (1_000_000_000, 1_000_000_000))
    for name in os.listdir(args.maildir):
        if name.startswith("pymta-"):
            os.unlink(args.maildir / name)
    store = MaildirStore(reactor, hostname="bench", fsync=False)
    if args.skip_scan:
        return
    spent: dict[str, float] = {}
    timed_phases(spent)
    t0 = time.process_time()
    folder = store.open_user("bench", str(args.maildir)).folder("INBOX")
    folder.changed_on_disk()
    folder.rescan()
    t1 = time.process_time()
    folder.summary()
    folder.status()
    t2 = time.process_time()
    count = len(folder.messages())
    t3 = time.process_time()
    phases = ", ".join(f"{name} {spent.get(name, 0.0):.3f}" for name in PHASES)
    print(
        f"{count} messages: scan {t1 - t0:.3f} s CPU ({phases});"
        f" summary + status {t2 - t1:.3f}; records made {t3 - t2:.3f}"
    )


if __name__ == "__main__":
    main()
