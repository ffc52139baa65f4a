"""smtpd's DNS-based restrictions with in-memory DNS (no sockets, no sleeps).

DNSBL/RHSBL/DNSWL lookups with result filters and TXT reasons, the reply
templates, forward-confirmed client names, HELO and address domain checks,
and temporary DNS failures (SERVFAIL, a silent server past the deadline)
that answer 450 and never hang or bounce.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from zope.interface import implementer

from pymta.config.config import Config
from pymta.config.errors import ConfigError
from pymta.dns.deadline import DeadlineResolver
from pymta.dns.interface import DNSAnswer, IDNSResolver, MXRecord
from pymta.dns.memory import MemoryResolver
from pymta.smtpd.restrictions import Restrictions, check_restrictions
from pymta.smtpd.testing import BASE_CONFIG, DictTable, FakeResolver, LogCapture, SMTPHarness

CLIENT = "198.51.100.7"
REVERSED = "7.100.51.198"
LISTED_TXT = "Listed: see https://zen.example/lookup?198.51.100.7"

Zone = Mapping[tuple[str, str], Sequence[MXRecord | str]]


def zone(**extra: Sequence[MXRecord | str]) -> dict[tuple[str, str], Sequence[MXRecord | str]]:
    return {
        (f"{REVERSED}.zen.example", "A"): ["127.0.0.4"],
        (f"{REVERSED}.zen.example", "TXT"): [LISTED_TXT],
        ("sender.example", "MX"): [(10, "mx.sender.example")],
        ("client.example", "A"): ["192.0.2.1"],
    }


def harness(config: str, records: Zone | None = None, **kw: object) -> SMTPHarness:
    dns = kw.pop("dns", None) or MemoryResolver(records if records is not None else zone())
    return SMTPHarness(config, peer=str(kw.pop("peer", CLIENT)), dns=dns, **kw)  # type: ignore[arg-type]


def rcpt(h: SMTPHarness, sender: str = "s@sender.example", helo: str = "client.example") -> str:
    h.send(f"EHLO {helo}\n")
    h.send(f"MAIL FROM:<{sender}>\n")
    [reply] = h.send("RCPT TO:<user@example.com>\n")
    h.send("RSET\n")
    return reply


def test_listed_client_gets_postfix_reply_with_txt_reason() -> None:
    """reject_rbl_client: a listed client gets Postfix's default_rbl_reply with
    the list's TXT text, logged as a NOQUEUE reject line."""
    h = harness("smtpd_client_restrictions = reject_rbl_client zen.example\n")
    with LogCapture() as log:
        reply = rcpt(h)
    expected = (
        f"554 5.7.1 Service unavailable; Client host [{CLIENT}] blocked using "
        f"zen.example; {LISTED_TXT}"
    )
    assert reply == expected
    assert any(
        f"NOQUEUE: reject: RCPT from unknown[{CLIENT}]: {expected};" in line for line in log.maillog
    )


def test_unlisted_client_passes() -> None:
    """An address the list does not know (NXDOMAIN) is accepted."""
    h = harness("smtpd_client_restrictions = reject_rbl_client zen.example\n", peer="192.0.2.9")
    assert rcpt(h) == "250 2.1.5 Ok"


def test_listing_without_txt_has_no_reason_part() -> None:
    """Without a TXT record the reply ends after the list's domain."""
    records = zone()
    del records[(f"{REVERSED}.zen.example", "TXT")]
    h = harness("smtpd_client_restrictions = reject_rbl_client zen.example\n", records)
    assert rcpt(h) == (
        f"554 5.7.1 Service unavailable; Client host [{CLIENT}] blocked using zen.example"
    )


@pytest.mark.parametrize(
    ("site", "listed"),
    [
        ("zen.example=127.0.0.4", True),
        ("zen.example=127.0.0.2", False),
        ("zen.example=127.0.0.[2..11]", True),
        ("zen.example=127.0.0.[2;3]", False),
        ("zen.example=127.0.[0;1].[1;4..5]", True),
    ],
)
def test_result_filters(site: str, listed: bool) -> None:
    """=d.d.d.d filters with Postfix's [n;m..k] patterns: only matching answers list."""
    h = harness(f"smtpd_client_restrictions = reject_rbl_client {site}\n")
    assert rcpt(h).startswith("554 5.7.1 Service") == listed


