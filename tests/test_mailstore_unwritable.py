"""A mail store that cannot be written (read-only file system, full disk)
is still read: IMAP SELECT/FETCH/STATUS and POP3 login/RETR work, new mail
found meanwhile is numbered in memory and written when the disk takes it
again, and writes are refused with a code that says why ([OVERQUOTA] for
ENOSPC/EDQUOT, [NOPERM] and [READ-ONLY] for EROFS; RFC 5530), never
[SERVERBUG]. The failing system calls are injected at the store's seam:
each store module's ``os``. One test mounts a real read-only bind mount
when the machine allows it."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from twisted.internet.task import Clock

from pymta.mailstore import cache as cache_module
from pymta.mailstore import files as files_module
from pymta.mailstore import folder_base, folder_flags, folder_read, folder_save, folder_scan
from pymta.mailstore import index as index_module
from pymta.mailstore import keywords as keywords_module
from pymta.mailstore import maildir as maildir_module
from pymta.mailstore import maildir_folder as folder_module
from pymta.mailstore import save as save_module
from pymta.mailstore import tmpclean as tmpclean_module
from pymta.mailstore.index import INDEX_NAME, UidIndex
from pymta.mailstore.interface import FlagMode, FolderChange, StoreNotWritable
from pymta.mailstore.maildir import MaildirFolder, MaildirStore
from tests.test_imap_harness import World as ImapWorld
from tests.test_pop3_harness import World as Pop3World

MSG = b"From: a@example.org\nSubject: one\n\nfirst body\n"
NEW = b"From: b@example.org\nSubject: two\n\nsecond body\n"
NEW_NAME = "1700000100.M1P1Q1.mx,S=46"

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class FailingOs:
    """``os`` as a file system that cannot be written: ``EROFS`` refuses
    every write (opening for writing included), ``ENOSPC`` lets files be
    opened, renamed and removed but every byte written fails (after
    ``partial`` bytes of the next write, as a write cut short)."""

    def __init__(self, error: int) -> None:
        self.error = error
        self.partial = 0
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def _fail(self, path: object = None) -> OSError:
        self.failures += 1
        return OSError(self.error, os.strerror(self.error), path)

    def open(self, path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        if self.error == errno.EROFS and flags & _WRITE_FLAGS:
            raise self._fail(path)
        return os.open(path, flags, mode, **kw)

    def write(self, fd: int, data: Any) -> int:
        if not len(data):
            return 0
        if self.partial:
            n, self.partial = min(self.partial, len(data)), 0
            return os.write(fd, bytes(data[:n]))
        raise self._fail()

    def _read_only(self, *args: Any, **kw: Any) -> Any:
        raise self._fail(args[0] if args else None)

    def __getattribute__(self, name: str) -> Any:
        if name in ("rename", "unlink", "link", "mkdir", "utime", "ftruncate", "replace"):
            if object.__getattribute__(self, "error") == errno.EROFS:
                return object.__getattribute__(self, "_read_only")
        if name == "makedirs":
            return _makedirs_existing
        return object.__getattribute__(self, name)


def _makedirs_existing(path: str, mode: int = 0o777, exist_ok: bool = False) -> None:
    if not os.path.isdir(path):
        raise OSError(errno.EROFS, "Read-only file system", path)


_MODULES: tuple[ModuleType, ...] = (
    index_module,
    folder_module,
    folder_base,
    folder_scan,
    folder_read,
    folder_flags,
    folder_save,
    files_module,
    keywords_module,
    save_module,
    cache_module,
    maildir_module,
    tmpclean_module,
)


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``disk.fail(errno)`` makes the store's file system unwritable,
    ``disk.heal()`` writable again."""

    class Disk:
        os: FailingOs | None = None

        def fail(self, error: int) -> FailingOs:
            self.os = FailingOs(error)
            for module in _MODULES:
                monkeypatch.setattr(module, "os", self.os)
            return self.os

        def heal(self) -> None:
            for module in _MODULES:
                monkeypatch.setattr(module, "os", os)

    yield Disk()


def _store() -> MaildirStore:
    clock = Clock()
    clock.advance(1_700_000_000)
    return MaildirStore(clock, hostname="test", fsync=False)


def _mailbox_with_new_mail(root: Path) -> None:
    """alice's Maildir: one message numbered (UID 1) and one delivered
    after the index was last written (in new/, no UID yet)."""
    inbox = _store().open_user("alice@example.org", str(root)).folder("INBOX")
    inbox.append(MSG)
    inbox.claim_recent()  # seen by a session before: in cur/
    (root / "new" / NEW_NAME).write_bytes(NEW)


