"""What SORT and THREAD compared last time, kept per folder and message.

A message never changes under its UID (RFC 3501 2.3.1.1), so what a SORT
or THREAD read of it is kept after the first time, as Dovecot keeps its
sort and thread data in its index and cache files:

- the header keys of each message (:func:`pymta.imap.sortkeys.header_keys`:
  sent date, base subject, first addresses, display names, Message-ID,
  references; all of them from one read of the header), and, until those
  are there, the few a first SORT or THREAD of a big folder asked for
  alone (:attr:`FolderKeys.columns`; every key is asked in the
  background once the folder is idle: :attr:`FolderKeys.filling`,
  :attr:`FolderKeys.fill_call`);
- its index keys (INTERNALDATE and RFC822.SIZE in seconds and octets);
- for each string criterion, the rank of each value among the values
  sorted last time (:meth:`FolderKeys.ranks`): a sort then compares small
  integers instead of strings, as Dovecot compares the "sort ids" it keeps
  in its index;
- the last few answers (:meth:`FolderKeys.result`): the order of a SORT, the
  text of a THREAD, valid while the same messages are found and numbered
  the same (a client re-sorting its view of an unchanged folder).

A client that sorts the same folder again (every view change of a mail
client), from this session or another of the same process, is answered
from memory without reading a header.

The header keys come from the mail store (:data:`SORT_KEYS`, a
:class:`SortKeysDigest` of :mod:`pymta.imap.sortdigest`, handed to its
``header_digests``), which reads
the headers where it likes and keeps the keys on disk (the Maildir store:
``pymta-sortkeys`` in the folder's directory, as Dovecot keeps them in its
index files, :mod:`pymta.mailstore.digests`), so a restarted server or
another process sorts a folder it never sorted without reading its
messages (only whole keys are kept there: :class:`SortColumnsDigest`'s
values never are). The kept records: a line ``pymta-sortkeys 2 V<uidvalidity>``,
then lines each holding a JSON list of messages ``[uid, [date, subject,
is_reply, from, to, cc, displayfrom, displayto, message_id,
[references]]]`` (ASCII, escaped; a file of version 1 is made again).
:func:`folder_keys` gives a folder's :class:`FolderKeys`, started afresh
when the folder's UIDVALIDITY changed.

Bounded: at most :data:`MAX_ENTRIES` messages' keys in the process, over
every folder; the folder sorted least recently is dropped whole first, and
a folder's keys of expunged messages are dropped when they would make up
half of what it holds. At most :data:`MAX_RESULTS` answers per folder.

Threads: keys are stored from the reactor thread; :meth:`FolderKeys.ranks`
may run in a worker thread (it only reads the values it is given and
replaces a whole table); :data:`SORT_KEYS` runs in the store's worker
processes and threads. Untrusted input: the kept records (their owner
may write anything: every record's shape and types are checked by
:meth:`SortKeysDigest.decode`, a bad file is not used). Writes nothing
itself; logs nothing.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall

from pymta.imap.sortdigest import FILENAME, MAGIC, SORT_KEYS, SortColumnsDigest, SortKeysDigest
from pymta.imap.sortkeys import HeaderKeys

__all__ = ["FILENAME", "MAGIC", "SORT_KEYS", "FolderKeys", "SortColumnsDigest", "SortKeysDigest"]

#: Messages whose keys are kept in one process (a message's header keys
#: take about 400 bytes: 100,000 messages about 40 MB).
MAX_ENTRIES = 300_000

#: Answers kept per folder.
MAX_RESULTS = 8


class FolderKeys:
    """One folder's keys: ``headers[uid]``, ``index[uid]``, ranks and answers."""

    def __init__(self, uidvalidity: int) -> None:
        self.uidvalidity = uidvalidity
        self.headers: dict[int, HeaderKeys] = {}
        #: (INTERNALDATE in seconds, RFC822.SIZE) by UID.
        self.index: dict[int, tuple[int, int]] = {}
        #: Some keys only, by position, by UID: what a first SORT asked
        #: for (:class:`SortColumnsDigest`) until every key is there.
        self.columns: dict[int, dict[int, Any]] = {}
        #: Every key of the messages that have only some being asked of
        #: the store meanwhile (:meth:`filled` fires when it is done).
        self.filling: set[int] = set()
        self._filled: list[Deferred[None]] = []
        #: The call that will ask for every key of the messages with only
        #: some (:func:`pymta.imap.sort.fill_keys`).
        self.fill_call: IDelayedCall | None = None
        self._ranks: dict[int, dict[Any, int]] = {}
        self._results: OrderedDict[Hashable, tuple[list[int], list[int], Any]] = OrderedDict()
        # One string object for equal values (a sender's address in 5,000
        # messages is kept once).
        self._strings: dict[str, str] = {}

    def keep_many(self, computed: dict[int, HeaderKeys], uids: Sequence[int]) -> list[int]:
        """Keep the header keys of those of ``uids`` in ``computed``; the
        others are returned (gone)."""
        same = self._strings.setdefault
        headers = self.headers
        missing: list[int] = []
        for uid in uids:
            keys = computed.get(uid)
            if keys is None:
                missing.append(uid)
                continue
            headers[uid] = _interned(keys, same)
        return missing

    def keep_columns(
        self, positions: tuple[int, ...], computed: dict[int, tuple[Any, ...]], uids: Sequence[int]
    ) -> list[int]:
        """Keep the keys at ``positions`` of those of ``uids`` in
        ``computed`` (as :class:`SortColumnsDigest` gives them); the
        others are returned (gone)."""
        same = self._strings.setdefault
        columns = [self.columns.setdefault(p, {}) for p in positions]
        missing: list[int] = []
        for uid in uids:
            values = computed.get(uid)
            if values is None:
                missing.append(uid)
                continue
            for column, value in zip(columns, values, strict=True):
                column[uid] = same(value, value) if type(value) is str else value
        return missing

    def missing_columns(self, uids: Sequence[int], positions: tuple[int, ...]) -> tuple[int, ...]:
        """Those of ``positions`` that some of ``uids`` have no key at."""
        headers = self.headers
        lacking = [u for u in uids if u not in headers]
        missing = []
        for p in positions:
            column = self.columns.get(p)
            if column is None or any(u not in column for u in lacking):
                missing.append(p)
        return tuple(missing)

    def partial_uids(self) -> list[int]:
        """The messages with some keys kept but not all, not being asked."""
        headers, filling = self.headers, self.filling
        uids: set[int] = set()
        for column in self.columns.values():
            uids.update(column)
        return sorted(u for u in uids if u not in headers and u not in filling)

    def has_columns(self, uid: int, positions: Collection[int]) -> bool:
        """Whether the keys at ``positions`` of ``uid`` are kept."""
        if uid in self.headers:
            return True
        columns = self.columns
        for p in positions:
            column = columns.get(p)
            if column is None or uid not in column:
                return False
        return True

    def start_filling(self, uids: Collection[int]) -> None:
        """Every key of ``uids`` is being asked of the store."""
        self.filling.update(uids)

    def done_filling(self, uids: Collection[int]) -> None:
        """The store answered for ``uids`` (whatever it kept is in
        :attr:`headers`); those waiting for it go on once nothing is
        being asked any more, and keys kept only in part are dropped
        for the messages that now have them all."""
        self.filling.difference_update(uids)
        if self.filling:
            return
        headers = self.headers
        # Replaced, not changed: a sort in a worker thread may read them.
        self.columns = {
            p: {u: v for u, v in column.items() if u not in headers}
            for p, column in self.columns.items()
        }
        self.columns = {p: c for p, c in self.columns.items() if c}
        waiting, self._filled = self._filled, []
        for d in waiting:
            d.callback(None)

    def filled(self) -> Deferred[None]:
        """Fires once every key being asked of the store is there."""
        if not self.filling:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._filled.append(d)
        return d

    def keep(self, uid: int, keys: HeaderKeys) -> None:
        """Keep a message's header keys."""
        self.headers[uid] = _interned(keys, self._strings.setdefault)

    def size(self) -> int:
        return max(len(self.headers), len(self.index))

    def forget_except(self, uids: Collection[int]) -> None:
        """Drop the keys of messages no longer in the folder."""
        if max(len(self.headers), len(self.index)) > 2 * len(uids):
            keep = set(uids)
            self.headers = {u: k for u, k in self.headers.items() if u in keep}
            self.index = {u: k for u, k in self.index.items() if u in keep}
            self.columns = {
                p: {u: v for u, v in column.items() if u in keep}
                for p, column in self.columns.items()
            }
            self._strings = {}

    def ranks(self, field: int, values: Sequence[Any]) -> list[int]:
        """The rank of each of ``values`` among them (equal values, equal
        ranks; order kept): from the table made last time for ``field``
        when it holds them all, else from a new one."""
        table = self._ranks.get(field)
        if table is not None:
            try:
                return list(map(table.__getitem__, values))
            except KeyError:
                pass  # a value not seen last time
        table = {value: rank for rank, value in enumerate(sorted(set(values)))}
        self._ranks[field] = table
        return list(map(table.__getitem__, values))

    def result(self, key: Hashable, uids: list[int], numbers: list[int]) -> Any:
        """The answer kept for ``key`` when it was made for these messages
        with these numbers, else None."""
        held = self._results.get(key)
        if held is None or held[0] != uids or held[1] != numbers:
            return None
        self._results.move_to_end(key)
        return held[2]

    def keep_result(self, key: Hashable, uids: list[int], numbers: list[int], value: Any) -> None:
        self._results[key] = (list(uids), list(numbers), value)
        self._results.move_to_end(key)
        while len(self._results) > MAX_RESULTS:
            self._results.popitem(last=False)


