"""One contract, two mail stores: MemoryStore and MaildirStore behave alike,
as the servers use them - through the store's asynchronous API
(pymta.mailstore.asyncstore). With a task.Clock both answer at once (the
Maildir store has no threads to run in then), so each call's Deferred has
fired when it returns; :class:`Now` unwraps it (a failure is raised)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from pymta.mailstore.asyncstore import IAsyncFolder, IAsyncMailStore, IAsyncUserMailbox
from pymta.mailstore.interface import (
    FlagMode,
    FolderChange,
    FolderExists,
    IMailStore,
    InvalidFolderName,
    NoSuchFolder,
    NoSuchMessage,
)
from pymta.mailstore.maildir import MaildirStore
from pymta.mailstore.memory import MemoryFolder, MemoryStore

MSG = b"From: a@example.org\nSubject: hi\n\nbody line\n"

#: Puts a message into a user's INBOX as another program would (an MDA).
Deliver = Callable[[IMailStore, str, bytes], None]


def _deliver_maildir(store: IMailStore, path: str, content: bytes) -> None:
    name = f"1700000000.X{len(os.listdir(os.path.join(path, 'new')))}.other"
    with open(os.path.join(path, "tmp", name), "wb") as f:
        f.write(content)
    os.rename(os.path.join(path, "tmp", name), os.path.join(path, "new", name))


def _deliver_memory(store: IMailStore, path: str, content: bytes) -> None:
    folder = store.open_user("u", path).folder("INBOX")
    assert isinstance(folder, MemoryFolder)
    folder.deliver_external(content)


class Now:
    """An asynchronous store object whose calls have answered when they
    return: each Deferred result unwrapped (folders and mailboxes wrapped
    in turn), each failure raised."""

    def __init__(self, face: Any) -> None:
        self.face = face

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.face, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            args = tuple(a.face if isinstance(a, Now) else a for a in args)
            result = attribute(*args, **kwargs)
            if not isinstance(result, Deferred):
                return result
            out: list[Any] = []
            result.addBoth(out.append)
            assert out, f"{name} did not answer at once"
            if isinstance(out[0], Failure):
                out[0].raiseException()
            value = out[0]
            if IAsyncFolder.providedBy(value) or IAsyncUserMailbox.providedBy(value):
                return Now(value)
            return value

        return call


@pytest.fixture(params=["memory", "maildir"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Any, str, Deliver]:
    clock = Clock()
    clock.advance(1_700_000_000)
    store: IMailStore
    if request.param == "memory":
        store, deliver = MemoryStore(clock), _deliver_memory
    else:
        store, deliver = MaildirStore(clock, hostname="test", fsync=False), _deliver_maildir
    path = str(tmp_path / "u")

    def deliver_to_inbox(content: bytes) -> None:
        deliver(store, path, content)

    return Now(store.asynchronous()), path, deliver_to_inbox  # type: ignore[return-value]


def test_interfaces(env: tuple[Any, str, Deliver]) -> None:
    """Both stores provide IAsyncMailStore, IAsyncUserMailbox and
    IAsyncFolder fully."""
    store, path, _ = env
    assert verifyObject(IAsyncMailStore, store.face)
    mbox = store.open_user("u", path)
    assert verifyObject(IAsyncUserMailbox, mbox.face)
    assert verifyObject(IAsyncFolder, mbox.folder("INBOX").face)


def test_new_user_gets_special_folders(env: tuple[Any, str, Deliver]) -> None:
    """A new user has INBOX and the RFC 6154 folders, all subscribed."""
    store, path, _ = env
    mbox = store.open_user("u", path)
    listing = {f.name: f.special_use for f in mbox.list_folders()}
    assert listing == {
        "INBOX": None,
        "Archive": "\\Archive",
        "Drafts": "\\Drafts",
        "Junk": "\\Junk",
        "Sent": "\\Sent",
        "Trash": "\\Trash",
    }
    assert mbox.list_folders()[0].name == "INBOX"
    assert mbox.subscriptions() == ["Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash"]


def test_append_read_and_sizes(env: tuple[Any, str, Deliver]) -> None:
    """append stores LF content, gives rising UIDs, and reports CRLF sizes."""
    store, path, _ = env
    inbox = store.open_user("u", path).folder("inbox")
    uid1 = inbox.append(MSG.replace(b"\n", b"\r\n"), ["\\Seen"], internal_date=1234.0)
    uid2 = inbox.append(MSG)
    assert uid2 > uid1
    assert inbox.read(uid1) == MSG
    info = inbox.get(uid1)
    assert info.size == len(MSG)
    assert info.rfc822_size == len(MSG) + MSG.count(b"\n")
    assert info.internal_date == 1234.0
    assert info.flags == {"\\Seen"}
    assert [m.uid for m in inbox.messages()] == [uid1, uid2]
    assert inbox.header_bytes(uid1) == b"From: a@example.org\nSubject: hi\n\n"
    assert inbox.status().uidnext == uid2 + 1
    with inbox.open(uid2) as f:
        assert f.read() == MSG
    with pytest.raises(NoSuchMessage):
        inbox.get(999)


def test_external_delivery_noticed(env: tuple[Any, str, Deliver]) -> None:
    """A message another program puts in new/ is numbered by refresh, is
    \\Recent until claimed, and listeners hear of it."""
    store, path, deliver = env
    inbox = store.open_user("u", path).folder("INBOX")
    heard: list[FolderChange] = []
    inbox.add_listener(heard.append)
    inbox.messages()
    deliver(MSG)
    assert inbox.changed_on_disk()
    new = inbox.refresh()
    assert [m.uid for m in new] == [1]
    assert new[0].recent
    assert inbox.read(1) == MSG
    assert [c.kind for c in heard] == ["append"]
    assert inbox.claim_recent() == [1]
    assert not inbox.get(1).recent
    assert inbox.claim_recent() == []
    assert inbox.read(1) == MSG


def test_external_delivery_noticed_by_rescan(env: tuple[Any, str, Deliver]) -> None:
    """rescan (SELECT's) numbers what another program delivered as refresh
    does, listeners hear of it, and it answers nothing; status then counts
    it as \\Recent and unseen."""
    store, path, deliver = env
    inbox = store.open_user("u", path).folder("INBOX")
    heard: list[FolderChange] = []
    inbox.add_listener(heard.append)
    inbox.messages()
    deliver(MSG)
    assert inbox.changed_on_disk()
    assert inbox.rescan() is None
    assert [(c.kind, c.uids) for c in heard] == [("append", (1,))]
    assert [m.uid for m in inbox.messages()] == [1]
    st = inbox.status()
    assert (st.messages, st.recent, st.unseen, st.uidnext) == (1, 1, 1, 2)
    assert st.size == len(MSG) + MSG.count(b"\n")


def test_flags_modes_and_modseq(env: tuple[Any, str, Deliver]) -> None:
    """set_flags replaces, adds and removes flags and keywords, raises the
    modseq on a change only, and honours UNCHANGEDSINCE."""
    store, path, _ = env
    inbox = store.open_user("u", path).folder("INBOX")
    uid = inbox.append(MSG)
    start = inbox.get(uid).modseq
    info = inbox.set_flags(uid, ["\\Seen", "$Label1"], FlagMode.ADD)
    assert info is not None
    assert info.flags == {"\\Seen"} and info.keywords == {"$Label1"}
    assert info.modseq > start
    assert inbox.status().highest_modseq == info.modseq
    same = inbox.set_flags(uid, ["\\seen"], FlagMode.ADD)
    assert same is not None and same.modseq == info.modseq
    assert inbox.set_flags(uid, ["\\Flagged"], FlagMode.ADD, unchanged_since=start) is None
    info = inbox.set_flags(uid, ["\\Seen"], FlagMode.REMOVE)
    assert info is not None and info.flags == frozenset()
    info = inbox.set_flags(uid, ["\\Answered", "\\Recent"], FlagMode.REPLACE)
    assert info is not None and info.all_flags == {"\\Answered"}
    assert inbox.get(uid).flags == {"\\Answered"}


def test_expunge_and_vanished(env: tuple[Any, str, Deliver]) -> None:
    """expunge removes \\Deleted messages (or given UIDs), UIDs are never
    reused, and expunged_since reports them for QRESYNC."""
    store, path, _ = env
    inbox = store.open_user("u", path).folder("INBOX")
    uids = [inbox.append(MSG) for _ in range(3)]
    mark = inbox.status().highest_modseq
    inbox.set_flags(uids[1], ["\\Deleted"], FlagMode.ADD)
    assert inbox.expunge() == [uids[1]]
    assert inbox.expunge([uids[2], 999]) == [uids[2]]
    assert [m.uid for m in inbox.messages()] == [uids[0]]
    assert inbox.expunged_since(mark) == [uids[1], uids[2]]
    assert inbox.append(MSG) == uids[2] + 1
    with pytest.raises(NoSuchMessage):
        inbox.read(uids[1])


def test_copy_and_move(env: tuple[Any, str, Deliver]) -> None:
    """copy keeps content, flags and internal date, and returns COPYUID
    pairs; move also removes the sources."""
    store, path, _ = env
    mbox = store.open_user("u", path)
    inbox, archive = mbox.folder("INBOX"), mbox.folder("Archive")
    a = inbox.append(MSG, ["\\Flagged"], internal_date=99.0)
    b = inbox.append(MSG + b"2\n")
    pairs = inbox.copy([b, a], archive)
    assert [old for old, _ in pairs] == [a, b]
    new_a = pairs[0][1]
    assert archive.read(new_a) == MSG
    assert archive.get(new_a).flags == {"\\Flagged"}
    assert archive.get(new_a).internal_date == 99.0
    moved = inbox.move([b], archive)
    assert [m.uid for m in inbox.messages()] == [a]
    assert archive.read(moved[0][1]) == MSG + b"2\n"


def test_folder_create_rename_delete(env: tuple[Any, str, Deliver]) -> None:
    """Folders nest with '/', rename carries children and messages, delete
    removes one folder, bad names are refused."""
    store, path, _ = env
    mbox = store.open_user("u", path)
    mbox.create_folder("Projects/2024/Q1")
    names = [f.name for f in mbox.list_folders()]
    assert {"Projects", "Projects/2024", "Projects/2024/Q1"} <= set(names)
    q1 = mbox.folder("Projects/2024/Q1")
    uid = q1.append(MSG)
    validity = q1.status().uidvalidity
    with pytest.raises(FolderExists):
        mbox.create_folder("Projects/2024")
    mbox.rename_folder("Projects", "Work")
    names = [f.name for f in mbox.list_folders()]
    assert "Projects" not in names and "Work/2024/Q1" in names
    moved = mbox.folder("Work/2024/Q1")
    assert moved.read(uid) == MSG
    assert moved.status().uidvalidity == validity
    mbox.delete_folder("Work/2024/Q1")
    with pytest.raises(NoSuchFolder):
        mbox.folder("Work/2024/Q1")
    for bad in ["a//b", "a.b", "..", "x/../y", "INBOX/sub", "a\x00b", "*"]:
        with pytest.raises(InvalidFolderName):
            mbox.create_folder(bad)
    with pytest.raises(InvalidFolderName):
        mbox.delete_folder("INBOX")


def test_rename_inbox_moves_messages(env: tuple[Any, str, Deliver]) -> None:
    """Renaming INBOX moves its messages to the new folder and leaves INBOX empty."""
    store, path, _ = env
    mbox = store.open_user("u", path)
    mbox.folder("INBOX").append(MSG)
    mbox.rename_folder("INBOX", "Old")
    assert mbox.folder("INBOX").messages() == []
    old = mbox.folder("Old")
    assert [old.read(m.uid) for m in old.messages()] == [MSG]


def test_subscriptions(env: tuple[Any, str, Deliver]) -> None:
    """subscribe/unsubscribe keep a sorted list, nonexistent names allowed."""
    store, path, _ = env
    mbox = store.open_user("u", path)
    mbox.subscribe("Later/Folder")
    mbox.unsubscribe("Junk")
    subs = mbox.subscriptions()
    assert "Later/Folder" in subs and "Junk" not in subs
    assert subs == sorted(subs)
    with pytest.raises(InvalidFolderName):
        mbox.subscribe("a/../b")


def test_session_lock(env: tuple[Any, str, Deliver]) -> None:
    """Only one session holds a folder's lock at a time."""
    store, path, _ = env
    inbox = store.open_user("u", path).folder("INBOX")
    held = inbox.lock()
    assert held is not None
    assert inbox.lock() is None
    held.release()
    again = inbox.lock()
    assert again is not None
    again.release()


def test_listeners_hear_changes(env: tuple[Any, str, Deliver]) -> None:
    """Listeners hear appends, flag changes and expunges made through the
    store, and nothing after remove_listener."""
    store, path, _ = env
    inbox = store.open_user("u", path).folder("INBOX")
    heard: list[FolderChange] = []
    inbox.add_listener(heard.append)
    uid = inbox.append(MSG)
    inbox.set_flags(uid, ["\\Deleted"], FlagMode.ADD)
    inbox.expunge()
    assert [(c.kind, c.uids) for c in heard] == [
        ("append", (uid,)),
        ("flags", (uid,)),
        ("expunge", (uid,)),
    ]
    assert heard[-1].modseq == inbox.status().highest_modseq
    inbox.remove_listener(heard.append)
    inbox.append(MSG)
    assert len(heard) == 3


def test_status_and_mime(env: tuple[Any, str, Deliver]) -> None:
    """status counts from the index; mime_structure finds multipart children."""
    store, path, _ = env
    inbox = store.open_user("u", path).folder("INBOX")
    mp = (
        b'Content-Type: multipart/mixed; boundary="b"\n\npre\n--b\n'
        b"Content-Type: text/plain; charset=utf-8\n\nhello\n--b\n"
        b"Content-Type: image/png\nContent-Transfer-Encoding: base64\n\nAAAA\n--b--\n"
    )
    uid = inbox.append(mp, ["\\Seen"])
    inbox.append(MSG)
    st = inbox.status()
    assert (st.messages, st.unseen, st.uidnext) == (2, 1, uid + 2)
    tree = inbox.mime_structure(uid)
    assert (tree.content_type, tree.subtype) == ("multipart", "mixed")
    kinds = [(p.content_type, p.subtype) for p in tree.parts]
    assert kinds == [("text", "plain"), ("image", "png")]
    text = tree.parts[0]
    assert text.params == (("charset", "utf-8"),)
    assert mp[text.body_start : text.end] == b"hello"
    assert tree.parts[1].encoding == "base64"
    assert inbox.mime_structure(uid) == tree
