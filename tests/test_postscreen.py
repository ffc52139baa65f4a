"""postscreen's tests before the greeting, in memory: StringTransport, task.Clock,
an in-memory DNS (pymta.dns.memory) and a real smtpd factory behind it.

The greet wait, the 220- teaser, pregreet detection with each action, the
DNSBL weights and thresholds, the allowlist threshold, the access list, the
temporary allowlist (PASS OLD), the refusing engine of ``enforce`` and the
hand-off to smtpd, each with Postfix's log lines.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from pymta.config.config import Config
from pymta.config.errors import ConfigError
from pymta.dns.interface import DNSAnswer
from pymta.dns.memory import MemoryResolver
from pymta.postscreen.cache import CacheEntry, PostscreenCache, cache_path
from pymta.postscreen.engine import RefusingEngine
from pymta.postscreen.factory import PostscreenFactory
from pymta.postscreen.settings import PostscreenSettings, parse_weighted_site
from pymta.smtpd.factory import SMTPServerFactory
from pymta.smtpd.peername import HostsFile
from pymta.smtpd.protocol import SMTPServerProtocol
from pymta.smtpd.testing import (
    BASE_CONFIG,
    DictTable,
    FakeCleanup,
    FakeResolver,
    LogCapture,
    TLSStringTransport,
)
from pymta.tables.cidr import CidrTable

BANNER = b"220-mx.example.com ESMTP Postfix\r\n"
SMTPD_BANNER = b"220 mx.example.com ESMTP Postfix\r\n"


def _sync(work: Any) -> Deferred[Any]:
    return succeed(work())


class Screen:
    """One postscreen listener over in-memory parts; ``connect()`` makes a client."""

    def __init__(
        self,
        config_text: str = "",
        dns: Any = None,
        tables: dict[str, Any] | None = None,
        cache: PostscreenCache | None = None,
    ) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)  # Unix-like times for the cache
        self.config = Config.from_text(
            BASE_CONFIG + "mynetworks = 127.0.0.0/8\n" + textwrap.dedent(config_text)
        )
        self.tables = tables or {}
        self.cleanup = FakeCleanup()
        self.smtpd = SMTPServerFactory(
            self.config,
            self.cleanup,
            FakeResolver(),
            self.tables.__getitem__,
            None,
            self.clock,
            hosts=HostsFile(),
        )
        self.dns = dns if dns is not None else MemoryResolver({})
        self.cache = cache or PostscreenCache(None, self.clock, _sync, 7 * 86400, 0)
        settings = PostscreenSettings(self.config, self.tables.__getitem__)
        self.factory = PostscreenFactory(settings, self.smtpd, self.dns, self.cache, self.clock)
        self.factory.startFactory()

    def connect(self, peer: str = "203.0.113.5", port: int = 4242) -> Client:
        return Client(self, peer, port)


class Client:
    def __init__(self, screen: Screen, peer: str, port: int) -> None:
        self.transport = TLSStringTransport(peer)
        self.transport.peerAddr = IPv4Address("TCP", peer, port)
        self.transport.hostAddr = IPv4Address("TCP", "192.0.2.1", 25)
        self.protocol = screen.factory.buildProtocol(self.transport.getPeer())
        self.transport.protocol = self.protocol
        self.protocol.makeConnection(self.transport)

    def take(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return bytes(data)

    def send(self, data: bytes) -> bytes:
        self.transport.protocol.dataReceived(data)
        return self.take()

    @property
    def current(self) -> Any:
        """The protocol that serves the client now (postscreen, smtpd, engine)."""
        return self.transport.protocol

    def hang_up(self) -> None:
        self.transport.protocol.connectionLost(None)


def test_greet_wait_then_smtpd_completes_the_greeting() -> None:
    """A client that waits postscreen_greet_wait gets the 220- teaser first,
    nothing more during the wait, then smtpd's 220 line (one multi-line
    greeting), and is logged CONNECT and PASS NEW; it then talks to smtpd."""
    screen = Screen("postscreen_greet_wait = 6s\n")
    with LogCapture() as log:
        client = screen.connect()
        assert client.take() == BANNER
        screen.clock.advance(5.9)
        assert client.take() == b""
        assert not isinstance(client.current, SMTPServerProtocol)
        screen.clock.advance(0.1)
        assert client.take() == SMTPD_BANNER
        assert isinstance(client.current, SMTPServerProtocol)
        assert client.send(b"EHLO client.example\r\n").startswith(b"250-mx.example.com")
    assert log.maillog[:2] == [
        "postscreen: CONNECT from [203.0.113.5]:4242 to [192.0.2.1]:25",
        "postscreen: PASS NEW [203.0.113.5]:4242",
    ]
    assert "smtpd: connect from unknown[203.0.113.5]" in log.maillog


def test_passed_client_goes_straight_to_smtpd_next_time() -> None:
    """The temporary allowlist: a client that passed is handed to smtpd at
    connect (PASS OLD, no teaser, no wait) until postscreen_greet_ttl ends."""
    screen = Screen("postscreen_greet_ttl = 1h\n")
    first = screen.connect()
    screen.clock.advance(6)
    assert first.take() == BANNER + SMTPD_BANNER
    with LogCapture() as log:
        again = screen.connect(port=4343)
        assert again.take() == SMTPD_BANNER
        assert isinstance(again.current, SMTPServerProtocol)
    assert "postscreen: PASS OLD [203.0.113.5]:4343" in log.maillog
    screen.clock.advance(3601)
    late = screen.connect(port=4444)
    assert late.take() == BANNER


@pytest.mark.parametrize("action", ["drop", "enforce", "ignore"])
def test_pregreet_is_logged_and_acted_on(action: str) -> None:
    """A client that talks before its turn is logged PREGREET with the byte
    count, the time and the escaped text; with nothing else to wait for
    (no DNSBL), the verdict comes at once, as in Postfix: drop hangs up
    with 521, enforce greets it in postscreen's refusing engine, ignore
    hands it to smtpd. It is never allowlisted."""
    screen = Screen(f"postscreen_greet_action = {action}\n")
    with LogCapture() as log:
        client = screen.connect()
        client.take()
        screen.clock.advance(0.08)
        answer = client.send(b"EHLO ylmf-pc\r\n")
    assert log.maillog[1] == (
        "postscreen: PREGREET 14 after 0.08 from [203.0.113.5]:4242: EHLO ylmf-pc\\r\\n"
    )
    if action == "drop":
        assert answer == b"521 5.5.1 Protocol error\r\n"
        assert client.transport.disconnecting
        assert log.maillog[-1] == "postscreen: DISCONNECT [203.0.113.5]:4242"
    elif action == "enforce":
        assert answer.startswith(b"220 mx.example.com ESMTP Postfix\r\n250-mx.example.com")
        assert isinstance(client.current, RefusingEngine)
    else:
        assert isinstance(client.current, SMTPServerProtocol)
    assert screen.cache.get("203.0.113.5") is None


def test_pregreet_waits_for_the_lists() -> None:
    """With DNSBL lookups outstanding, a pregreeting client waits (reading
    paused: one read is all postscreen takes) until the lists answer or
    the greet wait ends."""

    class Silent:
        def lookup(self, name: str, rrtype: str) -> Deferred[DNSAnswer]:
            return Deferred()

    screen = Screen(
        "postscreen_greet_action = enforce\npostscreen_dnsbl_sites = zen.example\n", dns=Silent()
    )
    client = screen.connect()
    client.take()
    assert client.send(b"EHLO bot\r\n") == b""
    assert client.transport.producerState == "paused"
    screen.clock.advance(6)
    assert client.take().startswith(b"220 mx.example.com ESMTP Postfix\r\n250-")
    assert client.transport.producerState == "producing"


def test_pregreet_enforce_refuses_every_recipient() -> None:
    """enforce: the client talks to postscreen's own engine (never smtpd):
    its early EHLO is answered, MAIL accepted, RCPT refused with 550 5.5.1
    and logged as Postfix's NOQUEUE reject line."""
    screen = Screen("postscreen_greet_action = enforce\n")
    with LogCapture() as log:
        client = screen.connect()
        client.take()
        greeting = client.send(b"EHLO bot.example\r\n")
        assert greeting.startswith(b"220 mx.example.com ESMTP Postfix\r\n250-mx.example.com")
        assert client.send(b"MAIL FROM:<spam@bot.example>\r\n") == b"250 2.1.0 Ok\r\n"
        assert client.send(b"RCPT TO:<alice@example.com>\r\n") == b"550 5.5.1 Protocol error\r\n"
        assert client.send(b"DATA\r\n") == b"554 5.5.1 Error: no valid recipients\r\n"
        assert client.send(b"QUIT\r\n") == b"221 2.0.0 Bye\r\n"
        assert screen.factory.connections == {"203.0.113.5": 1}  # still postscreen's
        client.hang_up()
        assert screen.factory.connections == {}
    assert (
        "postscreen: NOQUEUE: reject: RCPT from [203.0.113.5]:4242: 550 5.5.1 Protocol error; "
        "from=<spam@bot.example>, to=<alice@example.com>, proto=ESMTP, helo=<bot.example>"
    ) in log.maillog
    assert log.maillog[-1] == "postscreen: DISCONNECT [203.0.113.5]:4242"
    assert not screen.cleanup.received


