"""What SORT and THREAD compared last time, kept per folder and message.

A message never changes under its UID (RFC 3501 2.3.1.1), so the keys a
SORT or THREAD read from its header (base subject, sent date, first
address, threading ids) are kept after the first time, as Dovecot keeps
them in its cache file: a client that sorts the same folder again (every
view change of a mail client) is answered from memory without reading a
header. :func:`folder_keys` gives a folder's :class:`FolderKeys` (keys by
criterion name, then UID), started afresh when the folder's UIDVALIDITY
changed.

Bounded: at most :data:`MAX_ENTRIES` keys in the process, over every
folder; the folder sorted least recently is dropped whole first, and a
folder's keys of expunged messages are dropped when they would make up
half of what it holds. Index-only criteria (ARRIVAL, SIZE) are not kept.

Untrusted input: none (keys are computed elsewhere). Reactor thread only.
Writes and logs nothing.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Collection
from typing import Any

#: Keys kept in one process (about 100 bytes each: 100,000 messages sorted
#: by two criteria and threaded take about 30 MB).
MAX_ENTRIES = 600_000


class FolderKeys:
    """One folder's keys: ``keys[name][uid]``."""

    def __init__(self, uidvalidity: int) -> None:
        self.uidvalidity = uidvalidity
        self.keys: dict[str, dict[int, Any]] = {}

    def of(self, name: str) -> dict[int, Any]:
        table = self.keys.get(name)
        if table is None:
            table = self.keys[name] = {}
        return table

    def size(self) -> int:
        return sum(len(t) for t in self.keys.values())

    def forget_except(self, uids: Collection[int]) -> None:
        """Drop the keys of messages no longer in the folder."""
        for name, table in self.keys.items():
            if len(table) > 2 * len(uids):
                keep = set(uids)
                self.keys[name] = {u: k for u, k in table.items() if u in keep}


_folders: OrderedDict[int, tuple[weakref.ref[Any], FolderKeys]] = OrderedDict()


def folder_keys(folder: Any, uids: Collection[int]) -> FolderKeys:
    """The keys kept for ``folder`` (whose messages are now ``uids``),
    marked as used most recently."""
    key = id(folder)
    held = _folders.get(key)
    alive = held is not None and held[0]() is folder
    if held is not None and alive and held[1].uidvalidity == folder.uidvalidity:
        _folders.move_to_end(key)
        keys = held[1]
        keys.forget_except(uids)
        return keys
    keys = FolderKeys(folder.uidvalidity)
    _folders[key] = (weakref.ref(folder, lambda _: _folders.pop(key, None)), keys)
    _folders.move_to_end(key)
    return keys


def trim() -> None:
    """Drop whole folders, least recently sorted first, until at most
    :data:`MAX_ENTRIES` keys are kept (the one in use last stays)."""
    total = sum(keys.size() for _, keys in _folders.values())
    while total > MAX_ENTRIES and len(_folders) > 1:
        _, (_, keys) = _folders.popitem(last=False)
        total -= keys.size()
    if total > MAX_ENTRIES and _folders:
        # One folder alone over the limit: keep none of it.
        _folders.clear()


def clear() -> None:
    """Forget everything (tests)."""
    _folders.clear()
