"""Shared fixtures of the POP3 tests (no tests here): in-memory store, passwd-file, portal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, Logger

from pymta.auth.checker import PasswdFileChecker
from pymta.auth.passwdfile import PasswdFile
from pymta.auth.realm import MailRealm
from pymta.auth.throttle import LoginThrottle
from pymta.config.config import Config
from pymta.mailstore.interface import IFolder, IMailStore
from pymta.mailstore.memory import MemoryStore
from pymta.netmatch import NetworkList
from pymta.pop3.factory import POP3ServerFactory
from pymta.pop3.protocol import POP3Server
from pymta.pop3.settings import POP3Settings


def sync_runner(f: Callable[[], Any]) -> defer.Deferred[Any]:
    return defer.maybeDeferred(f)


class TLSStringTransport(StringTransport):
    """A StringTransport that records startTLS."""

    tls_started: Any = None

    def startTLS(self, context: Any) -> None:
        self.tls_started = context


class World:
    """A store, a passwd-file and a factory; sessions are StringTransport connections."""

    def __init__(
        self,
        tmp_path: Path,
        settings: POP3Settings | None = None,
        tls: Any = None,
        *,
        store: IMailStore | None = None,
        mail_root: str = "/mail",
    ):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.mail_root = mail_root
        self.passwd = tmp_path / "passwd"
        self.passwd.write_text(
            f"alice@example.org:{{PLAIN}}secret:::::: mail=maildir:{mail_root}/alice\n"
            f"bob@example.org:{{PLAIN}}hunter2::::{mail_root}/bob::\n"
            "nomail@example.org:{PLAIN}x\n"
        )
        self.store = store if store is not None else MemoryStore(self.clock)
        self.checker = PasswdFileChecker(
            PasswdFile(str(self.passwd), self.clock),
            self.clock,
            throttle=LoginThrottle(self.clock, base=0.5, cap=4),
            run_in_thread=sync_runner,
        )
        from pymta.auth.locate import MailboxLocator

        realm = MailRealm(self.store, MailboxLocator(self.checker.passwd))
        self.portal = Portal(realm, [self.checker])
        self.events: list[dict[str, Any]] = []
        self.settings = settings or POP3Settings(hostname="mail.example.org")
        self.factory = POP3ServerFactory(
            Config.from_text(""),
            self.portal,
            tls,
            self.clock,
            NetworkList(["192.0.2.128/25"]),
            settings=self.settings,
            random_bytes=lambda n: bytes(range(n)),
            pid=4242,
            logger=Logger(observer=cast(ILogObserver, self.events.append)),
        )
        self.counter = 0

    def inbox(self, user: str = "alice@example.org") -> IFolder:
        path = f"{self.mail_root}/alice" if user.startswith("alice") else f"{self.mail_root}/bob"
        return self.store.open_user(user, path).folder("INBOX")

    def connect(self, ip: str = "127.0.0.1") -> Session:
        self.counter += 1
        proto = self.factory.buildProtocol(IPv4Address("TCP", ip, 40000 + self.counter))
        transport = TLSStringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 110),
            peerAddress=IPv4Address("TCP", ip, 40000 + self.counter),
        )
        proto.makeConnection(transport)
        return Session(self, proto, transport)

    def log_lines(self) -> list[str]:
        return [e["line"] for e in self.events if e.get("pymta_pop3")]


class Session:
    def __init__(self, world: World, proto: POP3Server, transport: TLSStringTransport):
        self.world = world
        self.proto = proto
        self.transport = transport
        self.greeting = self.read()

    def read(self) -> str:
        out = self.transport.value().decode("utf-8")
        self.transport.clear()
        return out

    def send(self, data: str | bytes) -> str:
        """Send raw data (str gets CRLF appended) and return what the server wrote."""
        if isinstance(data, str):
            data = (data + "\r\n").encode("utf-8")
        self.proto.dataReceived(data)
        return self.read()

    def login(self, user: str = "alice@example.org", password: str = "secret") -> None:
        assert self.send(f"USER {user}") == "+OK\r\n"
        assert self.send(f"PASS {password}") == "+OK Logged in.\r\n"

    def drop(self) -> None:
        self.proto.connectionLost(Failure_lost())


def Failure_lost() -> Any:
    from twisted.internet.error import ConnectionLost
    from twisted.python.failure import Failure

    return Failure(ConnectionLost())
