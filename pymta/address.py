"""RFC 5321/5322 addresses: parse SMTP paths, quote, split local part, extension, domain.

Mirrors Postfix's tok822/quote_821 and smtpd's extract_addr. Everything
here handles untrusted network input; a malformed address raises
:class:`AddressError` carrying the SMTP reply (501 5.1.7 for a sender,
501 5.1.3 for a recipient), never anything else.

Addresses are kept in their external (RFC 5321) form, quotes and all, as
received: ``"john doe"@example.org``. ``split_address`` cuts at the last
unquoted ``@``; ``unquote_local`` gives the internal form of a local part.
Nothing here logs or writes.

Postfix tolerances kept on purpose: white space after ``MAIL FROM:``, a
path without angle brackets, source routes (``<@a,@b:user@d>``, stripped as
RFC 5321 section 4.1.1.3 allows) and bare local parts (``<postmaster>``,
RFC 5321 section 4.5.1).
"""

from __future__ import annotations

import ipaddress
import re

__all__ = [
    "AddressError",
    "is_ascii",
    "normalize_domain",
    "parse_esmtp_params",
    "parse_path",
    "quote_local",
    "split_address",
    "split_extension",
    "unquote_local",
]


class AddressError(ValueError):
    """A malformed address or parameter; ``code status text`` is the SMTP reply."""

    def __init__(self, status: str, text: str, code: int = 501) -> None:
        self.code = code
        self.status = status
        self.text = text
        super().__init__(f"{code} {status} {text}")

    def reply(self) -> str:
        return f"{self.code} {self.status} {self.text}"


# RFC 5322 atext, plus any non-ASCII character (RFC 6531 UTF8-non-ascii).
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff"
_DOT_STRING = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*\Z")
# Postfix accepts sloppy dot-strings (a..b, trailing dot) from real mailers.
_LOOSE_ATOM = re.compile(rf"[{_ATEXT}.]+\Z")
# qtextSMTP / quoted-pairSMTP (RFC 5321 section 4.1.2), non-ASCII allowed for SMTPUTF8.
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"\Z')
_LABEL_TEXT = (
    r"[A-Za-z0-9_\u0080-\U0010ffff](?:[A-Za-z0-9_\-\u0080-\U0010ffff]*"
    r"[A-Za-z0-9_\u0080-\U0010ffff])?"
)
# Dot-separated labels in one match (a label holds no dot, so each one
# still matches exactly what lies between two dots).
_DOMAIN = re.compile(rf"{_LABEL_TEXT}(?:\.{_LABEL_TEXT})*\Z")
_ESMTP_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*\Z")
# esmtp-value: %d33-60 / %d62-126, and UTF-8 for SMTPUTF8 clients (RFC 6531).
_ESMTP_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NEEDS_BACKSLASH = re.compile(r'(["\\])')


def is_ascii(text: str) -> bool:
    return text.isascii()


def _bad(sender: bool) -> AddressError:
    if sender:
        return AddressError("5.1.7", "Bad sender address syntax")
    return AddressError("5.1.3", "Bad recipient address syntax")


def _scan_to(text: str, start: int, stops: str) -> int:
    """Index of the first char in ``stops`` outside quotes at or after start, or -1."""
    if '"' not in text:
        # Fast path: nothing is quoted, a plain search will do.
        if len(stops) == 1:
            return text.find(stops, start)
        found = [i for i in (text.find(ch, start) for ch in stops) if i >= 0]
        return min(found) if found else -1
    i = start
    n = len(text)
    quoted = False
    while i < n:
        ch = text[i]
        if ch == "\\" and quoted:
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in stops:
            return i
        i += 1
    return -1


def parse_path(text: str, *, sender: bool = False, strict: bool = False) -> tuple[str, str]:
    """Parse the argument of ``MAIL FROM:``/``RCPT TO:`` into (address, rest).

    ``rest`` holds the ESMTP parameters (see :func:`parse_esmtp_params`).
    The null sender ``<>`` gives ``""``, accepted only when ``sender`` is true.
    ``strict`` (strict_rfc821_envelopes) refuses a path without angle brackets.
    Raises :class:`AddressError` (501 5.1.7 / 501 5.1.3) on malformed input.
    """
    text = text.strip(" \t")
    if not text:
        raise _bad(sender)
    if text[0] == "<":
        end = _scan_to(text, 1, ">")
        if end < 0:
            raise _bad(sender)
        path = text[1:end]
        rest = text[end + 1 :]
        if rest and rest[0] not in " \t":
            raise _bad(sender)
    else:
        # Postfix's default (strict_rfc821_envelopes = no) takes a bare address.
        if strict:
            raise _bad(sender)
        end = _scan_to(text, 0, " \t")
        if end < 0:
            path, rest = text, ""
        else:
            path, rest = text[:end], text[end:]
        if "<" in path or ">" in path:
            raise _bad(sender)
    rest = rest.strip(" \t")
    if path.startswith("@"):
        path = _strip_source_route(path, sender)
    if path == "":
        if sender:
            return "", rest
        raise _bad(sender)
    _check_mailbox(path, sender)
    return path, rest


def _strip_source_route(path: str, sender: bool) -> str:
    colon = _scan_to(path, 0, ":")
    if colon < 0:
        raise _bad(sender)
    for hop in path[:colon].split(","):
        hop = hop.strip()
        if not hop.startswith("@") or not _valid_domain(hop[1:]):
            raise _bad(sender)
    mailbox = path[colon + 1 :]
    if not mailbox:
        raise _bad(sender)
    return mailbox


