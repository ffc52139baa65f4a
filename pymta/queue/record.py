"""The queue-file format: typed, order-checked records.

Mirrors the role of Postfix's record.c / rec_type.h: a queue file is a
sequence of one-letter typed records in a fixed order, so a reader can tell
a whole file from a truncated or damaged one. Layout (every record but the
content ends in LF; text is UTF-8 with surrogate escapes, and ``%``, TAB,
CR, LF and NUL inside a field are written as ``%XX``)::

    PYMTAQ 1            magic and format version
    T<arrival time>     seconds since the epoch, a Python float repr
    S<sender>           "" for the null sender
    A<name>=<value>     zero or more envelope attributes, name [A-Za-z0-9_]+;
                        the last may be Acontent_lines=<n>: the number of
                        LF in the content, counted as it was received, so
                        that a delivery copying the content into a Maildir
                        (whose file name carries the size with CRLF line
                        ends) needs no pass over it. Not an attribute of
                        the envelope: decoding takes it out. A file
                        without it (an earlier pymta's) is counted then.
    N<count>            the number of recipient records that follow
    R<flag><address>\\t<original>\\t<orcpt>\\t<notify>
                        one per recipient; flag "-" pending, "D" done. The
                        flag sits at a known offset so marking a recipient
                        done is one byte written in place (os.pwrite).
                        orcpt/notify None are written as empty fields.
    L<length>           the content length in bytes
    <content>           exactly length bytes, LF line endings
    E                   end marker: the file ends right after it

The file's mode is part of the format: its writer creates it under its
final name in incoming/ with mode 0600 and sets the owner's execute bit
(0700) once the end marker is written, as Postfix's cleanup marks a queue
file ready (pymta.queue.store). A file without that bit was never
acknowledged (the ready mark is made before the sync that precedes the
client's 250), so readers of incoming/ skip it; at start one that is not
whole is removed, and one that is whole is marked and delivered (an
earlier pymta renamed finished files instead of marking them).

Untrusted: the file's bytes (another process, a crash or a disk may have
damaged it). :func:`decode` checks everything and raises QueueFileError;
:func:`decode_envelope` checks the same but reads only the records before
the content and the end marker (the queue manager never needs the content:
delivery agents read it from the file). Writes: nothing (the store does
the I/O).
"""

from __future__ import annotations

import math
import os
import re

from pymta.queue.interface import QueueFileError
from pymta.queue.model import Envelope, Recipient

MAGIC = b"PYMTAQ 1\n"
END = b"E\n"
PENDING = b"-"
DONE = b"D"

_SPECIAL = re.compile(r"[%\t\r\n\x00]")
_ESCAPED = re.compile(r"%([0-9A-F]{2})")
_ATTR_NAME = re.compile(r"[A-Za-z0-9_]+")
#: The attribute record that carries the content's line count (see above).
LINES = "content_lines"


def _escape(text: str) -> bytes:
    if _SPECIAL.search(text):
        text = _SPECIAL.sub(lambda m: f"%{ord(m.group()):02X}", text)
    return text.encode("utf-8", "surrogateescape")


def _unescape(raw: bytes) -> str:
    text = raw.decode("utf-8", "surrogateescape")
    if "%" in text:
        text = _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), text)
    return text


def encode_header(
    envelope: Envelope, content_length: int, lines: int | None = None
) -> tuple[bytes, list[int]]:
    """The records before the content, and each recipient's flag offset;
    ``lines``, when known, is the content's LF count."""
    parts = [MAGIC, b"T", repr(float(envelope.arrival_time)).encode(), b"\nS"]
    parts.append(_escape(envelope.sender))
    parts.append(b"\n")
    for name, value in envelope.attributes.items():
        if not _ATTR_NAME.fullmatch(name):
            raise ValueError(f"bad envelope attribute name {name!r}")
        if name == LINES:
            continue  # only the count given here describes this content
        parts += [b"A", name.encode(), b"=", _escape(value), b"\n"]
    if lines is not None:
        parts += [b"A", LINES.encode(), b"=", str(int(lines)).encode(), b"\n"]
    parts += [b"N", str(len(envelope.recipients)).encode(), b"\n"]
    offset = sum(map(len, parts))
    flags: list[int] = []
    for rcpt in envelope.recipients:
        record = b"".join(
            (
                b"R",
                DONE if rcpt.done else PENDING,
                _escape(rcpt.address),
                b"\t",
                _escape(rcpt.original),
                b"\t",
                _escape(rcpt.orcpt or ""),
                b"\t",
                _escape(rcpt.notify or ""),
                b"\n",
            )
        )
        flags.append(offset + 1)
        offset += len(record)
        parts.append(record)
    parts += [b"L", str(content_length).encode(), b"\n"]
    return b"".join(parts), flags


def encode(
    envelope: Envelope, content: bytes, lines: int | None = None
) -> tuple[list[bytes], list[int]]:
    """The whole file as buffers for one writev, and the flag offsets;
    ``lines`` as for :func:`encode_header`."""
    header, flags = encode_header(envelope, len(content), lines)
    return [header, content, END], flags


