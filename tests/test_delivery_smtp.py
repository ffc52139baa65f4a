"""The smtp delivery agent and its client protocol, in memory.

The peer is played by the test through a StringTransport: what the client
wrote is read back, replies are fed to the protocol, time is a Clock, DNS
an in-memory zone. Each test is one SMTP transcript.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import error as net_error
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from pymta.config import Config, ConfigError
from pymta.delivery.interface import DeliveryRecipient, DeliveryRequest, RecipientStatus
from pymta.delivery.lookup import DictLookup, Lookup
from pymta.delivery.smtp import SMTPAgent, parse_nexthop
from pymta.delivery.smtp_chat import SMTPChat
from pymta.delivery.smtp_content import to_wire
from pymta.delivery.smtp_reply import Reply, ReplyParser
from pymta.dns.memory import MemoryResolver
from pymta.queue.model import Envelope, Recipient
from pymta.queue.reference import BytesContent

ZONE: dict[tuple[str, str], list[tuple[int, str] | str]] = {
    ("example.net", "MX"): [(10, "mx1.example.net"), (20, "mx2.example.net")],
    ("mx1.example.net", "A"): ["192.0.2.1"],
    ("mx2.example.net", "A"): ["192.0.2.2"],
    ("loop.example.net", "MX"): [(10, "mx.ours.test")],
    ("mx.ours.test", "A"): ["127.0.0.1"],
    ("relay.example.net", "A"): ["192.0.2.9"],
}

CONTENT = b"Subject: test\n\n.leading dot\nbody\n"


class TLSStringTransport(StringTransport):
    """A StringTransport that records STARTTLS instead of doing it."""

    tls_context: Any = None

    def startTLS(self, context: Any) -> None:
        self.tls_context = context


class Peer:
    """Plays the remote servers: every connection is a StringTransport."""

    def __init__(self, clock: Clock, refuse: set[str] | None = None) -> None:
        self.clock = clock
        self.refuse = refuse or set()
        self.chats: list[SMTPChat] = []
        self.addresses: list[tuple[str, int]] = []

    def connect(self, address: str, port: int, timeout: float, relay: str) -> Deferred[SMTPChat]:
        self.addresses.append((address, port))
        if address in self.refuse:
            return fail(net_error.ConnectionRefusedError())
        chat = SMTPChat(self.clock, relay)
        chat.makeConnection(TLSStringTransport())
        self.chats.append(chat)
        return succeed(chat)

    @property
    def chat(self) -> SMTPChat:
        return self.chats[-1]

    def written(self) -> list[str]:
        """Lines the client wrote since the last call."""
        transport: Any = self.chat.transport
        data = transport.value().decode()
        transport.clear()
        return data.split("\r\n")[:-1] if data else []

    def reply(self, *lines: str) -> None:
        self.chat.dataReceived("".join(line + "\r\n" for line in lines).encode())


def _config(**extra: str) -> Config:
    settings = {"myhostname": "mx.ours.test", "inet_interfaces": "loopback-only"}
    settings.update(extra)
    return Config(settings)


def _agent(
    clock: Clock, peer: Peer, tables: dict[str, dict[str, str]] | None = None, **extra: str
) -> SMTPAgent:
    def open_maps(specs: list[str], config: Config) -> Lookup:
        return DictLookup((tables or {}).get(specs[0], {}))

    return SMTPAgent(
        _config(**extra),
        clock,
        MemoryResolver(ZONE),
        peer.connect,
        open_maps=open_maps,
    )


def _request(
    recipients: list[str],
    nexthop: str = "example.net",
    content: bytes = CONTENT,
    sender: str = "sender@ours.test",
    envelope: Envelope | None = None,
) -> DeliveryRequest:
    env = envelope or Envelope(sender, [Recipient(r, r) for r in recipients])
    return DeliveryRequest(
        "QID1",
        env,
        BytesContent(content),
        "smtp",
        nexthop,
        [DeliveryRecipient(i, r, r) for i, r in enumerate(recipients)],
    )


def _result(d: Deferred[list[RecipientStatus]]) -> list[RecipientStatus]:
    results: list[list[RecipientStatus]] = []
    d.addCallback(results.append)
    assert results, "delivery did not complete"
    return results[0]


EHLO_PIPELINING = ("250-mx1.example.net", "250-PIPELINING", "250-SIZE 1000000", "250 8BITMIME")


def _greet(peer: Peer, *ehlo: str) -> None:
    peer.reply("220 mx1.example.net ESMTP")
    assert peer.written() == ["EHLO mx.ours.test"]
    peer.reply(*(ehlo or EHLO_PIPELINING))


def test_pipelined_transaction_with_per_recipient_results() -> None:
    """MAIL, three RCPTs and DATA go in one write; one recipient is sent,
    one bounced with the remote reply, one deferred; the content is CRLF
    and dot-stuffed; relay= names the MX."""
    clock = Clock()
    peer = Peer(clock)
    d = _agent(clock, peer).deliver(_request(["a@example.net", "b@example.net", "c@example.net"]))
    _greet(peer)
    assert peer.written() == [
        "MAIL FROM:<sender@ours.test> SIZE=38",
        "RCPT TO:<a@example.net>",
        "RCPT TO:<b@example.net>",
        "RCPT TO:<c@example.net>",
        "DATA",
    ]
    peer.reply("250 2.1.0 Ok", "250 2.1.5 Ok", "550 5.1.1 <b@example.net>: User unknown")
    peer.reply("450 4.2.0 <c@example.net>: try later", "354 go ahead")
    assert peer.written() == ["Subject: test", "", "..leading dot", "body", "."]
    peer.reply("250 2.0.0 Ok: queued as 4XYZ")
    a, b, c = _result(d)
    assert (a.status, a.reason, a.relay) == (
        "2.0.0",
        "250 2.0.0 Ok: queued as 4XYZ",
        "mx1.example.net[192.0.2.1]:25",
    )
    assert (b.status, b.outcome, b.diagnostic) == (
        "5.1.1",
        "bounced",
        "550 5.1.1 <b@example.net>: User unknown",
    )
    assert b.reason == (
        "host mx1.example.net[192.0.2.1]:25 said: 550 5.1.1 <b@example.net>: "
        "User unknown (in reply to RCPT TO command)"
    )
    assert (c.status, c.outcome) == ("4.2.0", "deferred")
    assert a.timings is not None


def test_without_pipelining_one_command_at_a_time() -> None:
    """Without PIPELINING the client waits for each reply before the next command."""
    clock = Clock()
    peer = Peer(clock)
    d = _agent(clock, peer).deliver(_request(["a@example.net", "b@example.net"]))
    _greet(peer, "250-mx1.example.net", "250 SIZE")
    assert peer.written() == ["MAIL FROM:<sender@ours.test> SIZE=38"]
    peer.reply("250 ok")
    assert peer.written() == ["RCPT TO:<a@example.net>"]
    peer.reply("550 no such user")
    assert peer.written() == ["RCPT TO:<b@example.net>"]
    peer.reply("250 ok")
    assert peer.written() == ["DATA"]
    peer.reply("354 go")
    peer.written()
    peer.reply("250 done")
    a, b = _result(d)
    assert (a.status, b.status) == ("5.0.0", "2.0.0")


def test_no_recipient_accepted_sends_no_data() -> None:
    """When every RCPT is refused (no pipelining) DATA is never sent."""
    clock = Clock()
    peer = Peer(clock)
    d = _agent(clock, peer).deliver(_request(["a@example.net"]))
    _greet(peer, "250 mx1.example.net")
    assert peer.written() == ["MAIL FROM:<sender@ours.test>"]
    peer.reply("250 ok")
    peer.written()
    peer.reply("551 relay denied")
    (a,) = _result(d)
    assert a.outcome == "bounced"
    assert "DATA" not in peer.written()


def test_size_limit_refused_before_sending() -> None:
    """A message bigger than the peer's SIZE bounces 5.3.4 without MAIL FROM."""
    clock = Clock()
    peer = Peer(clock)
    d = _agent(clock, peer).deliver(_request(["a@example.net"], content=b"x" * 200 + b"\n"))
    _greet(peer, "250-mx1.example.net", "250 SIZE 100")
    (a,) = _result(d)
    assert a.status == "5.3.4"
    assert "exceeds size limit 100" in a.reason
    assert not any(line.startswith("MAIL") for line in peer.written())


