"""FolderWatcher: deliveries by other programs reach listeners without polling."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.python.filepath import FilePath

from pymta.mailstore.interface import FolderChange
from pymta.mailstore.maildir import MaildirFolder, MaildirStore
from pymta.mailstore.watch import FolderWatcher


class FakeNotifier:
    """Records watches; tests fire events by hand."""

    def __init__(self, _reactor: Any) -> None:
        self.callbacks: dict[str, Any] = {}
        self.reading = False

    def startReading(self) -> None:
        self.reading = True

    def watch(self, path: FilePath[str], mask: int, callbacks: list[Any]) -> None:
        self.callbacks[path.path] = callbacks[0]

    def loseConnection(self) -> None:
        self.reading = False

    def fire(self, directory: str, name: str) -> None:
        # Twisted's INotify hands callbacks FilePaths of bytes.
        path = FilePath(os.fsencode(os.path.join(directory, name)))
        self.callbacks[directory](None, path, 0x100)


def _folder(tmp_path: Path, clock: Clock) -> MaildirFolder:
    folder = (
        MaildirStore(clock, hostname="h", fsync=False).open_user("u", str(tmp_path)).folder("INBOX")
    )
    assert isinstance(folder, MaildirFolder)
    return folder


def test_events_coalesce_into_one_refresh(tmp_path: Path) -> None:
    """Several events within the delay cause one refresh, which tells the
    listeners of the new message; cache and lock file events are ignored."""
    clock = Clock()
    clock.advance(1_700_000_000)
    folder = _folder(tmp_path, clock)
    heard: list[FolderChange] = []
    folder.add_listener(heard.append)
    notifiers: list[FakeNotifier] = []

    def factory(r: Any) -> FakeNotifier:
        notifiers.append(FakeNotifier(r))
        return notifiers[-1]

    watcher = FolderWatcher(folder, folder.path, clock, delay=0.05, notifier_factory=factory)
    watcher.start()
    assert watcher.inotify
    (notifier,) = notifiers
    (tmp_path / "new" / "1.a.host").write_bytes(b"Subject: x\n\ny\n")
    notifier.fire(str(tmp_path), "pymta-cache")
    assert clock.getDelayedCalls() == []
    notifier.fire(str(tmp_path / "new"), "1.a.host")
    notifier.fire(str(tmp_path / "new"), "1.a.host")
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0.05)
    assert [(c.kind, c.uids) for c in heard] == [("append", (1,))]
    watcher.stop()
    assert not notifier.reading


def test_falls_back_to_polling(tmp_path: Path) -> None:
    """Without inotify the watcher polls changed_on_disk() and refreshes."""
    clock = Clock()
    clock.advance(1_700_000_000)
    folder = _folder(tmp_path, clock)
    folder.messages()
    heard: list[FolderChange] = []
    folder.add_listener(heard.append)

    def broken(_r: Any) -> Any:
        raise OSError("no inotify")

    watcher = FolderWatcher(folder, folder.path, clock, poll_interval=30, notifier_factory=broken)
    watcher.start()
    assert not watcher.inotify
    (tmp_path / "new" / "1.a.host").write_bytes(b"x\n")
    clock.advance(30)
    assert [c.kind for c in heard] == ["append"]
    watcher.stop()


@pytest_twisted.inlineCallbacks
def test_real_inotify_wakes_listener(tmp_path: Path) -> Any:
    """With the real reactor and Linux inotify, a file renamed into new/ by
    another writer reaches the listener with no polling."""
    folder = (
        MaildirStore(reactor, hostname="h", fsync=False)
        .open_user("u", str(tmp_path))
        .folder("INBOX")
    )
    assert isinstance(folder, MaildirFolder)
    folder.messages()
    woken: defer.Deferred[FolderChange] = defer.Deferred()

    def listener(change: FolderChange) -> None:
        if change.kind == "append" and not woken.called:
            woken.callback(change)

    folder.add_listener(listener)
    watcher = FolderWatcher(folder, folder.path, reactor, delay=0.01, poll_interval=3600)
    watcher.start()
    try:
        assert watcher.inotify
        (tmp_path / "tmp" / "9.b.host").write_bytes(b"Subject: hi\n\nbody\n")
        os.rename(tmp_path / "tmp" / "9.b.host", tmp_path / "new" / "9.b.host")
        woken.addTimeout(10, reactor)
        change = yield woken
        assert change.uids == (1,)
    finally:
        watcher.stop()


def test_pool_watches_only_folders_that_ask_to_be_watched(tmp_path: Path) -> None:
    """The watcher pool asks the folder (IWatchedFolder) where to watch: a
    Maildir folder is watched at its place as it is now (after a RENAME
    too), a memory folder - whose listeners hear every change already - is
    not, even when it happens to have a ``path`` attribute."""
    from pymta.mailstore.memory import MemoryStore
    from pymta.mailstore.watchers import WatcherPool

    made: list[str] = []

    def make(folder: Any, path: str, clock: Any) -> Any:
        made.append(path)
        return _NullWatcher()

    pool = WatcherPool(Clock(), make=make)
    mailbox = MaildirStore(Clock(), "host", fsync=False).open_user("u", str(tmp_path / "u"))
    mailbox.create_folder("Old")
    mailbox.rename_folder("Old", "New")
    pool.acquire(mailbox.folder("New"))
    assert made == [str(tmp_path / "u" / ".New")]
    memory = MemoryStore(Clock()).open_user("u", str(tmp_path / "m")).folder("INBOX")
    memory.path = str(tmp_path / "m")  # type: ignore[attr-defined]
    pool.acquire(memory)
    assert len(pool) == 1 and len(made) == 1


class _NullWatcher:
    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


def test_a_watch_that_fails_half_way_leaves_no_watches(tmp_path: Path) -> None:
    """When inotify runs out of watches part way (the third directory
    refused), the watcher polls instead and removes the watches it did
    add, so a shared inotify keeps none for a folder nobody watches."""
    from pymta.mailstore.watchers import SharedINotify

    class Limited:
        def __init__(self) -> None:
            self.watched: list[str] = []
            self.ignored: list[str] = []

        def startReading(self) -> None:
            pass

        def watch(self, path: FilePath[str], mask: int, callbacks: list[Any]) -> None:
            if len(self.watched) == 2:
                raise OSError(28, "inotify watch limit reached")
            self.watched.append(path.path)

        def ignore(self, path: FilePath[str]) -> None:
            self.ignored.append(path.path)

    clock = Clock()
    limited = Limited()
    shared = SharedINotify(clock, factory=lambda _reactor: limited)
    folder = _folder(tmp_path, clock)
    watcher = FolderWatcher(folder, folder.path, clock, notifier_factory=shared.view)
    watcher.start()
    assert not watcher.inotify
    assert len(shared) == 0 and sorted(limited.ignored) == sorted(limited.watched)
    watcher.stop()
