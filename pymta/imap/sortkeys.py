"""What SORT and THREAD compare: base subjects, sent dates, first addresses.

RFC 5256 section 2.1 defines the *base subject*: RFC 2047 encoded words
decoded, white space collapsed, then, repeatedly, trailing ``(fwd)``,
leading ``Re:``/``Fw:``/``Fwd:`` with their ``[blob]`` prefixes, a leading
``[blob]`` that is not all there is, and an enclosing ``[fwd: ...]``
removed. :func:`base_subject` returns it with whether anything of a reply
or forward was removed (THREAD=REFERENCES needs that). Section 2.2 defines
the *sent date*: the Date field in UTC, or the INTERNALDATE when it is
missing or cannot be parsed (:func:`sent_date`). SORT FROM, TO and CC
compare the mailbox (local part) of the first address (RFC 5256 3);
DISPLAYFROM and DISPLAYTO its decoded display name, or the address when
it has none (RFC 5957). Strings compare after upper-casing (the
``i;ascii-casemap`` of RFC 5256, which Dovecot's titlecase map extends
to Unicode).

All of a message's header keys are computed together
(:func:`header_keys`, one tuple indexed by :data:`DATE` ... :data:`REFERENCES`):
the header fields are split once, and a client that sorts by date,
then by sender, then threads, has every key after the first command
(:mod:`pymta.imap.sortcache` keeps them). The first SORT of a big folder
asks first for only the keys its criteria compare (:func:`header_columns`:
only their fields found, a third of the work for SUBJECT), with the same
values :func:`header_keys` gives.

Untrusted input: header values from anyone's mail. Nothing here raises
on malformed values (they compare as empty strings). Pure functions.
"""

from __future__ import annotations

import re
from datetime import date
from email.header import decode_header, make_header
from email.utils import getaddresses, mktime_tz, parsedate_tz
from typing import Final

_WSP = re.compile(r"[ \t\r\n]+")
#: A leading subj-blob: "[" *BLOBCHAR "]" *WSP.
_BLOB = re.compile(r"\[[^\[\]]*\] ?")
#: subj-refwd with the subj-blobs before it: *subj-blob ("re" / "fw" ["d"])
#: *WSP [subj-blob] ":".
_REFWD = re.compile(r"(?:\[[^\[\]]*\] ?)*(?:re|fwd?) ?(?:\[[^\[\]]*\] ?)?:", re.IGNORECASE)
_TRAILER = "(fwd)"
#: What any step of base subject extraction looks for: encoded words,
#: blobs, "(fwd)", and the ":" of "Re:"/"Fw:"/"Fwd:".
_MARKERS = re.compile(r"=\?|\[|\(|:")
#: The common address forms: ``Name <local@domain>``, ``<local@domain>``
#: and ``local@domain`` (quoted names without quotes or escapes inside).
_SIMPLE_ADDRESS = re.compile(
    r'\s*(?:"([^"\\]*)"|([^"<>()@,;:\\\[\]]*?))\s*<([^<>()@,;:"\s]+)@([^<>()@,;:"\s]*)>\s*'
    r'|\s*()()([^<>()@,;:"\s]+)@([^<>()@,;:"\s]+)\s*'
)
#: A leading subj-refwd without blobs, before white space is collapsed.
_PLAIN_REPLY = re.compile(r"[ \t\r\n]*(?:re|fwd?)[ \t\r\n]*:", re.IGNORECASE)
_MSG_ID = re.compile(r"<\s*([^<>\s]+)\s*>")


_FIELDS = re.compile(
    rb"^(date|subject|from|to|cc|message-id|references|in-reply-to)[ \t]*:"
    rb"(.*(?:\r?\n[ \t].*)*)",
    re.MULTILINE | re.IGNORECASE,
)


def sort_header_fields(header: bytes) -> dict[str, list[str]]:
    """The fields SORT and THREAD read (Date, Subject, From, To, Cc,
    Message-ID, References, In-Reply-To) of a header block, unfolded, by
    lower-case name, as :func:`pymta.imap.structure.header_values` gives
    them, without parsing the other fields."""
    out: dict[str, list[str]] = {}
    names = _FIELD_NAMES
    for name, value in _FIELDS.findall(header):
        text = value.decode("latin-1")
        if "\n" in text or "\r" in text:
            text = text.replace("\r", "").replace("\n", "")
        key = names.get(name)
        if key is None:
            key = name.decode("ascii").lower()
        values = out.get(key)
        if values is None:
            out[key] = [text.strip()]
        else:
            values.append(text.strip())
    return out


