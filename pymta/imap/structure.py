"""ENVELOPE, BODYSTRUCTURE and header fields of a message, in IMAP syntax.

RFC 3501 section 7.4.2: ENVELOPE from the header block (values as sent,
unfolded, never decoded), BODY and BODYSTRUCTURE from the store's cached
:class:`~pymta.mailstore.interface.MimePart` tree (the file is read only
for the envelope of an encapsulated message/rfc822), and the header lines
that ``HEADER.FIELDS`` / ``HEADER.FIELDS.NOT`` select, with their original
bytes and order.

Untrusted input: the message (anyone's mail). Malformed headers give NIL
fields, never an exception. Pure functions; writes and logs nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection

from pymta.imap.addresses import parse_addresses
from pymta.imap.wire import NIL, nstring, string
from pymta.mailstore.interface import MimePart

ENVELOPE_FIELDS = (
    "date",
    "subject",
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "in-reply-to",
    "message-id",
)


def header_lines(header: bytes) -> list[tuple[str, bytes]]:
    """(lower-case field name, the field's raw lines) in order; the blank line
    that ends the block is not included. LF or CRLF line ends."""
    fields: list[tuple[str, bytes]] = []
    for line in header.splitlines(keepends=True):
        if line in (b"\n", b"\r\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line)
            continue
        name = line.split(b":", 1)[0].strip().lower().decode("latin-1")
        fields.append((name, line))
    return fields


def header_values(header: bytes) -> dict[str, list[str]]:
    """Unfolded values by lower-case name (latin-1 keeps every byte)."""
    out: dict[str, list[str]] = {}
    for name, raw in header_lines(header):
        _, _, value = raw.partition(b":")
        text = value.decode("latin-1").replace("\r\n", "\n").replace("\n", "")
        out.setdefault(name, []).append(text.strip())
    return out


def select_fields(header: bytes, names: Collection[str], exclude: bool) -> bytes:
    """HEADER.FIELDS (or .NOT) of a header block: the matching fields' original
    bytes in their original order, then the blank line (CRLF).

    The fields as :func:`header_lines` splits them, but names are compared
    as bytes and lines kept as they come: this runs for every message of a
    client's header FETCH."""
    wanted = _latin1_names(tuple(names))
    chosen: list[bytes] = []
    keep = started = False
    for line in header.splitlines(keepends=True):
        if line in (b"\n", b"\r\n"):
            break
        if started and line[:1] in (b" ", b"\t"):
            if keep:
                chosen.append(line)
            continue
        started = True
        keep = (line.split(b":", 1)[0].strip().lower() in wanted) != exclude
        if keep:
            chosen.append(line)
    return crlf(b"".join(chosen)) + b"\r\n"


@functools.lru_cache(maxsize=64)
def _latin1_names(names: tuple[str, ...]) -> frozenset[bytes]:
    """Lower-case field names as the latin-1 bytes :func:`header_lines`
    decodes names from; a name outside latin-1 can match no field. Cached:
    a FETCH asks the same fields of every message."""
    out: set[bytes] = set()
    for n in names:
        try:
            out.add(n.lower().encode("latin-1"))
        except UnicodeEncodeError:
            pass
    return frozenset(out)


def crlf(data: bytes) -> bytes:
    """LF (and CRLF) line ends as CRLF."""
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    return data.replace(b"\n", b"\r\n")


def _text(value: str) -> bytes:
    return value.encode("latin-1", "replace")


def _addresses(values: list[str] | None) -> bytes:
    """The ENVELOPE address list of a field (its first occurrence, as Dovecot),
    groups included (RFC 3501 7.4.2; pymta.imap.addresses)."""
    if not values:
        return NIL
    out = [
        b"("
        + _nstring_or_nil(a.name)
        + b" "
        + _nstring_or_nil(a.route)
        + b" "
        + _nstring_or_nil(a.mailbox)
        + b" "
        + _nstring_or_nil(a.host)
        + b")"
        for a in parse_addresses(values[0])
    ]
    if not out:
        return NIL
    return b"(" + b"".join(out) + b")"


def _nstring_or_nil(value: str | None) -> bytes:
    return NIL if value is None else nstring(_text(value))


def envelope(header: bytes) -> bytes:
    """The ENVELOPE of a header block (RFC 3501 7.4.2)."""
    values = header_values(header)

    def first(name: str) -> bytes:
        got = values.get(name)
        return nstring(_text(got[0])) if got else NIL

    from_ = _addresses(values.get("from"))
    sender = _addresses(values.get("sender"))
    reply_to = _addresses(values.get("reply-to"))
    fields = [
        first("date"),
        first("subject"),
        from_,
        from_ if sender == NIL else sender,
        from_ if reply_to == NIL else reply_to,
        _addresses(values.get("to")),
        _addresses(values.get("cc")),
        _addresses(values.get("bcc")),
        first("in-reply-to"),
        first("message-id"),
    ]
    return b"(" + b" ".join(fields) + b")"


def _params(params: tuple[tuple[str, str], ...]) -> bytes:
    if not params:
        return NIL
    items = []
    for name, value in params:
        items.append(string(_text(name.upper())) + b" " + string(value.encode("utf-8")))
    return b"(" + b" ".join(items) + b")"


def _disposition(part: MimePart) -> bytes:
    if not part.disposition:
        return NIL
    return (
        b"("
        + string(_text(part.disposition.upper()))
        + b" "
        + _params(part.disposition_params)
        + b")"
    )


def _language(part: MimePart) -> bytes:
    if not part.language:
        return NIL
    langs = [x.strip() for x in part.language.split(",") if x.strip()]
    if len(langs) == 1:
        return nstring(_text(langs[0]))
    return b"(" + b" ".join(nstring(_text(x)) for x in langs) + b")"


def body_structure(
    part: MimePart,
    extensible: bool,
    read_header: Callable[[MimePart], bytes],
) -> bytes:
    """BODYSTRUCTURE (``extensible``) or BODY of a MIME tree.
    ``read_header(part)`` returns the header of an encapsulated message."""
    if part.content_type == "multipart":
        children = b"".join(body_structure(p, extensible, read_header) for p in part.parts)
        out = children + b" " + string(_text(part.subtype.upper()))
        if extensible:
            out += (
                b" "
                + _params(part.params)
                + b" "
                + _disposition(part)
                + b" "
                + _language(part)
                + b" "
                + nstring(_text(part.location) if part.location else None)
            )
        return b"(" + out + b")"
    fields = [
        string(_text(part.content_type.upper())),
        string(_text(part.subtype.upper())),
        _params(part.params),
        nstring(_text(part.content_id) if part.content_id else None),
        nstring(_text(part.description) if part.description else None),
        string(_text(part.encoding.upper())),
        b"%d" % part.rfc822_body_size,
    ]
    if part.content_type == "message" and part.subtype == "rfc822" and part.parts:
        inner = part.parts[0]
        fields.append(envelope(read_header(inner)))
        fields.append(body_structure(inner, extensible, read_header))
        fields.append(b"%d" % part.lines)
    elif part.content_type == "text":
        fields.append(b"%d" % part.lines)
    if extensible:
        fields += [
            nstring(_text(part.md5) if part.md5 else None),
            _disposition(part),
            _language(part),
            nstring(_text(part.location) if part.location else None),
        ]
    return b"(" + b" ".join(fields) + b")"
