"""POP3 on a Maildir: what a session changes on disk and when (the UPDATE
state batched, shown messages leaving new/ when the session ends,
pop3d_no_flag_updates), and the store calls run through the Maildir
store's runner (threads in production) without reordering the session."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

from pymta.auth.checker import PasswdFileChecker
from pymta.auth.locate import MailboxLocator
from pymta.auth.passwdfile import PasswdFile
from pymta.auth.realm import MailRealm
from pymta.auth.throttle import LoginThrottle
from pymta.config.config import Config
from pymta.mailstore.interface import FolderChange, IFolder
from pymta.mailstore.maildir import MaildirStore
from pymta.netmatch import NetworkList
from pymta.pop3.factory import POP3ServerFactory
from pymta.pop3.settings import POP3Settings
from tests.test_pop3_harness import Session, TLSStringTransport, sync_runner

NAMES = [f"170000000{i}.M{i}P1.mda" for i in range(4)]


def message(i: int) -> bytes:
    return b"From: a@example.org\nSubject: m%d\n\nbody %d\n" % (i, i)


class Held:
    """A store runner that runs nothing until told: the test decides when
    the 'thread' finishes."""

    def __init__(self) -> None:
        self.pending: list[tuple[Callable[[], Any], defer.Deferred[Any]]] = []

    def __call__(self, work: Callable[[], Any]) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.pending.append((work, d))
        return d

    def finish(self, index: int = 0) -> None:
        work, d = self.pending.pop(index)
        try:
            result = work()
        except Exception:
            d.errback()
        else:
            d.callback(result)

    def finish_all(self, keep: int = 0) -> None:
        """Run what is held, and what that asks for next, until nothing (or
        only the first ``keep`` calls held) is left."""
        while len(self.pending) > keep:
            self.finish(keep)


class MaildirWorld:
    """pop3d over a real Maildir (fsync off), sessions on StringTransport."""

    def __init__(
        self,
        tmp_path: Path,
        settings: POP3Settings | None = None,
        blocking: Callable[[Callable[[], Any]], defer.Deferred[Any]] | None = None,
    ) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.root = tmp_path / "alice"
        passwd = tmp_path / "passwd"
        passwd.write_text(f"alice@example.org:{{PLAIN}}secret::::{self.root}::\n")
        self.store = MaildirStore(self.clock, hostname="test", fsync=False, run_in_thread=blocking)
        checker = PasswdFileChecker(
            PasswdFile(str(passwd), self.clock),
            self.clock,
            throttle=LoginThrottle(self.clock, base=0.5, cap=4),
            run_in_thread=sync_runner,
        )
        realm = MailRealm(self.store, MailboxLocator(checker.passwd))
        self.factory = POP3ServerFactory(
            Config.from_text(""),
            Portal(realm, [checker]),
            None,
            self.clock,
            NetworkList([]),
            settings=settings or POP3Settings(hostname="mail.example.org"),
            random_bytes=lambda n: bytes(n),
            pid=1,
        )
        self.inbox: IFolder = self.store.open_user("alice@example.org", str(self.root)).folder(
            "INBOX"
        )
        for i, name in enumerate(NAMES):  # as an MDA leaves them
            (self.root / "new" / name).write_bytes(message(i))

    def connect(self) -> Session:
        proto = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = TLSStringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 110),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
        )
        proto.makeConnection(transport)
        return Session(self, proto, transport)  # type: ignore[arg-type]

    def files(self, sub: str) -> list[str]:
        return sorted(os.listdir(self.root / sub))


def test_quit_updates_in_one_batch(tmp_path: Path) -> None:
    """At QUIT: deleted messages are removed, retrieved ones are \\Seen (in
    cur/ with S), the other shown ones leave new/ without S; the \\Seen
    changes reach listeners as one notice; before QUIT nothing moved."""
    w = MaildirWorld(tmp_path)
    s = w.connect()
    s.login()
    heard: list[FolderChange] = []
    w.inbox.add_listener(heard.append)
    assert s.send("RETR 1").startswith("+OK")
    assert s.send("RETR 2").startswith("+OK")
    assert s.send("RETR 3").startswith("+OK")
    assert s.send("DELE 3") == "+OK Marked to be deleted.\r\n"
    assert w.files("new") == NAMES and w.files("cur") == []
    assert s.send("QUIT") == "+OK Logging out, messages deleted.\r\n"
    assert w.files("new") == []
    assert w.files("cur") == [f"{NAMES[0]}:2,S", f"{NAMES[1]}:2,S", f"{NAMES[3]}:2,"]
    flag_notices = [c for c in heard if c.kind == "flags"]
    assert len(flag_notices) == 1 and len(flag_notices[0].uids) == 2
    assert not any(m.recent for m in w.inbox.messages())


def test_dropped_session_claims_but_changes_nothing_else(tmp_path: Path) -> None:
    """A dropped connection deletes nothing and sets no \\Seen, but the
    messages it showed leave new/ (IMAP no longer calls them \\Recent)."""
    w = MaildirWorld(tmp_path)
    s = w.connect()
    s.login()
    s.send("RETR 1")
    s.send("DELE 2")
    s.drop()
    assert w.files("new") == []
    assert w.files("cur") == [f"{name}:2," for name in NAMES]
    assert all(m.flags == frozenset() for m in w.inbox.messages())


def test_mail_arriving_during_session_stays_new(tmp_path: Path) -> None:
    """A message delivered during the session (not shown in it) is not
    claimed when the session ends."""
    w = MaildirWorld(tmp_path)
    s = w.connect()
    s.login()
    (w.root / "new" / "1800000000.M9P1.mda").write_bytes(message(9))
    w.inbox.refresh()
    assert s.send("QUIT") == "+OK Logging out.\r\n"
    assert w.files("new") == ["1800000000.M9P1.mda"]


def test_no_flag_updates(tmp_path: Path) -> None:
    """pop3d_no_flag_updates = yes: deletions still happen at QUIT, but
    nothing is marked \\Seen and nothing leaves new/ (Dovecot's
    pop3_no_flag_updates)."""
    settings = POP3Settings.from_config(Config.from_text("pop3d_no_flag_updates = yes\n"))
    assert not settings.mark_seen and not settings.claim_recent
    w = MaildirWorld(tmp_path, settings)
    s = w.connect()
    s.login()
    s.send("RETR 1")
    s.send("DELE 2")
    assert s.send("QUIT") == "+OK Logging out, messages deleted.\r\n"
    assert w.files("new") == [NAMES[0], NAMES[2], NAMES[3]]
    assert w.files("cur") == []


def test_flag_updates_default_on() -> None:
    """Without the parameter, retrieved mail is marked \\Seen and claimed."""
    settings = POP3Settings.from_config(Config.from_text(""))
    assert settings.mark_seen and settings.claim_recent


def test_login_waits_for_runner_and_keeps_order(tmp_path: Path) -> None:
    """While the INBOX is being read by the runner, the PASS reply and
    pipelined commands wait; they are answered in order afterwards."""
    held = Held()
    w = MaildirWorld(tmp_path, blocking=held)
    s = w.connect()
    assert s.send("USER alice@example.org") == "+OK\r\n"
    assert s.send(b"PASS secret\r\nSTAT\r\n") == ""
    assert held.pending
    held.finish_all()
    octets = sum(len(message(i)) + message(i).count(b"\n") for i in range(4))
    assert s.read() == f"+OK Logged in.\r\n+OK 4 {octets}\r\n"


def test_quit_reply_after_update_and_lock_held(tmp_path: Path) -> None:
    """+OK to QUIT comes only once the UPDATE work is done; until then the
    mailbox stays locked, also when the client has already gone."""
    held = Held()
    w = MaildirWorld(tmp_path, blocking=held)
    s = w.connect()
    s.send("USER alice@example.org")
    s.send("PASS secret")
    held.finish_all()
    s.read()
    s.send("DELE 1")
    assert s.send(b"QUIT\r\nNOOP\r\n") == ""
    s.drop()
    assert held.pending  # the expunge
    other = w.connect()
    other.send("USER alice@example.org")
    assert other.send("PASS secret") == ""
    held.finish_all(keep=1)  # the other login goes on up to its lock
    assert other.read() == ""
    held.finish_all()
    assert other.read().startswith("-ERR [IN-USE]")
    assert NAMES[0] not in w.files("new")
    assert s.read() == ""  # gone: nothing written after the loss
    third = w.connect()
    third.send("USER alice@example.org")
    third.send("PASS secret")
    held.finish_all()
    assert third.read() == "+OK Logged in.\r\n"


def test_quit_store_error_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An expunge that fails answers -ERR [SYS/TEMP] and closes the session."""
    from pymta.mailstore.interface import MailStoreError

    w = MaildirWorld(tmp_path)
    s = w.connect()
    s.login()
    s.send("DELE 1")

    def fail(uids: Any = None) -> list[int]:
        raise MailStoreError("disk on fire")

    monkeypatch.setattr(w.inbox, "expunge", fail)
    assert s.send("QUIT") == "-ERR [SYS/TEMP] Some deleted messages were not removed.\r\n"
    assert s.transport.disconnecting


def test_mailbox_is_unlocked_before_quit_is_answered(tmp_path: Path) -> None:
    """By the time the client reads +OK to QUIT the mailbox lock is gone, so an
    immediate new login (perhaps served by another pymta process) is not
    refused [IN-USE] while the old connection is still being torn down."""
    w = MaildirWorld(tmp_path)
    s = w.connect()
    s.login()
    assert s.send("QUIT").startswith("+OK")
    assert not s.transport.disconnected  # the old connection is not gone yet
    other = w.connect()
    other.send("USER alice@example.org")
    assert other.send("PASS secret") == "+OK Logged in.\r\n"