def test_pregreet_ignore_hands_early_input_to_smtpd() -> None:
    """ignore: the client reaches smtpd, and smtpd's own pre-greeting check
    sees what it sent early (554 with Postfix's default
    smtpd_forbid_unauth_pipelining)."""
    screen = Screen()
    with LogCapture() as log:
        client = screen.connect()
        client.take()
        assert client.send(b"EHLO bot.example\r\n") == (
            b"554 5.5.0 Error: SMTP protocol synchronization\r\n"
        )
    assert (
        "smtpd: improper command pipelining after CONNECT from unknown[203.0.113.5]: "
        "EHLO bot.example\\r\\n"
    ) in log.maillog


def test_hangup_during_the_wait() -> None:
    """A client that leaves during the greet wait is logged HANGUP ... in
    tests before SMTP handshake, then DISCONNECT; nothing is cached."""
    screen = Screen()
    with LogCapture() as log:
        client = screen.connect()
        screen.clock.advance(1.5)
        client.hang_up()
        screen.clock.advance(10)
    assert log.maillog[-2:] == [
        "postscreen: HANGUP after 1.50 from [203.0.113.5]:4242 in tests before SMTP handshake",
        "postscreen: DISCONNECT [203.0.113.5]:4242",
    ]
    assert screen.cache.get("203.0.113.5") is None
    assert screen.factory.connections == {}