#: The usual spellings of the field names (others are lower-cased).
_FIELD_NAMES = {
    name.encode("ascii"): name.lower()
    for name in (
        *("Date", "Subject", "From", "To", "Cc", "CC", "Message-ID", "Message-Id"),
        *("References", "In-Reply-To", "date", "subject", "from", "to", "cc"),
        *("message-id", "references", "in-reply-to"),
    )
}


def header_text(value: str) -> str:
    """A header value (its bytes as latin-1 characters, as
    :func:`pymta.imap.structure.header_values` gives them) as text: raw
    UTF-8 taken as UTF-8, RFC 2047 encoded words decoded."""
    if value.isascii() and "=?" not in value:
        return value  # nothing to decode (most values)
    try:
        text = value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        text = value
    if "=?" in text:
        try:
            text = str(make_header(decode_header(text)))
        except Exception:  # malformed encoded words: keep the raw text
            pass
    return text


def base_subject(value: str) -> tuple[str, bool]:
    """The base subject of a Subject value (RFC 5256 2.1), upper-cased,
    and whether a reply or forward marker was removed from it."""
    if value.isascii():
        if not _MARKERS.search(value):
            # Nothing to decode and no marker to remove (most subjects of a
            # big folder): only white space to collapse.
            return _WSP.sub(" ", value).strip(" ").upper(), False
        reply = _PLAIN_REPLY.match(value)
        if reply is not None and not _MARKERS.search(value, reply.end()):
            # One "Re:" (or "Fw:", "Fwd:") and nothing else to remove: what
            # the steps below give, without them.
            return _WSP.sub(" ", value[reply.end() :]).strip(" ").upper(), True
    subject = _WSP.sub(" ", header_text(value)).strip(" ")
    is_reply = False
    while True:
        # (2) trailing "(fwd)" and white space.
        while True:
            stripped = subject.rstrip(" ")
            if stripped.lower().endswith(_TRAILER):
                stripped = stripped[: -len(_TRAILER)]
                is_reply = True
            if stripped == subject:
                break
            subject = stripped
        # (3)-(5) leading subj-leader, and a subj-blob unless it is all.
        while True:
            before = subject
            subject = subject.lstrip(" ")
            refwd = _REFWD.match(subject)
            if refwd is not None:
                subject = subject[refwd.end() :]
                is_reply = True
                continue
            blob = _BLOB.match(subject)
            if blob is not None and subject[blob.end() :].strip(" "):
                subject = subject[blob.end() :]
            if subject == before:
                break
        # (6) "[fwd:" ... "]" around the rest: remove and start again.
        if subject[:5].lower() == "[fwd:" and subject.endswith("]"):
            subject = subject[5:-1]
            is_reply = True
            continue
        return subject.upper(), is_reply


def message_ids(value: str) -> list[str]:
    """The msg-ids ``<...>`` of a header value (Message-ID, References,
    In-Reply-To), in order, without their angle brackets."""
    return _MSG_ID.findall(value)


#: The usual form of a Date field (RFC 5322 3.3 without comments or
#: obsolete zones): read without the general parser.
_PLAIN_DATE = re.compile(
    r"[ \t]*(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),[ \t]*)?([0-9]{1,2})[ \t]+"
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[ \t]+([1-9][0-9]{3})[ \t]+"
    r"([0-9]{2}):([0-9]{2}):([0-9]{2})[ \t]+([+-])([0-9]{2})([0-9]{2})[ \t]*"
)
_MONTHS = {
    m: i for i, m in enumerate(("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec").split(), 1)
}
_EPOCH_DAY = date(1970, 1, 1).toordinal()
#: Days from the epoch to the first of a month, by year and month name
#: ("2023Nov"), as the dates of one folder come back to the same few.
_MONTH_STARTS: dict[str, int] = {}