def test_smtputf8_required_but_not_offered() -> None:
    """A non-ASCII address to a peer without SMTPUTF8 bounces 5.6.7; with it, MAIL says SMTPUTF8."""
    clock = Clock()
    peer = Peer(clock)
    agent = _agent(clock, peer)
    d = agent.deliver(_request(["jörg@example.net"]))
    _greet(peer, "250-mx1.example.net", "250 8BITMIME")
    (a,) = _result(d)
    assert a.status == "5.6.7"
    assert "SMTPUTF8 is required" in a.reason
    assert not any(line.startswith("MAIL") for line in peer.written())
    clock2 = Clock()
    peer2 = Peer(clock2)
    d3 = _agent(clock2, peer2).deliver(_request(["jörg@example.net"]))
    _greet(peer2, "250-mx1.example.net", "250-SMTPUTF8", "250 PIPELINING")
    assert peer2.written()[0] == "MAIL FROM:<sender@ours.test> SMTPUTF8"
    assert not d3.called


def test_greeting_timeout_moves_to_next_mx() -> None:
    """A peer that never greets times out after smtp_helo_timeout; the next MX is tried;
    when all hang the recipients are deferred with Postfix's text."""
    clock = Clock()
    peer = Peer(clock)
    d = _agent(clock, peer, smtp_helo_timeout="10s").deliver(_request(["a@example.net"]))
    assert peer.addresses == [("192.0.2.1", 25)]
    clock.advance(9)
    assert len(peer.chats) == 1
    clock.advance(1)
    assert peer.addresses == [("192.0.2.1", 25), ("192.0.2.2", 25)]
    clock.advance(10)
    (a,) = _result(d)
    assert a.outcome == "deferred"
    assert a.reason == (
        "conversation with mx2.example.net[192.0.2.2]:25 timed out while "
        "receiving the initial server greeting"
    )


