"""PREVIEW (RFC 8970): the first words of a message's text for a mail list.

``FETCH n (PREVIEW)`` (and ``PREVIEW (LAZY)``, which pymta answers the
same way: the preview is made at once) gives at most :data:`MAX_CHARS`
characters: the first text/plain part that is not an attachment (else the
first text/html part, its tags and entities removed), its transfer
encoding undone, decoded from its charset (UTF-8 if the charset is unknown,
undecodable bytes replaced), white space collapsed to single spaces. A
message without such a part previews as the empty string. The MIME walk
stops at :data:`MAX_DEPTH` levels, and at most :data:`READ_BYTES` of the
part are decoded.

Untrusted input: the message (anyone's mail); nothing here raises on a
malformed one. Reads through :class:`pymta.imap.fetch.MessageData`
(the store's cached MIME tree and the file). Writes and logs nothing.
"""

from __future__ import annotations

import codecs
import html
import re
from typing import Protocol

from pymta.imap.transfer import UnknownCTE, decode_transfer
from pymta.mailstore.interface import MimePart


class MessageData(Protocol):
    """What the preview reads of a message (pymta.imap.fetch's MessageData)."""

    def mime(self) -> MimePart: ...

    def content(self) -> bytes: ...


MAX_CHARS = 256
MAX_DEPTH = 20
#: Bytes of the chosen part decoded: enough for 256 characters of text
#: after quoted-printable, HTML markup and white space.
READ_BYTES = 64 * 1024

_WSP = re.compile(r"\s+")
_TAGS = re.compile(r"<(?:script|style)\b.*?</(?:script|style)\s*>|<!--.*?-->|<[^>]*>", re.S | re.I)


def _find(root: MimePart) -> MimePart | None:
    """The first text/plain part that is not an attachment, else the
    first such text/html part (depth first, bounded)."""
    html_part: MimePart | None = None
    stack: list[tuple[MimePart, int]] = [(root, 0)]
    while stack:
        part, depth = stack.pop()
        if part.content_type == "multipart" and depth < MAX_DEPTH:
            stack.extend((p, depth + 1) for p in reversed(part.parts))
            continue
        if part.content_type != "text" or part.disposition == "attachment":
            continue
        if part.subtype == "plain":
            return part
        if part.subtype == "html" and html_part is None:
            html_part = part
    return html_part


def preview(data: MessageData) -> str:
    """The preview text of one message (see the module docstring)."""
    part = _find(data.mime())
    if part is None:
        return ""
    raw = data.content()[part.body_start : min(part.end, part.body_start + READ_BYTES)]
    try:
        body = decode_transfer(part.encoding, raw)
    except UnknownCTE:
        return ""
    charset = dict(part.params).get("charset", "utf-8")
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "utf-8"
    text = body.decode(charset, "replace")
    if part.subtype == "html":
        text = html.unescape(_TAGS.sub(" ", text))
    text = _WSP.sub(" ", text).strip()
    return text[:MAX_CHARS]
