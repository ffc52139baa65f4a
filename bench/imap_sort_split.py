#!/usr/bin/env python3
"""imap_sort_split - where a cold SORT's time goes, per message.

SYNOPSIS
    python bench/imap_sort_split.py [--messages 50000] [--workdir /var/tmp]

DESCRIPTION
    Writes --messages messages (those of bench/imap_sort_bench.py) into a
    Maildir cur/ and times, in this one process (CPU time, best of three),
    each step the store and SORT take for one message the first time a
    folder is sorted by a header criterion:

        read        open, one read, close (mailstore/digestwork.HeaderReader)
        fields      the sort fields found (imap/sortkeys.sort_header_fields)
        keys        every header key computed (imap/sortkeys.header_keys)
        pack        a worker's batch packed and unpacked (marshal; pickle
                    beside it, as the process pool would)
        kept line   the batch's line of pymta-sortkeys (JSON)
        sort        the sort itself: 100,000 keys ordered by SUBJECT
                    (imap/sort.sort_order, ranks made afresh)

    Prints microseconds per message for each, and the sum of the steps a
    worker process runs. Deterministic enough on a busy machine to compare
    two versions of the code (run each alone on the machine).

EXAMPLE
    python bench/imap_sort_split.py
"""

from __future__ import annotations

import argparse
import marshal
import os
import pickle
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from imap_sort_bench import message

from pymta.imap import sort as sort_module
from pymta.imap.sortcache import SORT_KEYS, FolderKeys
from pymta.imap.sortkeys import header_keys, sort_header_fields
from pymta.mailstore.digestwork import HeaderReader, kept_line


def best(work: Callable[[], Any], count: int) -> tuple[float, Any]:
    """Microseconds of CPU per message (best of three), and the result."""
    times = []
    result = None
    for _ in range(3):
        t0 = time.process_time()
        result = work()
        times.append(time.process_time() - t0)
    return min(times) / count * 1e6, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--workdir", default="/var/tmp")
    args = ap.parse_args()
    count = args.messages
    workdir = Path(tempfile.mkdtemp(prefix="imap-sort-split-", dir=args.workdir))
    try:
        (workdir / "cur").mkdir()
        names = []
        for i in range(1, count + 1):
            name = f"cur/{1_790_000_000 + i}.M{i}P1.bench:2,S"
            (workdir / name).write_bytes(message(i))
            names.append(name)
        reader = HeaderReader(str(workdir))
        directory = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            read, headers = best(lambda: [reader(n, directory) for n in names], count)
        finally:
            os.close(directory)
        fields, found = best(lambda: [sort_header_fields(h) for h in headers], count)
        keys, computed = best(lambda: [header_keys(f, 0) for f in found], count)
        values = list(enumerate(computed, 1))
        packed, _ = best(lambda: marshal.loads(marshal.dumps(values)), count)
        protocol = pickle.HIGHEST_PROTOCOL
        pickled, _ = best(lambda: pickle.loads(pickle.dumps(values, protocol)), count)
        line, _ = best(lambda: kept_line(SORT_KEYS, values), count)

        kept = FolderKeys(1)
        kept.keep_many(dict(values), [u for u, _ in values])
        keyed = sort_module.Keyed(kept, [u for u, _ in values], [u for u, _ in values])
        criteria = [sort_module.SortKey("SUBJECT", False)]

        def order() -> list[int]:
            kept._ranks.clear()  # ranks made afresh, as the first time
            return sort_module.sort_order(keyed, criteria)

        ordering, _ = best(order, count)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"cold SORT, {count} messages, microseconds of CPU per message:")
    for label, value in (
        ("read (open, read, close)", read),
        ("fields", fields),
        ("keys", keys),
        ("pack (marshal)", packed),
        ("  (pickle instead)", pickled),
        ("kept line (JSON)", line),
        ("sort (SUBJECT, ranks afresh)", ordering),
    ):
        print(f"  {label:<30} {value:7.2f}")
    print(f"  {'a worker, per message':<30} {read + fields + keys + packed + line:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
