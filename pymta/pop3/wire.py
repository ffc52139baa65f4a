"""POP3 wire form of stored messages: CRLF line ends and dot-stuffing.

RFC 1939 section 3: a multi-line response is lines ending in CRLF, a line
starting with "." gets one more ".", and a line of a single "." ends it.
Messages are stored with LF line ends (pymta's canonical form), so each
conversion here works on the whole message at once (``bytes.replace``),
never line by line: this is the hot path of RETR.

A message of :data:`STREAM_MIN` bytes or more is sent from its file in
pieces instead (pymta.stream): :class:`WireEncoder` is :func:`to_wire` one
piece at a time, and :class:`TopCutter` is :func:`top` one piece at a
time; what they give, joined, is what the whole-message functions give.

Untrusted input: message content (from anyone who sent mail). Bare CR and
CRLF already in the content are normalised, so the wire form never holds a
line that could end the response early.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

TERMINATOR = b".\r\n"

#: Messages this large (as stored) are sent from their file in pieces.
STREAM_MIN = 256 * 1024

#: Bytes read from a message file at once while it is sent.
READ_CHUNK = 128 * 1024


def _normalise(content: bytes) -> bytes:
    """LF line ends only, no stray CR (which a client could take for a line end)."""
    if b"\r" in content:
        content = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return content


def to_wire(content: bytes) -> bytes:
    """content (LF line ends) as a dot-stuffed CRLF body, ending in CRLF, without the final dot."""
    content = _normalise(content)
    if content and not content.endswith(b"\n"):
        content += b"\n"
    if b"\n." in content:
        content = content.replace(b"\n.", b"\n..")
    if content.startswith(b"."):
        content = b"." + content
    return content.replace(b"\n", b"\r\n")


def top(content: bytes, lines: int) -> bytes:
    """The header block, the blank line, and the first ``lines`` body lines (LF form)."""
    content = _normalise(content)
    if content.startswith(b"\n"):
        header_end = 1
    else:
        split = content.find(b"\n\n")
        if split < 0:
            return content
        header_end = split + 2
    if lines <= 0:
        return content[:header_end]
    end = header_end
    for _ in range(lines):
        nl = content.find(b"\n", end)
        if nl < 0:
            return content
        end = nl + 1
    return content[:end]


def wire_size(content: bytes) -> int:
    """The octets RETR will send for content, before dot-stuffing (RFC 1939 LIST size)."""
    content = _normalise(content)
    if content and not content.endswith(b"\n"):
        content += b"\n"
    return len(content) + content.count(b"\n")


class WireEncoder:
    """:func:`to_wire` piece by piece: feed() the stored bytes in any
    pieces, then end(). A CR that ends a piece waits for the next (it may
    be half of a CRLF); a line start is remembered across pieces for the
    dot-stuffing."""

    def __init__(self) -> None:
        self._held_cr = False
        self._line_start = True

    def normalise(self, piece: bytes) -> bytes:
        """piece with LF line ends only (the CR that ends it held back)."""
        if self._held_cr:
            piece = b"\r" + piece
        self._held_cr = piece.endswith(b"\r")
        if self._held_cr:
            piece = piece[:-1]
        return _normalise(piece)

    def encode(self, text: bytes) -> bytes:
        """Normalised text (LF line ends) dot-stuffed with CRLF line ends."""
        if not text:
            return b""
        if b"\n." in text:
            text = text.replace(b"\n.", b"\n..")
        if self._line_start and text.startswith(b"."):
            text = b"." + text
        self._line_start = text.endswith(b"\n")
        return text.replace(b"\n", b"\r\n")

    def feed(self, piece: bytes) -> bytes:
        return self.encode(self.normalise(piece))

    def take_held(self) -> bytes:
        """The CR held back at the end of the content, as normalised text
        (a bare CR is a line end)."""
        held, self._held_cr = self._held_cr, False
        return b"\n" if held else b""

    def end(self) -> bytes:
        """The final CRLF when the content did not end with a line end."""
        if self._line_start:
            return b""
        self._line_start = True
        return b"\r\n"


class TopCutter:
    """:func:`top` piece by piece on normalised text (LF line ends): cut()
    passes the header block, the blank line and ``lines`` body lines, then
    nothing (``done``)."""

    def __init__(self, lines: int) -> None:
        self._left = lines
        self._in_header = True
        self._after_lf = True  # a message starting with LF has an empty header
        self.done = False

    def cut(self, text: bytes) -> bytes:
        if self.done or not text:
            return b""
        start = 0
        if self._in_header:
            if self._after_lf and text.startswith(b"\n"):
                start = 1
            else:
                blank = text.find(b"\n\n")
                if blank < 0:
                    self._after_lf = text.endswith(b"\n")
                    return text
                start = blank + 2
            self._in_header = False
            if self._left <= 0:
                self.done = True
                return text[:start]
        if text.count(b"\n", start) < self._left:
            self._left -= text.count(b"\n", start)
            return text
        end = start
        while self._left > 0:
            end = text.index(b"\n", end) + 1
            self._left -= 1
        self.done = True
        return text[:end]


def wire_pieces(
    read: Callable[[int], bytes], lines: int | None = None, chunk: int = READ_CHUNK
) -> Iterator[bytes]:
    """``to_wire(content)``, or with ``lines`` ``to_wire(top(content, lines))``,
    of content read in pieces of ``chunk`` bytes with ``read`` (a file's)."""
    encoder = WireEncoder()
    cutter = None if lines is None else TopCutter(lines)
    while not (cutter is not None and cutter.done) and (piece := read(chunk)):
        text = encoder.normalise(piece)
        yield encoder.encode(text if cutter is None else cutter.cut(text))
    held = encoder.take_held()
    yield encoder.encode(held if cutter is None else cutter.cut(held))
    yield encoder.end()