def test_data_done_timeout_defers() -> None:
    """No reply to the end of data within smtp_data_done_timeout defers the accepted recipients."""
    clock = Clock()
    peer = Peer(clock)
    d = _agent(clock, peer, smtp_data_done_timeout="60s").deliver(_request(["a@example.net"]))
    _greet(peer)
    peer.written()
    peer.reply("250 ok", "250 ok", "354 go")
    clock.advance(60)
    (a,) = _result(d)
    assert a.status.startswith("4.")
    assert "timed out while sending end of data" in a.reason


def test_connection_refused_and_4xx_greeting_try_next_host() -> None:
    """A refused connection, then a 421 greeting, both lead on; all failing defers."""
    clock = Clock()
    peer = Peer(clock, refuse={"192.0.2.1"})
    d = _agent(clock, peer).deliver(_request(["a@example.net"]))
    assert peer.addresses == [("192.0.2.1", 25), ("192.0.2.2", 25)]
    peer.reply("421 4.3.2 busy")
    (a,) = _result(d)
    assert a.outcome == "deferred"
    assert a.reason == "host mx2.example.net[192.0.2.2]:25 refused to talk to me: 421 4.3.2 busy"


def test_all_connections_refused() -> None:
    """Every MX refusing: deferred 4.4.1 with Postfix's connect text."""
    clock = Clock()
    peer = Peer(clock, refuse={"192.0.2.1", "192.0.2.2"})
    (a,) = _result(_agent(clock, peer).deliver(_request(["a@example.net"])))
    assert (a.status, a.reason) == (
        "4.4.1",
        "connect to mx2.example.net[192.0.2.2]:25: Connection refused",
    )


def test_helo_fallback_after_ehlo_5xx() -> None:
    """A 5xx to EHLO is followed by HELO (RFC 5321 section 3.2)."""
    clock = Clock()
    peer = Peer(clock)
    d = _agent(clock, peer).deliver(_request(["a@example.net"]))
    peer.reply("220 old server")
    assert peer.written() == ["EHLO mx.ours.test"]
    peer.reply("502 what")
    assert peer.written() == ["HELO mx.ours.test"]
    peer.reply("250 hello")
    assert peer.written() == ["MAIL FROM:<sender@ours.test>"]
    assert not d.called


def test_starttls_may_and_plaintext_fallback() -> None:
    """Under may, STARTTLS is used when offered (and EHLO repeated), plain text otherwise."""
    clock = Clock()
    peer = Peer(clock)
    agent = _agent(clock, peer, smtp_connection_cache_on_demand="no")
    agent.deliver(_request(["a@example.net"]))
    _greet(peer, "250-mx1.example.net", "250 STARTTLS")
    assert peer.written() == ["STARTTLS"]
    peer.reply("220 ready")
    transport: Any = peer.chat.transport
    assert transport.tls_context is not None
    assert peer.written() == ["EHLO mx.ours.test"]
    peer.reply("250 mx1.example.net")
    assert peer.written() == ["MAIL FROM:<sender@ours.test>"]
    agent.deliver(_request(["a@example.net"]))
    _greet(peer, "250 mx1.example.net")
    assert peer.written() == ["MAIL FROM:<sender@ours.test>"]


