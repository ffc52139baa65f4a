"""Tests of trivial-rewrite: resolve, address classes, listed recipients,
domain lists and standard-form rewriting."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymta.config import Config
from pymta.rewrite import AddressRewriter, DomainList, Resolution, Resolver
from pymta.rewrite.interface import IResolver
from pymta.tables import TableError, open_maps

VIRTUAL_ALIAS_ERROR = "5.1.1 User unknown in virtual alias table"

MAIN_CF = """
myhostname = mx.example.org
mydomain = example.org
mydestination = $myhostname, localhost, inline:{ local-table.example=yes }
virtual_alias_domains = alias.example
virtual_alias_maps = inline:{ info@alias.example=bob@virtual.example,
  sales@virtual.example=bob@virtual.example, @catch.example=bob@virtual.example }
virtual_mailbox_domains = virtual.example, .sub.example
virtual_mailbox_maps = inline:{ bob@virtual.example=virtual.example/bob/,
  ann@x.sub.example=x/ann/ }
relay_domains = relay.example
alias_maps = inline:{ root=bob@virtual.example, alice=alice }
recipient_delimiter = +
"""


def _resolver(extra: str = "") -> Resolver:
    return Resolver(Config.from_text(MAIN_CF + extra))


def test_resolver_provides_interface() -> None:
    """Resolver implements IResolver."""
    from zope.interface.verify import verifyObject

    assert verifyObject(IResolver, _resolver())


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("alice@mx.example.org", Resolution("local", "mx.example.org", "alice@mx.example.org")),
        ("Alice@MX.Example.ORG.", Resolution("local", "mx.example.org", "Alice@mx.example.org")),
        ("alice@localhost", Resolution("local", "mx.example.org", "alice@localhost")),
        ("alice", Resolution("local", "mx.example.org", "alice")),
        ("x@local-table.example", Resolution("local", "mx.example.org", "x@local-table.example")),
        ("x@[127.0.0.1]", Resolution("local", "mx.example.org", "x@[127.0.0.1]")),
        ("x@[IPv6:::1]", Resolution("local", "mx.example.org", "x@[ipv6:::1]")),
        ("x@[192.0.2.9]", Resolution("smtp", "[192.0.2.9]", "x@[192.0.2.9]")),
        (
            "nobody@alias.example",
            Resolution("error", VIRTUAL_ALIAS_ERROR, "nobody@alias.example"),
        ),
        ("bob@virtual.example", Resolution("virtual", "virtual.example", "bob@virtual.example")),
        ("ann@x.sub.example", Resolution("virtual", "x.sub.example", "ann@x.sub.example")),
        ("u@relay.example", Resolution("relay", "relay.example", "u@relay.example")),
        ("u@elsewhere.example", Resolution("smtp", "elsewhere.example", "u@elsewhere.example")),
        # Relay tricks resolve to where the mail would really go.
        ("u%other.example@mx.example.org", Resolution("smtp", "other.example", "u@other.example")),
        ('"u@other.example"@localhost', Resolution("smtp", "other.example", "u@other.example")),
        ("other.example!u@localhost", Resolution("smtp", "other.example", "u@other.example")),
        ("@mx.example.org:u@other.example", Resolution("smtp", "other.example", "u@other.example")),
        # Routed local parts that stay local remain local.
        ("u%localhost@localhost", Resolution("local", "mx.example.org", "u@localhost")),
    ],
)
def test_resolve_cases(address: str, expected: Resolution) -> None:
    """Each address class goes to its transport and nexthop, as Postfix resolves it."""
    assert _resolver().resolve(address) == expected


def test_relayhost_and_transport_nexthops() -> None:
    """relayhost overrides the domain for relay and default mail; a transport
    value name:nexthop sets both; local nexthop defaults to myhostname."""
    r = _resolver(
        "relayhost = [smarthost.example]:587\nrelay_transport = relay:[relay-gw.example]\n"
        "local_transport = local\nvirtual_transport = lmtp:unix:private/dovecot\n"
    )
    smart = Resolution("smtp", "[smarthost.example]:587", "u@far.example")
    assert r.resolve("u@far.example") == smart
    gateway = Resolution("relay", "[relay-gw.example]", "u@relay.example")
    assert r.resolve("u@relay.example") == gateway
    assert r.resolve("u@localhost").nexthop == "mx.example.org"
    assert r.resolve("bob@virtual.example") == Resolution(
        "lmtp", "unix:private/dovecot", "bob@virtual.example"
    )


def test_percent_hack_off() -> None:
    """With allow_percent_hack = no a % stays in the local part."""
    r = _resolver("allow_percent_hack = no\n")
    assert r.resolve("u%other.example@localhost") == Resolution(
        "local", "mx.example.org", "u%other.example@localhost"
    )


@pytest.mark.parametrize(
    ("domain", "cls"),
    [
        ("mx.example.org", "local"),
        ("", "local"),
        ("[127.0.0.1]", "local"),
        ("alias.example", "virtual_alias"),
        ("virtual.example", "virtual_mailbox"),
        ("deep.x.sub.example", "virtual_mailbox"),
        ("sub.example", "default"),
        ("RELAY.example", "relay"),
        ("example.net", "default"),
    ],
)
def test_address_class(domain: str, cls: str) -> None:
    """address_class names the Postfix address class of a domain."""
    assert _resolver().address_class(domain) == cls


@pytest.mark.parametrize(
    ("address", "listed"),
    [
        ("alice@mx.example.org", True),
        ("alice+tag@mx.example.org", True),
        ("root@localhost", True),
        ("postmaster@localhost", True),
        ("double-bounce@mx.example.org", True),
        ("nobody@mx.example.org", True),  # a Unix user (unix:passwd.byname)
        ("no-such-user@mx.example.org", False),
        ("bob@virtual.example", True),
        ("bob+x@virtual.example", True),
        ("sales@virtual.example", True),
        ("carol@virtual.example", False),
        ("info@alias.example", True),
        ("other@alias.example", False),
        ("anyone@relay.example", True),
        ("anyone@far.example", True),
    ],
)
def test_is_listed_recipient(address: str, listed: bool) -> None:
    """reject_unlisted_recipient's question, per address class and with
    recipient_delimiter extensions."""
    assert _resolver().is_listed_recipient(address) is listed


def test_listed_recipient_tables_switches() -> None:
    """An empty local_recipient_maps disables the local check; relay_recipient_maps
    restricts relay recipients when set."""
    r = _resolver(
        "local_recipient_maps =\nrelay_recipient_maps = inline:{ known@relay.example=x }\n"
    )
    assert r.is_listed_recipient("nobody@localhost") is True
    assert r.is_listed_recipient("known@relay.example") is True
    assert r.is_listed_recipient("unknown@relay.example") is False


def test_catchall_alias_lists_whole_domain() -> None:
    """A virtual alias @domain wildcard makes every recipient of that domain listed."""
    r = _resolver("virtual_alias_domains = alias.example catch.example\n")
    assert r.is_listed_recipient("whoever@catch.example") is True


def test_table_failure_propagates() -> None:
    """A failed table lookup raises TableError (the caller defers), never 'not found'."""
    r = _resolver("virtual_mailbox_domains = fail:broken\n")
    with pytest.raises(TableError):
        r.resolve("u@unknown.example")


def test_domain_list_forms(tmp_path: Path) -> None:
    """Domain lists take names, .subdomain patterns, tables, files and negation."""
    listfile = tmp_path / "domains"
    listfile.write_text("# ours\nfile.example other.example\n")
    config = Config.from_text("")
    domains = DomainList(
        ["!bad.sub.example", ".sub.example", "A.example", "inline:{t.example=1}", str(listfile)],
        lambda spec: open_maps([spec], config),
    )
    assert domains.matches("a.example")
    assert domains.matches("x.sub.example")
    assert not domains.matches("bad.sub.example")
    assert not domains.matches("sub.example")
    assert domains.matches("t.example")
    assert domains.matches("other.example")
    assert not domains.matches("nope.example")


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("user", "user@mx.example.org"),
        ("user@host", "user@host"),
        ("", ""),
        ("host!user", "user@host"),
        ("@a,@b:user@c.example", "user@c.example"),
        ('"a b"', '"a b"@mx.example.org'),
    ],
)
def test_address_rewriter(address: str, expected: str) -> None:
    """Standard form: append_at_myorigin, bang paths, source routes."""
    assert AddressRewriter(Config.from_text(MAIN_CF)).rewrite(address) == expected


def test_address_rewriter_switches() -> None:
    """append_at_myorigin = no leaves bare names; append_dot_mydomain adds .mydomain."""
    cfg = Config.from_text(MAIN_CF + "append_at_myorigin = no\nappend_dot_mydomain = yes\n")
    rw = AddressRewriter(cfg)
    assert rw.rewrite("user") == "user"
    assert rw.rewrite("user@host") == "user@host.example.org"
    assert rw.rewrite("user@[192.0.2.1]") == "user@[192.0.2.1]"