def _zones() -> MemoryResolver:
    return MemoryResolver(
        {
            ("5.113.0.203.zen.example", "A"): ["127.0.0.4"],
            ("5.113.0.203.list.example", "A"): ["127.0.0.2"],
            ("6.113.0.203.list.example", "A"): ["127.0.0.3"],
            ("7.113.0.203.wl.example", "A"): ["127.0.0.2"],
        },
        ttl=600,
    )


@pytest.mark.parametrize(
    "peer, threshold, rank",
    [
        ("203.0.113.5", 5, 5),  # zen*3 + list=127.0.0.2*2
        ("203.0.113.6", 1, None),  # list answers 127.0.0.3: filtered out
        ("203.0.113.5", 6, None),  # 5 < 6: passes
    ],
)
def test_dnsbl_weights_and_threshold(peer: str, threshold: int, rank: int | None) -> None:
    """Weights add up across lists, a result filter keeps other answers out,
    and a score at or above postscreen_dnsbl_threshold logs DNSBL rank and
    (drop) hangs up with 521 naming the heaviest list."""
    screen = Screen(
        "postscreen_dnsbl_sites = zen.example*3 list.example=127.0.0.2*2\n"
        f"postscreen_dnsbl_threshold = {threshold}\n"
        "postscreen_dnsbl_action = drop\n",
        dns=_zones(),
    )
    with LogCapture() as log:
        client = screen.connect(peer)
        client.take()
        screen.clock.advance(6)
    if rank is None:
        assert client.take() == SMTPD_BANNER
        assert f"postscreen: PASS NEW [{peer}]:4242" in log.maillog
        return
    assert f"postscreen: DNSBL rank {rank} for [{peer}]:4242" in log.maillog
    assert client.take() == (
        f"521 5.7.1 Service unavailable; client [{peer}] blocked using zen.example\r\n".encode()
    )
    assert screen.cache.get(peer) is None


def test_dnsbl_enforce_with_reply_map() -> None:
    """enforce: the 550 names the list as postscreen_dnsbl_reply_map shows it."""
    screen = Screen(
        "postscreen_dnsbl_sites = zen.example*3\n"
        "postscreen_dnsbl_action = enforce\n"
        "postscreen_dnsbl_reply_map = inline:{zen.example=Spamhaus}\n",
        dns=_zones(),
        tables={"inline:{zen.example=Spamhaus}": DictTable("m", {"zen.example": "Spamhaus"})},
    )
    client = screen.connect()
    client.take()
    screen.clock.advance(6)
    client.take()
    client.send(b"HELO bot\r\nMAIL FROM:<a@b>\r\n")
    assert client.send(b"RCPT TO:<c@d>\r\n") == (
        b"550 5.7.1 Service unavailable; client [203.0.113.5] blocked using Spamhaus\r\n"
    )


