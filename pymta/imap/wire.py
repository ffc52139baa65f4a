"""IMAP response syntax: strings, literals, NIL, flag lists, dates, names.

RFC 3501 section 9 (``string``, ``nstring``, ``astring``, ``date-time``)
and section 5.1.3 (mailbox names in modified UTF-7 on the wire; the store
keeps Unicode names). Text that is short, 7-bit and free of line breaks
and NUL goes out quoted; anything else as a literal, so no value from a
message can break the response syntax.

Untrusted input: values from stored messages and from clients (mailbox
names). Pure functions; writes and logs nothing.
"""

from __future__ import annotations

import calendar
import functools
import re
import time
import unicodedata
from collections.abc import Iterable

from pymta.mailstore.names import mutf7_decode, mutf7_encode

NIL = b"NIL"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_QUOTABLE = re.compile(rb"[\x20-\x7e]{0,1024}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DATE_TIME = re.compile(
    r"\s?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)\Z"
)
_DATE = re.compile(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})\Z")


def string(value: bytes) -> bytes:
    """A quoted string when that is safe, else a literal."""
    if _QUOTABLE.match(value):
        return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(value) + value


def nstring(value: bytes | str | None) -> bytes:
    if value is None:
        return NIL
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    return string(value)


def literal(value: bytes) -> bytes:
    return b"{%d}\r\n" % len(value) + value


def flag_list(flags: Iterable[str]) -> bytes:
    """``(\\Flagged \\Seen)``: a list in its order, a frozenset sorted and remembered
    (a folder has few distinct flag combinations; FETCH 1:* FLAGS formats each message)."""
    if isinstance(flags, frozenset):
        return _frozen_flag_list(flags)
    return b"(" + " ".join(flags).encode("ascii", "replace") + b")"


@functools.lru_cache(maxsize=4096)
def _frozen_flag_list(flags: frozenset[str]) -> bytes:
    return b"(" + " ".join(sorted(flags)).encode("ascii", "replace") + b")"


def mailbox_out(name: str, utf8: bool = False) -> bytes:
    """A store folder name as a wire string: modified UTF-7, or with ``utf8``
    (IMAP4rev2 enabled, RFC 9051 5.1) UTF-8, quoted when it has no control
    characters (RFC 9051's quoted strings may carry UTF-8), else a literal."""
    if not utf8:
        return string(mutf7_encode(name).encode("ascii"))
    return utf8_string(name)


def utf8_string(text: str) -> bytes:
    """A Unicode string as a quoted UTF-8 string (RFC 9051 QUOTED-CHAR admits
    UTF8-2/3/4), or a literal when it has control characters or is long."""
    data = text.encode("utf-8", "surrogateescape")
    if len(data) <= 1024 and not _CONTROL.search(text):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return literal(data)


class EightBitName(ValueError):
    """A mailbox name with 8-bit octets where only mUTF-7 is allowed."""


def mailbox_in(raw: bytes | str, utf8: bool = False) -> str:
    """A client's mailbox name (mUTF-7) as a store name; ValueError when it
    is malformed. Raw UTF-8 is accepted only with ``utf8`` (UTF8=ACCEPT or
    IMAP4rev2 enabled); otherwise it is :class:`EightBitName`, as Dovecot
    refuses it: storing it translated would make a client that sent it
    (mbsync 1.4 does) see a different name in LIST and create a duplicate."""
    if utf8:
        # RFC 6855 3 / RFC 9051 5.1: once UTF-8 is enabled the client sends
        # names in UTF-8 and never in mUTF-7, so "&" is an ampersand; names
        # are kept in normalisation form NFC.
        data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogateescape")
        text = data.decode("utf-8")
        if _CONTROL.search(text):
            raise ValueError("Mailbox name has control characters")
        return unicodedata.normalize("NFC", text)
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    if not text.isascii():
        raise EightBitName("Mailbox name is not valid mUTF-7")
    return mutf7_decode(text)


def date_time(seconds: float) -> bytes:
    """INTERNALDATE form, in UTC: ``"17-Jul-1996 02:44:25 +0000"``."""
    t = time.gmtime(seconds)
    return b'"%02d-%s-%04d %02d:%02d:%02d +0000"' % (
        t.tm_mday,
        _MONTHS[t.tm_mon - 1].encode(),
        t.tm_year,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
    )


def _month(name: str) -> int:
    try:
        return _MONTHS.index(name.capitalize()) + 1
    except ValueError:
        raise ValueError(f"bad month {name!r}") from None


def parse_date_time(text: str) -> float:
    """APPEND's date-time as seconds since the epoch; ValueError."""
    m = _DATE_TIME.match(text)
    if not m:
        raise ValueError("bad date-time")
    day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
    t = calendar.timegm((int(year), _month(mon), int(day), int(hh), int(mm), int(ss), 0, 0, 0))
    offset = (int(zh) * 60 + int(zm)) * 60
    return float(t - offset if sign == "+" else t + offset)


def parse_date(text: str) -> tuple[int, int, int]:
    """SEARCH's date (``1-Feb-1994``) as (year, month, day); ValueError."""
    m = _DATE.match(text)
    if not m:
        raise ValueError("bad date")
    day, mon, year = m.groups()
    value = (int(year), _month(mon), int(day))
    if not 1 <= value[2] <= 31:
        raise ValueError("bad day")
    return value
