"""Read the message sendmail is given, and take recipients from its headers.

Mirrors Postfix's sendmail(1) input handling: CRLF or LF line ends are
stored as LF; without ``-i`` a line holding a lone ``.`` ends the input
(sendmail's old rule, kept for programs that rely on it), with ``-i`` only
end-of-file does; nothing is dot-unstuffed (that is SMTP's job, ``-bs``).
With ``-t`` (Postfix's cleanup, CLEANUP_FLAG_EXTRACT) the recipients are
taken from ``Resent-To``/``Resent-Cc``/``Resent-Bcc`` when the message has
any ``Resent-`` header, else from ``To``/``Cc``/``Bcc``, and the (Resent-)Bcc
header fields are removed from the message. Untrusted input: the message.
Writes and logs nothing.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: sendmail starts faster without typing
if TYPE_CHECKING:
    from typing import BinaryIO


class MessageTooBig(ValueError):
    """The input is larger than message_size_limit."""


def read_message(stream: BinaryIO, ignore_dots: bool, limit: int) -> bytes:
    """The message from stream with LF line ends; MessageTooBig past limit (0: none)."""
    if ignore_dots:
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = stream.read(65536)
            if not chunk:
                break
            size += len(chunk)
            if limit and size > limit + 65536:  # CRs still to go; checked exactly below
                raise MessageTooBig
            chunks.append(chunk)
        data = b"".join(chunks).replace(b"\r\n", b"\n")
    else:
        lines: list[bytes] = []
        size = 0
        for line in stream:
            if line in (b".\n", b".\r\n", b"."):
                break
            if line.endswith(b"\r\n"):
                line = line[:-2] + b"\n"
            size += len(line)
            if limit and size > limit:
                raise MessageTooBig
            lines.append(line)
        data = b"".join(lines)
    if limit and len(data) > limit:
        raise MessageTooBig
    if data and not data.endswith(b"\n"):
        data += b"\n"
    return data


def _header_fields(content: bytes) -> tuple[list[tuple[str, bytes, int, int]], int]:
    """(name, raw value, start, end) of each header field, and the body's offset."""
    fields: list[tuple[str, bytes, int, int]] = []
    pos = 0
    while pos < len(content):
        end = content.find(b"\n", pos)
        end = len(content) if end < 0 else end + 1
        line = content[pos:end]
        if line in (b"\n", b"\r\n"):
            return fields, end
        if line[:1] in (b" ", b"\t") and fields:
            folded_name, value, start, _ = fields[-1]
            fields[-1] = (folded_name, value + line, start, end)
        else:
            raw_name, colon, value = line.partition(b":")
            if not colon or not raw_name or raw_name != raw_name.strip() or b" " in raw_name:
                return fields, pos  # not a header: the body starts here
            fields.append((raw_name.decode("ascii", "replace").lower(), value, pos, end))
        pos = end
    return fields, pos


def extract_recipients(content: bytes) -> tuple[list[str], bytes]:
    """The -t recipients and the content without its Bcc header fields."""
    from email.utils import getaddresses

    fields, _ = _header_fields(content)
    resent = any(name.startswith("resent-") for name, _, _, _ in fields)
    wanted = ("resent-to", "resent-cc", "resent-bcc") if resent else ("to", "cc", "bcc")
    values = [
        value.decode("utf-8", "surrogateescape").replace("\n", " ")
        for name, value, _, _ in fields
        if name in wanted
    ]
    recipients: list[str] = []
    for _, address in getaddresses(values):
        if address and address not in recipients:
            recipients.append(address)
    removed = [(start, end) for name, _, start, end in fields if name in ("bcc", "resent-bcc")]
    for start, end in reversed(removed):
        content = content[:start] + content[end:]
    return recipients, content
