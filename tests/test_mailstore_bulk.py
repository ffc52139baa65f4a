"""Mail store: batched flag changes, partial \\Recent claims, and the fast
paths behind POP3 (index image, one-stat index check, direct reads, new-user
setup, listeners told in the reactor thread). Memory and Maildir stores."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.python import threadable

from pymta.mailstore.interface import FlagMode, FolderChange, IFolder, IMailStore, MailStoreError
from pymta.mailstore.maildir import MaildirStore
from pymta.mailstore.memory import MemoryStore

MSG = b"From: a@example.org\nSubject: hi\n\nbody\n"


def _clock() -> Clock:
    clock = Clock()
    clock.advance(1_700_000_000)
    return clock


@pytest.fixture(params=["memory", "maildir"])
def store(request: pytest.FixtureRequest) -> IMailStore:
    if request.param == "memory":
        return MemoryStore(_clock())
    return MaildirStore(_clock(), hostname="test", fsync=False)


def _inbox(store: IMailStore, tmp_path: Path) -> IFolder:
    return store.open_user("u", str(tmp_path / "m")).folder("INBOX")


def _drop_new(root: Path, name: str, content: bytes = MSG) -> None:
    """Another program (an MDA) delivers into new/."""
    (root / "new" / name).write_bytes(content)


def test_set_flags_many_one_change(store: IMailStore, tmp_path: Path) -> None:
    """set_flags_many changes several messages as one change: one modseq,
    one listener notice naming the changed UIDs; missing UIDs are skipped
    and messages that already had the flag are returned unchanged."""
    inbox = _inbox(store, tmp_path)
    uids = [inbox.append(MSG) for _ in range(4)]
    inbox.set_flags(uids[3], ["\\Seen"], FlagMode.ADD)
    before = inbox.highest_modseq
    heard: list[FolderChange] = []
    inbox.add_listener(heard.append)
    out = inbox.set_flags_many([*uids[1:], 999], ["\\Seen"], FlagMode.ADD)
    assert [m.uid for m in out] == uids[1:]
    assert all("\\Seen" in m.flags for m in out)
    assert inbox.highest_modseq == before + 1
    assert {m.uid: m.modseq for m in out if m.uid != uids[3]} == {
        uids[1]: before + 1,
        uids[2]: before + 1,
    }
    assert heard == [FolderChange("flags", (uids[1], uids[2]), before + 1)]
    assert "\\Seen" not in inbox.get(uids[0]).flags


def test_set_flags_many_nothing_changes(store: IMailStore, tmp_path: Path) -> None:
    """When no message changes, the modseq stays and no listener hears anything."""
    inbox = _inbox(store, tmp_path)
    uid = inbox.append(MSG, ["\\Seen"])
    before = inbox.highest_modseq
    heard: list[FolderChange] = []
    inbox.add_listener(heard.append)
    assert [m.uid for m in inbox.set_flags_many([uid], ["\\Seen"], FlagMode.ADD)] == [uid]
    assert inbox.set_flags_many([], ["\\Seen"], FlagMode.ADD) == []
    assert inbox.highest_modseq == before and heard == []


def test_set_flags_many_modes(store: IMailStore, tmp_path: Path) -> None:
    """REPLACE and REMOVE work on every listed message, keywords included."""
    inbox = _inbox(store, tmp_path)
    a = inbox.append(MSG, ["\\Seen", "\\Flagged", "Work"])
    b = inbox.append(MSG, ["\\Seen"])
    inbox.set_flags_many([a, b], ["\\Seen"], FlagMode.REMOVE)
    assert inbox.get(a).all_flags == {"\\Flagged", "Work"}
    assert inbox.get(b).all_flags == frozenset()
    inbox.set_flags_many([a, b], ["\\Answered", "Done"], FlagMode.REPLACE)
    assert inbox.get(a).all_flags == inbox.get(b).all_flags == {"\\Answered", "Done"}


def test_claim_recent_only_listed(store: IMailStore, tmp_path: Path) -> None:
    """claim_recent(uids) claims only those of the listed messages still recent;
    without uids it claims the rest."""
    inbox = _inbox(store, tmp_path)
    if isinstance(store, MemoryStore):
        for _ in range(3):
            inbox.deliver_external(MSG)  # type: ignore[attr-defined]
    else:
        for i in range(3):
            _drop_new(tmp_path / "m", f"100{i}.M1P1.mda")
    added = [m.uid for m in inbox.refresh()]
    assert len(added) == 3 and all(inbox.get(u).recent for u in added)
    assert inbox.claim_recent([added[0], added[2], 999]) == [added[0], added[2]]
    assert [inbox.get(u).recent for u in added] == [False, True, False]
    assert inbox.claim_recent() == [added[1]]


# -- Maildir only ------------------------------------------------------------


@pytest.fixture
def maildir(tmp_path: Path) -> Iterator[tuple[MaildirStore, Path]]:
    yield MaildirStore(_clock(), hostname="test", fsync=False), tmp_path / "m"


def test_seen_from_new_is_one_rename(maildir: tuple[MaildirStore, Path]) -> None:
    """A message still in new/ that gets \\Seen moves to cur/ with S in one
    step, and a second process reading the index sees exactly the image the
    writer keeps in memory."""
    store, root = maildir
    inbox = store.open_user("u", str(root)).folder("INBOX")
    for i in range(3):
        _drop_new(root, f"100{i}.M1P1.mda")
    uids = [m.uid for m in inbox.refresh()]
    inbox.set_flags_many(uids[:2], ["\\Seen"], FlagMode.ADD)
    assert sorted(os.listdir(root / "cur")) == ["1000.M1P1.mda:2,S", "1001.M1P1.mda:2,S"]
    assert os.listdir(root / "new") == ["1002.M1P1.mda"]
    other = MaildirStore(_clock(), hostname="test", fsync=False)
    theirs = other.open_user("u", str(root)).folder("INBOX")
    assert theirs.messages() == inbox.messages()


def test_index_notices_other_writer(maildir: tuple[MaildirStore, Path]) -> None:
    """A folder that skips rereading an unchanged index still sees what
    another process appended to it (flags changed there)."""
    store, root = maildir
    inbox = store.open_user("u", str(root)).folder("INBOX")
    uid = inbox.append(MSG)
    inbox.messages()
    other = MaildirStore(_clock(), hostname="test", fsync=False)
    other.open_user("u", str(root)).folder("INBOX").set_flags(uid, ["\\Flagged"], FlagMode.ADD)
    heard: list[FolderChange] = []
    inbox.add_listener(heard.append)
    inbox.refresh()
    assert inbox.get(uid).flags == {"\\Flagged"}
    assert [c.kind for c in heard] == ["flags"]


def test_read_follows_rename_and_refuses_odd_files(maildir: tuple[MaildirStore, Path]) -> None:
    """read() returns the stored bytes; after another program renamed the
    file it finds it again; a FIFO in its place is an error, never a hang."""
    store, root = maildir
    inbox = store.open_user("u", str(root)).folder("INBOX")
    uid = inbox.append(MSG)
    assert inbox.read(uid) == MSG
    (name,) = os.listdir(root / "new")  # appended mail is \Recent: in new/
    os.rename(root / "new" / name, root / "cur" / (name.split(":")[0] + ":2,F"))
    assert inbox.read(uid) == MSG
    (name,) = os.listdir(root / "cur")
    os.unlink(root / "cur" / name)
    os.mkfifo(root / "cur" / name)
    with pytest.raises(MailStoreError):
        inbox.read(uid)


def test_read_of_big_message(maildir: tuple[MaildirStore, Path]) -> None:
    """A message of several megabytes is read whole, and its CRLF size is
    counted right when the file name carries no size hint."""
    store, root = maildir
    body = b"".join(b"line %d of a long message\n" % i for i in range(200_000))
    content = b"Subject: big\n\n" + body
    inbox = store.open_user("u", str(root)).folder("INBOX")
    _drop_new(root, "1000.M1P1.mda", content)
    (info,) = inbox.refresh()
    assert info.size == len(content)
    assert info.rfc822_size == len(content) + content.count(b"\n")
    assert inbox.read(info.uid) == content


def test_new_user_setup_syncs_little(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting up a new user's default folders (with fsync on) costs at most
    three fsyncs and one write of the subscriptions file."""
    calls: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    writes: list[str] = []
    real_rename = os.rename

    def counting_rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        writes.append(os.path.basename(str(dst)))
        real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", counting_rename)
    store = MaildirStore(_clock(), hostname="test", fsync=True)
    mbox = store.open_user("u", str(tmp_path / "m"))
    assert mbox.subscriptions() == ["Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash"]
    assert len(calls) <= 3
    assert writes.count("subscriptions") == 1


