"""Tests of routing: transport_maps, relayhost and next-hop syntax (trivial-rewrite)."""

from __future__ import annotations

import pytest

from pymta.config import Config
from pymta.rewrite import Resolution, Resolver
from pymta.rewrite.nexthop import NextHop, NextHopError, parse_nexthop
from pymta.rewrite.transport import apply_value

MAIN_CF = """
myhostname = mx.example.org
mydomain = example.org
mydestination = $myhostname, localhost
virtual_mailbox_domains = virtual.example
virtual_mailbox_maps = inline:{ bob@virtual.example=virtual.example/bob/ }
relay_domains = relay.example
recipient_delimiter = +
"""

TRANSPORT = """
transport_maps = inline:{
  { special@example.com = smtp:[special.example]:2525 },
  { user@ext.example = relay:[user-host] },
  { example.com = smtp:[mx.example]:587 },
  { .example.com = relay: },
  { dead.example = error:5.1.2 Host dead },
  { void.example = discard: },
  { keep.example = :[other.example] },
  { reset.example = smtp: },
  { nothing.example = : },
  { virtual.example = local: },
  { relay.example = smtp:[backup.example] } }
"""


def _resolver(extra: str = "") -> Resolver:
    return Resolver(Config.from_text(MAIN_CF + extra))


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("a@example.net", Resolution("smtp", "example.net", "a@example.net")),
        ("a@relay.example", Resolution("relay", "relay.example", "a@relay.example")),
        ("a@MX.example.org", Resolution("local", "mx.example.org", "a@mx.example.org")),
    ],
)
def test_address_classes_without_tables(address: str, expected: Resolution) -> None:
    """Non-local mail goes to default_transport with the domain as nexthop;
    relay_domains to relay_transport; mydestination to local."""
    assert _resolver().resolve(address) == expected


@pytest.mark.parametrize(
    "relayhost", ["smarthost.example", "[smarthost.example]", "[10.0.0.1]:587", "relay.example:26"]
)
def test_relayhost_overrides_nexthop_of_default_mail(relayhost: str) -> None:
    """relayhost (any of its forms) becomes the nexthop of default- and
    relay-class mail, verbatim; local and virtual mail are unaffected."""
    r = _resolver(f"relayhost = {relayhost}\n")
    assert r.resolve("a@example.net") == Resolution("smtp", relayhost, "a@example.net")
    assert r.resolve("a@relay.example").nexthop == relayhost
    assert r.resolve("a@mx.example.org").nexthop == "mx.example.org"
    assert r.resolve("bob@virtual.example").nexthop == "virtual.example"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        # full address beats the domain entry
        (
            "special@example.com",
            Resolution("smtp", "[special.example]:2525", "special@example.com"),
        ),
        # user+ext@domain falls back to user@domain (recipient_delimiter)
        ("user+tag@ext.example", Resolution("relay", "[user-host]", "user+tag@ext.example")),
        ("other@ext.example", Resolution("smtp", "ext.example", "other@ext.example")),
        ("a@example.com", Resolution("smtp", "[mx.example]:587", "a@example.com")),
        # .domain matches subdomains only; "relay:" resets nexthop to the domain
        ("a@sub.example.com", Resolution("relay", "sub.example.com", "a@sub.example.com")),
        ("a@x.y.example.com", Resolution("relay", "x.y.example.com", "a@x.y.example.com")),
        ("a@dead.example", Resolution("error", "5.1.2 Host dead", "a@dead.example")),
        ("a@void.example", Resolution("discard", "void.example", "a@void.example")),
        # ":nexthop" keeps the transport
        ("a@keep.example", Resolution("smtp", "[other.example]", "a@keep.example")),
        # ":" changes nothing
        ("a@nothing.example", Resolution("smtp", "nothing.example", "a@nothing.example")),
        # tables override the address class transports too
        ("bob@virtual.example", Resolution("local", "virtual.example", "bob@virtual.example")),
        ("a@relay.example", Resolution("smtp", "[backup.example]", "a@relay.example")),
        # no entry: the class decides
        ("a@example.net", Resolution("smtp", "example.net", "a@example.net")),
        ("a@mx.example.org", Resolution("local", "mx.example.org", "a@mx.example.org")),
    ],
)
def test_transport_maps(address: str, expected: Resolution) -> None:
    """transport_maps is searched per address, user@domain, domain, .parent,
    with transport(5)'s field semantics."""
    assert _resolver(TRANSPORT).resolve(address) == expected


