"""POP3 wire form of stored messages: CRLF line ends and dot-stuffing.

RFC 1939 section 3: a multi-line response is lines ending in CRLF, a line
starting with "." gets one more ".", and a line of a single "." ends it.
Messages are stored with LF line ends (pymta's canonical form), so each
conversion here works on the whole message at once (``bytes.replace``),
never line by line: this is the hot path of RETR.

Untrusted input: message content (from anyone who sent mail). Bare CR and
CRLF already in the content are normalised, so the wire form never holds a
line that could end the response early.
"""

from __future__ import annotations

TERMINATOR = b".\r\n"


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