def test_inbox_only_use_makes_no_default_folders(tmp_path: Path) -> None:
    """A session that only uses INBOX (POP3) does not create the special-use
    folders; the first use of anything else (IMAP's LIST) does, once."""
    store = MaildirStore(_clock(), hostname="test", fsync=False)
    root = tmp_path / "m"
    mbox = store.open_user("u", str(root))
    mbox.folder("INBOX").append(b"Subject: x\n\nhi\n")
    assert not (root / ".Sent").exists()
    assert [f.name for f in mbox.list_folders()] == [
        "INBOX",
        "Archive",
        "Drafts",
        "Junk",
        "Sent",
        "Trash",
    ]
    assert (root / ".Sent" / "cur").is_dir()


class ThreadClock(Clock):
    """A Clock that, like a reactor, takes calls from other threads."""

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.from_threads.append((f, args))


def test_listeners_told_in_reactor_thread(tmp_path: Path) -> None:
    """A change made in a worker thread reaches listeners through the
    reactor's callFromThread, not in the worker; one made in the reactor
    thread is told at once."""
    clock = ThreadClock()
    clock.advance(1_700_000_000)
    inbox = (
        MaildirStore(clock, hostname="test", fsync=False)
        .open_user("u", str(tmp_path / "m"))
        .folder("INBOX")
    )
    uid = inbox.append(MSG)
    heard: list[tuple[str, str]] = []
    inbox.add_listener(lambda c: heard.append((c.kind, threading.current_thread().name)))
    saved = threadable.ioThread
    threadable.registerAsIOThread()
    try:
        worker = threading.Thread(
            target=lambda: inbox.set_flags(uid, ["\\Seen"], FlagMode.ADD), name="worker"
        )
        worker.start()
        worker.join()
        assert heard == [] and len(clock.from_threads) == 1
        f, args = clock.from_threads.pop()
        f(*args)
        assert heard == [("flags", threading.current_thread().name)]
        inbox.set_flags(uid, ["\\Flagged"], FlagMode.ADD)
        assert len(heard) == 2 and clock.from_threads == []
    finally:
        threadable.ioThread = saved


