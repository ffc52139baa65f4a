"""Milter replies: the byte stream a milter sends back to pymta's client.

The input is split into packets by :class:`~pymta.milter.wire.PacketReader`
and each packet decoded by :func:`~pymta.milter.wire.decode_reply` (and
:func:`~pymta.milter.wire.decode_optneg` for SMFIC_OPTNEG); whatever
decodes is applied as an end-of-message edit to a small message
(:func:`~pymta.milter.edits.apply_edits`). The same bytes are also fed to
a :class:`~pymta.milter.protocol.MilterProtocol` waiting for an answer, on
a StringTransport. Documented error:
:class:`~pymta.milter.wire.MilterProtocolError` (the milter is then
answered with milter_default_action). Checked besides: an edited message
still has its header section ended by one empty line before the original
body (an edit must never push header text into the body or end the
header section early), and the protocol's pending answer fires (with
replies or a MilterError) or is still waiting — never raises.
"""

from __future__ import annotations

import struct

from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from fuzz.common import Finding
from pymta.milter import wire
from pymta.milter.edits import apply_edits, split_message
from pymta.milter.protocol import MilterError, MilterProtocol

EXPECTED: tuple[type[BaseException], ...] = (wire.MilterProtocolError,)

MESSAGE = b"Received: by mx\nSubject: hi\nX-A: 1\nX-A: 2\n\nbody line\n"


def seeds() -> list[bytes]:
    """Replies from tests/test_milter_session.py."""
    return [
        wire.packet(wire.SMFIR_CONTINUE),
        wire.packet(wire.SMFIR_ADDHEADER, b"X-Spam\0yes\0") + wire.packet(wire.SMFIR_ACCEPT),
        wire.packet(wire.SMFIR_INSHEADER, struct.pack("!I", 0) + b"X-Top\0first\0"),
        wire.packet(wire.SMFIR_CHGHEADER, struct.pack("!I", 2) + b"X-A\0\0"),
        wire.packet(wire.SMFIR_REPLBODY, b"new body\r\n"),
        wire.packet(wire.SMFIR_ADDRCPT_PAR, b"<c@example.org>\0NOTIFY=NEVER\0"),
        wire.packet(wire.SMFIR_CHGFROM, b"<s@example.org>\0"),
        wire.packet(wire.SMFIR_QUARANTINE, b"odd\0"),
        wire.packet(wire.SMFIR_REPLYCODE, b"550-5.7.1 a\r\n550 5.7.1 b\0"),
        wire.packet(wire.SMFIR_PROGRESS) + wire.packet(wire.SMFIR_TEMPFAIL),
        wire.packet(wire.SMFIC_OPTNEG, struct.pack("!IIII", 6, 0x1FF, 0, 0) + b"{client_addr}\0"),
    ]


def _check_edit(edits: list[wire.Reply]) -> None:
    out, _ = apply_edits(MESSAGE, edits)
    headers, body = split_message(out)
    if b"".join(headers) + b"\n" + body != out:
        raise Finding(f"edited message does not split back: {out!r}")
    if not any(e.code == wire.SMFIR_REPLBODY for e in edits) and body != b"body line\n":
        raise Finding(f"header edits changed the body: {out!r}")


def one_input(data: bytes) -> None:
    reader = wire.PacketReader(limit=1 << 16)
    edits: list[wire.Reply] = []
    try:
        for command, payload in reader.feed(data):
            if command == wire.SMFIC_OPTNEG:
                wire.decode_optneg(payload)
                continue
            reply = wire.decode_reply(command, payload)
            if reply.code in wire.MODIFICATIONS:
                edits.append(reply)
    finally:
        if edits:
            _check_edit(edits)
        _feed_protocol(data)


def _feed_protocol(data: bytes) -> None:
    proto = MilterProtocol(task.Clock())
    proto.makeConnection(StringTransport())
    answer = proto.request(wire.packet(wire.SMFIC_BODYEOB), 10, modifications_ok=True)
    outcome: list[object] = []
    answer.addBoth(outcome.append)
    proto.dataReceived(data)
    if outcome and isinstance(outcome[0], Failure) and not outcome[0].check(MilterError):
        raise Finding(f"protocol failed with {outcome[0].value!r}")