def _index_lines(root: Path) -> list[str]:
    return (root / INDEX_NAME).read_text().splitlines()


# IMAP -------------------------------------------------------------------------


def test_imap_select_fetch_status_on_a_read_only_store(tmp_path: Path, disk: Any) -> None:
    """On a read-only store SELECT answers OK [READ-ONLY] with both messages
    (the new one numbered in memory), FETCH and STATUS answer, STORE gets
    NO [READ-ONLY] and APPEND NO [NOPERM]: never [SERVERBUG]."""
    _mailbox_with_new_mail(tmp_path / "alice")
    world = ImapWorld(tmp_path, store=_store())
    failing = disk.fail(errno.EROFS)
    s = world.connect()
    s.login()
    reply = s.send("s1 SELECT INBOX")
    assert b"* 2 EXISTS" in reply and b"* OK [PERMANENTFLAGS ()]" in reply
    assert reply.endswith(b"s1 OK [READ-ONLY] Select completed.\r\n")
    reply = s.send("f1 UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)] RFC822.SIZE)")
    assert b"UID 1 " in reply and b"Subject: one" in reply
    assert b"UID 2 " in reply and b"Subject: two" in reply
    assert reply.endswith(b"f1 OK Fetch completed.\r\n")
    assert b"second body" in s.send("f2 FETCH 2 BODY[TEXT]")
    assert s.send("x STATUS INBOX (MESSAGES UIDNEXT UNSEEN)") == (
        b'* STATUS "INBOX" (MESSAGES 2 UIDNEXT 3 UNSEEN 2)\r\nx OK Status completed.\r\n'
    )
    assert s.send("st STORE 1 +FLAGS (\\Seen)") == b"st NO [READ-ONLY] Mailbox is read-only.\r\n"
    assert s.send(b"ap APPEND INBOX {5+}\r\nhello\r\n") == (
        b"ap NO [NOPERM] Mail store is read-only\r\n"
    )
    assert failing.failures > 0
    assert not [e for e in world.events if "log_failure" in e]


def test_imap_full_disk_reads_refuses_append_and_lets_expunge_free_space(
    tmp_path: Path, disk: Any
) -> None:
    """On a full disk SELECT stays READ-WRITE (expunging is how space comes
    back), the new message is readable under a memory-only UID, APPEND is
    NO [OVERQUOTA] Not enough disk space and leaves no file behind, and an
    EXPUNGE works."""
    root = tmp_path / "alice"
    _mailbox_with_new_mail(root)
    world = ImapWorld(tmp_path, store=_store())
    disk.fail(errno.ENOSPC)
    s = world.connect()
    s.login()
    reply = s.send("s1 SELECT INBOX")
    assert b"* 2 EXISTS" in reply and reply.endswith(b"s1 OK [READ-WRITE] Select completed.\r\n")
    assert b"second body" in s.send("f1 UID FETCH 2 BODY.PEEK[TEXT]")
    files = sorted(os.listdir(root / "cur")) + sorted(os.listdir(root / "new"))
    assert s.send(b"ap APPEND INBOX {5+}\r\nhello\r\n") == (
        b"ap NO [OVERQUOTA] Not enough disk space\r\n"
    )
    assert sorted(os.listdir(root / "cur")) + sorted(os.listdir(root / "new")) == files
    assert os.listdir(root / "tmp") == []
    reply = s.send("d STORE 1 +FLAGS.SILENT (\\Deleted)\r\ne EXPUNGE")
    assert b"* 1 EXPUNGE" in reply and reply.endswith(b"e OK Expunge completed.\r\n")
    assert len(os.listdir(root / "cur")) + len(os.listdir(root / "new")) == 1


