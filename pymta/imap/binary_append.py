"""Binary content appended with a literal8, stored as base64 (RFC 3516 4.4).

A client may APPEND a message whose parts carry ``Content-Transfer-Encoding:
binary`` in a literal8 (``~{n}``): NUL octets, bare CR and LF, lines of any
length. The store keeps messages with LF line ends (Maildir), which would
turn a bare LF and a CRLF into the same bytes, and a plain FETCH must never
send NUL in a ``{n}`` literal (RFC 3501 4.3). As Dovecot does, each such
part is re-encoded as base64 before it is stored: ``BODY[n]`` then shows
7-bit text, and ``BINARY[n]`` gives back exactly the octets appended.

:func:`encode_binary_parts` is the only entry point. Untrusted input: the
whole message; a message whose MIME cannot be parsed is stored unchanged.
Writes nothing; logs nothing.
"""

from __future__ import annotations

import binascii
import re

from pymta.mailstore.interface import MimePart
from pymta.mailstore.mime import MimeError, parse_mime

#: The Content-Transfer-Encoding field, with its continuation lines.
_CTE_FIELD = re.compile(rb"(?im)^content-transfer-encoding[ \t]*:[^\n]*\n(?:[ \t][^\n]*\n)*")

#: base64 lines of 76 characters: 57 octets each (RFC 2045 6.8).
_CHUNK = 57


def encode_binary_parts(message: bytes) -> bytes:
    """``message`` with every part whose transfer encoding is ``binary``
    re-encoded as base64 (its header's field says so); unchanged when it
    has none."""
    if b"binary" not in message.lower():
        return message
    try:
        tree = parse_mime(message)
    except MimeError:
        return message
    leaves: list[MimePart] = []
    _binary_leaves(tree, leaves)
    out = message
    # From the last part back, so that earlier offsets stay right.
    for part in sorted(leaves, key=lambda p: p.header_start, reverse=True):
        header = out[part.header_start : part.body_start]
        body = out[part.body_start : part.end]
        out = (
            out[: part.header_start]
            + _CTE_FIELD.sub(b"Content-Transfer-Encoding: base64\r\n", header, count=1)
            + _base64_lines(body)
            + out[part.end :]
        )
    return out


def _binary_leaves(part: MimePart, found: list[MimePart]) -> None:
    if part.parts:
        for child in part.parts:
            _binary_leaves(child, found)
    elif part.encoding == "binary":
        found.append(part)


def _base64_lines(body: bytes) -> bytes:
    return b"".join(
        binascii.b2a_base64(body[i : i + _CHUNK], newline=False) + b"\r\n"
        for i in range(0, len(body), _CHUNK)
    )
