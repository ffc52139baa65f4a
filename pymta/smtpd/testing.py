"""In-memory fakes and a transcript driver for testing smtpd (and what wires it).

Shipped in the package, as Klein ships its in-memory implementations, so
that other parts' tests can drive an SMTP session without sockets:
:class:`FakeCleanup` records what smtpd hands off, :class:`FakeResolver`
answers address classes from sets, :class:`DictTable` is a lookup table,
:class:`SMTPHarness` runs one session over a StringTransport with a
``task.Clock``, and :meth:`SMTPHarness.converse` checks a golden
transcript (``C:`` lines are sent, ``S:`` lines are the expected replies;
a ``S:`` line ending in ``*`` matches as a prefix). Consecutive ``C:``
lines go out in one write, which Postfix's pipelining rules often forbid:
the harness runs with ``smtpd_forbid_unauth_pipelining = no`` unless a
test asks for the default (``forbid_pipelining=True``), and ``pregreet``
is input waiting on the (fake) socket before the greeting. Nothing here
touches the network or the disk.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, globalLogPublisher
from zope.interface import implementer

from pymta.cleanup.cleanup import log_client
from pymta.cleanup.interface import CleanupRejected, ICleanup, IMessageWriter
from pymta.cleanup.writer import BufferedMessageWriter
from pymta.config.config import Config
from pymta.dns.interface import IDNSResolver
from pymta.milter.chain import Milters
from pymta.milter.config import MilterClients
from pymta.queue.model import Envelope
from pymta.queue.space import QueueSpace
from pymta.rewrite.interface import Resolution
from pymta.smtpd.factory import SMTPServerFactory
from pymta.smtpd.peername import HostsFile
from pymta.smtpd.protocol import SMTPServerProtocol
from pymta.tables.interface import ILookupTable, TableError
from pymta.tls import ServerTLS

__all__ = [
    "BASE_CONFIG",
    "DictTable",
    "FakeCleanup",
    "FakeResolver",
    "LogCapture",
    "PeekableSocket",
    "SMTPHarness",
    "TLSStringTransport",
]

BASE_CONFIG = """\
myhostname = mx.example.com
mydomain = example.com
"""


@implementer(ICleanup)
class FakeCleanup:
    """Records submissions. ``hold=True`` keeps each Deferred for the test to fire;
    ``reject``/``error`` make every submission fail that way."""

    def __init__(
        self,
        hold: bool = False,
        reject: CleanupRejected | None = None,
        error: Exception | None = None,
    ) -> None:
        self.hold = hold
        self.reject = reject
        self.error = error
        self.received: list[tuple[Envelope, bytes]] = []
        #: the milters smtpd handed over with each message (None without).
        self.milters: list[Milters | None] = []
        #: the content's line count each submitter gave (None: not counted).
        self.lines: list[int | None] = []
        self.pending: list[Deferred[str]] = []
        #: Every writer smtpd opened, in order (its ``aborted`` tells a dropped message).
        self.writers: list[BufferedMessageWriter] = []

    def open_message(self, milters: Milters | None = None) -> IMessageWriter:
        def submit(envelope: Envelope, content: bytes, lines: int | None) -> Deferred[str]:
            return self.submit(envelope, content, milters, lines)

        writer = BufferedMessageWriter(submit)
        self.writers.append(writer)
        return writer

    def submit(
        self,
        envelope: Envelope,
        content: bytes,
        milters: Milters | None = None,
        lines: int | None = None,
    ) -> Deferred[str]:
        self.received.append((envelope, content))
        self.milters.append(milters)
        self.lines.append(lines)
        if self.reject is not None:
            return fail(self.reject)
        if self.error is not None:
            return fail(self.error)
        queue_id = f"QID{len(self.received)}"
        if self.hold:
            d: Deferred[str] = Deferred()
            self.pending.append(d)
            return d
        log_client(queue_id, envelope.attributes)  # as the real cleanup does
        return succeed(queue_id)


class FakeResolver:
    """Address classes from domain sets; listed recipients from a set."""

    def __init__(
        self,
        local: Iterable[str] = ("mx.example.com", "localhost", "example.com"),
        virtual_mailbox: Iterable[str] = ("virtual.example",),
        virtual_alias: Iterable[str] = (),
        relay: Iterable[str] = (),
        users: Iterable[str] = (
            "user@example.com",
            "postmaster@mx.example.com",
            "alice@virtual.example",
            "user@mx.example.com",
        ),
        fail: bool = False,
    ) -> None:
        self.classes: dict[str, str] = {}
        for klass, domains in (
            ("local", local),
            ("virtual_mailbox", virtual_mailbox),
            ("virtual_alias", virtual_alias),
            ("relay", relay),
        ):
            for domain in domains:
                self.classes[domain.lower()] = klass
        self.users = {u.lower() for u in users}
        self.fail = fail

    def address_class(self, domain: str) -> str:
        return self.classes.get(domain.lower(), "default")

    def is_listed_recipient(self, address: str) -> bool:
        if self.fail:
            raise TableError("fake table failure")
        return address.lower() in self.users

    def resolve(self, address: str) -> Resolution:
        """Postfix's default transports by address class."""
        domain = address.rpartition("@")[2].lower()
        klass = self.address_class(domain) if domain else "local"
        transport = {"local": "local", "virtual_mailbox": "virtual", "relay": "relay"}.get(
            klass, "smtp"
        )
        nexthop = "mx.example.com" if klass == "local" else domain
        return Resolution(transport, nexthop, address)


