"""Message headers as cleanup(8) handles them: scan, count hops, add what is missing.

Mirrors Postfix's cleanup_message.c for the header part, cheaply: the end of
the header block is found with one ``bytes.find(b"\\n\\n")`` and only the
header block is lowered and searched for the few names cleanup cares
about; the body is never looked at line by line.

Received (Postfix's layout, as smtpd writes it)::

    Received: from HELO (CLIENTNAME [ADDR])
    \\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))
    \\tby MYHOSTNAME (pymta) with ESMTPS id QID
    \\tfor <RCPT>; Tue, 28 Nov 2023 16:00:01 +0000

"for" only with exactly one recipient; the TLS line only when the envelope
attribute ``tls`` is set (its value is the text after "using"); an
``(Authenticated sender: LOGIN)`` line follows when smtpd set ``sasl_header``
(smtpd_sasl_authenticated_header = yes). Mail without
a client address (pickup, bounce) gets ``Received: by MYHOSTNAME (pymta)``
with ``id QID`` and, when known, ``from userid UID``.

header_size_limit, as Postfix's cleanup (mime_state.c, cleanup_out.c)
enforces it: a logical header (its first line and its continuation lines)
longer than the limit loses the excess. It is cut at the last line
boundary inside the limit when that keeps more than 90 % of it, else at
exactly the limit; the header block stays a header block (Postfix 2.0 and
later no longer push the excess into the body, which broke MIME). Only
the message's own header block is limited here (pymta's cleanup does not
parse MIME parts). Postfix has no limit on the number of headers; the
message size limit bounds that.

Untrusted input: the message and the envelope attributes (the values come
from the network: HELO, names). Header values we write never contain a
line break. Writes and logs nothing.
"""

from __future__ import annotations

import datetime
import email.header
import email.utils
import functools
import re
from dataclasses import dataclass

from pymta.queue.model import Envelope

_HEADER_START = re.compile(rb"[!-9;-~]+[ \t]*:")
_LINE_BREAKS = re.compile(r"[\r\n]+")
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')
# The line break in front of a header's first line (not a continuation).
_HEADER_BREAK = re.compile(rb"\n(?![ \t])")


@dataclass
class HeaderScan:
    """What cleanup learned from the header block.

    ``end`` is the offset where added headers go (just after the last
    header line); ``separator`` tells whether a blank line already follows.
    """

    end: int
    separator: bool
    received: int
    message_id: str | None
    has_date: bool
    has_from: bool


def scan_headers(content: bytes) -> HeaderScan:
    """Find the header block and the headers cleanup needs."""
    if not _HEADER_START.match(content):
        # No header at all (the message starts with its body, or with the
        # blank line): headers are inserted in front.
        return HeaderScan(0, content.startswith(b"\n"), 0, None, False, False)
    blank = content.find(b"\n\n")
    if blank < 0:
        end = len(content)
        separator = False
    else:
        end = blank + 1
        separator = True
    block = b"\n" + content[:end].lower()
    message_id = None
    pos = block.find(b"\nmessage-id:")
    if pos >= 0:
        stop = block.find(b"\n", pos + 1)
        raw = content[pos + len(b"message-id:") : stop - 1 if stop >= 0 else end]
        message_id = raw.decode("utf-8", "replace").strip()
    return HeaderScan(
        end=end,
        separator=separator,
        received=block.count(b"\nreceived:"),
        message_id=message_id,
        has_date=b"\ndate:" in block,
        has_from=b"\nfrom:" in block,
    )


def header_block_length(start: bytes) -> int | None:
    """How many bytes of a message that begins with ``start`` are its header
    block and the blank line after it (0 or 1 for a message that starts
    with its body, or with the blank line); None when the header block
    goes on past ``start``."""
    if not _HEADER_START.match(start):
        return 1 if start.startswith(b"\n") else 0
    blank = start.find(b"\n\n")
    return None if blank < 0 else blank + 2


def limit_header_size(content: bytes, limit: int) -> bytes:
    """The message with each logical header cut to ``limit`` bytes (see the
    module docstring); the same object when no header is that long."""
    if limit <= 0 or len(content) <= limit or not _HEADER_START.match(content):
        return content
    end = content.find(b"\n\n", 0, limit + 2)
    if end >= 0:
        return content  # the whole header block fits
    end = content.find(b"\n\n")
    end = len(content) if end < 0 else end + 1
    pieces: list[bytes] = []
    start = 0  # where the current logical header begins
    kept = 0  # content[kept:start] is copied as it is
    for match in _HEADER_BREAK.finditer(content, 0, end):
        stop = match.start()  # the header's last line ends here
        if stop - start > limit:
            pieces += (content[kept:start], _cut(content[start:stop], limit))
            kept = stop
        start = stop + 1
    if end - start > limit:  # the last header, with no break after it
        stop = end - 1 if content[end - 1 : end] == b"\n" else end
        if stop - start > limit:
            pieces += (content[kept:start], _cut(content[start:stop], limit))
            kept = stop
    if not pieces:
        return content
    pieces.append(content[kept:])
    return b"".join(pieces)


