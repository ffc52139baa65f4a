"""Maildrop files: what any local user may write into ``maildrop/``.

The input is a whole maildrop file (pymta.sendmail.record's format). It is
decoded as pickup decodes it; a file that decodes becomes the envelope
pickup builds (the submitting user fixed, as the kernel would report it)
and goes through a real cleanup over a memory queue, as pickup hands it
on. Documented errors: :class:`~pymta.sendmail.record.MaildropFileError`
(pickup moves the file to corrupt/) and cleanup's
:class:`~pymta.cleanup.CleanupRejected` (a reply: the file goes to
corrupt/ or waits). Anything else, or a failure cleanup logs, is a
finding. Checked besides: a file that decodes has a finite time and at
least one recipient, and encodes again to a file that decodes the same.
"""

from __future__ import annotations

import datetime
import math

from twisted.internet.task import Clock
from twisted.python.failure import Failure

from fuzz.common import Finding, LoggedFailures
from pymta.cleanup import Cleanup, CleanupRejected
from pymta.config import Config
from pymta.queue.memory import MemoryQueueStore
from pymta.queue.model import Envelope, Recipient
from pymta.rewrite import Resolver
from pymta.sendmail.record import MaildropFileError, MaildropMessage, decode, encode

EXPECTED: tuple[type[BaseException], ...] = (MaildropFileError, CleanupRejected)

_CONFIG = Config.from_text("myhostname = mail.example.com\nmydomain = example.com\n")


def seeds() -> list[bytes]:
    """Files as pymta's sendmail writes them (tests/test_sendmail_record.py's shapes)."""
    messages = [
        MaildropMessage([("user@example.com", "")], b"Subject: hi\n\nbody\n", time=1.5e9),
        MaildropMessage(
            [("a@example.com", "SUCCESS,FAILURE"), ("b", "NEVER")],
            b"From: x\nTo: y\n\n.\n..\n",
            sender="s\\t@example.org",
            full_name="J\u00f6ran Q",
            attributes={"ret": "HDRS", "envid": "Q1"},
            time=1.7e9,
        ),
        MaildropMessage([("root", "")], b"", sender="", time=0.0),
    ]
    return [encode(m) for m in messages]


def one_input(data: bytes) -> None:
    message = decode(data)
    if not math.isfinite(message.time):
        raise Finding(f"time {message.time} accepted")
    if not message.recipients:
        raise Finding("a file without recipients decoded")
    again = decode(encode(message))
    again.ignored = message.ignored  # unknown attributes are dropped, by design
    if again != message:
        raise Finding(f"re-encoded file decodes differently: {message!r}")
    clock = Clock()
    clock.advance(1.7e9)
    cleanup = Cleanup(
        _CONFIG, MemoryQueueStore(clock), Resolver(_CONFIG), clock=clock, tz=datetime.UTC
    )
    sender = message.sender if message.sender is not None else "fuzz@example.com"
    attributes = {"protocol": "pickup", "uid": "1000", "login": "fuzz"}
    if message.full_name:
        attributes["full_name"] = message.full_name
    attributes.update(message.attributes)
    envelope = Envelope(
        sender,
        [Recipient(a, original=a, notify=n or None) for a, n in message.recipients],
        attributes=attributes,
    )
    results: list[object] = []
    with LoggedFailures():
        cleanup.submit(envelope, message.content).addBoth(results.append)
        clock.advance(1)
    if not results:
        raise Finding("cleanup never answered")
    result = results[0]
    if isinstance(result, Failure):
        result.raiseException()
