"""One contract, two mail stores: MemoryStore and MaildirStore behave alike."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from pymta.mailstore.interface import (
    FlagMode,
    FolderChange,
    FolderExists,
    IFolder,
    IMailStore,
    InvalidFolderName,
    IUserMailbox,
    NoSuchFolder,
    NoSuchMessage,
)
from pymta.mailstore.maildir import MaildirStore
from pymta.mailstore.memory import MemoryFolder, MemoryStore

MSG = b"From: a@example.org\nSubject: hi\n\nbody line\n"

Deliver = Callable[[IFolder, bytes], None]


def _deliver_maildir(folder: IFolder, content: bytes) -> None:
    path = folder.path  # type: ignore[attr-defined]
    name = f"1700000000.X{len(os.listdir(os.path.join(path, 'new')))}.other"
    with open(os.path.join(path, "tmp", name), "wb") as f:
        f.write(content)
    os.rename(os.path.join(path, "tmp", name), os.path.join(path, "new", name))


def _deliver_memory(folder: IFolder, content: bytes) -> None:
    assert isinstance(folder, MemoryFolder)
    folder.deliver_external(content)


@pytest.fixture(params=["memory", "maildir"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[IMailStore, str, Deliver]:
    clock = Clock()
    clock.advance(1_700_000_000)
    if request.param == "memory":
        return MemoryStore(clock), str(tmp_path / "u"), _deliver_memory
    return MaildirStore(clock, hostname="test", fsync=False), str(tmp_path / "u"), _deliver_maildir


def test_interfaces(env: tuple[IMailStore, str, Deliver]) -> None:
    """Both stores provide IMailStore, IUserMailbox and IFolder fully."""
    store, path, _ = env
    assert verifyObject(IMailStore, store)
    mbox = store.open_user("u", path)
    assert verifyObject(IUserMailbox, mbox)
    assert verifyObject(IFolder, mbox.folder("INBOX"))


def test_new_user_gets_special_folders(env: tuple[IMailStore, str, Deliver]) -> None:
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


def test_append_read_and_sizes(env: tuple[IMailStore, str, Deliver]) -> None:
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
    assert inbox.uidnext == uid2 + 1
    with inbox.open(uid2) as f:
        assert f.read() == MSG
    with pytest.raises(NoSuchMessage):
        inbox.get(999)


def test_external_delivery_noticed(env: tuple[IMailStore, str, Deliver]) -> None:
    """A message another program puts in new/ is numbered by refresh, is
    \\Recent until claimed, and listeners hear of it."""
    store, path, deliver = env
    inbox = store.open_user("u", path).folder("INBOX")
    heard: list[FolderChange] = []
    inbox.add_listener(heard.append)
    inbox.messages()
    deliver(inbox, MSG)
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


def test_flags_modes_and_modseq(env: tuple[IMailStore, str, Deliver]) -> None:
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
    assert inbox.highest_modseq == info.modseq
    same = inbox.set_flags(uid, ["\\seen"], FlagMode.ADD)
    assert same is not None and same.modseq == info.modseq
    assert inbox.set_flags(uid, ["\\Flagged"], FlagMode.ADD, unchanged_since=start) is None
    info = inbox.set_flags(uid, ["\\Seen"], FlagMode.REMOVE)
    assert info is not None and info.flags == frozenset()
    info = inbox.set_flags(uid, ["\\Answered", "\\Recent"], FlagMode.REPLACE)
    assert info is not None and info.all_flags == {"\\Answered"}
    assert inbox.get(uid).flags == {"\\Answered"}


def test_expunge_and_vanished(env: tuple[IMailStore, str, Deliver]) -> None:
    """expunge removes \\Deleted messages (or given UIDs), UIDs are never
    reused, and expunged_since reports them for QRESYNC."""
    store, path, _ = env
    inbox = store.open_user("u", path).folder("INBOX")
    uids = [inbox.append(MSG) for _ in range(3)]
    mark = inbox.highest_modseq
    inbox.set_flags(uids[1], ["\\Deleted"], FlagMode.ADD)
    assert inbox.expunge() == [uids[1]]
    assert inbox.expunge([uids[2], 999]) == [uids[2]]
    assert [m.uid for m in inbox.messages()] == [uids[0]]
    assert inbox.expunged_since(mark) == [uids[1], uids[2]]
    assert inbox.append(MSG) == uids[2] + 1
    with pytest.raises(NoSuchMessage):
        inbox.read(uids[1])


def test_copy_and_move(env: tuple[IMailStore, str, Deliver]) -> None:
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


def test_folder_create_rename_delete(env: tuple[IMailStore, str, Deliver]) -> None:
    """Folders nest with '/', rename carries children and messages, delete
    removes one folder, bad names are refused."""
    store, path, _ = env
    mbox = store.open_user("u", path)
    mbox.create_folder("Projects/2024/Q1")
    names = [f.name for f in mbox.list_folders()]
    assert {"Projects", "Projects/2024", "Projects/2024/Q1"} <= set(names)
    q1 = mbox.folder("Projects/2024/Q1")
    uid = q1.append(MSG)
    validity = q1.uidvalidity
    with pytest.raises(FolderExists):
        mbox.create_folder("Projects/2024")
    mbox.rename_folder("Projects", "Work")
    names = [f.name for f in mbox.list_folders()]
    assert "Projects" not in names and "Work/2024/Q1" in names
    moved = mbox.folder("Work/2024/Q1")
    assert moved.read(uid) == MSG
    assert moved.uidvalidity == validity
    mbox.delete_folder("Work/2024/Q1")
    with pytest.raises(NoSuchFolder):
        mbox.folder("Work/2024/Q1")
    for bad in ["a//b", "a.b", "..", "x/../y", "INBOX/sub", "a\x00b", "*"]:
        with pytest.raises(InvalidFolderName):
            mbox.create_folder(bad)
    with pytest.raises(InvalidFolderName):
        mbox.delete_folder("INBOX")


def test_rename_inbox_moves_messages(env: tuple[IMailStore, str, Deliver]) -> None:
    """Renaming INBOX moves its messages to the new folder and leaves INBOX empty."""
    store, path, _ = env
    mbox = store.open_user("u", path)
    mbox.folder("INBOX").append(MSG)
    mbox.rename_folder("INBOX", "Old")
    assert mbox.folder("INBOX").messages() == []
    old = mbox.folder("Old")
    assert [old.read(m.uid) for m in old.messages()] == [MSG]


def test_subscriptions(env: tuple[IMailStore, str, Deliver]) -> None:
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


def test_session_lock(env: tuple[IMailStore, str, Deliver]) -> None:
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


def test_listeners_hear_changes(env: tuple[IMailStore, str, Deliver]) -> None:
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
    assert heard[-1].modseq == inbox.highest_modseq
    inbox.remove_listener(heard.append)
    inbox.append(MSG)
    assert len(heard) == 3


def test_status_and_mime(env: tuple[IMailStore, str, Deliver]) -> None:
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