_folders: OrderedDict[int, tuple[weakref.ref[Any], FolderKeys]] = OrderedDict()


def folder_keys(folder: Any, uidvalidity: int, uids: Collection[int]) -> FolderKeys:
    """The keys kept for ``folder`` (the store's folder object, one for
    every session; whose messages are now ``uids``), marked as used most
    recently."""
    key = id(folder)
    held = _folders.get(key)
    alive = held is not None and held[0]() is folder
    if held is not None and alive and held[1].uidvalidity == uidvalidity:
        _folders.move_to_end(key)
        keys = held[1]
        keys.forget_except(uids)
        return keys
    keys = FolderKeys(uidvalidity)
    _folders[key] = (weakref.ref(folder, lambda _: _folders.pop(key, None)), keys)
    _folders.move_to_end(key)
    return keys


def trim() -> None:
    """Drop whole folders, least recently sorted first, until at most
    :data:`MAX_ENTRIES` messages' keys are kept (the one in use last stays)."""
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


def _interned(keys: HeaderKeys, same: Callable[[str, str], str]) -> HeaderKeys:
    """``keys`` with each string key replaced by the one object kept for
    its value (``same``: the cache's ``setdefault``)."""
    date, subject, is_reply, sender, to, cc, dsender, dto, message_id, refs = keys
    return (
        date,
        same(subject, subject),
        is_reply,
        same(sender, sender),
        same(to, to),
        same(cc, cc),
        same(dsender, dsender),
        same(dto, dto),
        message_id,
        refs,
    )