def _valid_domain(domain: str) -> bool:
    if domain.startswith("["):
        try:
            normalize_domain(domain)
        except AddressError:
            return False
        return True
    if domain.endswith("."):
        domain = domain[:-1]
    if not domain or len(domain) > 255:
        return False
    return _DOMAIN.match(domain) is not None


def _valid_local(local: str) -> bool:
    if not local or len(local) > 1024:
        return False
    if local[0] == '"':
        if _QUOTED.match(local):
            return True
    if _LOOSE_ATOM.match(local):
        return True
    # Mixed forms such as "a b".c or a."b" (RFC 5322 obs-local-part).
    parts: list[str] = []
    i = 0
    while i <= len(local):
        j = _scan_to(local, i, ".")
        if j < 0:
            parts.append(local[i:])
            break
        parts.append(local[i:j])
        i = j + 1
    return all(p and (_QUOTED.match(p) or _LOOSE_ATOM.match(p)) for p in parts)


def _check_mailbox(path: str, sender: bool) -> None:
    if _CONTROL.search(path):
        raise _bad(sender)
    local, domain = split_address(path)
    if "@" in path and _scan_to(path, 0, "@") >= 0:
        # An unquoted @ that is not the last one (user@other@ourdomain) is
        # still a relay trick, but it is syntax Postfix accepts; the relay
        # check decides. An empty domain is not.
        if not domain:
            raise _bad(sender)
        if not _valid_domain(domain):
            raise _bad(sender)
        if not _valid_local(local) and not _valid_local_routed(local):
            raise _bad(sender)
    elif not _valid_local(local):
        raise _bad(sender)


def _valid_local_routed(local: str) -> bool:
    """A local part holding unquoted @ (user@other): each piece must be valid."""
    pieces: list[str] = []
    i = 0
    while True:
        j = _scan_to(local, i, "@")
        if j < 0:
            pieces.append(local[i:])
            break
        pieces.append(local[i:j])
        i = j + 1
    return all(_valid_local(p) for p in pieces[:1]) and all(_valid_domain(p) for p in pieces[1:])


def parse_esmtp_params(rest: str) -> dict[str, str | None]:
    """Parse ``KEY[=VALUE] ...`` (RFC 5321 section 4.1.2); keys are upper-cased.

    Raises :class:`AddressError` 501 5.5.4 on bad syntax.
    """
    params: dict[str, str | None] = {}
    for word in rest.split():
        key, eq, value = word.partition("=")
        if not _ESMTP_KEYWORD.match(key):
            raise AddressError("5.5.4", "Bad parameter syntax")
        if eq:
            if not _ESMTP_VALUE.match(value):
                raise AddressError("5.5.4", "Bad parameter syntax")
            params[key.upper()] = value
        else:
            params[key.upper()] = None
    return params


def split_address(address: str) -> tuple[str, str]:
    """(local part, domain) split at the last unquoted ``@``; domain "" when none."""
    if '"' not in address:
        local, sep, domain = address.rpartition("@")
        return (local, domain) if sep else (address, "")
    at = -1
    i = 0
    while True:
        j = _scan_to(address, i, "@")
        if j < 0:
            break
        at = j
        i = j + 1
    if at < 0:
        return address, ""
    return address[:at], address[at + 1 :]


def unquote_local(local: str) -> str:
    """The internal form: quotes removed and quoted-pairs resolved."""
    if '"' not in local and "\\" not in local:
        return local
    out: list[str] = []
    quoted = False
    i = 0
    while i < len(local):
        ch = local[i]
        if ch == "\\" and i + 1 < len(local):
            out.append(local[i + 1])
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def quote_local(local: str) -> str:
    """The external form of an internal local part (RFC 5321 section 4.1.2).

    A dot-string stays as it is; anything else is quoted, with ``"`` and
    ``\\`` escaped.
    """
    if local and _DOT_STRING.match(local):
        return local
    return '"' + _NEEDS_BACKSLASH.sub(r"\\\1", local) + '"'


def normalize_domain(domain: str) -> str:
    """Lower case without one trailing dot; address literals are validated.

    ``[1.2.3.4]`` and ``[IPv6:...]`` (RFC 5321 section 4.1.3) come back in
    canonical form; an invalid literal raises AddressError 501 5.1.3.
    """
    if domain.startswith("["):
        if not domain.endswith("]"):
            raise AddressError("5.1.3", "Bad address literal syntax")
        inner = domain[1:-1]
        try:
            if inner[:5].lower() == "ipv6:":
                return f"[IPv6:{ipaddress.IPv6Address(inner[5:]).compressed}]"
            return f"[{ipaddress.IPv4Address(inner)}]"
        except ValueError:
            raise AddressError("5.1.3", "Bad address literal syntax") from None
    if domain.endswith("."):
        domain = domain[:-1]
    return domain.lower()


def split_extension(local: str, delimiters: str) -> tuple[str, str | None]:
    """(user, extension) split at the first of the ``recipient_delimiter`` chars.

    The extension excludes the delimiter (it is ``local[len(user)]``). As in
    Postfix, a local part that starts with a delimiter, or no delimiter
    configured, has no extension.
    """
    if not delimiters:
        return local, None
    for i, ch in enumerate(local):
        if ch in delimiters:
            if i == 0:
                return local, None
            return local[:i], local[i + 1 :]
    return local, None
