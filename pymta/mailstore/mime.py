"""MIME structure of a stored message, with byte offsets (RFC 2045, 2046).

Mirrors what Dovecot keeps in its cache for BODYSTRUCTURE: one parse of the
message yields a tree of :class:`~pymta.mailstore.interface.MimePart` with
the offsets of each part's header and body, so IMAP can answer
BODYSTRUCTURE and BODY[1.2.MIME] from the cache.

Untrusted input: the whole message. Malformed MIME never raises: a multipart
without its boundary is one text part, nesting is cut at :data:`MAX_DEPTH`,
a boundary with 8-bit bytes is matched as those bytes, and a message with no
header is a text/plain body. Should the parser still fail on some message
(a bug), :func:`parse_mime` raises :class:`MimeError` and nothing else, and
a caller serving a client answers for that one message with
:func:`plain_structure`, the single text/plain part Dovecot shows for a
message whose MIME it cannot parse.
"""

from __future__ import annotations

import json
import re
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from typing import Any

from pymta.mailstore.interface import MimePart

MAX_DEPTH = 20
MAX_PARTS = 1000

_parser = BytesHeaderParser()
_latin1_parser = HeaderParser()


class MimeError(Exception):
    """The parser failed on a message: the only exception :func:`parse_mime`
    raises. Callers serving a client fall back to :func:`plain_structure`."""


def _header_end(data: bytes, start: int, end: int) -> int:
    """Offset just after the blank line ending the header at ``start``."""
    # Bounded by end: the line break after a part belongs to the delimiter
    # that follows it, not to an empty header of the part.
    if data.startswith(b"\n", start, end) or data.startswith(b"\r\n", start, end):
        return start + (1 if data[start : start + 1] == b"\n" else 2)
    pos = data.find(b"\n\n", start, end)
    crlf = data.find(b"\r\n\r\n", start, end)
    if pos < 0 and crlf < 0:
        return end
    if crlf >= 0 and (pos < 0 or crlf < pos):
        return crlf + 4
    return pos + 2


#: A line break followed by white space: folding (RFC 5322 2.2.3).
_FOLD = re.compile(rb"\r?\n(?=[ \t])")


def _unfold(header: bytes) -> bytes:
    """The header block with every folded field on one line. The email
    package keeps the line breaks in a field's value, even inside a quoted
    parameter (``boundary="foo<CRLF> bar"``): unfolded first, as Dovecot
    does, the boundary is ``foo bar`` and no value carries a raw CRLF into
    BODYSTRUCTURE."""
    return _FOLD.sub(b"", header) if b"\n " in header or b"\n\t" in header else header


def _params(msg: Message, header: str) -> tuple[tuple[str, str], ...]:
    raw = msg.get_params(header=header, unquote=True) or []
    out: list[tuple[str, str]] = []
    for name, value in raw[1:]:
        if isinstance(value, tuple):  # RFC 2231 encoded
            value = value[2]
        out.append((str(name).lower(), str(value)))
    return tuple(out)


def _header(msg: Message, name: str) -> str | None:
    value = msg.get(name)
    return None if value is None else str(value).strip()


def parse_mime(data: bytes) -> MimePart:
    """The MIME tree of a whole message; :class:`MimeError` if the parser fails."""
    counter = [0]
    try:
        return _parse(data, 0, len(data), "text/plain", 0, counter)
    except Exception as e:
        # Anyone can send the message: whatever goes wrong inside the parser
        # (or the email package under it) is one error type, so that a caller
        # answers for this one message instead of failing a whole FETCH range.
        raise MimeError(f"cannot parse MIME structure: {e!r}") from e


def plain_structure(data: bytes) -> MimePart:
    """The whole message as one text/plain part with no parameters: the
    answer for a message whose MIME cannot be parsed (Dovecot does the same
    for broken MIME rather than fail the FETCH)."""
    body_start = _header_end(data, 0, len(data))
    body = data[body_start:]
    return MimePart(
        content_type="text",
        subtype="plain",
        params=(),
        content_id=None,
        description=None,
        encoding="7bit",
        disposition=None,
        disposition_params=(),
        language=None,
        location=None,
        md5=None,
        header_start=0,
        body_start=body_start,
        end=len(data),
        rfc822_body_size=_crlf_size(body),
        lines=_line_count(body),
        parts=(),
    )


def _crlf_size(body: bytes) -> int:
    """The size of body with LF line ends counted as CRLF (as IMAP sends it)."""
    return len(body) + body.count(b"\n") - body.count(b"\r\n")


def _line_count(body: bytes) -> int:
    return body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)


def _boundary(msg: Message, header: bytes) -> bytes | None:
    """The multipart boundary as the bytes the delimiter lines hold."""
    value = msg.get_param("boundary", header="content-type")
    if not isinstance(value, str) or not value:
        return None
    if value.isascii():
        return value.encode("ascii")
    # The bytes parser turns each 8-bit byte into U+FFFD, which names no
    # byte; read the parameter again from the header decoded as latin-1
    # (one character per byte), so that the delimiter is matched as the
    # bytes that were sent, as Dovecot matches it.
    again = _latin1_parser.parsestr(header.decode("latin-1")).get_param(
        "boundary", header="content-type"
    )
    if not isinstance(again, str) or not again:
        return None
    return again.encode("latin-1", "replace")