def test_transport_maps_smtp_colon_resets_relayhost() -> None:
    """``smtp:`` resets the nexthop to the recipient domain, even with relayhost."""
    r = _resolver(TRANSPORT + "relayhost = [smart.example]\n")
    assert r.resolve("a@reset.example") == Resolution("smtp", "reset.example", "a@reset.example")
    assert r.resolve("a@nothing.example").nexthop == "[smart.example]"


def test_transport_maps_wildcard_is_last() -> None:
    """The ``*`` entry applies only when no address or domain entry matched."""
    r = _resolver(
        "transport_maps = inline:{ { * = smtp:[fallback.example] }, { a.example = relay: } }\n"
    )
    assert r.resolve("x@a.example") == Resolution("relay", "a.example", "x@a.example")
    assert r.resolve("x@b.example") == Resolution("smtp", "[fallback.example]", "x@b.example")
    assert r.resolve("x@mx.example.org").transport == "smtp"


def test_parent_domain_matches_subdomains() -> None:
    """With transport_maps in parent_domain_matches_subdomains a plain
    ``domain`` entry matches its subdomains (and ``.domain`` no longer does)."""
    tables = "transport_maps = inline:{ { example.com = relay: }, { .dot.example = relay: } }\n"
    r = _resolver(tables + "parent_domain_matches_subdomains = transport_maps\n")
    assert r.resolve("x@sub.example.com").transport == "relay"
    assert r.resolve("x@sub.dot.example").transport == "smtp"
    r = _resolver(tables)
    assert r.resolve("x@sub.example.com").transport == "smtp"
    assert r.resolve("x@sub.dot.example").transport == "relay"


def test_transport_maps_texthash_file(tmp_path: pytest.TempPathFactory) -> None:
    """A texthash: file works as in Postfix (``texthash:/etc/pymta/transport``)."""
    path = tmp_path / "transport"  # type: ignore[operator]
    path.write_text("# comment\nexample.com  smtp:[mx.example]:587\n.example.com error:5.7.1 no\n")
    r = _resolver(f"transport_maps = texthash:{path}\n")
    assert r.resolve("a@example.com") == Resolution("smtp", "[mx.example]:587", "a@example.com")
    assert r.resolve("a@s.example.com") == Resolution("error", "5.7.1 no", "a@s.example.com")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("smtp:[h]:25", ("smtp", "[h]:25")),
        ("relay:", ("relay", "dom.example")),
        (":[h]", ("old", "[h]")),
        (":", ("old", "oldhop")),
        ("", ("old", "oldhop")),
        ("error:5.1.1 no such user", ("error", "5.1.1 no such user")),
    ],
)
def test_apply_value(value: str, expected: tuple[str, str]) -> None:
    """transport(5) field rules for a table value."""
    assert apply_value(value, "old", "oldhop", "dom.example") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com", NextHop("example.com", 25, True)),
        ("Example.COM.", NextHop("example.com", 25, True)),
        ("[mx.example.com]", NextHop("mx.example.com", 25, False)),
        ("[mx.example.com]:587", NextHop("mx.example.com", 587, False)),
        ("mx.example.com:2525", NextHop("mx.example.com", 2525, True)),
        ("[192.0.2.1]:submission", NextHop("192.0.2.1", 587, False)),
        ("[ipv6:2001:db8::1]:26", NextHop("2001:db8::1", 26, False)),
        ("[2001:db8::1]", NextHop("2001:db8::1", 25, False)),
    ],
)
def test_parse_nexthop(text: str, expected: NextHop) -> None:
    """The relayhost / nexthop forms parse to host, port and MX-lookup flag."""
    assert parse_nexthop(text) == expected


@pytest.mark.parametrize(
    "text", ["", "[unclosed", "[h]x", "host:99999", "host:nope", "[]", "a b", "[h]:0"]
)
def test_parse_nexthop_rejects(text: str) -> None:
    """Malformed nexthops raise NextHopError."""
    with pytest.raises(NextHopError):
        parse_nexthop(text)