def test_bad_result_filter_is_a_config_error() -> None:
    """A malformed filter stops the start, naming the parameter."""
    config = Config.from_text(
        BASE_CONFIG + "smtpd_client_restrictions = reject_rbl_client x=1.2.3\n"
    )
    with pytest.raises(ConfigError) as info:
        Restrictions(config, FakeResolver(), lambda s: DictTable(s, {}), dns=MemoryResolver({}))
    assert info.value.parameter == "smtpd_client_restrictions"


def test_servfail_is_a_temporary_reject() -> None:
    """A DNSBL that fails (SERVFAIL) gives 450 4.7.1, never a 5xx and never a pass."""
    dns = MemoryResolver(zone(), servfail=[f"{REVERSED}.zen.example"])
    h = harness("smtpd_client_restrictions = reject_rbl_client zen.example\n", dns=dns)
    reply = rcpt(h)
    assert reply.startswith("450 4.7.1 ")
    assert "temporary DNS failure" in reply


@implementer(IDNSResolver)
class SilentResolver:
    """Never answers names in ``silent``; the rest from a MemoryResolver, later."""

    def __init__(self, records: Zone, clock: Clock, silent: Sequence[str] = ()) -> None:
        self.memory = MemoryResolver(records)
        self.clock = clock
        self.silent = set(silent)

    def lookup(self, name: str, rrtype: str) -> Deferred[DNSAnswer]:
        d: Deferred[DNSAnswer] = Deferred()
        if name not in self.silent:
            self.memory.lookup(name, rrtype).addCallback(
                lambda a: self.clock.callLater(0.5, d.callback, a)
            )
        return d


def test_silent_dns_server_answers_450_after_the_deadline_in_order() -> None:
    """A DNS server that never answers: after the deadline RCPT gets 450, and
    commands pipelined behind it are answered after it, in order."""
    clock = Clock()
    dns = DeadlineResolver(SilentResolver(zone(), clock, [f"{REVERSED}.zen.example"]), clock, 10)
    h = harness("smtpd_client_restrictions = reject_rbl_client zen.example\n", dns=dns, clock=clock)
    assert h.banner == []  # the banner waits for the client name lookup
    clock.advance(1)
    assert h.take()[0].startswith("220 ")
    h.send("EHLO client.example\n")
    assert h.send("MAIL FROM:<s@sender.example>\nRCPT TO:<user@example.com>\nNOOP\n") == [
        "250 2.1.0 Ok"
    ]
    clock.advance(9)
    assert h.take() == []
    clock.advance(1)
    replies = h.take()
    assert replies[0].startswith("450 4.7.1 ")
    assert replies[1:] == ["250 2.0.0 Ok"]


def test_slow_dns_keeps_pipelined_replies_in_order() -> None:
    """Lookups that answer later: each RCPT waits for its answer, and the
    replies of a pipelined batch come in command order."""
    clock = Clock()
    dns = SilentResolver(zone(), clock)
    h = harness("smtpd_client_restrictions = reject_rbl_client zen.example\n", dns=dns, clock=clock)
    clock.advance(1)
    h.take()
    h.send("EHLO client.example\n")
    replies = h.send(
        "MAIL FROM:<s@sender.example>\nRCPT TO:<user@example.com>\nRCPT TO:<x@example.com>\nQUIT\n"
    )
    assert replies == ["250 2.1.0 Ok"]  # RCPT waits for DNS, QUIT behind it
    for _ in range(10):
        clock.advance(0.5)
    replies += h.take()
    assert [r[:3] for r in replies] == ["250", "554", "554", "221"]


def test_rbl_reply_maps_and_reject_code() -> None:
    """rbl_reply_maps gives a per-list template ($rbl_* names expanded);
    maps_rbl_reject_code sets $rbl_code."""
    table = DictTable(
        "inline:rbl",
        {"zen.example": "$rbl_code 5.7.9 $client_address is on $rbl_domain (${rbl_txt})"},
    )
    h = harness(
        "smtpd_client_restrictions = reject_rbl_client zen.example\n"
        "rbl_reply_maps = inline:rbl\nmaps_rbl_reject_code = 550\n",
        tables={"inline:rbl": table},
    )
    assert rcpt(h) == f"550 5.7.9 {CLIENT} is on zen.example ({LISTED_TXT})"


def test_permit_dnswl_client_skips_a_later_reject() -> None:
    """permit_dnswl_client: a listed client is permitted before the DNSBL;
    a filter that does not match leaves it to the next restriction."""
    records = zone(**{})
    records[(f"{REVERSED}.wl.example", "A")] = ["127.0.10.2"]
    config = (
        "smtpd_client_restrictions = permit_dnswl_client wl.example={}, "
        "reject_rbl_client zen.example\n"
    )
    assert rcpt(harness(config.format("127.0.[0..255].[1..3]"), records)) == "250 2.1.5 Ok"
    assert rcpt(harness(config.format("127.0.10.0"), records)).startswith("554 ")


