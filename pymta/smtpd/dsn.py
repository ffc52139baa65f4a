"""The DSN extension's parameters (RFC 3461): parse, validate, xtext.

Mirrors Postfix's smtpd handling of ``MAIL FROM: ... RET= ENVID=`` and
``RCPT TO: ... NOTIFY= ORCPT=`` (smtpd.c, dsn_mask.c, xtext.c):

- ``RET=FULL|HDRS`` (section 4.3), kept as the envelope attribute ``ret``;
- ``ENVID=xtext`` (section 4.4), at most 100 characters, kept decoded as
  the envelope attribute ``envid``;
- ``NOTIFY=NEVER`` or a comma list of ``SUCCESS``, ``FAILURE``, ``DELAY``
  (section 4.1), kept upper-cased in canonical order as Recipient.notify;
- ``ORCPT=addr-type;xtext`` (section 4.2), kept decoded as
  ``addr-type;address`` in Recipient.orcpt (the form a DSN's
  Original-Recipient field takes).

The smtp delivery agent reads those same names and re-encodes them with
:func:`xtext_encode` for the next hop. Untrusted input: everything here
comes from the network; bad syntax raises :class:`DsnSyntaxError` whose
text smtpd sends after ``501 5.5.4``. Writes and logs nothing.
"""

from __future__ import annotations

import re

ENVID_MAX = 100
ORCPT_MAX = 500
NOTIFY_KEYWORDS = ("SUCCESS", "FAILURE", "DELAY")

_HEX = re.compile(r"\+([0-9A-Fa-f]{2})")
# RFC 3461 asks for upper-case hex; lower case is accepted, as Postfix does.
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-Fa-f]{2})*")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")


class DsnSyntaxError(ValueError):
    """A DSN parameter with bad syntax; str() is the reply text."""


def xtext_decode(text: str) -> str:
    """Decode RFC 3461 xtext (``+XX`` hex escapes); DsnSyntaxError when malformed."""
    if not _XTEXT.fullmatch(text):
        raise DsnSyntaxError("bad xtext")
    return _HEX.sub(lambda m: chr(int(m.group(1), 16)), text)


def xtext_encode(text: str) -> str:
    """Encode text as xtext: ``+``, ``=``, controls, space and non-ASCII as ``+XX``
    (non-ASCII as its UTF-8 bytes)."""
    out: list[str] = []
    for byte in text.encode("utf-8", "surrogateescape"):
        if 33 <= byte <= 126 and byte not in (0x2B, 0x3D):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def parse_ret(value: str | None) -> str:
    """``FULL`` or ``HDRS``."""
    ret = (value or "").upper()
    if ret not in ("FULL", "HDRS"):
        raise DsnSyntaxError("Bad RET parameter syntax")
    return ret


def parse_envid(value: str | None) -> str:
    """The decoded envelope id."""
    if not value or len(value) > ENVID_MAX:
        raise DsnSyntaxError("Bad ENVID parameter syntax")
    try:
        decoded = xtext_decode(value)
    except DsnSyntaxError:
        raise DsnSyntaxError("Bad ENVID parameter syntax") from None
    if not decoded.isprintable():
        raise DsnSyntaxError("Bad ENVID parameter syntax")
    return decoded


def parse_notify(value: str | None) -> str:
    """``NEVER`` or the listed keywords in canonical order, comma separated."""
    words = [w.upper() for w in (value or "").split(",")]
    if words == ["NEVER"]:
        return "NEVER"
    if not words or len(set(words)) != len(words) or any(w not in NOTIFY_KEYWORDS for w in words):
        raise DsnSyntaxError("Bad NOTIFY parameter syntax")
    return ",".join(k for k in NOTIFY_KEYWORDS if k in words)


def parse_orcpt(value: str | None) -> str:
    """``addr-type;address`` with the address decoded."""
    addr_type, sep, xtext = (value or "").partition(";")
    if not sep or not _ADDR_TYPE.fullmatch(addr_type) or not xtext or len(xtext) > ORCPT_MAX:
        raise DsnSyntaxError("Bad ORCPT parameter syntax")
    try:
        address = xtext_decode(xtext)
    except DsnSyntaxError:
        raise DsnSyntaxError("Bad ORCPT parameter syntax") from None
    if not address.isprintable():
        raise DsnSyntaxError("Bad ORCPT parameter syntax")
    return f"{addr_type.lower()};{address}"


def encode_orcpt(orcpt: str) -> str:
    """The ``ORCPT=`` value for a kept ``addr-type;address`` (for the next hop)."""
    addr_type, _, address = orcpt.partition(";")
    return f"{addr_type};{xtext_encode(address)}"
