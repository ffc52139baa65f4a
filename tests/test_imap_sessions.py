"""Several sessions on one mailbox: each keeps its own sequence numbers and hears of
deliveries and of the others' changes at the moments RFC 3501 7.4.1 allows; IDLE
is woken by deliveries (in process, and by another process through inotify)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.python.filepath import FilePath

from pymta.mailstore.maildir import MaildirStore
from pymta.mailstore.memory import MemoryFolder
from pymta.mailstore.watch import FolderWatcher
from pymta.mailstore.watchers import WatcherPool
from tests.test_imap_harness import Session, World


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path)
    inbox = w.mailbox().folder("INBOX")
    inbox.append(b"Subject: 1\n\none\n")
    inbox.append(b"Subject: 2\n\ntwo\n")
    inbox.claim_recent()  # old mail: no \Recent in the transcripts
    return w


def open_session(world: World) -> Session:
    s = world.connect()
    s.login()
    s.select()
    return s


def inbox(world: World) -> MemoryFolder:
    folder = world.mailbox().folder("INBOX")
    assert isinstance(folder, MemoryFolder)
    return folder


def test_two_sessions_and_a_delivery_in_between(world: World) -> None:
    """A delivery is announced to both sessions at their next command, \\Recent to one only;
    an expunge by B reaches A only when A may renumber (NOOP), never during FETCH."""
    a, b = open_session(world), open_session(world)
    inbox(world).deliver_external(b"Subject: 3\n\nthree\n")
    inbox(world).refresh()
    assert a.send("a1 NOOP") == b"* 3 EXISTS\r\n* 1 RECENT\r\na1 OK NOOP completed.\r\n"
    assert b.send("b1 NOOP") == b"* 3 EXISTS\r\n* 0 RECENT\r\nb1 OK NOOP completed.\r\n"
    assert b.send("b2 STORE 1 +FLAGS (\\Deleted)") == (
        b"* 1 FETCH (FLAGS (\\Deleted))\r\nb2 OK Store completed.\r\n"
    )
    assert b.send("b3 EXPUNGE") == b"* 1 EXPUNGE\r\nb3 OK Expunge completed.\r\n"
    # A still numbers the expunged message 1: no EXPUNGE during FETCH.
    assert a.send("a2 FETCH 1:* (FLAGS)") == (
        b"* 2 FETCH (FLAGS ())\r\n* 3 FETCH (FLAGS (\\Recent))\r\n"
        b"a2 OK [EXPUNGEISSUED] Some messages were already expunged.\r\n"
    )
    # Numbers do not shift during SEARCH either; the expunged message no longer matches.
    assert a.send("a3 SEARCH ALL") == b"* SEARCH 2 3\r\na3 OK Search completed.\r\n"
    assert a.send("a4 NOOP") == b"* 1 EXPUNGE\r\na4 OK NOOP completed.\r\n"
    assert a.send("a5 FETCH 1:* (UID)") == (
        b"* 1 FETCH (UID 2)\r\n* 2 FETCH (UID 3)\r\na5 OK Fetch completed.\r\n"
    )


def test_flag_changes_of_another_session_are_reported(world: World) -> None:
    """B's STORE reaches A as an untagged FETCH (UID FLAGS) after A's next command;
    B hears its own change once, in its STORE response."""
    a, b = open_session(world), open_session(world)
    assert b.send("b1 STORE 2 +FLAGS (\\Flagged)") == (
        b"* 2 FETCH (FLAGS (\\Flagged))\r\nb1 OK Store completed.\r\n"
    )
    assert b.send("b2 NOOP") == b"b2 OK NOOP completed.\r\n"
    assert a.send("a1 NOOP") == (
        b"* 2 FETCH (UID 2 FLAGS (\\Flagged))\r\na1 OK NOOP completed.\r\n"
    )


def test_store_silent_sends_nothing_to_itself(world: World) -> None:
    """FLAGS.SILENT changes flags without an untagged FETCH to the session that stored."""
    a = open_session(world)
    assert a.send("a1 STORE 1:2 +FLAGS.SILENT (\\Seen)") == b"a1 OK Store completed.\r\n"
    assert a.send("a2 FETCH 1:2 FLAGS") == (
        b"* 1 FETCH (FLAGS (\\Seen))\r\n* 2 FETCH (FLAGS (\\Seen))\r\na2 OK Fetch completed.\r\n"
    )


def test_idle_is_woken_by_a_delivery_and_by_another_session(world: World) -> None:
    """During IDLE, EXISTS for a delivery and FETCH for another session's flag change are
    written at once, with no client input; DONE ends IDLE with OK."""
    a, b = open_session(world), open_session(world)
    assert a.send("a1 IDLE") == b"+ idling\r\n"
    inbox(world).append(b"Subject: 3\n\nthree\n")
    assert a.read() == b"* 3 EXISTS\r\n* 1 RECENT\r\n"
    b.send("b1 STORE 1 +FLAGS (\\Deleted)")
    assert a.read() == b"* 1 FETCH (UID 1 FLAGS (\\Deleted))\r\n"
    b.send("b2 EXPUNGE")
    assert a.read() == b"* 1 EXPUNGE\r\n"
    assert a.send("DONE") == b"a1 OK Idle completed.\r\n"


def test_idle_ends_only_with_done(world: World) -> None:
    """A line other than DONE ends IDLE with BAD (it is not run as a command)."""
    a = open_session(world)
    a.send("a1 IDLE")
    assert a.send("a2 NOOP") == b"a1 BAD Expected DONE.\r\n"
    assert a.send("a3 NOOP") == b"a3 OK NOOP completed.\r\n"


def test_idle_keeps_the_session_alive(world: World) -> None:
    """An IDLE session is not disconnected for inactivity; it gets '* OK Still here'."""
    a = open_session(world)
    a.send("a1 IDLE")
    world.clock.advance(world.settings.timeout + 1)
    assert a.read() == b"* OK Still here\r\n"
    assert not a.transport.disconnecting
    assert a.send("DONE") == b"a1 OK Idle completed.\r\n"


def test_sessions_unregister_on_logout_and_disconnect(world: World) -> None:
    """LOGOUT and a dropped connection remove the session's listener from the folder."""
    folder = inbox(world)
    before = len(folder._listeners)
    a, b = open_session(world), open_session(world)
    assert len(folder._listeners) == before + 2
    a.send("a1 LOGOUT")
    a.drop()
    b.drop()
    assert len(folder._listeners) == before