def test_memory_uids_are_written_when_the_disk_takes_them_again(tmp_path: Path, disk: Any) -> None:
    """UIDs given in memory while the index could not be written are
    written by the next change once the disk is writable: another process
    (a new store) then sees the same UID for the same message."""
    root = tmp_path / "alice"
    _mailbox_with_new_mail(root)
    folder = _store().open_user("alice@example.org", str(root)).folder("INBOX")
    disk.fail(errno.ENOSPC)
    assert [m.uid for m in folder.messages()] == [1, 2]
    assert folder.header_bytes(2).startswith(b"From: b@")
    assert not any(line.startswith("A\t2\t") for line in _index_lines(root))
    disk.heal()
    folder.set_flags(1, ["\\Flagged"], FlagMode.ADD)
    assert any(line.startswith("A\t2\t") and NEW_NAME in line for line in _index_lines(root))
    other = _store().open_user("alice@example.org", str(root)).folder("INBOX")
    assert other.get(2).filename == f"new/{NEW_NAME}"
    assert other.get(1).flags == {"\\Flagged"}
    # The header read under the memory-only UID was not cached.
    assert b"From: b@" not in (root / "pymta-cache").read_bytes()


def test_a_write_cut_short_leaves_no_torn_line(tmp_path: Path, disk: Any) -> None:
    """A full disk that takes part of an index append: the part is cut off
    again (whole lines or nothing), so a later append is not glued to it."""
    root = tmp_path / "alice"
    _mailbox_with_new_mail(root)
    size = (root / INDEX_NAME).stat().st_size
    folder = _store().open_user("alice@example.org", str(root)).folder("INBOX")
    failing = disk.fail(errno.ENOSPC)
    failing.partial = 7
    assert len(folder.messages()) == 2
    assert (root / INDEX_NAME).stat().st_size == size
    disk.heal()
    folder.set_flags(2, ["\\Seen"], FlagMode.ADD)
    other = _store().open_user("alice@example.org", str(root)).folder("INBOX")
    assert [(m.uid, m.flags) for m in other.messages()] == [(1, set()), (2, {"\\Seen"})]


def test_a_new_folder_on_a_read_only_store_is_indexed_in_memory(tmp_path: Path, disk: Any) -> None:
    """A Maildir never indexed (no pymta-uidlist) on a read-only store is
    numbered in memory and readable."""
    root = tmp_path / "alice"
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    (root / "new" / NEW_NAME).write_bytes(NEW)
    disk.fail(errno.EROFS)
    folder = _store().open_user("alice@example.org", str(root)).folder("INBOX")
    assert [m.uid for m in folder.messages()] == [1]
    assert folder.read(1) == NEW
    assert not folder.writable
    assert not (root / INDEX_NAME).exists()
    disk.heal()
    folder.refresh()
    assert folder.writable and (root / INDEX_NAME).exists()


def test_memory_uids_given_elsewhere_meanwhile_make_the_folder_start_over(
    tmp_path: Path, disk: Any
) -> None:
    """If another process numbered differently while our UIDs were only in
    memory, its file stands: our sessions hear 'uidvalidity' (they must
    start over) and the folder takes the file's UIDs. When it numbered the
    same way, nothing changes."""
    root = tmp_path / "alice"
    _mailbox_with_new_mail(root)
    ours = _store().open_user("alice@example.org", str(root)).folder("INBOX")
    assert isinstance(ours, MaildirFolder)
    heard: list[FolderChange] = []
    ours.add_listener(heard.append)
    disk.fail(errno.ENOSPC)
    assert [m.uid for m in ours.messages()] == [1, 2]  # UID 2 only in memory
    disk.heal()
    # Meanwhile another process numbers a different message 2.
    other_name = "1700000050.M1P2Q1.mx,S=46"
    (root / "cur" / (other_name + ":2,")).write_bytes(NEW)
    theirs = UidIndex(str(root), fsync=False)
    with theirs.locked():
        theirs.sync()
        info = index_module.message_info(
            2, 46, 49, 1.0, frozenset(), frozenset(), 9, f"cur/{other_name}:2,"
        )
        theirs.put([info], [])
    ours.refresh()
    assert any(c.kind == "uidvalidity" for c in heard)
    assert ours.get(2).filename == f"cur/{other_name}:2,"
    assert ours.get(3).filename == f"new/{NEW_NAME}"


def test_index_keeps_records_in_memory_and_strict_writes_fail(tmp_path: Path, disk: Any) -> None:
    """UidIndex.put keeps records it cannot write in memory (pending) for
    a scan, but a client's write (strict) raises StoreNotWritable and
    changes nothing."""
    root = tmp_path / "alice"
    _mailbox_with_new_mail(root)
    index = UidIndex(str(root), fsync=False)
    with index.locked():
        index.sync()
    disk.fail(errno.ENOSPC)
    info = index_module.message_info(
        2, 46, 49, 1.0, frozenset(), frozenset(), 5, f"new/{NEW_NAME}", True
    )
    with index.locked():
        with pytest.raises(StoreNotWritable) as raised:
            index.put([info], [], strict=True)
        assert raised.value.full and 2 not in index.records
        index.put([info], [])
    assert index.records[2] == info and index.memory_uids == {2: NEW_NAME}
    disk.heal()
    with index.locked():
        index.sync()
    assert index.pending == [] and index.memory_uids == {}