def test_starttls_encrypt_required_but_not_offered() -> None:
    """Under encrypt, a peer without STARTTLS gets no mail: deferred 4.7.4."""
    clock = Clock()
    peer = Peer(clock, refuse={"192.0.2.2"})
    d = _agent(clock, peer, smtp_tls_security_level="encrypt").deliver(_request(["a@example.net"]))
    _greet(peer, "250 mx1.example.net")
    assert "MAIL" not in " ".join(peer.written())
    (a,) = _result(d)
    assert a.outcome == "deferred"


def test_tls_policy_table_per_destination() -> None:
    """smtp_tls_policy_maps overrides the level for one destination (none: no STARTTLS)."""
    clock = Clock()
    peer = Peer(clock)
    tables = {"inline:policy": {"example.net": "none"}}
    d = _agent(clock, peer, tables, smtp_tls_policy_maps="inline:policy").deliver(
        _request(["a@example.net"])
    )
    _greet(peer, "250-mx1.example.net", "250 STARTTLS")
    assert peer.written() == ["MAIL FROM:<sender@ours.test>"]
    assert not d.called


@pytest.mark.parametrize("level", ["dane", "dane-only"])
def test_dane_without_dnssec_stops_the_start(level: str) -> None:
    """DANE without smtp_dns_support_level = dnssec is refused at start,
    never quietly turned into may (the issue's "never silently may")."""
    with pytest.raises(ConfigError, match="needs smtp_dns_support_level = dnssec"):
        _agent(Clock(), Peer(Clock()), smtp_tls_security_level=level)


def test_fingerprint_without_fingerprints_stops_the_start() -> None:
    """Level fingerprint with no smtp_tls_fingerprint_cert_match (or a
    value that is not hex) is refused at start."""
    with pytest.raises(ConfigError, match="needs smtp_tls_fingerprint_cert_match"):
        _agent(Clock(), Peer(Clock()), smtp_tls_security_level="fingerprint")
    with pytest.raises(ConfigError, match="bad fingerprint"):
        _agent(
            Clock(),
            Peer(Clock()),
            smtp_tls_security_level="fingerprint",
            smtp_tls_fingerprint_cert_match="not-hex",
        )


def test_dane_in_the_policy_table_without_dnssec_defers() -> None:
    """A dane entry in smtp_tls_policy_maps without DNSSEC support defers
    that destination's mail (4.7.5) without connecting: no mail goes out
    under a weaker policy."""
    clock = Clock()
    peer = Peer(clock)
    tables = {"inline:policy": {"example.net": "dane"}}
    d = _agent(clock, peer, tables, smtp_tls_policy_maps="inline:policy").deliver(
        _request(["a@example.net"])
    )
    (a,) = _result(d)
    assert a.status == "4.7.5" and "needs smtp_dns_support_level = dnssec" in a.reason
    assert peer.addresses == []


def _auth_agent(clock: Clock, peer: Peer, **extra: str) -> SMTPAgent:
    tables = {"inline:pw": {"[relay.example.net]:587": "user:secret"}}
    return _agent(
        clock,
        peer,
        tables,
        smtp_sasl_auth_enable="yes",
        smtp_sasl_password_maps="inline:pw",
        smtp_sasl_tls_security_options="noanonymous",
        **extra,
    )


def test_auth_plain_over_tls() -> None:
    """With a password for the next hop, AUTH PLAIN is sent after STARTTLS."""
    clock = Clock()
    peer = Peer(clock)
    d = _auth_agent(clock, peer).deliver(_request(["a@x.test"], nexthop="[relay.example.net]:587"))
    assert peer.addresses == [("192.0.2.9", 587)]
    _greet(peer, "250-relay", "250-STARTTLS", "250 AUTH PLAIN LOGIN")
    assert peer.written() == ["STARTTLS"]
    peer.reply("220 go")
    peer.written()
    peer.reply("250-relay", "250 AUTH PLAIN LOGIN")
    assert peer.written() == ["AUTH PLAIN AHVzZXIAc2VjcmV0"]
    peer.reply("235 2.7.0 ok")
    assert peer.written() == ["MAIL FROM:<sender@ours.test>"]
    assert not d.called


