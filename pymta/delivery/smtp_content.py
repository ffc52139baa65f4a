"""smtp_content: the queued message in SMTP's wire form (RFC 5321 4.5.2).

The queue keeps content with LF line ends; SMTP needs CRLF, a leading dot
doubled on every line ("dot-stuffing") and the terminating ``.`` line.
Both are done with ``bytes.replace`` over the whole content (C speed, no
per-line loop). A stray CR already before an LF is kept as one CRLF.
Also: whether the message needs 8BITMIME or SMTPUTF8.
"""

from __future__ import annotations


def to_wire(content: bytes) -> bytes:
    """CRLF, dot-stuffed, ending with ``CRLF.CRLF``."""
    data = content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    return data + b".\r\n"


def is_8bit(content: bytes) -> bool:
    """True when any byte is outside US-ASCII."""
    return not content.isascii()