class _Truncated(QueueFileError):
    """The data ended inside a record (a longer read may complete it)."""


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def record(self, expected: bytes) -> bytes:
        """The body of the next record, which must be of type expected."""
        data = self.data
        end = data.find(b"\n", self.pos)
        if end < 0:
            raise _Truncated(f"truncated: no end of record at offset {self.pos}")
        rtype = data[self.pos : self.pos + 1]
        if rtype != expected:
            raise QueueFileError(
                f"record order: expected {expected.decode()!r} at offset {self.pos},"
                f" found {rtype.decode('latin-1')!r}"
            )
        body = data[self.pos + 1 : end]
        self.pos = end + 1
        return body

    def peek(self) -> bytes:
        return self.data[self.pos : self.pos + 1]


def _number(body: bytes, what: str) -> int:
    if not body.isdigit() or len(body) > 12:
        raise QueueFileError(f"bad {what} record {body[:40]!r}")
    return int(body)


def _decode_records(data: bytes) -> tuple[Envelope, list[int], int, int, int | None]:
    """The records before the content: (envelope, flag offsets, content
    offset, content length, content line count or None)."""
    if not data.startswith(MAGIC):
        if len(data) < len(MAGIC) and MAGIC.startswith(data) and data:
            raise _Truncated("truncated: inside the magic")
        raise QueueFileError("bad magic: not a pymta queue file (or another version)")
    reader = _Reader(data)
    reader.pos = len(MAGIC)
    arrival_raw = reader.record(b"T")
    try:
        arrival = float(arrival_raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise QueueFileError(f"bad arrival time {arrival_raw[:40]!r}") from None
    if not math.isfinite(arrival):
        # float() takes nan and inf, which pymta never writes: a message that
        # arrived then would never expire, and would be retried at time nan.
        raise QueueFileError(f"bad arrival time {arrival_raw[:40]!r}")
    sender = _unescape(reader.record(b"S"))
    attributes: dict[str, str] = {}
    while reader.peek() == b"A":
        name, sep, value = reader.record(b"A").partition(b"=")
        if not sep or not _ATTR_NAME.fullmatch(name.decode("latin-1")):
            raise QueueFileError(f"bad attribute record {name[:40]!r}")
        attributes[name.decode("ascii")] = _unescape(value)
    lines = None
    if LINES in attributes:
        raw_lines = attributes.pop(LINES)
        if not (raw_lines.isascii() and raw_lines.isdigit()) or len(raw_lines) > 12:
            raise QueueFileError(f"bad content line count {raw_lines[:40]!r}")
        lines = int(raw_lines)
    count = _number(reader.record(b"N"), "recipient count")
    recipients: list[Recipient] = []
    flags: list[int] = []
    while reader.peek() == b"R":
        flag_offset = reader.pos + 1
        body = reader.record(b"R")
        flag = body[:1]
        fields = body[1:].split(b"\t")
        if flag not in (PENDING, DONE) or len(fields) != 4:
            raise QueueFileError(f"bad recipient record at offset {flag_offset - 1}")
        address, original, orcpt, notify = (_unescape(f) for f in fields)
        recipients.append(Recipient(address, original, orcpt or None, notify or None, flag == DONE))
        flags.append(flag_offset)
    if not reader.peek() and len(recipients) < count:
        raise _Truncated(f"truncated after recipient {len(recipients)}")
    if len(recipients) != count:
        raise QueueFileError(f"recipient count: header says {count}, found {len(recipients)}")
    length = _number(reader.record(b"L"), "content length")
    envelope = Envelope(sender, recipients, arrival, attributes)
    if lines is not None and lines > length:
        raise QueueFileError(f"content line count {lines} exceeds its length {length}")
    return envelope, flags, reader.pos, length, lines


def _check_length(start: int, length: int, file_size: int) -> None:
    if file_size != start + length + len(END):
        raise QueueFileError(
            f"content length: expected {length} bytes and end marker, file has"
            f" {file_size - start} bytes after the header"
        )


def decode(data: bytes) -> tuple[Envelope, bytes, list[int]]:
    """Parse and validate a whole queue file: (envelope, content, flag offsets)."""
    try:
        envelope, flags, start, length, _lines = _decode_records(data)
    except _Truncated as e:
        raise QueueFileError(str(e)) from None
    _check_length(start, length, len(data))
    if data[start + length :] != END:
        raise QueueFileError("missing end marker")
    return envelope, data[start : start + length], flags


#: How much of a queue file decode_envelope reads at a time.
HEADER_BLOCK = 16 * 1024


def decode_envelope(fd: int) -> tuple[Envelope, list[int], int, int, int | None]:
    """Validate an open queue file as :func:`decode` does, reading only its
    records and end marker: (envelope, flag offsets, content offset,
    content length, content line count or None when the file does not
    carry it). Blocking I/O: call it off the reactor."""
    file_size = os.fstat(fd).st_size
    data = b""
    while True:
        block = os.pread(fd, HEADER_BLOCK, len(data))
        data += block
        try:
            envelope, flags, start, length, lines = _decode_records(data)
        except _Truncated as e:
            if not block:
                raise QueueFileError(str(e)) from None
            continue
        break
    _check_length(start, length, file_size)
    if os.pread(fd, len(END), start + length) != END:
        raise QueueFileError("missing end marker")
    return envelope, flags, start, length, lines