def test_read_when_file_size_differs_from_index(maildir: tuple[MaildirStore, Path]) -> None:
    """A file whose size is not the one indexed (rewritten by another
    program) is still read whole, longer or shorter."""
    store, root = maildir
    inbox = store.open_user("u", str(root)).folder("INBOX")
    uid = inbox.append(MSG)
    (name,) = os.listdir(root / "new")  # appended mail is \Recent: in new/
    longer = MSG + b"x" * 100_000
    (root / "new" / name).write_bytes(longer)
    assert inbox.read(uid) == longer
    (root / "new" / name).write_bytes(b"short\n")
    assert inbox.read(uid) == b"short\n"


def test_message_info_fast_constructor_is_the_same() -> None:
    """index.message_info builds an object equal to MessageInfo(...): same
    fields, equality, hash and repr, and still frozen."""
    import dataclasses

    from pymta.mailstore.index import message_info
    from pymta.mailstore.interface import MessageInfo

    args = (7, 10, 12, 1.5, frozenset({"\\Seen"}), frozenset({"Work"}), 3, "cur/x:2,S", False)
    fast, slow = message_info(*args), MessageInfo(*args)
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert dataclasses.replace(fast, modseq=4).modseq == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.uid = 8  # type: ignore[misc]


@pytest.mark.parametrize(
    ("content", "size"),
    [(b"", 0), (b"a\nb\n", 6), (b"a\r\nb\n", 6), (b"a\rb", 3), (b"\r\n\r\n", 4)],
)
def test_rfc822_size(content: bytes, size: int) -> None:
    """The CRLF size counts each bare LF twice and CRLF once."""
    from pymta.mailstore.names import rfc822_size

    assert rfc822_size(content) == size