def _cut(header: bytes, limit: int) -> bytes:
    """One header (lines joined by LF, no final LF) cut as Postfix's
    cleanup_out_header() does: at a line start past 90 % of the limit
    ("nice cut"), else at exactly the limit ("unkind cut")."""
    # The LF in front of the line that crosses the limit (-1: the first line).
    newline = header.rfind(b"\n", 0, limit + 1)
    if newline + 1 > 0.9 * limit:
        return header[:newline]
    return header[:limit]


def format_date(when: float, tz: datetime.tzinfo | None = None) -> str:
    """RFC 5322 date-time in local time (or tz) with its numeric zone and,
    as Postfix writes it, the zone name as a comment."""
    return _format_date(int(when), tz)


# Every message accepted in the same second carries the same Date and
# Received time; formatting one costs more than the rest of the header.
@functools.lru_cache(maxsize=8)
def _format_date(when: int, tz: datetime.tzinfo | None) -> str:
    if tz is None:
        moment = datetime.datetime.fromtimestamp(when).astimezone()
    else:
        moment = datetime.datetime.fromtimestamp(when, tz)
    text = email.utils.format_datetime(moment)
    name = moment.tzname()
    if name and name[0] not in "+-":
        text += f" ({name})"
    return text


def _clean(value: str) -> str:
    return _LINE_BREAKS.sub(" ", value).strip()


def _decodable(text: str) -> str:
    """text with undecodable bytes (kept as surrogate escapes by sendmail's
    -F or a GECOS field in another charset) as U+FFFD: RFC 2047 encoding
    of the From: display name needs real characters (found by fuzzing)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _display_name(name: str) -> str:
    """An RFC 5322 display name: as is, quoted (specials), or RFC 2047
    encoded (non-ASCII). Not email.utils.formataddr, which also insists on
    an ASCII address, and an SMTPUTF8 sender is not (found by fuzzing)."""
    if not name.isascii():
        return email.header.Header(name, "utf-8").encode()
    if _SPECIALS.search(name):
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return name


def _rfc_addr(address: str) -> str:
    return f"IPv6:{address}" if ":" in address else address


def received_header(
    envelope: Envelope, queue_id: str, myhostname: str, date: str, for_rcpt: str | None
) -> str:
    """The Received header cleanup prepends (text with LF line ends)."""
    attrs = envelope.attributes
    address = _clean(attrs.get("client_address", ""))
    lines: list[str] = []
    if address:
        name = _clean(attrs.get("client_name", "")) or "unknown"
        helo = _clean(attrs.get("helo_name", "")) or name
        lines.append(f"Received: from {helo} ({name} [{_rfc_addr(address)}])")
        tls = _clean(attrs.get("tls", ""))
        if tls:
            lines.append(f"\t(using {tls})")
        if attrs.get("sasl_header") == "yes" and attrs.get("sasl_username"):
            # smtpd_sasl_authenticated_header, as Postfix writes it.
            lines.append(f"\t(Authenticated sender: {_clean(attrs['sasl_username'])})")
        protocol = _clean(attrs.get("protocol", "")) or "ESMTP"
        lines.append(f"\tby {myhostname} (pymta) with {protocol} id {queue_id}")
    else:
        uid = _clean(attrs.get("uid", ""))
        who = f"pymta, from userid {uid}" if uid else "pymta"
        lines.append(f"Received: by {myhostname} ({who})")
        lines.append(f"\tid {queue_id}")
    if for_rcpt is not None:
        lines.append(f"\tfor <{_clean(for_rcpt)}>; {date}")
    else:
        lines[-1] += f"; {date}"
    return "\n".join(lines) + "\n"


def missing_headers(
    scan: HeaderScan,
    envelope: Envelope,
    queue_id: str,
    myhostname: str,
    date: str,
    add_from: bool,
) -> tuple[str, str | None]:
    """(headers to append to the header block, the Message-ID we added or None)."""
    added = []
    message_id = None
    if scan.message_id is None:
        message_id = f"<{queue_id}@{myhostname}>"
        added.append(f"Message-ID: {message_id}\n")
    if not scan.has_date:
        added.append(f"Date: {date}\n")
    if add_from and not scan.has_from:
        sender = _clean(envelope.sender) or "MAILER-DAEMON"
        full_name = _clean(_decodable(envelope.attributes.get("full_name", "")))
        if full_name:
            # sendmail -F: Postfix's hdr_from_format = standard, "Name <addr>".
            added.append(f"From: {_display_name(full_name)} <{sender}>\n")
        else:
            added.append(f"From: {sender}\n")
    return "".join(added), message_id


def assemble(content: bytes, scan: HeaderScan, received: str, added: str) -> bytes:
    """The message with Received in front and the added headers at the end
    of the header block (one copy of the content)."""
    front = received.encode("utf-8", "surrogateescape")
    extra = added.encode("utf-8", "surrogateescape")
    if scan.end == 0:
        tail = content if scan.separator else b"\n" + content
        return b"".join((front, extra, tail))
    head = content[: scan.end]
    if not head.endswith(b"\n"):
        head += b"\n"
    rest = content[scan.end :]
    if not scan.separator:
        rest = b"\n" + rest
    return b"".join((front, head, extra, rest))
