"""Shared fixtures of the IMAP protocol tests (no tests here): an in-memory
store, a passwd-file portal, and sessions over StringTransport and Clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure

from pymta.auth.checker import PasswdFileChecker
from pymta.auth.locate import MailboxLocator
from pymta.auth.passwdfile import PasswdFile
from pymta.auth.realm import MailRealm
from pymta.auth.throttle import LoginThrottle
from pymta.imap.factory import IMAPServerFactory
from pymta.imap.protocol import IMAPServer
from pymta.imap.settings import IMAPSettings
from pymta.mailstore.interface import IMailStore, IUserMailbox
from pymta.mailstore.memory import MemoryStore
from pymta.netmatch import NetworkList
from tests.test_pop3_harness import TLSStringTransport, sync_runner


class World:
    """A store, a passwd-file and a factory; sessions are StringTransport connections."""

    def __init__(
        self,
        tmp_path: Path,
        settings: IMAPSettings | None = None,
        tls: Any = None,
        store: IMailStore | None = None,
    ) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.passwd = tmp_path / "passwd"
        self.passwd.write_text(
            f"alice@example.org:{{PLAIN}}secret:::::: mail=maildir:{tmp_path}/alice\n"
            f"bob@example.org:{{PLAIN}}hunter2:::::: mail=maildir:{tmp_path}/bob\n"
        )
        self.root = tmp_path
        self.store = store if store is not None else MemoryStore(self.clock)
        self.checker = PasswdFileChecker(
            PasswdFile(str(self.passwd), self.clock),
            self.clock,
            throttle=LoginThrottle(self.clock, base=0.5, cap=4),
            run_in_thread=sync_runner,
        )
        realm = MailRealm(self.store, MailboxLocator(self.checker.passwd))
        self.portal = Portal(realm, [self.checker])
        self.events: list[dict[str, Any]] = []
        self.settings = settings or IMAPSettings(hostname="mail.example.org")
        self.factory = IMAPServerFactory(
            self.settings,
            self.portal,
            tls,
            self.clock,
            NetworkList(["192.0.2.128/25"]),
            random_bytes=lambda n: bytes(range(n)),
            pid=4242,
            logger=Logger(observer=cast(ILogObserver, self.events.append)),
        )
        self.counter = 0

    def mailbox(self, user: str = "alice") -> IUserMailbox:
        return self.store.open_user(f"{user}@example.org", f"{self.root}/{user}")

    def connect(self, ip: str = "127.0.0.1") -> Session:
        self.counter += 1
        proto = self.factory.buildProtocol(IPv4Address("TCP", ip, 40000 + self.counter))
        transport = TLSStringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 143),
            peerAddress=IPv4Address("TCP", ip, 40000 + self.counter),
        )
        proto.makeConnection(transport)
        return Session(self, proto, transport)

    def log_lines(self) -> list[str]:
        return [e["line"] for e in self.events if e.get("pymta_imap")]


class Session:
    """One client connection: send lines, read exactly what the server wrote."""

    def __init__(self, world: World, proto: IMAPServer, transport: TLSStringTransport) -> None:
        self.world = world
        self.proto = proto
        self.transport = transport
        self.greeting = self.read()

    def read(self) -> bytes:
        out = self.transport.value()
        self.transport.clear()
        return bytes(out)

    def send(self, data: str | bytes) -> bytes:
        """Send raw data (str gets CRLF appended); return what the server wrote."""
        if isinstance(data, str):
            data = (data + "\r\n").encode("utf-8")
        self.proto.dataReceived(data)
        return self.read()

    def lines(self, data: str | bytes) -> list[bytes]:
        return self.send(data).split(b"\r\n")[:-1]

    def login(self, user: str = "alice@example.org", password: str = "secret") -> None:
        reply = self.send(f"a0 LOGIN {user} {password}")
        assert reply.startswith(b"a0 OK [CAPABILITY "), reply

    def select(self, name: str = "INBOX") -> bytes:
        reply = self.send(f"s1 SELECT {name}")
        assert b"s1 OK [READ-WRITE]" in reply, reply
        return reply

    def drop(self) -> None:
        self.proto.connectionLost(Failure(ConnectionLost()))
