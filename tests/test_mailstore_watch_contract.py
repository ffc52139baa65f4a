"""The asynchronous store's watch() and METADATA entries, one contract over
MemoryStore and MaildirStore: a folder's watch tells its listener every
change until cancelled, the Maildir store's also what other processes
write (its shared inotify watchers, the rescan in its threads); a user's
mailbox watch tells of folder-list changes on disk; the METADATA entries
are read and written through the store (the Maildir store's in its
threads)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.filepath import FilePath

from pymta.mailstore.interface import FolderChange, IMailStore
from pymta.mailstore.maildir import MaildirStore
from pymta.mailstore.memory import MemoryStore
from pymta.mailstore.metadata import FILENAME
from pymta.mailstore.watch import FolderWatcher
from pymta.mailstore.watchers import WatcherPool
from tests.test_imap_prefetch import QueuedRunner

MSG = b"From: a@example.org\nSubject: hi\n\nbody\n"


def _now(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has fired."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the call did not answer"
    return out[0]


class FakeINotify:
    """Stands in for twisted's INotify under the pool's SharedINotify:
    records watches; tests fire events by hand."""

    def __init__(self) -> None:
        self.watched: dict[str, list[Any]] = {}

    def startReading(self) -> None:
        pass

    def watch(self, path: FilePath[str], mask: int, callbacks: list[Any]) -> None:
        self.watched[path.path] = callbacks

    def ignore(self, path: FilePath[str]) -> None:
        del self.watched[path.path]

    def event(self, directory: str, name: str) -> None:
        class Watch:
            path = FilePath(directory)

        for callback in list(self.watched.get(directory, ())):
            callback(Watch(), FilePath(os.fsencode(os.path.join(directory, name))), 0x100)


def _pool(clock: Clock) -> tuple[WatcherPool, FakeINotify]:
    fake = FakeINotify()
    pool = WatcherPool(clock)
    pool.notifier._factory = lambda _reactor: fake
    return pool, fake


def _threaded_watched_inbox(
    tmp_path: Path,
) -> tuple[Clock, WatcherPool, FakeINotify, QueuedRunner, Any]:
    """u's INBOX through a Maildir store whose thread work ``runner``
    holds until the test runs it and whose watchers use a fake inotify:
    (clock, pool, fake inotify, runner, the asynchronous INBOX)."""
    clock = Clock()
    clock.advance(1_700_000_000)
    pool, fake = _pool(clock)
    runner = QueuedRunner()
    store = MaildirStore(clock, "test", fsync=False, run_in_thread=runner, watchers=pool)
    opening = store.asynchronous().open_user("u", str(tmp_path / "u"))
    runner.run_all()
    return clock, pool, fake, runner, _now(_now(opening).folder("INBOX"))


@pytest.fixture(params=["memory", "maildir"])
def store(request: pytest.FixtureRequest) -> IMailStore:
    clock = Clock()
    clock.advance(1_700_000_000)
    if request.param == "memory":
        return MemoryStore(clock)
    return MaildirStore(clock, hostname="test", fsync=False, watchers=_pool(clock)[0])


def _mailbox(store: IMailStore, tmp_path: Path) -> Any:
    return _now(store.asynchronous().open_user("u", str(tmp_path / "u")))


def test_watch_tells_every_change_until_cancelled(store: IMailStore, tmp_path: Path) -> None:
    """A folder's watch() hears appends, flag changes and expunges made
    through any face of the store, and nothing once cancelled (a second
    cancel does nothing)."""
    mailbox = _mailbox(store, tmp_path)
    inbox = _now(mailbox.folder("INBOX"))
    heard: list[FolderChange] = []
    cancel = inbox.watch(heard.append)
    uid = _now(inbox.append(MSG))
    store.open_user("u", str(tmp_path / "u")).folder("INBOX").append(MSG)
    _now(inbox.expunge([uid]))
    assert [c.kind for c in heard] == ["append", "append", "expunge"]
    cancel()
    cancel()
    _now(inbox.append(MSG))
    assert len(heard) == 3


def test_mailbox_watch_can_be_cancelled(store: IMailStore, tmp_path: Path) -> None:
    """A user's mailbox watch() gives a cancel at once, and does not call
    back for this process's own folder changes through the store (those
    reach NOTIFY through its sessions) - for both stores."""
    mailbox = _mailbox(store, tmp_path)
    called: list[None] = []
    cancel = mailbox.watch(lambda: called.append(None))
    _now(mailbox.create_folder("Fresh"))
    cancel()
    cancel()
    assert called == []


def test_maildir_watch_hears_other_processes_and_rescans_in_the_store_threads(
    tmp_path: Path,
) -> None:
    """A file another program renames into new/ reaches a folder watch's
    listener once the store's watcher has rescanned the folder - in the
    store's threads (nothing is heard before they ran), never on the
    reactor; events during the delay make one rescan."""
    clock, pool, fake, runner, inbox = _threaded_watched_inbox(tmp_path)
    heard: list[FolderChange] = []
    cancel = inbox.watch(heard.append)
    assert len(pool) == 1 and len(fake.watched) == 3
    new = tmp_path / "u" / "new"
    (new / "1700000001.M1P1.other").write_bytes(MSG)
    fake.event(str(new), "1700000001.M1P1.other")
    fake.event(str(new), "1700000001.M1P1.other")
    clock.advance(0.1)
    assert heard == [] and len(runner.jobs) == 1  # the rescan waits for its thread
    runner.run_all()
    assert [(c.kind, c.uids) for c in heard] == [("append", (1,))]
    cancel()
    assert len(pool) == 0 and fake.watched == {}


def test_maildir_watches_of_one_folder_share_one_watcher(tmp_path: Path) -> None:
    """Every watch of one folder (the sessions that selected it, NOTIFY)
    shares one watcher of the store's pool: the last cancel stops it, and
    a cancelled watch's listener hears nothing more."""
    clock = Clock()
    made: list[str] = []

    def make(folder: Any, path: str, reactor: Any) -> FolderWatcher:
        made.append(path)
        return FolderWatcher(folder, path, reactor, notifier_factory=lambda _: _Quiet())

    store = MaildirStore(clock, "test", fsync=False, watchers=WatcherPool(clock, make=make))
    inbox = _now(_now(store.asynchronous().open_user("u", str(tmp_path / "u"))).folder("INBOX"))
    first: list[str] = []
    second: list[str] = []
    cancel_first = inbox.watch(lambda change: first.append(change.kind))
    cancel_second = inbox.watch(lambda change: second.append(change.kind))
    assert [p.rstrip("/") for p in made] == [str(tmp_path / "u")]
    assert len(store.watchers) == 1
    cancel_first()
    assert len(store.watchers) == 1
    _now(inbox.append(MSG))
    assert (first, second) == ([], ["append"])
    cancel_second()
    assert len(store.watchers) == 0


