"""pymta.address: RFC 5321 path parsing, quoting and splitting (case tables)."""

from __future__ import annotations

import pytest

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


@pytest.mark.parametrize(
    ("text", "address", "rest"),
    [
        ("<user@example.com>", "user@example.com", ""),
        (" <user@example.com>", "user@example.com", ""),
        ("<user@example.com> SIZE=100 BODY=8BITMIME", "user@example.com", "SIZE=100 BODY=8BITMIME"),
        ("user@example.com", "user@example.com", ""),
        ("user@example.com SIZE=5", "user@example.com", "SIZE=5"),
        ("<@a.example,@b.example:user@d.example>", "user@d.example", ""),
        ("<@route.example:user@other.example>", "user@other.example", ""),
        ('<"john doe"@example.com>', '"john doe"@example.com', ""),
        ('<"user@other"@example.com>', '"user@other"@example.com', ""),
        ("<user%other@example.com>", "user%other@example.com", ""),
        ("<other!user@example.com>", "other!user@example.com", ""),
        ("<user@other@example.com>", "user@other@example.com", ""),
        ("<postmaster>", "postmaster", ""),
        ("<user@[192.0.2.1]>", "user@[192.0.2.1]", ""),
        ("<user@[IPv6:2001:db8::1]>", "user@[IPv6:2001:db8::1]", ""),
        ("<user@example.com.>", "user@example.com.", ""),
        ("<jöran@exämple.com>", "jöran@exämple.com", ""),
        ('<"a\\"b"@example.com>', '"a\\"b"@example.com', ""),
        ("<first.last+tag@example.com>", "first.last+tag@example.com", ""),
    ],
)
def test_parse_path_accepts(text: str, address: str, rest: str) -> None:
    """Valid and Postfix-tolerated paths parse into (address, parameters);
    relay tricks come back faithfully for the relay check to judge."""
    assert parse_path(text) == (address, rest)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "<>",
        "<user@example.com",
        "<user@>",
        "<@example.com>",
        "<user@exa mple.com>",
        "<us er@example.com>",
        "<user@-bad-.example>",
        "<user@[300.1.2.3]>",
        "<user@[IPv6:zz::1]>",
        '<"unterminated@example.com>',
        "<user@example.com>junk",
        "<a<b@example.com>",
        "<user\x01@example.com>",
        "<@a.example:>",
        "<@a.example user@b.example>",
        "<user@exa..mple.com>",
    ],
)
def test_parse_path_rejects_recipient(text: str) -> None:
    """Malformed recipient paths raise 501 5.1.3 Bad recipient address syntax."""
    with pytest.raises(AddressError) as info:
        parse_path(text)
    assert info.value.reply() == "501 5.1.3 Bad recipient address syntax"


def test_null_sender_only_for_mail() -> None:
    """<> is the null sender at MAIL; a bad sender is 501 5.1.7."""
    assert parse_path("<>", sender=True) == ("", "")
    assert parse_path("<> SIZE=10", sender=True) == ("", "SIZE=10")
    with pytest.raises(AddressError) as info:
        parse_path("<a@>", sender=True)
    assert info.value.reply() == "501 5.1.7 Bad sender address syntax"


@pytest.mark.parametrize(
    ("rest", "params"),
    [
        ("", {}),
        ("SIZE=100", {"SIZE": "100"}),
        ("body=8bitmime smtputf8", {"BODY": "8bitmime", "SMTPUTF8": None}),
        ("AUTH=<>", {"AUTH": "<>"}),
    ],
)
def test_parse_esmtp_params(rest: str, params: dict[str, str | None]) -> None:
    """ESMTP parameters become an upper-cased keyword dict."""
    assert parse_esmtp_params(rest) == params


@pytest.mark.parametrize("rest", ["=X", "SIZE=", "SI_ZE=1", "SIZE=a=b", "-X"])
def test_parse_esmtp_params_rejects(rest: str) -> None:
    """Bad parameter syntax is 501 5.5.4."""
    with pytest.raises(AddressError) as info:
        parse_esmtp_params(rest)
    assert info.value.code == 501
    assert info.value.status == "5.5.4"


@pytest.mark.parametrize(
    ("address", "parts"),
    [
        ("user@example.com", ("user", "example.com")),
        ('"user@other"@example.com', ('"user@other"', "example.com")),
        ("user@other@example.com", ("user@other", "example.com")),
        ("postmaster", ("postmaster", "")),
        ('"a@b"', ('"a@b"', "")),
    ],
)
def test_split_address_at_last_unquoted_at(address: str, parts: tuple[str, str]) -> None:
    """The domain follows the last unquoted @."""
    assert split_address(address) == parts


@pytest.mark.parametrize(
    ("internal", "external"),
    [
        ("user", "user"),
        ("first.last", "first.last"),
        ("john doe", '"john doe"'),
        ("user@other", '"user@other"'),
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        (".lead", '".lead"'),
        ("a..b", '"a..b"'),
        ("", '""'),
        ("jöran", "jöran"),
    ],
)
def test_quote_and_unquote_local(internal: str, external: str) -> None:
    """quote_local quotes only when needed (RFC 5321 4.1.2); unquote_local inverts it."""
    assert quote_local(internal) == external
    assert unquote_local(external) == internal


@pytest.mark.parametrize(
    ("domain", "normal"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("[192.0.2.1]", "[192.0.2.1]"),
        ("[ipv6:2001:DB8:0::1]", "[IPv6:2001:db8::1]"),
    ],
)
def test_normalize_domain(domain: str, normal: str) -> None:
    """Lower case, one trailing dot stripped, address literals canonical."""
    assert normalize_domain(domain) == normal


@pytest.mark.parametrize("domain", ["[1.2.3]", "[IPv6:1::2::3]", "[1.2.3.4"])
def test_normalize_domain_rejects_bad_literals(domain: str) -> None:
    """An invalid address literal is an AddressError."""
    with pytest.raises(AddressError):
        normalize_domain(domain)


@pytest.mark.parametrize(
    ("local", "delimiters", "result"),
    [
        ("user+tag", "+", ("user", "tag")),
        ("user+a+b", "+", ("user", "a+b")),
        ("user-tag", "+-", ("user", "tag")),
        ("user", "+", ("user", None)),
        ("+tag", "+", ("+tag", None)),
        ("user+tag", "", ("user+tag", None)),
    ],
)
def test_split_extension(local: str, delimiters: str, result: tuple[str, str | None]) -> None:
    """The extension follows the first recipient_delimiter character."""
    assert split_extension(local, delimiters) == result