def _parse(
    data: bytes, start: int, end: int, default_type: str, depth: int, counter: list[int]
) -> MimePart:
    counter[0] += 1
    body_start = _header_end(data, start, end)
    header = _unfold(data[start:body_start])
    msg = _parser.parsebytes(header)
    ctype = msg.get_content_type() if msg.get("content-type") else default_type
    if "/" not in ctype:
        ctype = "text/plain"
    maintype, subtype = ctype.split("/", 1)
    body = data[body_start:end]
    disp_header = _header(msg, "content-disposition")
    disposition = disp_header.split(";", 1)[0].strip().lower() if disp_header else None
    parts: list[MimePart] = []
    limited = depth >= MAX_DEPTH or counter[0] >= MAX_PARTS
    if maintype == "multipart" and not limited:
        boundary = _boundary(msg, header)
        if boundary:
            child_default = "message/rfc822" if subtype == "digest" else "text/plain"
            for s, e in _split_multipart(data, body_start, end, boundary):
                parts.append(_parse(data, s, e, child_default, depth + 1, counter))
                if counter[0] >= MAX_PARTS:
                    break
        if not parts:
            maintype, subtype = "text", "plain"
    elif maintype == "message" and subtype == "rfc822" and not limited:
        parts.append(_parse(data, body_start, end, "text/plain", depth + 1, counter))
    return MimePart(
        content_type=maintype,
        subtype=subtype,
        params=_params(msg, "content-type"),
        content_id=_header(msg, "content-id"),
        description=_header(msg, "content-description"),
        encoding=(_header(msg, "content-transfer-encoding") or "7bit").lower(),
        disposition=disposition,
        disposition_params=_params(msg, "content-disposition") if disposition else (),
        language=_header(msg, "content-language"),
        location=_header(msg, "content-location"),
        md5=_header(msg, "content-md5"),
        header_start=start,
        body_start=body_start,
        end=end,
        rfc822_body_size=_crlf_size(body),
        lines=_line_count(body),
        parts=tuple(parts),
    )


def _split_multipart(data: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """(start, end) of each body part between ``--boundary`` lines (RFC 2046
    section 5.1.1: the line break before a delimiter belongs to it)."""
    delim = re.compile(rb"(?m)^--" + re.escape(boundary) + rb"(--)?[ \t]*\r?$")
    spans: list[tuple[int, int]] = []
    part_start: int | None = None
    for m in delim.finditer(data, start, end):
        if part_start is not None:
            part_end = m.start()
            if part_end > part_start and data[part_end - 1 : part_end] == b"\n":
                part_end -= 1
                if part_end > part_start and data[part_end - 1 : part_end] == b"\r":
                    part_end -= 1
            spans.append((part_start, max(part_start, part_end)))
        if m.group(1):
            return spans
        nl = data.find(b"\n", m.end(), end)
        part_start = end if nl < 0 else nl + 1
    if part_start is not None and part_start < end:
        spans.append((part_start, end))  # no closing delimiter: take the rest
    return spans


def to_json(part: MimePart) -> str:
    """The compact form kept in the index cache."""
    return json.dumps(_to_list(part), separators=(",", ":"))


def from_json(text: str) -> MimePart:
    """Inverse of :func:`to_json`; ValueError when it is not one."""
    try:
        return _from_list(json.loads(text))
    except (TypeError, KeyError, IndexError) as e:
        raise ValueError(f"bad cached MIME structure: {e}") from None


def _to_list(p: MimePart) -> list[Any]:
    return [
        p.content_type,
        p.subtype,
        [list(x) for x in p.params],
        p.content_id,
        p.description,
        p.encoding,
        p.disposition,
        [list(x) for x in p.disposition_params],
        p.language,
        p.location,
        p.md5,
        p.header_start,
        p.body_start,
        p.end,
        p.rfc822_body_size,
        p.lines,
        [_to_list(c) for c in p.parts],
    ]


def _from_list(v: list[Any]) -> MimePart:
    if not isinstance(v, list) or len(v) != 17:
        raise ValueError("bad cached MIME structure")
    return MimePart(
        content_type=str(v[0]),
        subtype=str(v[1]),
        params=tuple((str(a), str(b)) for a, b in v[2]),
        content_id=v[3],
        description=v[4],
        encoding=str(v[5]),
        disposition=v[6],
        disposition_params=tuple((str(a), str(b)) for a, b in v[7]),
        language=v[8],
        location=v[9],
        md5=v[10],
        header_start=int(v[11]),
        body_start=int(v[12]),
        end=int(v[13]),
        rfc822_body_size=int(v[14]),
        lines=int(v[15]),
        parts=tuple(_from_list(c) for c in v[16]),
    )