def test_qresync_select_reports_vanished_and_changed(world: World) -> None:
    """SELECT (QRESYNC (uidvalidity modseq)) sends VANISHED (EARLIER) for UIDs expunged
    since, and FETCH for messages changed since; expunges become VANISHED."""
    folder = inbox(world)
    modseq = folder.highest_modseq
    a = open_session(world)
    a.send("a1 STORE 1 +FLAGS (\\Deleted)")
    a.send("a2 EXPUNGE")
    a.send("a3 STORE 1 +FLAGS (\\Flagged)")
    a.send("a4 LOGOUT")
    c = world.connect()
    c.login()
    assert c.send("c1 ENABLE QRESYNC") == b"* ENABLED QRESYNC\r\nc1 OK Enabled.\r\n"
    reply = c.lines(f"c2 SELECT INBOX (QRESYNC ({folder.uidvalidity} {modseq}))")
    assert b"* VANISHED (EARLIER) 1" in reply
    assert b"* 1 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ (%d))" % folder.get(2).modseq in reply
    assert reply[-1] == b"c2 OK [READ-WRITE] Select completed."
    c.send("c3 STORE 1 +FLAGS (\\Deleted)")
    assert c.lines("c4 EXPUNGE") == [b"* VANISHED 2", b"c4 OK Expunge completed."]


class FakeNotifier:
    """Stands in for twisted.internet.inotify.INotify: records watches."""

    def __init__(self) -> None:
        self.callbacks: list[Any] = []

    def startReading(self) -> None:
        pass

    def watch(self, path: FilePath[str], mask: int, callbacks: list[Any]) -> None:
        self.callbacks.extend((path, cb) for cb in callbacks)

    def loseConnection(self) -> None:
        pass