def test_auth_refused_defers() -> None:
    """A 535 to AUTH defers (Postfix's smtp_sasl_auth_soft_bounce)."""
    clock = Clock()
    peer = Peer(clock)
    d = _auth_agent(clock, peer).deliver(_request(["a@x.test"], nexthop="[relay.example.net]:587"))
    _greet(peer, "250-relay", "250-STARTTLS", "250 AUTH LOGIN")
    peer.written()
    peer.reply("220 go")
    peer.written()
    peer.reply("250-relay", "250 AUTH LOGIN")
    assert peer.written() == ["AUTH LOGIN"]
    peer.reply("334 VXNlcm5hbWU6")
    assert peer.written() == ["dXNlcg=="]
    peer.reply("334 UGFzc3dvcmQ6")
    assert peer.written() == ["c2VjcmV0"]
    peer.reply("535 5.7.8 bad credentials")
    (a,) = _result(d)
    assert a.status == "4.7.8"
    assert "SASL authentication failed" in a.reason


def test_no_password_in_clear_text() -> None:
    """Without TLS, no PLAIN/LOGIN password is sent: deferred, no mechanism available."""
    clock = Clock()
    peer = Peer(clock)
    d = _auth_agent(clock, peer, smtp_tls_security_level="none").deliver(
        _request(["a@x.test"], nexthop="[relay.example.net]:587")
    )
    _greet(peer, "250-relay", "250 AUTH PLAIN LOGIN")
    assert not any(line.startswith("AUTH") for line in peer.written())
    (a,) = _result(d)
    assert (a.status, a.outcome) == ("4.7.0", "deferred")
    assert "no mechanism available" in a.reason


def test_dsn_parameters_are_relayed() -> None:
    """With DSN offered, RET/ENVID go on MAIL and NOTIFY/ORCPT on RCPT (xtext-encoded)."""
    clock = Clock()
    peer = Peer(clock)
    env = Envelope(
        "s@ours.test",
        [
            Recipient(
                "a@example.net",
                "a+x@example.net",
                orcpt="rfc822;a+x@example.net",
                notify="SUCCESS,FAILURE",
            )
        ],
        attributes={"ret": "HDRS", "envid": "id=1"},
    )
    agent = _agent(clock, peer)
    agent.deliver(_request(["a@example.net"], envelope=env))
    _greet(peer, "250-mx1.example.net", "250-DSN", "250 PIPELINING")
    assert peer.written()[:2] == [
        "MAIL FROM:<s@ours.test> RET=HDRS ENVID=id+3D1",
        "RCPT TO:<a@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bx@example.net",
    ]


def test_connection_reuse_sends_rset_and_skips_dns_and_ehlo() -> None:
    """A second message to the same destination reuses the idle connection (RSET first);
    an idle connection is closed with QUIT after smtp_connection_cache_time_limit."""
    clock = Clock()
    peer = Peer(clock)
    agent = _agent(clock, peer)
    d1 = agent.deliver(_request(["a@example.net"]))
    _greet(peer)
    peer.written()
    peer.reply("250 ok", "250 ok", "354 go")
    peer.written()
    peer.reply("250 queued")
    assert _result(d1)[0].status == "2.0.0"
    assert len(agent.cache) == 1
    d2 = agent.deliver(_request(["b@example.net"]))
    assert len(peer.chats) == 1
    assert peer.written() == ["RSET"]
    peer.reply("250 ok")
    assert peer.written()[0] == "MAIL FROM:<sender@ours.test> SIZE=38"
    peer.reply("250 ok", "250 ok", "354 go")
    peer.written()
    peer.reply("250 queued again")
    assert _result(d2)[0].reason == "250 queued again"
    clock.advance(2)
    assert peer.written() == ["QUIT"]
    assert len(agent.cache) == 0


def test_reuse_count_limit() -> None:
    """smtp_connection_reuse_count_limit = 1: the connection is closed after one message."""
    clock = Clock()
    peer = Peer(clock)
    agent = _agent(clock, peer, smtp_connection_reuse_count_limit="1")
    d = agent.deliver(_request(["a@example.net"]))
    _greet(peer)
    peer.written()
    peer.reply("250 ok", "250 ok", "354 go")
    peer.written()
    peer.reply("250 queued")
    _result(d)
    assert peer.written() == ["QUIT"]
    assert len(agent.cache) == 0