class _Quiet:
    """A notifier that never fires."""

    def startReading(self) -> None:
        pass

    def watch(self, path: FilePath[str], mask: int, callbacks: list[Any]) -> None:
        pass

    def loseConnection(self) -> None:
        pass


def test_maildir_mailbox_watch_tells_list_changes_on_disk(tmp_path: Path) -> None:
    """The Maildir store watches a user's root for NOTIFY: a folder
    directory, the subscriptions or the METADATA file changed by another
    process calls back; INBOX's new/ and pymta's own files do not; the
    cancel removes the watch."""
    clock = Clock()
    pool, fake = _pool(clock)
    store = MaildirStore(clock, "test", fsync=False, watchers=pool)
    mailbox = _now(store.asynchronous().open_user("u", str(tmp_path / "u")))
    called: list[None] = []
    cancel = mailbox.watch(lambda: called.append(None))
    root = str(tmp_path / "u")
    assert list(fake.watched) == [root]
    for entry in ("new", "pymta-uidvalidity", "maildirsize"):
        fake.event(root, entry)
    assert called == []
    for entry in (".Outside", "subscriptions", FILENAME):
        fake.event(root, entry)
    assert len(called) == 3
    cancel()
    assert fake.watched == {}


def test_memory_store_has_nothing_to_watch(tmp_path: Path) -> None:
    """The memory store's watch() is its listeners alone: every change is
    made through its objects, so no watcher is ever started."""
    store = MemoryStore(Clock())
    inbox = _now(_mailbox(store, tmp_path).folder("INBOX"))
    heard: list[str] = []
    cancel = inbox.watch(lambda change: heard.append(change.kind))
    folder = store.open_user("u", str(tmp_path / "u")).folder("INBOX")
    folder.deliver_external(MSG)  # type: ignore[attr-defined]
    assert heard == []  # "another process": numbered at the next refresh
    folder.refresh()
    assert heard == ["append"]
    cancel()