def test_idle_woken_by_another_process_writing_into_maildir(tmp_path: Path) -> None:
    """A file another program drops into new/ wakes IDLE through the store's
    folder watcher (inotify event, then one refresh), without polling: the
    selected view's watch() of the folder holds the store's watcher until
    the session leaves."""
    clock = Clock()
    notifier = FakeNotifier()
    watchers = WatcherPool(
        clock,
        make=lambda f, p, r: FolderWatcher(f, p, r, notifier_factory=lambda _: notifier),
    )
    store = MaildirStore(clock, "host", fsync=False, watchers=watchers)
    world = World(tmp_path, store=store)
    folder = world.mailbox().folder("INBOX")
    folder.append(b"Subject: 1\n\none\n")
    a = world.connect()
    a.login()
    a.select()
    assert len(watchers) == 1
    assert a.send("a1 IDLE") == b"+ idling\r\n"
    path = str(folder.path)  # type: ignore[attr-defined]
    new = os.path.join(path, "new", "1700000000.M1P1.other")
    with open(new, "wb") as f:
        f.write(b"Subject: 2\n\ntwo\n")
    for watched, callback in notifier.callbacks:
        if watched.basename() == "new":
            callback(None, FilePath(new), 0x100)
    assert a.read() == b""  # coalesced: refreshed shortly after
    clock.advance(0.1)  # the store's clock drives its watchers
    assert a.read() == b"* 2 EXISTS\r\n* 2 RECENT\r\n"  # both new to this session
    assert a.send("DONE") == b"a1 OK Idle completed.\r\n"
    a.drop()
    assert len(watchers) == 0


class FakeINotify:
    """Stands in for twisted's INotify under SharedINotify: counts descriptors
    opened and watches added and removed."""

    def __init__(self) -> None:
        self.opened = 0
        self.watched: dict[str, list[Any]] = {}
        self.ignored: list[str] = []

    def startReading(self) -> None:
        self.opened += 1

    def watch(self, path: FilePath[str], mask: int, callbacks: list[Any]) -> None:
        self.watched[path.path] = callbacks

    def ignore(self, path: FilePath[str]) -> None:
        self.ignored.append(path.path)
        del self.watched[path.path]

    def event(self, directory: str, name: str) -> None:
        class Watch:
            path = FilePath(directory)

        for callback in self.watched[directory]:
            callback(Watch(), FilePath(os.path.join(directory, name)), 0x100)


def test_watchers_share_one_inotify_and_remove_only_their_watches(tmp_path: Path) -> None:
    """Every folder watcher of a pool uses one inotify descriptor (no open and
    close per SELECT / LOGOUT); the last session leaving a folder removes its
    watches with rm_watch while other folders' watches keep delivering events."""
    fake = FakeINotify()
    pool = WatcherPool(Clock())
    pool.notifier._factory = lambda _reactor: fake
    store = MaildirStore(Clock(), "host", fsync=False)
    mailbox = store.open_user("alice", str(tmp_path / "alice"))
    inbox, archive = mailbox.folder("INBOX"), mailbox.folder("Archive")
    heard: list[str] = []
    inbox.add_listener(lambda change: heard.append(f"inbox {change.kind}"))
    archive.add_listener(lambda change: heard.append(f"archive {change.kind}"))
    pool.acquire(inbox)
    pool.acquire(inbox)
    pool.acquire(archive)
    assert fake.opened == 1 and len(fake.watched) == 6
    pool.release(inbox)
    assert fake.ignored == []
    pool.release(inbox)
    inbox_path = str(inbox.path).rstrip("/")  # type: ignore[attr-defined]
    assert sorted(fake.ignored) == sorted(
        [inbox_path, os.path.join(inbox_path, "new"), os.path.join(inbox_path, "cur")]
    )
    archive_path = str(archive.path)  # type: ignore[attr-defined]
    with open(os.path.join(archive_path, "new", "1700000000.M1P1.other"), "wb") as f:
        f.write(b"Subject: 2\n\ntwo\n")
    fake.event(os.path.join(archive_path, "new"), "1700000000.M1P1.other")
    pool._reactor.advance(0.1)  # type: ignore[attr-defined]
    assert heard == ["archive append"]
    pool.release(archive)
    assert fake.watched == {} and fake.opened == 1
