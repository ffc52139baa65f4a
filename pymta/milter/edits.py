"""edits: a milter's end-of-message modifications applied to a message.

Mirrors Postfix's cleanup_milter.c. The message is in pymta's internal
form (LF line ends); what the milter sends (header values, a replacement
body in CR LF lines) is converted to it. Header actions, as sendmail and
Postfix apply them:

- SMFIR_ADDHEADER appends a header at the end of the header section;
- SMFIR_INSHEADER inserts one before the header at position INDEX (0: at
  the top; past the end: at the end);
- SMFIR_CHGHEADER replaces the INDEX-th (from 1) header of that name, or
  deletes it when the value is empty; a header that is not there is added
  (Postfix's behaviour).

SMFIR_REPLBODY chunks are concatenated into the new body. Envelope actions
(add/delete recipient, change sender) are returned for cleanup, which
rewrites the new addresses as it rewrites any (canonical and virtual alias
maps). Untrusted input: the milter's edits (their names were checked by
:mod:`pymta.milter.wire`; values have their CR LF made LF and stray CR or
NUL removed so that no edit can end the header section early).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from pymta.milter import wire


@dataclass
class EnvelopeEdits:
    """The envelope changes of one message's milters, in the order sent."""

    sender: tuple[str, str] | None = None  # (address, ESMTP args)
    add: list[tuple[str, str]] = field(default_factory=list)  # (address, ESMTP args)
    delete: list[str] = field(default_factory=list)


def split_message(message: bytes) -> tuple[list[bytes], bytes]:
    """(headers, body): each header with its continuation lines and final
    LF; the body after the empty line (the empty line itself dropped)."""
    headers: list[bytes] = []
    pos = 0
    length = len(message)
    while pos < length:
        end = message.find(b"\n", pos)
        line_end = length if end < 0 else end + 1
        line = message[pos:line_end]
        if line in (b"\n", b""):
            return headers, message[line_end:]
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1] += line
        elif b":" not in line:
            # Not a header: the body starts here (no empty line before it).
            return headers, message[pos:]
        else:
            headers.append(line if line.endswith(b"\n") else line + b"\n")
        pos = line_end
    return headers, b""


def header_name(header: bytes) -> str:
    return header.split(b":", 1)[0].strip().decode("utf-8", "surrogateescape")


def header_value(header: bytes) -> str:
    """The value after the colon, LF inside folded headers, no final LF."""
    value = header.split(b":", 1)[1] if b":" in header else b""
    return value.rstrip(b"\n").decode("utf-8", "surrogateescape")


def _clean(value: str) -> str:
    value = value.replace("\r\n", "\n").replace("\r", "").replace("\0", "")
    # A folded value's continuation lines must start with white space, or
    # the text after the LF would read as a header (or end the section).
    lines = value.split("\n")
    return "\n".join([lines[0]] + [ln if ln[:1] in (" ", "\t") else "\t" + ln for ln in lines[1:]])


def _format(name: str, value: str, leadspc: bool) -> bytes:
    value = _clean(value)
    sep = ":" if leadspc else ": "
    return f"{name}{sep}{value}\n".encode("utf-8", "surrogateescape")


def apply_edits(
    message: bytes, edits: list[wire.Reply], *, leadspc: bool = False
) -> tuple[bytes, EnvelopeEdits]:
    """The message after ``edits`` (in order) and the envelope changes."""
    headers, body = split_message(message)
    envelope = EnvelopeEdits()
    new_body: list[bytes] | None = None
    for edit in edits:
        code = edit.code
        if code == wire.SMFIR_ADDHEADER:
            headers.append(_format(edit.name, edit.value, leadspc))
        elif code == wire.SMFIR_INSHEADER:
            headers.insert(min(edit.index, len(headers)), _format(edit.name, edit.value, leadspc))
        elif code == wire.SMFIR_CHGHEADER:
            _change(headers, edit, leadspc)
        elif code == wire.SMFIR_REPLBODY:
            if new_body is None:
                new_body = []
            new_body.append(edit.body)
        elif code == wire.SMFIR_ADDRCPT:
            envelope.add.append((edit.address, ""))
        elif code == wire.SMFIR_ADDRCPT_PAR:
            envelope.add.append((edit.address, edit.args))
        elif code == wire.SMFIR_DELRCPT:
            envelope.delete.append(edit.address)
        elif code == wire.SMFIR_CHGFROM:
            envelope.sender = (edit.address, edit.args)
    if new_body is not None:
        body = b"".join(new_body).replace(b"\r\n", b"\n")
    return b"".join(headers) + b"\n" + body, envelope


def _change(headers: list[bytes], edit: wire.Reply, leadspc: bool) -> None:
    wanted = edit.name.lower()
    seen = 0
    for position, header in enumerate(headers):
        if header_name(header).lower() != wanted:
            continue
        seen += 1
        # libmilter counts from 1; sendmail takes index 0 as the first too.
        if seen == max(edit.index, 1):
            if edit.value:
                headers[position] = _format(edit.name, edit.value, leadspc)
            else:
                del headers[position]
            return
    if edit.value:
        headers.append(_format(edit.name, edit.value, leadspc))


def milter_headers(message: bytes) -> list[tuple[str, str]]:
    """The headers as sent to a milter: (name, value after the colon)."""
    headers, _ = split_message(message)
    return [(header_name(h), header_value(h)) for h in headers]


def body_blocks(message: bytes, block: int = wire.CHUNK_SIZE // 2) -> Iterator[bytes]:
    """The body in CR LF form, one block at a time (what SMFIC_BODY
    carries; a block of LF text is at most twice as long in CR LF)."""
    _, body = split_message(message)
    view = memoryview(body)
    for start in range(0, len(body), block):
        yield bytes(view[start : start + block]).replace(b"\n", b"\r\n")