def sent_date(date_value: str | None, internal_date: float) -> int:
    """The sent date (RFC 5256 2.2) in seconds since the epoch: the Date
    field in UTC, else the INTERNALDATE."""
    if date_value:
        plain = _PLAIN_DATE.fullmatch(date_value)
        if plain is not None:
            # What parsedate_tz and mktime_tz give for it, a few times faster.
            day, month, year, hour, minute, second, sign, zh, zm = plain.groups()
            first = _MONTH_STARTS.get(year + month)
            if first is None:
                first = date(int(year), _MONTHS[month], 1).toordinal() - _EPOCH_DAY
                if len(_MONTH_STARTS) < 4096:
                    _MONTH_STARTS[year + month] = first
            days = first + int(day) - 1
            seconds = ((days * 24 + int(hour)) * 60 + int(minute)) * 60 + int(second)
            if zh == "00" and zm == "00":
                return seconds
            offset = int(zh) * 3600 + int(zm) * 60
            return seconds + offset if sign == "-" else seconds - offset
        try:
            parsed = parsedate_tz(date_value)
            if parsed is not None:
                return int(mktime_tz(parsed))
        except (ValueError, OverflowError, TypeError):
            pass
    return int(internal_date)


def _group_name(value: str) -> str | None:
    """The name of a group (``name: a@b, c@d;``, RFC 5322 3.4) that the
    value starts with, else None: a ``:`` before any ``<``, ``@`` or ``,``
    outside quotes."""
    quoted = False
    for i, ch in enumerate(value):
        if ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch == ":":
            return value[:i].strip().strip('"')
        elif ch in "<@,;":
            return None
    return None


def _first_address(values: list[str] | None) -> tuple[str, str] | None:
    """(display name, address) of the first address; a group counts as an
    address whose mailbox is the group's name, as in its ENVELOPE (RFC 3501
    7.4.2) and in Dovecot's sort."""
    if not values:
        return None
    simple = _SIMPLE_ADDRESS.fullmatch(values[0])
    if simple is not None:
        quoted, bare, local, domain = simple.group(1, 2, 3, 4)
        if local is None:
            local, domain = simple.group(7, 8)
        name = quoted if quoted is not None else (bare or "")
        return name.strip(), f"{local}@{domain}"
    group = _group_name(values[0])
    if group is not None:
        return "", group
    try:
        for name, address in getaddresses(values):
            if name or address:
                return name, address
    except Exception:  # a value the address parser chokes on compares as empty
        return None
    return None


def address_mailbox(values: list[str] | None) -> str:
    """SORT FROM/TO/CC: the mailbox (local part) of the first address."""
    return _mailbox_of(_first_address(values))


def display_name(values: list[str] | None) -> str:
    """SORT DISPLAYFROM/DISPLAYTO (RFC 5957): the first address's display
    name, decoded; its address when it has none."""
    return _display_of(_first_address(values))


def _mailbox_of(first: tuple[str, str] | None) -> str:
    if first is None:
        return ""
    local = first[1].rpartition("@")[0] if "@" in first[1] else first[1]
    return header_text(local).upper()


def _display_of(first: tuple[str, str] | None) -> str:
    if first is None:
        return ""
    name, address = first
    text = ""
    if name:
        text = header_text(name)
        if "  " in text or "\t" in text or "\r" in text or "\n" in text:
            text = _WSP.sub(" ", text)
        text = text.strip()
    if not text and address.endswith("@"):
        address = address[:-1]
    return (text or header_text(address)).upper()


#: References kept per message: a longer list keeps its last ids (the
#: closest ancestors), bounding the work one message can cause.
MAX_REFERENCES = 1000

#: Positions in the tuple of :func:`header_keys`.
DATE: Final = 0
SUBJECT: Final = 1
IS_REPLY: Final = 2
FROM: Final = 3
TO: Final = 4
CC: Final = 5
DISPLAYFROM: Final = 6
DISPLAYTO: Final = 7
MESSAGE_ID: Final = 8
REFERENCES: Final = 9

#: A message's header keys: (sent date, base subject, whether the subject
#: was a reply or forward, FROM, TO, CC, DISPLAYFROM, DISPLAYTO, its
#: Message-ID or None, the ids it refers to).
HeaderKeys = tuple[int, str, bool, str, str, str, str, str, "str | None", tuple[str, ...]]