def test_mx_loop_back_to_myself() -> None:
    """An MX that is one of our addresses bounces 5.4.6 without connecting."""
    clock = Clock()
    peer = Peer(clock)
    (a,) = _result(
        _agent(clock, peer).deliver(_request(["a@loop.example.net"], "loop.example.net"))
    )
    assert (a.status, a.reason) == ("5.4.6", "mail for loop.example.net loops back to myself")
    assert peer.addresses == []


def test_dns_failure_bounces_whole_request() -> None:
    """NXDOMAIN for the destination bounces every recipient with 5.1.2."""
    clock = Clock()
    peer = Peer(clock)
    statuses = _result(_agent(clock, peer).deliver(_request(["a@nx.test", "b@nx.test"], "nx.test")))
    assert [s.status for s in statuses] == ["5.1.2", "5.1.2"]


@pytest.mark.parametrize(
    ("nexthop", "expected"),
    [
        ("example.net", ("example.net", 25, True)),
        ("example.net:2525", ("example.net", 2525, True)),
        ("[mx.example]", ("mx.example", 25, False)),
        ("[mx.example]:587", ("mx.example", 587, False)),
        ("[127.0.0.1]:submission", ("127.0.0.1", 587, False)),
        ("[ipv6:::1]:26", ("::1", 26, False)),
    ],
)
def test_parse_nexthop(nexthop: str, expected: tuple[str, int, bool]) -> None:
    """Next hops in Postfix's forms: brackets suppress MX lookup, ports optional."""
    assert parse_nexthop(nexthop, 25) == expected


