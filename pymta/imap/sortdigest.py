"""sortdigest: the header digests SORT and THREAD hand the mail store.

:data:`SORT_KEYS` (a :class:`SortKeysDigest`) computes every header key
of a message (:func:`pymta.imap.sortkeys.header_keys`) and says how the
store keeps them in ``pymta-sortkeys`` (``pymta-sortkeys 2
V<uidvalidity>``, then lines each a JSON list of ``[uid, [date, subject,
is_reply, from, to, cc, displayfrom, displayto, message_id,
[references]]]``); :class:`SortColumnsDigest` computes only some of them
and is kept nowhere. The store runs them in its scan worker processes
(:mod:`pymta.mailstore.digests`), which unpickle them by importing this
module: it imports nothing of Twisted, so a worker starts fast.

Untrusted input: header blocks (anyone's mail) and the kept file's
records (their owner may write anything: :meth:`SortKeysDigest.decode`
checks every record's shape and types). Pure; writes and logs nothing.
"""

from __future__ import annotations

from typing import Any

from pymta.imap.sortkeys import HeaderKeys, header_columns, header_keys, sort_header_fields

FILENAME = "pymta-sortkeys"
MAGIC = b"pymta-sortkeys 2"


class SortKeysDigest:
    """The header keys of a message as the store computes and keeps them
    (:meth:`pymta.mailstore.asyncstore.IAsyncFolder.header_digests`): the
    function a worker process runs, and the kept file's records."""

    name = FILENAME
    magic = MAGIC

    def __call__(self, header: bytes, internal_date: float) -> HeaderKeys:
        return header_keys(sort_header_fields(header), internal_date)

    def decode(self, item: Any) -> tuple[int, HeaderKeys] | None:
        return _record(item)


#: What SORT and THREAD ask the store for.
SORT_KEYS = SortKeysDigest()


class SortColumnsDigest:
    """Only some of a message's header keys (the positions of
    :data:`pymta.imap.sortkeys.HeaderKeys` a SORT's criteria compare), as
    the store computes them (a tuple in the order of ``positions``): what
    the first SORT of a folder asks before every key. Kept nowhere on
    disk (``name`` empty): the kept file holds whole keys only."""

    name = ""
    magic = b""

    def __init__(self, positions: tuple[int, ...]) -> None:
        self.positions = positions

    def __call__(self, header: bytes, internal_date: float) -> tuple[object, ...]:
        return header_columns(header, internal_date, self.positions)

    def decode(self, item: Any) -> None:
        return None  # never kept


def _record(item: Any) -> tuple[int, HeaderKeys] | None:
    """(uid, header keys) of one stored message (``[uid, [keys...]]``);
    None if it is not one."""
    if not isinstance(item, list) or len(item) != 2 or not isinstance(item[1], list):
        return None
    uid, keys = item
    if len(keys) != 10:
        return None
    date, subject, is_reply, sender, to, cc, dsender, dto, message_id, refs = keys
    if type(uid) is not int or type(date) is not int or type(is_reply) is not bool:
        return None
    if not all(type(v) is str for v in (subject, sender, to, cc, dsender, dto)):
        return None
    if message_id is not None and type(message_id) is not str:
        return None
    if type(refs) is not list or not all(type(r) is str for r in refs):
        return None
    return uid, (date, subject, is_reply, sender, to, cc, dsender, dto, message_id, tuple(refs))