def test_dnswl_allowlist_threshold_ends_the_wait_early() -> None:
    """A score at or below postscreen_dnsbl_allowlist_threshold (a DNSWL with
    a negative weight) ends the greet wait as soon as the lists answered
    and passes the pregreet test too: the next connection is PASS OLD."""
    screen = Screen(
        "postscreen_dnsbl_sites = zen.example*3 wl.example*-5\n"
        "postscreen_dnsbl_allowlist_threshold = -1\n",
        dns=_zones(),
    )
    with LogCapture() as log:
        client = screen.connect("203.0.113.7")
        assert client.take() == BANNER
        screen.clock.advance(0)
        assert client.take() == SMTPD_BANNER
    assert "postscreen: PASS NEW [203.0.113.7]:4242" in log.maillog
    entry = screen.cache.get("203.0.113.7")
    assert entry is not None and entry.pregreet == entry.dnsbl == screen.clock.seconds() + 600


def test_slow_list_does_not_hold_the_client() -> None:
    """A list that never answers adds nothing: the greet wait decides with
    the score at hand, and the DNSBL pass is kept only
    postscreen_dnsbl_min_ttl (the list is asked again soon)."""

    class Silent:
        def lookup(self, name: str, rrtype: str) -> Deferred[DNSAnswer]:
            return Deferred()

    screen = Screen(
        "postscreen_dnsbl_sites = zen.example*3\npostscreen_dnsbl_min_ttl = 90s\n", dns=Silent()
    )
    client = screen.connect()
    client.take()
    screen.clock.advance(6)
    assert client.take() == SMTPD_BANNER
    entry = screen.cache.get("203.0.113.5")
    assert entry is not None and entry.dnsbl == screen.clock.seconds() + 90


def test_dnsbl_timeout_ends_a_lookup_and_the_wait() -> None:
    """postscreen_dnsbl_timeout: a client whose pregreet pass is cached only
    waits for the lists, and a silent list gives up after the timeout, so
    the client reaches smtpd after 2 s instead of the 6 s greet wait; an
    IPv6 client is looked up by its reversed nibbles."""
    asked: list[str] = []

    class Silent:
        def lookup(self, name: str, rrtype: str) -> Deferred[DNSAnswer]:
            asked.append(name)
            return Deferred()

    screen = Screen(
        "postscreen_dnsbl_sites = zen.example\npostscreen_dnsbl_timeout = 2s\n", dns=Silent()
    )
    now = screen.clock.seconds()
    screen.cache.update("2001:db8::5", CacheEntry(pregreet=now + 3600))
    client = screen.connect("2001:db8::5")
    assert client.take() == b""  # no teaser: the pregreet test is not due
    screen.clock.advance(1.9)
    assert client.take() == b""
    screen.clock.advance(0.1)
    screen.clock.advance(0)
    assert client.take() == SMTPD_BANNER
    assert asked == ["5.0.0.0." + "0." * 20 + "8.b.d.0.1.0.0.2.zen.example"]


def test_access_list_cidr_permit_and_reject(tmp_path: Path) -> None:
    """postscreen_access_list: permit_mynetworks and a cidr: table; permit
    is ALLOWLISTED and goes to smtpd at once, reject is DENYLISTED and
    (drop) gets 521 5.3.2, dunno goes on to the tests."""
    table = tmp_path / "access.cidr"
    table.write_text(
        "# comment\n198.51.100.0/24 permit\n203.0.113.9 reject\n203.0.113.0/24 dunno\n"
    )
    spec = f"cidr:{table}"
    screen = Screen(
        f"postscreen_access_list = permit_mynetworks, {spec}\npostscreen_denylist_action = drop\n",
        tables={spec: CidrTable(spec, str(table), lambda: 0.0)},
    )
    with LogCapture() as log:
        local = screen.connect("127.0.0.1")
        assert local.take() == SMTPD_BANNER
        friend = screen.connect("198.51.100.20")
        assert friend.take() == SMTPD_BANNER
        foe = screen.connect("203.0.113.9")
        assert foe.take() == b"521 5.3.2 Service currently unavailable\r\n"
        other = screen.connect("203.0.113.10")
        assert other.take() == BANNER
    assert "postscreen: ALLOWLISTED [198.51.100.20]:4242" in log.maillog
    assert "postscreen: DENYLISTED [203.0.113.9]:4242" in log.maillog


