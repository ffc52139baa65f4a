"""transfer: a MIME part's Content-Transfer-Encoding undone (RFC 2045).

For FETCH BINARY (RFC 3516: identity encodings as they are, base64 and
quoted-printable decoded; another encoding is :class:`UnknownCTE`, which
FETCH answers ``NO [UNKNOWN-CTE]``) and for the PREVIEW text (RFC 8970,
pymta.imap.preview).

Untrusted input: the part's body and its encoding's name (a message's).
Writes and logs nothing.
"""

from __future__ import annotations

import binascii
import re

_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
_IDENTITY = frozenset({"", "7bit", "8bit", "binary"})


class UnknownCTE(Exception):
    """BINARY of a part whose transfer encoding the server cannot undo
    (RFC 3516 4.3: the FETCH fails with ``NO [UNKNOWN-CTE]``)."""


#: Spaces and tabs at the end of a line (or of the body).
_TRAILING_WHITE = re.compile(rb"[ \t]+(?=\r?\n|\Z)")


def decode_transfer(encoding: str, body: bytes) -> bytes:
    """A part's body (CRLF line ends) with its Content-Transfer-Encoding undone."""
    if encoding in _IDENTITY:
        return body
    if encoding == "base64":
        try:
            return binascii.a2b_base64(body)
        except binascii.Error:
            # Damaged padding or a stray tail: decode the whole quads, as
            # mail readers do, rather than refuse the part.
            data = _NOT_BASE64.sub(b"", body)
            return binascii.a2b_base64(data[: len(data) // 4 * 4])
    if encoding == "quoted-printable":
        # RFC 2045 6.7 (3): white space at the end of a line was added in
        # transport and is deleted, so "= " there is a soft line break too.
        return binascii.a2b_qp(_TRAILING_WHITE.sub(b"", body))
    raise UnknownCTE(encoding)
