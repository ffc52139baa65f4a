"""The maildrop file format: what sendmail writes and pickup reads.

Mirrors the role of Postfix's postdrop/pickup record stream (rec_type.h):
typed records in a fixed order, a version line first and an end marker
last, so that pickup can tell a whole file from a truncated, damaged or
hand-made one. Layout (every record but the content ends in LF; text is
UTF-8 with surrogate escapes; ``%``, TAB, CR, LF and NUL inside a field are
written as ``%XX``)::

    PYMTAM 1            magic and format version
    T<time>             when sendmail wrote it, seconds since the epoch
    S<sender>           optional: the -f sender ("" for the null sender <>);
                        absent: pickup uses user@$myorigin of the file's owner
    F<full name>        optional: -F, for the From: header cleanup adds
    A<name>=<value>     zero or more: envid (-V), ret (-R), body (-B)
    N<count>            the number of recipient records that follow (>= 1)
    R<address>\\t<notify>
                        one per recipient; notify is -N's NEVER or a comma
                        list of SUCCESS, FAILURE, DELAY, or empty
    L<length>           the content length in bytes
    <content>           exactly length bytes, LF line endings
    E                   end marker: the file ends right after it

There is deliberately no record for the submitting user: pickup takes the
uid from the kernel (the file's owner, fstat), never from the content.
Untrusted: every byte (any local user may write a maildrop file).
:func:`decode` checks everything and raises MaildropFileError; attribute
names it does not know are returned apart (pickup logs and ignores them).
Writes and logs nothing; imports nothing heavy (sendmail starts fast).
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: sendmail starts faster without typing
if TYPE_CHECKING:
    from typing import Any

MAGIC = b"PYMTAM 1\n"
END = b"E\n"

#: Attribute names a maildrop file may carry (anything else is ignored).
ATTRIBUTES = ("envid", "ret", "body")

#: What _escape writes as %XX. No regular expressions on sendmail's path:
#: compiling the few it had took 7 ms of each run's CPU (one process per
#: message); decode, which pickup runs, builds its patterns on first use.
_SPECIAL = "%\t\r\n\x00"
_ESCAPES = {ord(c): f"%{ord(c):02X}" for c in _SPECIAL}
_PATTERNS: dict[str, object] = {}


def _pattern(name: str) -> Any:
    """decode's patterns, compiled once per process."""
    if not _PATTERNS:
        import re

        _PATTERNS["escaped"] = re.compile(r"%([0-9A-F]{2})")
        _PATTERNS["attr_name"] = re.compile(rb"[A-Za-z0-9_]+")
        _PATTERNS["notify"] = re.compile(
            r"NEVER|(?:SUCCESS|FAILURE|DELAY)(?:,(?:SUCCESS|FAILURE|DELAY))*|"
        )
    return _PATTERNS[name]


class MaildropFileError(ValueError):
    """A maildrop file that is not in this format; str() says what is wrong."""


class MaildropMessage:
    """One submission: envelope from the command line and the content (a
    plain class: dataclasses would cost sendmail's start-up time)."""

    def __init__(
        self,
        recipients: list[tuple[str, str]],  # (address, notify or "")
        content: bytes,
        sender: str | None = None,  # None: the submitting user's default
        full_name: str = "",
        attributes: dict[str, str] | None = None,
        time: float = 0.0,
    ) -> None:
        self.recipients = recipients
        self.content = content
        self.sender = sender
        self.full_name = full_name
        self.attributes: dict[str, str] = attributes if attributes is not None else {}
        self.time = time
        self.ignored: list[str] = []  # unknown attribute names read

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MaildropMessage) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"MaildropMessage({vars(self)!r})"


def _escape(text: str) -> bytes:
    if any(c in text for c in _SPECIAL):
        text = text.translate(_ESCAPES)
    return text.encode("utf-8", "surrogateescape")


def _unescape(raw: bytes) -> str:
    text = raw.decode("utf-8", "surrogateescape")
    if "%" in text:
        text = _pattern("escaped").sub(lambda m: chr(int(m.group(1), 16)), text)
    return text


def encode(message: MaildropMessage) -> bytes:
    """The file's bytes."""
    if not message.recipients:
        raise ValueError("a maildrop file needs at least one recipient")
    parts = [MAGIC, b"T", repr(float(message.time)).encode(), b"\n"]
    if message.sender is not None:
        parts += [b"S", _escape(message.sender), b"\n"]
    if message.full_name:
        parts += [b"F", _escape(message.full_name), b"\n"]
    for name, value in message.attributes.items():
        if name not in ATTRIBUTES:
            raise ValueError(f"bad maildrop attribute {name!r}")
        parts += [b"A", name.encode(), b"=", _escape(value), b"\n"]
    parts += [b"N", str(len(message.recipients)).encode(), b"\n"]
    for address, notify in message.recipients:
        parts += [b"R", _escape(address), b"\t", _escape(notify), b"\n"]
    parts += [b"L", str(len(message.content)).encode(), b"\n", message.content, END]
    return b"".join(parts)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def peek(self) -> bytes:
        return self.data[self.pos : self.pos + 1]

    def line(self, kind: bytes) -> bytes:
        if self.peek() != kind:
            found = self.peek().decode("latin-1") or "end of file"
            raise MaildropFileError(f"expected record {kind.decode()}, found {found!r}")
        end = self.data.find(b"\n", self.pos)
        if end < 0:
            raise MaildropFileError(f"record {kind.decode()} has no line end")
        value = self.data[self.pos + 1 : end]
        self.pos = end + 1
        return value


def _number(raw: bytes, what: str) -> int:
    if not raw.isdigit() or len(raw) > 12:
        raise MaildropFileError(f"bad {what} {raw[:20]!r}")
    return int(raw)


def decode(data: bytes, max_recipients: int = 0) -> MaildropMessage:
    """Parse and check a whole file; MaildropFileError when it is not valid.

    ``max_recipients`` > 0 refuses files that list more recipients."""
    if not data.startswith(MAGIC):
        raise MaildropFileError("not a pymta maildrop file (bad version line)")
    r = _Reader(data)
    r.pos = len(MAGIC)
    try:
        when = float(r.line(b"T").decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise MaildropFileError("bad T record") from None
    message = MaildropMessage(recipients=[], content=b"", time=when)
    if r.peek() == b"S":
        message.sender = _unescape(r.line(b"S"))
    if r.peek() == b"F":
        message.full_name = _unescape(r.line(b"F"))
    while r.peek() == b"A":
        raw = r.line(b"A")
        name, sep, value = raw.partition(b"=")
        if not sep or not _pattern("attr_name").fullmatch(name):
            raise MaildropFileError(f"bad A record {raw[:40]!r}")
        text_name = name.decode("ascii")
        if text_name in ATTRIBUTES:
            message.attributes[text_name] = _unescape(value)
        else:
            message.ignored.append(text_name)
    count = _number(r.line(b"N"), "recipient count")
    if count < 1:
        raise MaildropFileError("no recipients")
    if max_recipients and count > max_recipients:
        raise MaildropFileError(f"too many recipients ({count})")
    for _ in range(count):
        address, sep, notify = r.line(b"R").partition(b"\t")
        text_address, text_notify = _unescape(address), _unescape(notify)
        if not sep or not text_address or not _pattern("notify").fullmatch(text_notify):
            raise MaildropFileError("bad R record")
        message.recipients.append((text_address, text_notify))
    length = _number(r.line(b"L"), "content length")
    end = r.pos + length
    if data[end:] != END:
        raise MaildropFileError("content length or end marker wrong (truncated file?)")
    message.content = data[r.pos : end]
    return message
