"""Benchmark of the Maildir mail store on a large folder.

Creates a folder of N small messages (default 100,000) dropped into new/ as
Postfix's virtual agent would (no ,S=/,W= hints, so the first scan reads
every file), then times: the first index build, a re-open by a new store
(a restart: reads the index only), listing, STATUS, a header search that
fills the header cache, the same search again and after a re-open (from the
cache), one append and one flag change on the full folder.

    PYTHONPATH=. python bench/mailstore_bench.py [--count N] [--dir DIR] [--fsync]

Prints one line per step; no step is asserted. Figures depend on the disk
and the load. Measured on the 2-core build machine (ext4, other jobs
running), 100,000 messages: first build 3.2-3.8 s (every file opened for
its CRLF size), re-open 0.55-0.75 s (index load about 0.4 s, plus a
directory scan when the last one is not known to be current), listing and
STATUS 0.01 s, header search 2.8 s cold, 0.22 s warm, 0.30 s after a
re-open; append and flag change about 1 ms without fsync.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import TypeVar

from twisted.internet import reactor

from pymta.mailstore.interface import FlagMode, IFolder
from pymta.mailstore.maildir import MaildirStore

T = TypeVar("T")


def timed(label: str, fn: Callable[[], T]) -> T:
    start = time.perf_counter()
    result = fn()
    print(f"{label:<44} {time.perf_counter() - start:8.3f} s")
    return result


def populate(root: str, count: int) -> None:
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    base = int(time.time()) - count
    for i in range(count):
        subject = "needle" if i % 1000 == 0 else f"message {i}"
        content = (
            f"From: sender{i % 97}@example.org\nTo: user@example.net\n"
            f"Subject: {subject}\nMessage-ID: <{i}@example.org>\n\nbody {i}\n"
        ).encode()
        name = f"{base + i}.V801I{i}M0.bench"
        with open(os.path.join(root, "new", name), "wb") as f:
            f.write(content)


def search(folder: IFolder) -> int:
    return sum(1 for m in folder.messages() if b"Subject: needle" in folder.header_bytes(m.uid))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--fsync", action="store_true", help="fsync as in production")
    args = parser.parse_args()
    work = args.dir or tempfile.mkdtemp(prefix="mailstore-bench-")
    root = os.path.join(work, "Maildir")
    shutil.rmtree(root, ignore_errors=True)
    try:
        timed(f"create {args.count} files in new/", lambda: populate(root, args.count))

        def fresh() -> IFolder:
            store = MaildirStore(reactor, hostname="bench", fsync=args.fsync)
            return store.open_user("bench", root).folder("INBOX")

        folder = fresh()
        msgs = timed("first index build (scan + number all)", folder.messages)
        assert len(msgs) == args.count
        size = os.path.getsize(os.path.join(root, "pymta-uidlist"))
        print(f"{'index size':<44} {size / 1e6:8.1f} MB")
        folder = fresh()
        timed("re-open (new store: load index)", folder.messages)
        timed("list again (in memory)", folder.messages)
        timed("status", folder.status)
        timed("refresh with nothing changed", folder.refresh)
        hits = timed("header search, cold (fills cache)", lambda: search(folder))
        timed("header search, warm", lambda: search(folder))
        folder = fresh()
        folder.messages()
        timed("header search after re-open (cache file)", lambda: search(folder))
        print(f"{'  matches':<44} {hits:8d}")
        uid = timed("append one message", lambda: folder.append(b"Subject: x\n\ny\n"))
        timed("set \\Seen on one message", lambda: folder.set_flags(uid, ["\\Seen"], FlagMode.ADD))
        timed("refresh after those two (own) changes", folder.refresh)
        timed("claim_recent (new/ -> cur/ for all)", folder.claim_recent)
        folder = fresh()
        timed("re-open after changes", folder.messages)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