@pytest.mark.parametrize(
    ("content", "wire"),
    [
        (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
        (b".a\n..b\nc.\n", b"..a\r\n...b\r\nc.\r\n.\r\n"),
        (b"no newline", b"no newline\r\n.\r\n"),
        (b"crlf\r\nkept\n", b"crlf\r\nkept\r\n.\r\n"),
        (b"", b".\r\n"),
    ],
)
def test_to_wire(content: bytes, wire: bytes) -> None:
    """LF content becomes CRLF, dot-stuffed, with the terminating dot line."""
    assert to_wire(content) == wire


def test_reply_parser_multiline_and_enhanced_codes() -> None:
    """Multi-line replies are joined; the enhanced code is used only in the reply's class."""
    parser = ReplyParser()
    assert parser.feed(b"250-first") is None
    reply = parser.feed(b"250 2.1.5 last")
    assert reply == Reply(250, ("first", "2.1.5 last"))
    assert Reply(550, ("2.0.0 wrong class",)).dsn == "5.0.0"
    assert Reply(451, ("4.3.0 tmp",)).dsn == "4.3.0"
    with pytest.raises(ValueError):
        parser.feed(b"hello")


def test_peer_with_our_hostname_is_a_loop() -> None:
    """A peer whose EHLO reply names it with our myhostname: 5.4.6, nothing sent."""
    clock = Clock()
    peer = Peer(clock)
    d = _agent(clock, peer).deliver(_request(["a@example.net"]))
    _greet(peer, "250-mx.ours.test", "250 PIPELINING")
    (a,) = _result(d)
    assert (a.status, a.outcome) == ("5.4.6", "bounced")
    assert "greeted me with my own hostname mx.ours.test" in a.reason
    assert not any(line.startswith("MAIL") for line in peer.written())


def test_idle_connection_closed_by_peer_leaves_the_cache() -> None:
    """A cached connection the peer closes is forgotten; the next message connects anew."""
    clock = Clock()
    peer = Peer(clock)
    agent = _agent(clock, peer)
    d = agent.deliver(_request(["a@example.net"]))
    _greet(peer)
    peer.written()
    peer.reply("250 ok", "250 ok", "354 go")
    peer.written()
    peer.reply("250 queued")
    _result(d)
    assert len(agent.cache) == 1
    peer.chat.connectionLost(None)
    assert len(agent.cache) == 0
    agent.deliver(_request(["b@example.net"]))
    assert len(peer.chats) == 2


def test_mail_from_rejected_fails_every_recipient() -> None:
    """A 5xx to MAIL FROM (pipelined) bounces all recipients with that reply."""
    clock = Clock()
    peer = Peer(clock)
    d = _agent(clock, peer).deliver(_request(["a@example.net", "b@example.net"]))
    _greet(peer)
    peer.written()
    peer.reply("553 5.7.1 sender refused", "503 5.5.1 no mail", "503 5.5.1 no mail", "503 no")
    statuses = _result(d)
    assert [s.status for s in statuses] == ["5.7.1", "5.7.1"]
    assert "(in reply to MAIL FROM command)" in statuses[0].reason


def test_large_message_is_streamed_and_a_stalled_write_times_out() -> None:
    """A message over one block is read from the queue and written one block
    (in wire form, whole lines) as the transport asks for more; when the
    transport stops draining, smtp_data_xfer_timeout defers."""
    clock = Clock()
    peer = Peer(clock)
    content = b"x" * 99 + b"\n"
    d = _agent(clock, peer, smtp_data_xfer_timeout="30s").deliver(
        _request(["a@example.net"], content=content * 2000)
    )
    _greet(peer)
    peer.written()
    peer.reply("250 ok", "250 ok", "354 go")
    transport: Any = peer.chat.transport
    assert transport.producer is not None
    transport.producer.resumeProducing()
    sent = transport.value()
    # One 64 KiB block of the queue file, cut at its last line end, in CRLF.
    assert len(sent) == 655 * 101 and sent.endswith(b"x\r\n")
    clock.advance(29)
    assert not d.called
    clock.advance(1)
    (a,) = _result(d)
    assert a.outcome == "deferred"
    assert "timed out while sending message body" in a.reason


def test_failed_handshake_under_may_retries_in_plain_text() -> None:
    """Under may, a TLS handshake that fails is retried at once without STARTTLS."""
    clock = Clock()
    peer = Peer(clock)
    d = _agent(clock, peer).deliver(_request(["a@example.net"]))
    _greet(peer, "250-mx1.example.net", "250 STARTTLS")
    assert peer.written() == ["STARTTLS"]
    peer.reply("220 go")
    peer.written()
    peer.chat.connectionLost(None)  # the handshake broke the connection
    assert peer.addresses == [("192.0.2.1", 25), ("192.0.2.1", 25)]
    _greet(peer, "250-mx1.example.net", "250 STARTTLS")
    assert peer.written()[0] == "MAIL FROM:<sender@ours.test>"
    assert not d.called


def _lmtp_agent(clock: Clock, peer: Peer, **extra: str) -> SMTPAgent:
    return SMTPAgent(
        _config(**extra), clock, MemoryResolver(ZONE), peer.connect, protocol="lmtp", name="lmtp"
    )


def test_lmtp_lhlo_and_one_reply_per_recipient() -> None:
    """LMTP (RFC 2033): LHLO, and after the data one reply per accepted recipient;
    a UNIX-socket next hop is used as is, without DNS."""
    clock = Clock()
    peer = Peer(clock)
    d = _lmtp_agent(clock, peer).deliver(
        _request(["a@example.net", "b@example.net", "c@example.net"], nexthop="unix:/run/lmtp")
    )
    assert peer.addresses == [("/run/lmtp", 0)]
    peer.reply("220 lmtp ready")
    assert peer.written() == ["LHLO mx.ours.test"]
    peer.reply("250-mx.ours.test", "250 PIPELINING")
    assert peer.written()[0] == "MAIL FROM:<sender@ours.test>"
    peer.reply("250 ok", "250 ok", "550 5.1.1 no such user", "250 ok", "354 go")
    peer.written()
    peer.reply("250 2.0.0 <a@example.net> saved", "452 4.2.2 <c@example.net> over quota")
    a, b, c = _result(d)
    assert (a.status, a.reason, a.relay) == (
        "2.0.0",
        "250 2.0.0 <a@example.net> saved",
        "mx.ours.test[/run/lmtp]",
    )
    assert (b.status, c.status) == ("5.1.1", "4.2.2")
    assert "(in reply to end of DATA command)" in c.reason


def test_lmtp_defaults_port_24_and_no_mx_lookup() -> None:
    """An LMTP host next hop uses lmtp_tcp_port (24) and its A record, never MX."""
    clock = Clock()
    peer = Peer(clock)
    _lmtp_agent(clock, peer).deliver(_request(["a@x.test"], nexthop="inet:relay.example.net"))
    assert peer.addresses == [("192.0.2.9", 24)]


def test_bad_tls_level_stops_the_start() -> None:
    """An unknown smtp_tls_security_level is a configuration error when the agent is built."""
    with pytest.raises(ConfigError):
        _agent(Clock(), Peer(Clock()), smtp_tls_security_level="sometimes")