def test_connection_count_limit() -> None:
    """postscreen_client_connection_count_limit: one connection too many
    from one address gets 421 and is logged as Postfix's NOQUEUE line."""
    screen = Screen("postscreen_client_connection_count_limit = 2\n")
    screen.connect(port=1)
    screen.connect(port=2)
    with LogCapture() as log:
        third = screen.connect(port=3)
    assert third.take() == b"421 4.7.0 Error: too many connections from 203.0.113.5\r\n"
    assert (
        "postscreen: NOQUEUE: reject: CONNECT from [203.0.113.5]:3: too many connections"
        in log.maillog
    )


def test_engine_command_count_limit() -> None:
    """The refusing engine hangs up after postscreen_command_count_limit commands."""
    screen = Screen("postscreen_greet_action = enforce\npostscreen_command_count_limit = 3\n")
    client = screen.connect()
    client.send(b"x\r\n")
    screen.clock.advance(6)
    client.take()
    answer = client.send(b"NOOP\r\nNOOP\r\nNOOP\r\n")
    assert answer.endswith(b"421 4.7.0 mx.example.com Service unavailable - try again later\r\n")
    assert client.transport.disconnecting


def test_weighted_site_syntax() -> None:
    """domain[=filter][*weight]: weight 1 by default, negative allowed."""
    site = parse_weighted_site("list.example=127.0.0.[2..4]*-2")
    assert (site.domain, site.weight) == ("list.example", -2)
    assert site.site.matches("127.0.0.3") and not site.site.matches("127.0.0.5")
    assert parse_weighted_site("zen.example").weight == 1
    with pytest.raises(ConfigError):
        parse_weighted_site("zen.example*x")


def test_bad_action_is_a_config_error() -> None:
    """An action other than ignore, enforce or drop stops the start."""
    config = Config.from_text(BASE_CONFIG + "postscreen_greet_action = reject\n")
    with pytest.raises(ConfigError, match="postscreen_greet_action"):
        PostscreenSettings(config, lambda spec: DictTable(spec, {}))


def test_cache_file_survives_restart(tmp_path: Path) -> None:
    """The cache is a file: a new cache on the same path (a restart) knows
    the clients the old one allowlisted; the cleanup drops entries past
    postscreen_cache_retention_time."""
    clock = Clock()
    clock.advance(1_000_000)
    path = cache_path(f"btree:{tmp_path}/postscreen_cache")
    assert path == f"{tmp_path}/postscreen_cache.pymta"
    cache = PostscreenCache(path, clock, _sync, 100, 50)
    cache.start()
    cache.update("203.0.113.5", CacheEntry(1_000_060, 1_000_030))
    cache.update("203.0.113.6", CacheEntry(1_000_010, 0))
    clock.advance(0)  # the append
    cache.stop()
    again = PostscreenCache(path, clock, _sync, 100, 50)
    again.start()
    assert again.get("203.0.113.5") == CacheEntry(1_000_060, 1_000_030)
    clock.advance(120)  # a cleanup: .6 expired more than 100 s ago, .5 not
    assert again.get("203.0.113.6") is None
    assert again.get("203.0.113.5") is not None
    again.stop()
    assert Path(path).read_text() == "203.0.113.5 1000060 1000030\n"


def _check(tmp_path: Path, main_cf: str, master_cf: str) -> int:
    from pymta.cli.main import main as pymta_main

    (tmp_path / "main.cf").write_text(
        f"queue_directory = {tmp_path}/spool\ndata_directory = {tmp_path}/lib\n"
        "myhostname = mx.example.com\n" + main_cf
    )
    (tmp_path / "master.cf").write_text(master_cf)
    return pymta_main(["check", "-c", str(tmp_path)])


STOCK = (
    "smtp      inet  n       -       n       -       1       postscreen\n"
    "smtpd     pass  -       -       n       -       -       smtpd\n"
    "dnsblog   unix  -       -       n       -       0       dnsblog\n"
    "tlsproxy  unix  -       -       n       -       0       tlsproxy\n"
)


def test_check_accepts_the_stock_lines_and_refuses_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pymta check (the start's own code) accepts Postfix's stock postscreen
    lines, refuses a postscreen without its pass service, and refuses the
    deep protocol tests turned on, naming file and line."""
    assert _check(tmp_path, "", STOCK) == 0
    out = capsys.readouterr()
    assert "not built yet" not in out.err
    assert _check(tmp_path, "", STOCK.splitlines(keepends=True)[0]) == 1
    assert "no 'smtpd pass ... smtpd' service" in capsys.readouterr().err
    assert _check(tmp_path, "postscreen_pipelining_enable = yes\n", STOCK) == 1
    err = capsys.readouterr().err
    assert "line 4: postscreen_pipelining_enable: not implemented by pymta" in err
    assert not (tmp_path / "lib").exists()  # check writes no cache file