def test_ipv6_client_is_looked_up_by_nibbles() -> None:
    """An IPv6 client is looked up as its 32 reversed nibbles under the list."""
    nibbles = ".".join(reversed("20010db8000000000000000000000001"))
    dns = MemoryResolver({(f"{nibbles}.zen.example", "A"): ["127.0.0.2"]})
    h = harness(
        "smtpd_client_restrictions = reject_rbl_client zen.example\n", dns=dns, peer="2001:db8::1"
    )
    assert rcpt(h).startswith("554 5.7.1 Service unavailable; Client host [2001:db8::1] blocked")


def test_rhsbl_sender_and_helo() -> None:
    """reject_rhsbl_sender looks up the sender's domain, reject_rhsbl_helo the
    HELO name; the null sender and address literals are not looked up."""
    records = zone()
    records[("sender.example.dbl.example", "A")] = ["127.0.1.2"]
    records[("bad.helo.example.dbl.example", "A")] = ["127.0.1.2"]
    h = harness("smtpd_sender_restrictions = reject_rhsbl_sender dbl.example\n", records)
    assert rcpt(h) == (
        "554 5.7.1 Service unavailable; Sender address [sender.example] blocked using dbl.example"
    )
    assert rcpt(h, sender="") == "250 2.1.5 Ok"
    h = harness("smtpd_helo_restrictions = reject_rhsbl_helo dbl.example\n", records)
    assert rcpt(h, helo="bad.helo.example").startswith(
        "554 5.7.1 Service unavailable; Helo command [bad.helo.example] blocked"
    )
    assert rcpt(h, helo="[192.0.2.1]") == "250 2.1.5 Ok"


def fcrdns(name: str, forward: str = CLIENT) -> dict[tuple[str, str], Sequence[MXRecord | str]]:
    records = zone()
    records[(f"{REVERSED}.in-addr.arpa", "PTR")] = [name]
    records[(name, "A")] = [forward]
    return records


def test_forward_confirmed_client_name_is_logged_and_passes() -> None:
    """PTR and A agree: the client is name[addr] in the log, and both
    reject_unknown_client_hostname and the reverse variant pass."""
    config = (
        "smtpd_client_restrictions = reject_unknown_client_hostname, "
        "reject_unknown_reverse_client_hostname\n"
    )
    with LogCapture() as log:
        h = harness(config, fcrdns("mail.client.example"))
        assert rcpt(h) == "250 2.1.5 Ok"
    assert f"smtpd: connect from mail.client.example[{CLIENT}]" in log.maillog


def test_name_that_does_not_point_back_is_unknown() -> None:
    """A PTR name whose A records miss the address: the client stays
    unknown (450 4.7.25 cannot find your hostname), while the reverse name
    alone exists (reject_unknown_reverse_client_hostname passes)."""
    records = fcrdns("forged.example", forward="192.0.2.200")
    h = harness("smtpd_client_restrictions = reject_unknown_client_hostname\n", records)
    assert rcpt(h) == f"450 4.7.25 Client host rejected: cannot find your hostname, [{CLIENT}]"
    h = harness("smtpd_client_restrictions = reject_unknown_reverse_client_hostname\n", records)
    assert rcpt(h) == "250 2.1.5 Ok"


def test_no_ptr_and_unknown_client_reject_code() -> None:
    """No PTR record: unknown_client_reject_code (550 here) for both checks;
    a PTR lookup that fails is 450 whatever that code says."""
    config = (
        "smtpd_client_restrictions = reject_unknown_reverse_client_hostname\n"
        "unknown_client_reject_code = 550\n"
    )
    assert rcpt(harness(config)) == (
        f"550 5.7.25 Client host rejected: cannot find your reverse hostname, [{CLIENT}]"
    )
    dns = MemoryResolver(zone(), servfail=[f"{REVERSED}.in-addr.arpa"])
    assert rcpt(harness(config, dns=dns)).startswith("450 4.7.25 ")


def test_rhsbl_client_uses_the_confirmed_name_only() -> None:
    """reject_rhsbl_client looks up the verified name; reject_rhsbl_reverse_client
    the PTR name even when it does not point back."""
    records = fcrdns("forged.example", forward="192.0.2.200")
    records[("forged.example.dbl.example", "A")] = ["127.0.1.2"]
    h = harness("smtpd_client_restrictions = reject_rhsbl_client dbl.example\n", records)
    assert rcpt(h) == "250 2.1.5 Ok"
    h = harness("smtpd_client_restrictions = reject_rhsbl_reverse_client dbl.example\n", records)
    assert rcpt(h).startswith(
        "554 5.7.1 Service unavailable; Unverified Client host [forged.example] blocked"
    )