def test_metadata_entries(store: IMailStore, tmp_path: Path) -> None:
    """set_metadata sets and removes entries under a key, answers False
    (changing nothing) past the limit of entries, and metadata() gives a
    copy of what is set."""
    mailbox = _mailbox(store, tmp_path)
    assert _now(mailbox.metadata()) == {}
    assert _now(mailbox.set_metadata("", {"/private/a": b"1", "/shared/b": b"2"}, 3)) is True
    assert _now(mailbox.set_metadata("box-1", {"/private/c": b"3"}, 3)) is True
    assert _now(mailbox.set_metadata("box-1", {"/private/d": b"4"}, 3)) is False
    entries = _now(mailbox.metadata())
    assert entries == {"": {"/private/a": b"1", "/shared/b": b"2"}, "box-1": {"/private/c": b"3"}}
    entries[""].clear()  # a copy: the store's are unchanged
    assert _now(mailbox.set_metadata("box-1", {"/private/c": None, "/private/d": b"4"}, 3))
    assert _now(mailbox.metadata()) == {
        "": {"/private/a": b"1", "/shared/b": b"2"},
        "box-1": {"/private/d": b"4"},
    }


def test_maildir_metadata_is_read_and_written_in_the_store_threads(tmp_path: Path) -> None:
    """The Maildir store reads and writes a user's METADATA file in its
    threads only (nothing answered, nothing on disk, before they ran), and
    reads it again when another process replaced it."""
    runner = QueuedRunner()
    store = MaildirStore(Clock(), "test", fsync=False, run_in_thread=runner)
    opening = store.asynchronous().open_user("u", str(tmp_path / "u"))
    runner.run_all()
    mailbox = _now(opening)
    path = tmp_path / "u" / FILENAME
    written: list[Any] = []
    read: list[Any] = []
    mailbox.set_metadata("", {"/private/comment": b"hi"}, 10).addBoth(written.append)
    mailbox.metadata().addBoth(read.append)
    assert written == [] and read == [] and not path.exists()
    runner.run_all()
    assert written == [True]
    assert read == [{"": {"/private/comment": b"hi"}}]
    path.write_text('{"": {"/private/comment": "b3RoZXI="}}')
    os.utime(path, ns=(1, 1))
    mailbox.metadata().addBoth(read.append)
    assert len(read) == 1
    runner.run_all()
    assert read[1] == {"": {"/private/comment": b"other"}}


@pytest.mark.parametrize("light", [True, False])
def test_maildir_watcher_rescans_a_small_folder_at_once_a_big_one_in_the_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, light: bool
) -> None:
    """A folder this face has listed and found small (LIGHT_RESCAN) is
    rescanned at once on an inotify event, when nothing of it waits (no
    thread hop, no scan competing for the GIL with the sessions it
    wakes); a bigger one waits for the store's threads."""
    from pymta.mailstore import asyncstore

    monkeypatch.setattr(asyncstore, "LIGHT_RESCAN", 1000 if light else -1)
    clock, _, fake, runner, inbox = _threaded_watched_inbox(tmp_path)
    listing = inbox.messages()
    runner.run_all()
    assert _now(listing) == []
    heard: list[FolderChange] = []
    cancel = inbox.watch(heard.append)
    new = tmp_path / "u" / "new"
    (new / "1700000001.M1P1.other").write_bytes(MSG)
    fake.event(str(new), "1700000001.M1P1.other")
    clock.advance(0.1)
    if light:
        assert [c.kind for c in heard] == ["append"] and runner.jobs == []
    else:
        assert heard == [] and len(runner.jobs) == 1
        runner.run_all()
        assert [c.kind for c in heard] == ["append"]
    cancel()
