"""relay_domains through smtpd's relay control with the real resolver: a
backup MX accepts mail for its relay domains from anywhere, and
relay_recipient_maps limits which recipients (reject_unlisted_recipient)."""

from __future__ import annotations

from typing import Any

from pymta.config import Config
from pymta.rewrite import Resolution, Resolver
from pymta.smtpd.testing import BASE_CONFIG, SMTPHarness

RELAY_CF = """
mydestination = $myhostname
relay_domains = relay.example, .sub.relay.example
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
mynetworks = 127.0.0.0/8
"""


def _harness(extra: str = "") -> SMTPHarness:
    config = Config.from_text(BASE_CONFIG + RELAY_CF + extra)
    resolver: Any = Resolver(config)
    return SMTPHarness(RELAY_CF + extra, resolver=resolver, peer="203.0.113.9")


def test_relay_domains_are_accepted_from_strangers() -> None:
    """Mail from outside mynetworks is accepted for relay_domains (and their
    listed subdomains) but refused for other domains (no open relay)."""
    h = _harness()
    h.send("EHLO client.example\nMAIL FROM:<s@x.example>\n")
    assert h.send("RCPT TO:<a@relay.example>\n") == ["250 2.1.5 Ok"]
    assert h.send("RCPT TO:<a@x.sub.relay.example>\n") == ["250 2.1.5 Ok"]
    reply = h.send("RCPT TO:<a@elsewhere.example>\n")[0]
    assert reply.startswith("554 5.7.1") and "Relay access denied" in reply


def test_relay_recipient_maps_limit_the_relay_recipients() -> None:
    """With relay_recipient_maps only listed recipients of relay domains are
    accepted (550 5.1.1 ... in relay recipient table otherwise)."""
    h = _harness("relay_recipient_maps = inline:{ known@relay.example=ok }\n")
    h.send("EHLO client.example\nMAIL FROM:<s@x.example>\n")
    assert h.send("RCPT TO:<known@relay.example>\n") == ["250 2.1.5 Ok"]
    reply = h.send("RCPT TO:<unknown@relay.example>\n")[0]
    assert reply.startswith("550 5.1.1") and "relay recipient table" in reply


def test_relay_domain_resolves_to_relay_transport() -> None:
    """Accepted relay mail goes to relay_transport with the domain as nexthop,
    or to relayhost when set (a gateway)."""
    config = Config.from_text(BASE_CONFIG + RELAY_CF)
    assert Resolver(config).resolve("a@relay.example") == Resolution(
        "relay", "relay.example", "a@relay.example"
    )
    gateway = Config.from_text(BASE_CONFIG + RELAY_CF + "relayhost = [inside.example]\n")
    assert Resolver(gateway).resolve("a@relay.example").nexthop == "[inside.example]"