def test_helo_hostname_checks() -> None:
    """reject_invalid_helo_hostname (501 5.5.2) and reject_unknown_helo_hostname
    (450 4.7.1 Host not found; literals pass), at HELO with smtpd_delay_reject = no."""
    h = harness(
        "smtpd_delay_reject = no\n"
        "smtpd_helo_restrictions = reject_invalid_helo_hostname, reject_unknown_helo_hostname\n"
    )
    assert h.send("EHLO bad_name!\n") == [
        "501 5.5.2 <bad_name!>: Helo command rejected: Invalid name"
    ]
    assert h.send("EHLO nowhere.example\n") == [
        "450 4.7.1 <nowhere.example>: Helo command rejected: Host not found"
    ]
    assert h.send("HELO client.example\n") == ["250 mx.example.com"]
    assert h.send("HELO [192.0.2.1]\n") == ["250 mx.example.com"]


@pytest.mark.parametrize(
    ("sender", "extra", "reply"),
    [
        ("a@sender.example", "", "250 2.1.5 Ok"),
        ("a@client.example", "", "250 2.1.5 Ok"),  # no MX, but an A record
        (
            "a@nowhere.example",
            "",
            "450 4.1.8 <a@nowhere.example>: Sender address rejected: Domain not found",
        ),
        (
            "a@nowhere.example",
            "unknown_address_reject_code = 550\n",
            "550 5.1.8 <a@nowhere.example>: Sender address rejected: Domain not found",
        ),
        (
            "a@null.example",
            "",
            "550 5.7.27 <a@null.example>: Sender address rejected: Domain null.example "
            "does not accept mail (nullMX)",
        ),
        (
            "a@broken.example",
            "unknown_address_reject_code = 550\n",
            "450 4.1.8 <a@broken.example>: Sender address rejected: Domain not found",
        ),
    ],
)
def test_unknown_sender_domain_asks_dns(sender: str, extra: str, reply: str) -> None:
    """reject_unknown_sender_domain: MX or A/AAAA makes a domain known; NXDOMAIN
    is unknown_address_reject_code; a null MX refuses; SERVFAIL is always 450."""
    records = zone()
    records[("null.example", "MX")] = [(0, "")]
    dns = MemoryResolver(records, servfail=["broken.example"])
    h = harness("smtpd_sender_restrictions = reject_unknown_sender_domain\n" + extra, dns=dns)
    assert rcpt(h, sender=sender) == reply


def test_unknown_recipient_domain_asks_dns() -> None:
    """reject_unknown_recipient_domain: an outside domain without MX/A is 450 4.1.2."""
    h = harness(
        "mynetworks = 198.51.100.0/24\n"
        "smtpd_recipient_restrictions = reject_unknown_recipient_domain,"
        " permit_mynetworks, reject\n"
    )
    h.send("EHLO client.example\nMAIL FROM:<s@sender.example>\n")
    assert h.send("RCPT TO:<x@nowhere.example>\n") == [
        "450 4.1.2 <x@nowhere.example>: Recipient address rejected: Domain not found"
    ]
    assert h.send("RCPT TO:<x@sender.example>\n") == ["250 2.1.5 Ok"]


def test_dns_restriction_without_resolver_is_a_config_error() -> None:
    """A DNS-based restriction in an smtpd built without DNS stops the start
    instead of being skipped."""
    config = Config.from_text(
        BASE_CONFIG + "smtpd_client_restrictions = reject_rbl_client zen.example\n"
    )
    with pytest.raises(ConfigError, match="needs DNS"):
        Restrictions(config, FakeResolver(), lambda s: DictTable(s, {}))


def test_check_accepts_dns_restrictions_and_refuses_unknown_ones() -> None:
    """pymta check parses the lists as the server does: reject_rbl_client
    passes, a misspelt restriction fails."""
    good = (
        BASE_CONFIG + "smtpd_client_restrictions = reject_rbl_client zen.example=127.0.0.[2..11]\n"
    )
    check_restrictions(Config.from_text(good))
    bad = BASE_CONFIG + "smtpd_client_restrictions = reject_rbl_clients zen.example\n"
    with pytest.raises(ConfigError, match="unknown restriction"):
        check_restrictions(Config.from_text(bad))
