"""Queue-file decoding: the bytes of a file in the queue directories.

A crash, a full disk or another process may have damaged the file;
:func:`pymta.queue.record.decode` must tell a whole file from a damaged
one. Documented error: :class:`~pymta.queue.interface.QueueFileError` (the
store moves the file to corrupt/). Checked besides: a file that decodes
encodes again to a file that decodes to the same envelope and content, so
what qmgr reads back after marking a recipient done is what was queued.
"""

from __future__ import annotations

import math

from fuzz.common import Finding
from pymta.queue import record
from pymta.queue.interface import QueueFileError
from pymta.queue.model import Envelope, Recipient

EXPECTED: tuple[type[BaseException], ...] = (QueueFileError,)


def seeds() -> list[bytes]:
    """Queue files of the envelopes in tests/test_queue_store.py."""
    envelopes = [
        Envelope(
            "sender@example.org",
            [
                Recipient(
                    "a@example.com", "A@example.com", "rfc822;A@example.com", "SUCCESS,FAILURE"
                ),
                Recipient("b@example.com", "b@example.com", done=True),
                Recipient("weird\tname%\n@example.com", ""),
            ],
            1700000000.25,
            {"client_name": "mail.example.org", "client_address": "192.0.2.1", "helo_name": "x\ny"},
        ),
        Envelope("", [Recipient("x@y")]),
    ]
    content = b"Subject: hi\n\nbody line\n.\n"
    return [b"".join(record.encode(envelope, content)[0]) for envelope in envelopes] + [
        # With the content's line count, as the queue store writes it.
        b"".join(record.encode(envelopes[0], content, content.count(b"\n"))[0])
    ]


def one_input(data: bytes) -> None:
    try:
        envelope, content, flags = record.decode(data)
    except QueueFileError:
        return
    if not math.isfinite(envelope.arrival_time):
        raise Finding(f"arrival time {envelope.arrival_time} accepted")
    if any(data[offset : offset + 1] not in (record.PENDING, record.DONE) for offset in flags):
        raise Finding(f"flag offsets {flags} do not point at recipient flags")
    again, again_content, _ = record.decode(b"".join(record.encode(envelope, content)[0]))
    if (again, again_content) != (envelope, content):
        raise Finding(f"re-encoded file decodes differently: {envelope!r} -> {again!r}")