def header_keys(values: dict[str, list[str]], internal_date: float) -> HeaderKeys:
    """Every key SORT and THREAD compare that comes from the header
    (``values`` as :func:`sort_header_fields` gives them); the sent date
    falls back on ``internal_date``. The references are those of
    References, else the first id of In-Reply-To (RFC 5256 4 step 1)."""
    dates = values.get("date")
    subjects = values.get("subject")
    subject, is_reply = base_subject(subjects[0]) if subjects else ("", False)
    ids = values.get("message-id")
    own = message_ids(ids[0]) if ids else []
    refs = message_ids(" ".join(values.get("references", ())))
    if not refs:
        refs = message_ids(" ".join(values.get("in-reply-to", ())))[:1]
    sender, recipient = _first_address(values.get("from")), _first_address(values.get("to"))
    return (
        sent_date(dates[0] if dates else None, internal_date),
        subject,
        is_reply,
        _mailbox_of(sender),
        _mailbox_of(recipient),
        address_mailbox(values.get("cc")),
        _display_of(sender),
        _display_of(recipient),
        own[0] if own else None,
        tuple(refs[-MAX_REFERENCES:]),
    )


#: One field's occurrences, as :data:`_FIELDS` finds them for every field
#: (a continuation line starts with white space, so no field name is
#: found inside another field's value either way).
_ONE_FIELD = {
    name: re.compile(
        rb"^" + re.escape(name) + rb"[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.MULTILINE | re.IGNORECASE
    )
    for name in (
        *(b"date", b"subject", b"from", b"to", b"cc"),
        *(b"message-id", b"references", b"in-reply-to"),
    )
}


def header_field(header: bytes, name: bytes) -> list[str] | None:
    """The values of field ``name`` (lower-case) of a header block, as
    :func:`sort_header_fields` gives them; None when there is none."""
    found = _ONE_FIELD[name].findall(header)
    if not found:
        return None
    values = []
    for value in found:
        text = value.decode("latin-1")
        if "\n" in text or "\r" in text:
            text = text.replace("\r", "").replace("\n", "")
        values.append(text.strip())
    return values


def header_columns(
    header: bytes, internal_date: float, positions: tuple[int, ...]
) -> tuple[object, ...]:
    """The keys at ``positions`` of :func:`header_keys` of a header block,
    finding only the fields they are computed from (a key and the one
    beside it from the same field, SUBJECT and IS_REPLY, FROM and
    DISPLAYFROM, TO and DISPLAYTO, from one parse)."""
    fields: dict[bytes, list[str] | None] = {}

    def field(name: bytes) -> list[str] | None:
        if name not in fields:
            fields[name] = header_field(header, name)
        return fields[name]

    subject: tuple[str, bool] | None = None
    addresses: dict[bytes, tuple[str, str] | None] = {}

    def first(name: bytes) -> tuple[str, str] | None:
        if name not in addresses:
            addresses[name] = _first_address(field(name))
        return addresses[name]

    out: list[object] = []
    for position in positions:
        if position == DATE:
            dates = field(b"date")
            out.append(sent_date(dates[0] if dates else None, internal_date))
        elif position == SUBJECT or position == IS_REPLY:
            if subject is None:
                subjects = field(b"subject")
                subject = base_subject(subjects[0]) if subjects else ("", False)
            out.append(subject[0] if position == SUBJECT else subject[1])
        elif position == FROM:
            out.append(_mailbox_of(first(b"from")))
        elif position == TO:
            out.append(_mailbox_of(first(b"to")))
        elif position == CC:
            out.append(address_mailbox(field(b"cc")))
        elif position == DISPLAYFROM:
            out.append(_display_of(first(b"from")))
        elif position == DISPLAYTO:
            out.append(_display_of(first(b"to")))
        elif position == MESSAGE_ID:
            ids = field(b"message-id")
            own = message_ids(ids[0]) if ids else []
            out.append(own[0] if own else None)
        else:
            refs = message_ids(" ".join(field(b"references") or ()))
            if not refs:
                refs = message_ids(" ".join(field(b"in-reply-to") or ()))[:1]
            out.append(tuple(refs[-MAX_REFERENCES:]))
    return tuple(out)