# POP3 -------------------------------------------------------------------------


def test_pop3_login_and_retr_on_a_read_only_store(tmp_path: Path, disk: Any) -> None:
    """POP3 on a read-only store: PASS is +OK (the session lock is taken on
    a read-only descriptor), STAT and RETR answer, a plain QUIT is +OK; a
    DELE'd message is kept and QUIT says the store is read-only."""
    _mailbox_with_new_mail(tmp_path / "alice")
    world = Pop3World(tmp_path, store=_store(), mail_root=str(tmp_path))
    disk.fail(errno.EROFS)
    s = world.connect()
    s.login()
    wire_size = len(MSG + NEW) + (MSG + NEW).count(b"\n")  # CRLF line ends
    assert s.send("STAT") == f"+OK 2 {wire_size}\r\n"
    assert "second body" in s.send("RETR 2")
    assert s.send("QUIT") == "+OK Logging out.\r\n"
    s = world.connect()
    s.login()
    assert s.send("DELE 1") == "+OK Marked to be deleted.\r\n"
    assert s.send("QUIT") == (
        "-ERR [SYS/TEMP] Mail store is read-only: messages were not deleted.\r\n"
    )
    assert len(os.listdir(tmp_path / "alice" / "cur")) == 1


def test_pop3_login_and_retr_on_a_full_disk(tmp_path: Path, disk: Any) -> None:
    """POP3 on a full disk: login, RETR of the new message, and DELE + QUIT
    (removing files frees space) all work."""
    root = tmp_path / "alice"
    _mailbox_with_new_mail(root)
    world = Pop3World(tmp_path, store=_store(), mail_root=str(tmp_path))
    disk.fail(errno.ENOSPC)
    s = world.connect()
    s.login()
    assert "second body" in s.send("RETR 2")
    assert s.send("DELE 1") == "+OK Marked to be deleted.\r\n"
    assert s.send("QUIT") == "+OK Logging out, messages deleted.\r\n"
    assert len(os.listdir(root / "cur")) + len(os.listdir(root / "new")) == 1


# a real read-only mount ------------------------------------------------------


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[Path]:
    """alice's Maildir (with new mail) bind-mounted read-only on itself;
    unmounted afterwards. Skipped where mounting is not allowed."""
    root = tmp_path / "alice"
    _mailbox_with_new_mail(root)
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    bind = subprocess.run(["mount", "--bind", str(root), str(root)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip(f"mount --bind not allowed: {bind.stderr.decode().strip()}")
    try:
        remount = subprocess.run(["mount", "-o", "remount,ro,bind", str(root)], capture_output=True)
        if remount.returncode != 0:
            pytest.skip(f"read-only remount not allowed: {remount.stderr.decode().strip()}")
        yield root
    finally:
        subprocess.run(["umount", str(root)], check=True)


def test_real_read_only_mount_serves_imap_and_pop3(tmp_path: Path, read_only_mount: Path) -> None:
    """On a real read-only bind mount (EROFS from the kernel), IMAP SELECT
    is [READ-ONLY] with both messages, FETCH and STATUS answer, and POP3
    logs in and RETRs the new message."""
    with pytest.raises(OSError) as probe:
        (read_only_mount / "probe").write_bytes(b"x")
    assert probe.value.errno == errno.EROFS
    world = ImapWorld(tmp_path, store=_store())
    s = world.connect()
    s.login()
    reply = s.send("s1 SELECT INBOX")
    assert b"* 2 EXISTS" in reply
    assert reply.endswith(b"s1 OK [READ-ONLY] Select completed.\r\n")
    assert b"second body" in s.send("f1 FETCH 2 BODY[TEXT]")
    assert b"MESSAGES 2" in s.send("x STATUS INBOX (MESSAGES)")
    pop = Pop3World(tmp_path, store=_store(), mail_root=str(tmp_path)).connect()
    pop.login()
    assert "second body" in pop.send("RETR 2")
    assert pop.send("QUIT") == "+OK Logging out.\r\n"
