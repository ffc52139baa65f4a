"""Address parsing: the argument of MAIL FROM: and RCPT TO: as a client sends it.

The input is the text after ``MAIL FROM:`` (UTF-8, undecodable bytes kept
as surrogate escapes), parsed as sender and as recipient, strict and not;
what parses is split, unquoted, quoted again and normalised, and its ESMTP
parameters are parsed. Documented error:
:class:`~pymta.address.AddressError` (the 501 reply). Checked besides: a
local part that parsed, unquoted and quoted again, parses again (cleanup
and the delivery agents re-quote what smtpd accepted).
"""

from __future__ import annotations

from fuzz.common import Finding
from pymta.address import (
    AddressError,
    normalize_domain,
    parse_esmtp_params,
    parse_path,
    quote_local,
    split_address,
    split_extension,
    unquote_local,
)

EXPECTED: tuple[type[BaseException], ...] = (AddressError,)


def seeds() -> list[bytes]:
    """Paths from tests/test_address.py."""
    texts = [
        "<user@example.com> SIZE=100 BODY=8BITMIME",
        "user@example.com SIZE=5",
        "<@a.example,@b.example:user@d.example>",
        '<"john doe"@example.com>',
        '<"user@other"@example.com>',
        "<other!user@example.com>",
        "<postmaster>",
        "<user@[192.0.2.1]>",
        "<user@[IPv6:2001:db8::1]>",
        "<jöran@exämple.com>",
        '<"a\\"b"@example.com>',
        "<first.last+tag@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y",
        "<> AUTH=<>",
    ]
    return [t.encode("utf-8") for t in texts]


def _check(address: str, rest: str, sender: bool) -> None:
    try:
        parse_esmtp_params(rest)
    except AddressError:
        pass
    if not address:
        return
    local, domain = split_address(address)
    split_extension(unquote_local(local), "+-")
    if domain:
        try:
            normalize_domain(domain)
        except AddressError:
            pass
    again = quote_local(unquote_local(local)) + (f"@{domain}" if domain else "")
    try:
        parse_path(f"<{again}>", sender=sender)
    except AddressError as e:
        raise Finding(f"{address!r} parsed, but re-quoted as {again!r}: {e}") from None


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    for sender in (False, True):
        for strict in (False, True):
            try:
                address, rest = parse_path(text, sender=sender, strict=strict)
            except AddressError:
                continue
            _check(address, rest, sender)
