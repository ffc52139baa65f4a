"""The per-folder message cache (``pymta-cache``) read through its mmap:
entries other processes append or drop, torn records, and batch queries.

A second :class:`MessageCache` on the same directory plays the other process:
it has its own descriptor, mapping and table, exactly as another pymta
process would.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pymta.mailstore import cache as cache_module
from pymta.mailstore.cache import CACHE_NAME, MessageCache

V = 7  # UIDVALIDITY


def _pair(tmp_path: Path) -> tuple[MessageCache, MessageCache]:
    return MessageCache(str(tmp_path)), MessageCache(str(tmp_path))


def test_hit_makes_no_system_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once scanned, an entry is read from the mapping: no stat, fstat or
    pread happens on a hit."""
    mine = MessageCache(str(tmp_path))
    mine.put(V, b"H", 1, b"Subject: one\n\n")
    assert mine.get(V, b"H", 1) == b"Subject: one\n\n"

    calls: list[str] = []

    def counting(name: str) -> object:
        real = getattr(os, name)

        def call(*args: object, **kwargs: object) -> object:
            calls.append(name)
            return real(*args, **kwargs)

        return call

    for name in ("stat", "fstat", "pread"):
        monkeypatch.setattr(cache_module.os, name, counting(name))
    value = mine.get(V, b"H", 1)
    monkeypatch.undo()
    assert value == b"Subject: one\n\n"
    assert calls == []


def test_entries_appended_by_another_process_are_found(tmp_path: Path) -> None:
    """An entry another process appends after our file was mapped is found
    on the miss (the mapping grows), and the entries mapped before still
    read the same bytes."""
    mine, other = _pair(tmp_path)
    mine.put(V, b"H", 1, b"one")
    assert mine.get(V, b"H", 1) == b"one"
    assert mine.get(V, b"H", 2) is None
    other.put_many(V, b"H", {uid: b"x%d" % uid * 500 for uid in range(2, 40)})
    assert mine.get(V, b"H", 39) == b"x39" * 500
    assert mine.get(V, b"H", 2) == b"x2" * 500
    assert mine.get(V, b"H", 1) == b"one"


def test_torn_record_is_served_only_once_complete(tmp_path: Path) -> None:
    """A record still being written by another process (the file ends
    inside it) is not an entry yet; once its last byte is there it is read
    whole."""
    mine = MessageCache(str(tmp_path))
    mine.put(V, b"H", 1, b"one")
    record = b"H 2 5\nhello\n"
    fd = os.open(tmp_path / CACHE_NAME, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, record[:9])
        assert mine.get(V, b"H", 2) is None
        assert mine.get(V, b"H", 1) == b"one"
        os.write(fd, record[9:])
    finally:
        os.close(fd)
    assert mine.get(V, b"H", 2) == b"hello"


def test_file_replaced_by_another_process(tmp_path: Path) -> None:
    """When another process compacts the file (tmp + rename), a hit still
    reads the old mapping (entries never go stale), and the next miss
    switches to the new file: entries dropped there are gone, new ones are
    found."""
    mine, other = _pair(tmp_path)
    mine.put_many(V, b"H", {1: b"one", 2: b"two"})
    assert mine.get(V, b"H", 1) == b"one"
    other.compact(V, keep={2})
    other.put(V, b"H", 3, b"three")
    assert mine.get(V, b"H", 1) == b"one"  # the old file, still mapped
    assert mine.get(V, b"H", 3) == b"three"  # a miss: the new file
    assert mine.get(V, b"H", 2) == b"two"
    assert mine.get(V, b"H", 1) is None


def test_new_uidvalidity_starts_an_empty_file(tmp_path: Path) -> None:
    """Entries belong to one UIDVALIDITY: asking with another one finds
    nothing, and the old file is replaced."""
    mine = MessageCache(str(tmp_path))
    mine.put(V, b"H", 1, b"one")
    assert mine.get(V, b"H", 1) == b"one"
    assert mine.get(V + 1, b"H", 1) is None
    assert (tmp_path / CACHE_NAME).read_bytes() == b"pymta-cache 1 V8\n"


def test_missing_is_one_look_per_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``missing`` gives the UIDs without an entry of that kind, in the order
    asked, including what another process appended, and stats the file
    once for the whole batch."""
    mine, other = _pair(tmp_path)
    mine.put_many(V, b"H", {uid: b"h" for uid in range(0, 100, 2)})
    mine.put(V, b"M", 1, b"{}")
    other.put(V, b"H", 51, b"h")
    stats = 0
    real_stat = os.stat

    def counting_stat(*args: object, **kwargs: object) -> os.stat_result:
        nonlocal stats
        stats += 1
        return real_stat(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cache_module.os, "stat", counting_stat)
    missing = mine.missing(V, b"H", [99, 1, 51, 3, 2, 200])
    monkeypatch.undo()
    assert missing == [99, 1, 3, 200]
    assert stats == 1
    assert mine.missing(V, b"M", [1, 2]) == [2]


def test_containing_finds_needles_in_entries_of_the_kind(tmp_path: Path) -> None:
    """containing() answers for a batch: the UIDs whose entry of the kind
    holds a needle, whatever its case; UIDs without an entry (not cached:
    they must be tested the slow way); never a match found only in another
    kind's entry or in a record's own "H uid length" line."""
    cache = MessageCache(str(tmp_path))
    cache.put_many(
        V,
        b"H",
        {1: b"Message-ID: <ABC@X>\n", 2: b"Subject: =?utf-8?q?x?=\n", 3: b"Subject: none\n"},
    )
    cache.put(V, b"M", 3, b'["abc@x"]')
    assert cache.containing(V, b"H", (b"abc@x",), [1, 2, 3, 4]) == {1, 4}
    assert cache.containing(V, b"H", (b"abc@x", b"=?"), [1, 2, 3]) == {1, 2}
    assert cache.containing(V, b"H", (b"h 1",), [1, 2, 3]) == set()


def test_containing_finds_a_needle_across_a_read_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is lower-cased a chunk at a time: a needle that straddles two
    chunks is still found, and entries appended by another process since the
    last look are searched too."""
    monkeypatch.setattr(cache_module, "SCAN_CHUNK", 16)
    mine, other = _pair(tmp_path)
    mine.put(V, b"H", 1, b"Subject: first\n")
    assert mine.containing(V, b"H", (b"needle-in-header",), [1]) == set()
    other.put(V, b"H", 2, b"Subject: a NEEDLE-in-header here\n")
    assert mine.containing(V, b"H", (b"needle-in-header",), [1, 2]) == {2}
