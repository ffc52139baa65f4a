"""smtp_content: the queued message in SMTP's wire form (RFC 5321 4.5.2).

The queue keeps content with LF line ends; SMTP needs CRLF, a leading dot
doubled on every line ("dot-stuffing") and the terminating ``.`` line.
Both are done with ``bytes.replace`` over whole lines (C speed, no
per-line loop). A stray CR already before an LF is kept as one CRLF.

:func:`to_wire` converts bytes at once; :class:`WireEncoder` converts a
message that arrives in blocks (as agents read it from the queue file): it
holds back the last, unfinished line of each block, so that every piece it
converts starts at a line start and the result is the same as
:func:`to_wire` of the whole. :func:`survey` reads a message once for the
facts the MAIL command needs before the body is sent: its wire size (for
SIZE=) and whether it has 8-bit bytes (for BODY=8BITMIME).
"""

from __future__ import annotations

from collections.abc import Iterable


def _lines_to_wire(data: bytes) -> bytes:
    """CRLF and dot-stuffing of data that starts at a line start."""
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..")


def to_wire(content: bytes) -> bytes:
    """CRLF, dot-stuffed, ending with ``CRLF.CRLF``."""
    data = _lines_to_wire(content)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


class WireEncoder:
    """to_wire in pieces: ``feed`` each block, then ``end`` once."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, block: bytes) -> bytes:
        data = self._rest + block if self._rest else block
        cut = data.rfind(b"\n") + 1
        # A CR right before the cut belongs with its LF: both are in front.
        self._rest = data[cut:]
        return _lines_to_wire(data[:cut]) if cut else b""

    def end(self) -> bytes:
        return to_wire(self._rest)


def survey(blocks: Iterable[bytes]) -> tuple[int, bool]:
    """(wire size without the final ``.`` line, any 8-bit byte) of a message
    read in blocks."""
    encoder = WireEncoder()
    size = 0
    eight_bit = False
    for block in blocks:
        size += len(encoder.feed(block))
        if not eight_bit and not block.isascii():
            eight_bit = True
    size += len(encoder.end()) - 3
    return size, eight_bit


def is_8bit(content: bytes) -> bool:
    """True when any byte is outside US-ASCII."""
    return not content.isascii()
