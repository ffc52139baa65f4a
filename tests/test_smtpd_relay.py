"""Relay control: where a recipient really goes, and the classic relay tricks."""

from __future__ import annotations

import pytest

from pymta.config.config import Config
from pymta.smtpd.relay import effective_domain, resolve_destination
from pymta.smtpd.testing import FakeResolver, SMTPHarness

RESOLVER = FakeResolver()


@pytest.mark.parametrize(
    ("address", "domain", "klass", "routed"),
    [
        ("user@example.com", "example.com", "local", False),
        ("User@Example.COM.", "example.com", "local", False),
        ("user@remote.example", "remote.example", "default", False),
        ("postmaster", "mx.example.com", "local", False),
        ("user%other.example@example.com", "other.example", "default", False),
        ('"user@other.example"@example.com', "other.example", "default", False),
        ("user@other.example@example.com", "other.example", "default", False),
        ("other.example!user@example.com", "other.example", "default", False),
        ("user%other.example@virtual.example", "virtual.example", "virtual_mailbox", True),
        ('"user@other.example"@virtual.example', "virtual.example", "virtual_mailbox", True),
        ("user%example.com@example.com", "example.com", "local", False),
        ("alice@virtual.example", "virtual.example", "virtual_mailbox", False),
    ],
)
def test_resolve_destination_follows_postfix(
    address: str, domain: str, klass: str, routed: bool
) -> None:
    """Postfix's resolve: local domains are stripped and the rest resolved again
    (percent hack, bang path, dequoted @); routing operators left for a
    non-local domain mark the address as routed."""
    dest = resolve_destination(address, RESOLVER.address_class, myorigin="mx.example.com")
    assert (dest.domain, dest.address_class, dest.routed) == (domain, klass, routed)


def test_switches_off_the_hacks() -> None:
    """allow_percent_hack=no, swap_bangpath=no, resolve_dequoted_address=no
    keep the address local to our domain."""
    config = Config.from_text(
        "myorigin = mx.example.com\nallow_percent_hack = no\nswap_bangpath = no\n"
        "resolve_dequoted_address = no\n"
    )
    for address in (
        "user%other.example@example.com",
        "other.example!user@example.com",
        '"user@other.example"@example.com',
    ):
        dest = effective_domain(address, config, RESOLVER.address_class)
        assert (dest.domain, dest.address_class, dest.routed) == ("example.com", "local", False)


@pytest.mark.parametrize(
    "recipient",
    [
        "<user%evil.example@example.com>",
        '<"user@evil.example"@example.com>',
        "<@example.com:user@evil.example>",
        "<@example.com,@mx.example.com:user@evil.example>",
        "<evil.example!user@example.com>",
        "<user@evil.example@example.com>",
        "<user%evil.example@virtual.example>",
        "<user@evil.example>",
        "<user@evil.example.>",
        "user@evil.example",
    ],
)
def test_relay_tricks_refused_from_untrusted_client(recipient: str) -> None:
    """Every classic relay trick gets 554 5.7.1 Relay access denied from an
    untrusted client under reject_unauth_destination."""
    h = SMTPHarness(
        "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n",
        peer="198.51.100.7",
    )
    h.send("EHLO evil.example\nMAIL FROM:<spammer@evil.example>\n")
    [reply] = h.send(f"RCPT TO:{recipient}\n")
    assert reply.startswith("554 5.7.1 <")
    assert reply.endswith(">: Relay access denied")


def test_default_relay_restrictions_defer_unauth_destination() -> None:
    """Postfix's default smtpd_relay_restrictions end in defer_unauth_destination: 454 4.7.1."""
    h = SMTPHarness(peer="198.51.100.7")
    h.send("EHLO evil.example\nMAIL FROM:<spammer@evil.example>\n")
    assert h.send("RCPT TO:<user%evil.example@example.com>\n") == [
        "454 4.7.1 <user%evil.example@example.com>: Relay access denied"
    ]


def test_trusted_client_may_relay_and_ours_is_accepted_from_anyone() -> None:
    """mynetworks may relay; anyone may send to a listed user of our domains."""
    trusted = SMTPHarness(peer="127.0.0.1")
    trusted.send("EHLO me\nMAIL FROM:<a@example.com>\n")
    assert trusted.send("RCPT TO:<x@remote.example>\n") == ["250 2.1.5 Ok"]
    untrusted = SMTPHarness(peer="198.51.100.7")
    untrusted.send("EHLO them\nMAIL FROM:<a@remote.example>\n")
    assert untrusted.send("RCPT TO:<user@example.com>\nRCPT TO:<alice@virtual.example>\n") == [
        "250 2.1.5 Ok",
        "250 2.1.5 Ok",
    ]