@implementer(ILookupTable)
class DictTable:
    """A lookup table from a dict; ``fail=True`` fails every lookup."""

    def __init__(self, name: str, mapping: Mapping[str, str], fail: bool = False) -> None:
        self.name = name
        self._mapping = {k.lower(): v for k, v in mapping.items()}
        self.fail = fail
        self.keys: list[str] = []

    def lookup(self, key: str) -> str | None:
        self.keys.append(key)
        if self.fail:
            raise TableError(f"{self.name}: lookup failed")
        return self._mapping.get(key.lower())


class PeekableSocket:
    """The socket under a test transport: ``pending`` is what the client
    wrote that the server has not read yet, seen through MSG_PEEK."""

    def __init__(self) -> None:
        self.pending = b""

    def recv(self, size: int, flags: int = 0) -> bytes:
        if not self.pending:
            raise BlockingIOError("no input")
        return self.pending[:size]


class TLSStringTransport(StringTransport):
    """A StringTransport that records startTLS instead of doing a handshake,
    over a :class:`PeekableSocket` (input waiting before the greeting)."""

    def __init__(self, peer: str = "203.0.113.5") -> None:
        address: IPv4Address | IPv6Address
        if ":" in peer:
            address = IPv6Address("TCP", peer, 4242)
        else:
            address = IPv4Address("TCP", peer, 4242)
        super().__init__(peerAddress=address)
        self.tls_started: Any = None
        self.socket = PeekableSocket()

    def getHandle(self) -> PeekableSocket:
        return self.socket

    def startTLS(self, context_factory: Any) -> None:
        self.tls_started = context_factory


class SMTPHarness:
    """One smtpd session over a TLSStringTransport, driven by a test."""

    def __init__(
        self,
        config_text: str = "",
        *,
        peer: str = "203.0.113.5",
        resolver: FakeResolver | None = None,
        cleanup: FakeCleanup | None = None,
        tables: Mapping[str, ILookupTable] | None = None,
        tls: ServerTLS | None = None,
        clock: Clock | None = None,
        pregreet: bytes = b"",
        forbid_pipelining: bool = False,
        checker: ICredentialsChecker | None = None,
        queue_space: QueueSpace | None = None,
        dns: IDNSResolver | None = None,
        milters: MilterClients | None = None,
        master_service: str | None = None,
    ) -> None:
        # The scripts of most tests write several commands at once where a
        # conforming client would wait (EHLO + MAIL, DATA + content): such
        # a test checks something else, so unless it asks for Postfix's
        # default (forbid_pipelining=True), the harness runs with
        # smtpd_forbid_unauth_pipelining = no, which only logs a violation.
        tolerant = "" if forbid_pipelining else "smtpd_forbid_unauth_pipelining = no\n"
        self.config = Config.from_text(BASE_CONFIG + tolerant + textwrap.dedent(config_text))
        self.clock = clock or Clock()
        self.cleanup = cleanup or FakeCleanup()
        self.resolver = resolver or FakeResolver()
        self.tables = dict(tables or {})
        self.factory = SMTPServerFactory(
            self.config,
            self.cleanup,
            self.resolver,
            self._open_table,
            tls,
            self.clock,
            checker=checker,
            queue_space=queue_space,
            dns=dns,
            hosts=HostsFile(),  # no /etc/hosts: names come from dns only
            master_service=master_service,
        )
        if milters is not None:
            self.factory.milters = milters
        self.transport = TLSStringTransport(peer)
        # What the client wrote before the server's greeting.
        self.transport.socket.pending = pregreet
        self.protocol: SMTPServerProtocol = self.factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)
        self.banner = self.take()

    def _open_table(self, spec: str) -> ILookupTable:
        return self.tables[spec]

    def take(self) -> list[str]:
        """The reply lines written since the last call."""
        data = self.transport.value()
        self.transport.clear()
        text = data.decode("utf-8")
        lines = text.split("\r\n")
        assert lines[-1] == "", f"reply not CRLF-terminated: {text!r}"
        return lines[:-1]

    def send(self, data: bytes | str) -> list[str]:
        """Feed client bytes (str is encoded, LF becomes CRLF) and return the replies."""
        if isinstance(data, str):
            data = data.replace("\n", "\r\n").encode("utf-8")
        self.protocol.dataReceived(data)
        return self.take()

    def codes(self, data: bytes | str) -> list[str]:
        """Like send, but only the first word (code) of each final reply line."""
        return [line[:3] for line in self.send(data) if line[3:4] != "-"]

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

    def converse(self, script: str) -> None:
        """Check a transcript: consecutive ``C:`` lines go in one write (pipelining)."""
        client: list[str] = []
        expected: list[str] = []
        got: list[str] = []
        for line in textwrap.dedent(script).strip().splitlines():
            line = line.strip()
            if line.startswith("C:"):
                if expected:
                    _match(got, expected)
                    expected = []
                client.append(line[3:])
            elif line.startswith("S:"):
                if client:
                    got = self.send("".join(c + "\r\n" for c in client).encode("utf-8"))
                    client = []
                expected.append(line[3:])
            elif line:
                raise ValueError(f"bad transcript line {line!r}")
        if client:
            got = self.send("".join(c + "\r\n" for c in client).encode("utf-8"))
        _match(got, expected)


def _match(got: list[str], expected: list[str]) -> None:
    ok = len(got) == len(expected) and all(
        g.startswith(e[:-1]) if e.endswith("*") else g == e
        for g, e in zip(got, expected, strict=False)
    )
    assert ok, "transcript mismatch:\n  expected: {}\n  got:      {}".format(
        "\n            ".join(expected), "\n            ".join(got)
    )


@implementer(ILogObserver)
class LogCapture:
    """Collects log events while installed: ``maillog`` holds the mail event
    lines as ``service: text``, ``events`` every event."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.maillog: list[str] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        if event.get("pymta_maillog"):
            self.maillog.append(f"{event['service']}: {event['text']}")

    def __enter__(self) -> LogCapture:
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self)
