"""The Maildir++ store on disk: layout, UIDs across restarts and processes,
crash recovery, and untrusted file names."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from pymta.mailstore.index import INDEX_NAME
from pymta.mailstore.interface import FlagMode, FolderChange
from pymta.mailstore.maildir import MaildirFolder, MaildirStore

MSG = b"From: a@example.org\nSubject: hi\n\nbody\n"


def _store() -> MaildirStore:
    clock = Clock()
    clock.advance(1_700_000_000)
    return MaildirStore(clock, hostname="test", fsync=False)


def _inbox(root: Path) -> MaildirFolder:
    folder = _store().open_user("u", str(root)).folder("INBOX")
    assert isinstance(folder, MaildirFolder)
    return folder


def _drop(root: Path, sub: str, name: str, content: bytes = MSG) -> None:
    (root / sub / name).write_bytes(content)


def _two_foreign_files(tmp_path: Path) -> Path:
    """A Maildir another program wrote, without pymta's index: "one" in
    new/ (arrived first), "two" seen in cur/; its root."""
    root = tmp_path / "m"
    for d in ("cur", "new", "tmp"):
        (root / d).mkdir(parents=True)
    _drop(root, "cur", "2.b.host:2,S", b"two\n")
    _drop(root, "new", "1.a.host", b"one\n")
    return root


def test_layout_is_maildir_plus_plus(tmp_path: Path) -> None:
    """Folders are .Name directories with maildirfolder, mUTF-7 names, and a
    Courier-style subscriptions file."""
    root = tmp_path / "Maildir"
    mbox = _store().open_user("u", str(root))
    mbox.create_folder("Café/Menü")
    mbox.subscribe("Café/Menü")
    assert (root / ".Sent" / "maildirfolder").exists()
    assert (root / ".Caf&AOk-" / "cur").is_dir()
    assert (root / ".Caf&AOk-.Men&APw-" / "new").is_dir()
    lines = (root / "subscriptions").read_text().split()
    assert "Caf&AOk-.Men&APw-" in lines and "INBOX" in lines
    assert "Café/Menü" in [f.name for f in mbox.list_folders()]


def test_flags_in_file_names(tmp_path: Path) -> None:
    """Flags are the :2, letters in ASCII order; keywords get dovecot-keywords letters."""
    inbox = _inbox(tmp_path / "m")
    uid = inbox.append(MSG)
    inbox.set_flags(uid, ["\\Seen", "\\Answered", "\\Flagged", "\\Draft", "work"], FlagMode.ADD)
    name = os.listdir(tmp_path / "m" / "cur")[0]
    assert name.endswith(":2,DFRSa")
    assert ",S=" in name and ",W=" in name
    assert (tmp_path / "m" / "dovecot-keywords").read_text() == "0 work\n"
    inbox.set_flags(uid, ["\\Deleted", "$Forwarded"], FlagMode.REPLACE)
    assert os.listdir(tmp_path / "m" / "cur")[0].endswith(":2,PT")


def test_external_flag_change_noticed(tmp_path: Path) -> None:
    """A rename by another program (mutt marking a message read) is read
    back as a flag change, with a new modseq and a notice."""
    root = tmp_path / "m"
    inbox = _inbox(root)
    inbox.messages()
    _drop(root, "cur", "1.a.host:2,")
    (msg,) = inbox.refresh()
    heard: list[FolderChange] = []
    inbox.add_listener(heard.append)
    os.rename(root / "cur" / "1.a.host:2,", root / "cur" / "1.a.host:2,FS")
    inbox.refresh()
    info = inbox.get(msg.uid)
    assert info.flags == {"\\Flagged", "\\Seen"}
    assert info.modseq > msg.modseq
    assert [(c.kind, c.uids) for c in heard] == [("flags", (msg.uid,))]


def test_uids_survive_reopen(tmp_path: Path) -> None:
    """A new store (a restart) sees the same UIDs, UIDVALIDITY, flags and modseqs."""
    root = tmp_path / "m"
    inbox = _inbox(root)
    uids = [inbox.append(MSG + b"%d\n" % i) for i in range(5)]
    inbox.set_flags(uids[2], ["\\Seen"], FlagMode.ADD)
    inbox.expunge([uids[4]])
    before = inbox.messages()
    again = _inbox(root)
    assert again.messages() == before
    assert again.uidvalidity == inbox.uidvalidity
    assert again.uidnext == uids[4] + 1
    assert again.read(uids[3]) == MSG + b"3\n"


def _appender(root: str, count: int) -> None:
    folder = _store().open_user("u", root).folder("INBOX")
    for i in range(count):
        folder.append(b"Subject: %d\n\n%d\n" % (os.getpid(), i))


def test_concurrent_processes_never_share_a_uid(tmp_path: Path) -> None:
    """Two processes appending at once and a third delivering to new/ get
    distinct UIDs for every message and lose none."""
    root = tmp_path / "m"
    inbox = _inbox(root)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_appender, args=(str(root), 100)) for _ in range(2)]
    for p in procs:
        p.start()
    for i in range(30):
        _drop(root, "new", f"17.{i}.other")
        inbox.refresh()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    inbox.refresh()
    msgs = inbox.messages()
    assert len(msgs) == 230
    assert len({m.uid for m in msgs}) == 230
    assert len(os.listdir(root / "cur")) + len(os.listdir(root / "new")) == 230
    assert _inbox(root).messages() == msgs


def test_index_log_is_appended_not_rewritten(tmp_path: Path) -> None:
    """Appending a message adds one line to the index; it is compacted only
    when dead lines outnumber live ones."""
    root = tmp_path / "m"
    inbox = _inbox(root)
    inbox.append(MSG)
    size = (root / INDEX_NAME).stat().st_size
    inode = (root / INDEX_NAME).stat().st_ino
    inbox.append(MSG)
    after = (root / INDEX_NAME).read_bytes()
    assert len(after) > size and (root / INDEX_NAME).stat().st_ino == inode
    assert after.count(b"\nA\t") == 2


def test_compaction_keeps_everything(tmp_path: Path) -> None:
    """After many flag changes the index is compacted, and a reopen still
    has every UID, flag and the highest modseq."""
    root = tmp_path / "m"
    inbox = _inbox(root)
    uid = inbox.append(MSG)
    inode = (root / INDEX_NAME).stat().st_ino
    for i in range(1100):
        inbox.set_flags(uid, ["\\Seen"], FlagMode.ADD if i % 2 == 0 else FlagMode.REMOVE)
    assert (root / INDEX_NAME).stat().st_ino != inode
    assert (root / INDEX_NAME).read_bytes().count(b"\n") < 1000
    again = _inbox(root)
    assert again.get(uid) == inbox.get(uid)
    assert again.highest_modseq == inbox.highest_modseq


def test_crash_between_file_and_index(tmp_path: Path) -> None:
    """A message file that reached cur/ without its index line (a crash) is
    numbered on the next refresh with a fresh UID, never a used one."""
    root = tmp_path / "m"
    inbox = _inbox(root)
    first = inbox.append(MSG)
    inbox.expunge([first])
    _drop(root, "cur", "1700000001.crash.host,S=99,W=1:2,S", b"x\n\n")
    again = _inbox(root)
    (found,) = again.messages()
    assert found.uid == first + 1
    assert found.flags == {"\\Seen"}
    assert (found.size, found.rfc822_size) == (3, 5)  # bogus S=/W= hints not trusted


def test_torn_last_line_is_cut(tmp_path: Path) -> None:
    """A half-written last index line is dropped and its message renumbered
    above every UID ever handed out; UIDVALIDITY stays."""
    root = tmp_path / "m"
    inbox = _inbox(root)
    uid = inbox.append(MSG)
    with open(root / INDEX_NAME, "ab") as f:
        f.write(b"A\t7\t9\tcur/x")
    again = _inbox(root)
    assert [m.uid for m in again.messages()] == [uid]
    assert again.uidvalidity == inbox.uidvalidity
    assert again.append(MSG) == uid + 1


def test_corrupt_index_renumbers_under_new_uidvalidity(tmp_path: Path) -> None:
    """A damaged index is set aside; every message is kept, numbered under a
    new, larger UIDVALIDITY, and listeners are told."""
    root = tmp_path / "m"
    inbox = _inbox(root)
    for i in range(3):
        inbox.append(MSG + b"%d\n" % i, ["\\Seen"] if i == 1 else [])
    validity = inbox.uidvalidity
    data = (root / INDEX_NAME).read_bytes().replace(b"\nA\t2\t", b"\nQ\tjunk\t")
    (root / INDEX_NAME).write_bytes(data)
    again = _inbox(root)
    msgs = again.messages()
    assert again.uidvalidity > validity
    assert len(msgs) == 3
    assert sorted(again.read(m.uid) for m in msgs) == [MSG + b"%d\n" % i for i in range(3)]
    assert sum(1 for m in msgs if "\\Seen" in m.flags) == 1
    assert (root / (INDEX_NAME + ".corrupt")).exists()


def test_missing_index_renumbers_existing_maildir(tmp_path: Path) -> None:
    """An existing Maildir without our index (written by Postfix/Dovecot) is
    numbered in file-name order."""
    root = _two_foreign_files(tmp_path)
    inbox = _inbox(root)
    assert [inbox.read(m.uid) for m in inbox.messages()] == [b"one\n", b"two\n"]
    assert [m.recent for m in inbox.messages()] == [True, False]


def test_rescan_numbers_new_files_and_tells_listeners(tmp_path: Path) -> None:
    """rescan (SELECT's scan of a folder changed on disk) numbers the files
    other programs left, in arrival order, tells the listeners as refresh
    does, and returns nothing (no list of the new records is built); the
    status counts them in its one pass."""
    root = _two_foreign_files(tmp_path)
    inbox = _inbox(root)
    heard: list[FolderChange] = []
    inbox.add_listener(heard.append)
    assert inbox.changed_on_disk()
    assert inbox.rescan() is None
    assert [inbox.read(m.uid) for m in inbox.messages()] == [b"one\n", b"two\n"]
    assert [(c.kind, c.uids) for c in heard] == [("append", (1, 2))]
    status = inbox.status()
    # RFC822.SIZE counts CRLF line ends: 5 + 5.
    assert (status.messages, status.recent, status.unseen, status.size) == (2, 1, 1, 10)
    assert (status.uidnext, status.highest_modseq) == (3, heard[0].modseq)
    _drop(root, "new", "3.c.host", b"three\n")
    inbox.rescan()
    assert heard[-1].kind == "append" and heard[-1].uids == (3,)
    assert inbox.status().messages == 3


def test_recreated_folder_gets_new_uidvalidity(tmp_path: Path) -> None:
    """A folder deleted and created again never gets its old UIDVALIDITY."""
    mbox = _store().open_user("u", str(tmp_path / "m"))
    old = mbox.create_folder("X").uidvalidity
    mbox.delete_folder("X")
    assert mbox.create_folder("X").uidvalidity > old


def test_untrusted_file_names_ignored(tmp_path: Path) -> None:
    """Dot files, symbolic links and directories in cur/ are never taken as
    messages, so no name leads outside the folder."""
    root = tmp_path / "m"
    inbox = _inbox(root)
    secret = tmp_path / "secret"
    secret.write_bytes(b"password\n")
    os.symlink(secret, root / "cur" / "1.link.host:2,")
    os.symlink("../../secret", root / "new" / "2.rel.host")
    (root / "cur" / "3.dir.host:2,").mkdir()
    _drop(root, "cur", ".hidden")
    _drop(root, "new", "4.ok.host")
    found = inbox.refresh()
    assert [inbox.read(m.uid) for m in found] == [MSG]


def test_other_process_changes_reach_listeners(tmp_path: Path) -> None:
    """A change made by another store (another process) is seen through
    changed_on_disk and refresh, and told to this store's listeners."""
    root = tmp_path / "m"
    mine, theirs = _inbox(root), _inbox(root)
    uid = mine.append(MSG)
    theirs.messages()
    heard: list[FolderChange] = []
    mine.add_listener(heard.append)
    theirs.set_flags(uid, ["\\Seen"], FlagMode.ADD)
    new_uid = theirs.append(MSG)
    theirs.expunge([uid])
    assert mine.changed_on_disk()
    mine.refresh()
    assert [m.uid for m in mine.messages()] == [new_uid]
    kinds = {c.kind: c.uids for c in heard}
    assert kinds["append"] == (new_uid,)
    assert kinds["expunge"] == (uid,)


def test_header_cache_persists(tmp_path: Path) -> None:
    """Header blocks and MIME structures are cached in pymta-cache and served
    from it after a restart, without reading the message file again."""
    root = tmp_path / "m"
    inbox = _inbox(root)
    uid = inbox.append(MSG)
    assert inbox.header_bytes(uid) == b"From: a@example.org\nSubject: hi\n\n"
    tree = inbox.mime_structure(uid)
    # Messages never change, so the cache is trusted: prove it is used by
    # changing the file behind the store's back.
    (name,) = os.listdir(root / "new")  # appended mail is \Recent: in new/
    (root / "new" / name).write_bytes(b"Subject: other\nContent-Type: image/gif\n\n\n")
    again = _inbox(root)
    assert again.header_bytes(uid) == b"From: a@example.org\nSubject: hi\n\n"
    assert again.mime_structure(uid) == tree
    (root / "pymta-cache").write_bytes(b"garbage")
    assert _inbox(root).header_bytes(uid) == b"Subject: other\nContent-Type: image/gif\n\n"


@pytest.mark.parametrize("name", ["A.B", "x/", ""])
def test_folder_lookup_of_bad_names(tmp_path: Path, name: str) -> None:
    """Looking up an invalid or missing name is NoSuchFolder, not an error
    deeper down."""
    from pymta.mailstore.interface import MailStoreError

    mbox = _store().open_user("u", str(tmp_path / "m"))
    with pytest.raises(MailStoreError):
        mbox.folder(name)


def test_open_skips_scan_when_directories_unchanged(tmp_path: Path) -> None:
    """A process opening a folder trusts the last complete scan while new/
    and cur/ keep the mtimes it recorded, and scans again once they change."""
    root = tmp_path / "m"
    inbox = _inbox(root)
    inbox.append(MSG)

    def age_dirs() -> None:
        for sub in ("new", "cur"):
            os.utime(root / sub, (1000, 1000))

    age_dirs()
    assert inbox.changed_on_disk()
    inbox.refresh()  # a complete scan, recorded with the old mtimes
    assert not inbox.changed_on_disk()
    _drop(root, "new", "5.hidden.host")
    age_dirs()  # as if the directory had not changed
    assert [m.uid for m in _inbox(root).messages()] == [1]
    os.utime(root / "new", (2000, 2000))
    assert [m.uid for m in _inbox(root).messages()] == [1, 2]


def test_index_with_escaping_file_name_is_corrupt(tmp_path: Path) -> None:
    """An index record whose file name leaves new/ or cur/ is treated as
    corruption (renumbering), never opened."""
    root = tmp_path / "m"
    inbox = _inbox(root)
    inbox.append(MSG)
    validity = inbox.uidvalidity
    with open(root / INDEX_NAME, "a") as f:
        f.write("A\t9\t99\tcur/../../../etc/passwd\t1\t1\t0.0\t\t\n")
    again = _inbox(root)
    assert again.uidvalidity > validity
    assert [again.read(m.uid) for m in again.messages()] == [MSG]


def test_dovecot_uidlist_imported(tmp_path: Path) -> None:
    """A Maildir Dovecot served keeps its UIDVALIDITY and UIDs; messages
    Dovecot had not numbered get UIDs from its UIDNEXT on."""
    root = tmp_path / "m"
    for d in ("cur", "new", "tmp"):
        (root / d).mkdir(parents=True)
    _drop(root, "cur", "100.a.host,S=5:2,S", b"one\n")
    _drop(root, "cur", "200.b.host:2,", b"two\n")
    _drop(root, "new", "300.c.host", b"three\n")
    (root / "dovecot-uidlist").write_text(
        "3 V1275660208 N25 G3085f01b7f11094c501100008c4a11c1\n"
        "7 :200.b.host\n"
        "12 W6 :100.a.host,S=5\n"
    )
    inbox = _inbox(root)
    assert inbox.uidvalidity == 1275660208
    got = [(m.uid, inbox.read(m.uid)) for m in inbox.messages()]
    assert got == [(7, b"two\n"), (12, b"one\n"), (25, b"three\n")]
    assert inbox.uidnext == 26


def test_bad_dovecot_uidlist_ignored(tmp_path: Path) -> None:
    """A dovecot-uidlist with duplicate UIDs is not trusted: the folder is
    numbered afresh."""
    root = tmp_path / "m"
    for d in ("cur", "new", "tmp"):
        (root / d).mkdir(parents=True)
    _drop(root, "cur", "1.a.host:2,", b"one\n")
    _drop(root, "cur", "2.b.host:2,", b"two\n")
    (root / "dovecot-uidlist").write_text("3 V5 N10\n3 :1.a.host\n3 :2.b.host\n")
    inbox = _inbox(root)
    assert inbox.uidvalidity != 5
    assert [m.uid for m in inbox.messages()] == [1, 2]


def test_tombstones_do_not_force_compaction_every_time(tmp_path: Path) -> None:
    """Many expunges leave tombstones for QRESYNC; a later append still
    just appends one line instead of rewriting the index."""
    root = tmp_path / "m"
    inbox = _inbox(root)
    uids = [inbox.append(MSG) for _ in range(1200)]
    inbox.expunge(uids[:-1])
    mark = inbox.highest_modseq
    inode = (root / INDEX_NAME).stat().st_ino
    inbox.append(MSG)
    inbox.append(MSG)
    assert (root / INDEX_NAME).stat().st_ino == inode
    assert inbox.expunged_since(mark - 1) == uids[:-1]
    again = _inbox(root)
    assert again.expunged_since(mark - 1) == uids[:-1]
    assert [m.uid for m in again.messages()] == [uids[-1], uids[-1] + 1, uids[-1] + 2]


def _settled_inbox(root: Path) -> tuple[MaildirFolder, int]:
    """An INBOX holding one message (its UID returned), scanned once its
    directories had been quiet long enough for their mtimes to be trusted."""
    inbox = _inbox(root)
    uid = inbox.append(MSG)
    for sub in ("new", "cur"):
        os.utime(root / sub, (1000, 1000))
    inbox.refresh()
    return inbox, uid


def test_own_changes_need_no_rescan(tmp_path: Path) -> None:
    """After a store's own append or flag change the folder does not count
    as changed on disk (no listing of a big folder after each STORE), while
    a delivery by another program still does."""
    root = tmp_path / "m"
    inbox, uid = _settled_inbox(root)
    assert not inbox.changed_on_disk()
    inbox.set_flags(uid, ["\\Seen"], FlagMode.ADD)
    inbox.append(MSG)
    inbox.expunge([uid])
    assert not inbox.changed_on_disk()
    _drop(root, "new", "9.other.host")
    assert inbox.changed_on_disk()
    assert [m.filename for m in inbox.refresh()] == ["new/9.other.host"]


def test_other_process_changes_need_no_rescan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process's flag change, append and expunge reach this one
    through the index, with the stamp it wrote: no listing of the folder
    (with several reactor processes, a user's sessions land on any of
    them). A delivery by another program still makes it list."""
    root = tmp_path / "m"
    mine, uid = _settled_inbox(root)
    theirs = _inbox(root)
    theirs.messages()
    listings: list[str] = []
    real_list = MaildirFolder._list

    def counted(folder: MaildirFolder) -> dict[str, tuple[str, str]]:
        listings.append(folder.path)
        return real_list(folder)

    monkeypatch.setattr(MaildirFolder, "_list", counted)
    theirs.set_flags(uid, ["\\Flagged"], FlagMode.ADD)
    new_uid = theirs.append(MSG)
    assert mine.changed_on_disk()
    mine.refresh()
    assert mine.get(uid).flags == {"\\Flagged"}
    theirs.expunge([uid])
    mine.refresh()
    assert [m.uid for m in mine.messages()] == [new_uid]
    assert listings == []
    assert not mine.changed_on_disk()
    _drop(root, "new", "9.other.host")
    assert [m.filename for m in mine.refresh()] == ["new/9.other.host"]
    assert listings != []


def test_cache_compacted_after_expunges(tmp_path: Path) -> None:
    """Cache entries of expunged messages are dropped once they outnumber
    the rest; the survivors' entries stay valid."""
    root = tmp_path / "m"
    inbox = _inbox(root)
    uids = [inbox.append(b"Subject: %d\n\nx\n" % i) for i in range(1100)]
    for uid in uids:
        inbox.header_bytes(uid)
    big = (root / "pymta-cache").stat().st_size
    inbox.expunge(uids[1:])
    assert (root / "pymta-cache").stat().st_size < big / 100
    assert inbox.header_bytes(uids[0]) == b"Subject: 0\n\n"
    assert _inbox(root).header_bytes(uids[0]) == b"Subject: 0\n\n"


def test_defaults_added_to_maildir_made_by_delivery(tmp_path: Path) -> None:
    """A Maildir the delivery agent created before the first login gets the
    special-use folders at the first open (an existing Sent gets its
    attribute), and only once: a folder the user deleted stays deleted."""
    root = tmp_path / "m"
    for d in ("cur", "new", "tmp", ".Sent/cur", ".Sent/new", ".Sent/tmp"):
        (root / d).mkdir(parents=True)
    _drop(root, "new", "1.delivered.host")
    mbox = _store().open_user("u", str(root))
    uses = {f.name: f.special_use for f in mbox.list_folders()}
    assert uses["Sent"] == "\\Sent" and uses["Trash"] == "\\Trash"
    assert "Trash" in mbox.subscriptions()
    assert len(mbox.folder("INBOX").messages()) == 1
    mbox.delete_folder("Trash")
    again = _store().open_user("u", str(root))
    assert "Trash" not in [f.name for f in again.list_folders()]


def test_fsync_mode_works(tmp_path: Path) -> None:
    """The production mode (fsync=True) stores, renumbers and renames like
    the scratch mode: every durable path runs."""
    clock = Clock()
    clock.advance(1_700_000_000)
    mbox = MaildirStore(clock, hostname="h", fsync=True).open_user("u", str(tmp_path / "m"))
    inbox = mbox.folder("INBOX")
    uid = inbox.append(MSG)
    inbox.set_flags(uid, ["\\Seen"], FlagMode.ADD)
    mbox.create_folder("A/B")
    mbox.rename_folder("A", "C")
    assert inbox.copy([uid], mbox.folder("C/B")) == [(uid, 1)]
    assert mbox.folder("C/B").read(1) == MSG


def test_changes_seen_across_another_process_compaction(tmp_path: Path) -> None:
    """When another process compacts the index, this one still hears of the
    messages it appended and expunged before compacting."""
    root = tmp_path / "m"
    mine, theirs = _inbox(root), _inbox(root)
    gone = mine.append(MSG)
    theirs.messages()
    heard: list[FolderChange] = []
    mine.add_listener(heard.append)
    for i in range(1100):  # enough flag changes to make theirs compact
        theirs.set_flags(gone, ["\\Seen"], FlagMode.ADD if i % 2 else FlagMode.REMOVE)
    new = theirs.append(MSG)
    theirs.expunge([gone])
    mine.refresh()
    kinds = {c.kind: c.uids for c in heard}
    assert kinds["append"] == (new,)
    assert kinds["expunge"] == (gone,)


def test_failing_listener_does_not_break_others(tmp_path: Path) -> None:
    """A listener that raises is logged; the change stands and the other
    listeners still hear of it."""
    inbox = _inbox(tmp_path / "m")
    heard: list[FolderChange] = []

    def broken(change: FolderChange) -> None:
        raise RuntimeError("session bug")

    inbox.add_listener(broken)
    inbox.add_listener(heard.append)
    uid = inbox.append(MSG)
    assert [c.uids for c in heard] == [(uid,)]
    assert inbox.read(uid) == MSG


def test_copy_follows_a_foreign_rename(tmp_path: Path) -> None:
    """COPY of a message another program has just renamed (a flag change in
    mutt) still copies it, with the new flags."""
    root = tmp_path / "m"
    mbox = _store().open_user("u", str(root))
    inbox = mbox.folder("INBOX")
    uid = inbox.append(MSG)
    (name,) = os.listdir(root / "new")  # appended mail is \Recent: in new/
    os.rename(root / "new" / name, root / "cur" / (name.split(":")[0] + ":2,F"))
    pairs = inbox.copy([uid], mbox.folder("Archive"))
    assert len(pairs) == 1
    archive = mbox.folder("Archive")
    assert archive.read(pairs[0][1]) == MSG
    assert archive.get(pairs[0][1]).flags == {"\\Flagged"}
    assert os.listdir(root / ".Archive" / "tmp") == []


def test_stale_tmp_files_removed_on_open(tmp_path: Path) -> None:
    """Files a dead writer left in tmp/ over 36 hours ago are removed when a
    process opens the folder (the store's default cleaner, run at once
    with a plain clock)."""
    root = tmp_path / "m"
    _inbox(root).append(MSG)
    _drop(root, "tmp", "old.host")
    clock = Clock()
    clock.advance(time.time() + 37 * 3600)
    store = MaildirStore(clock, hostname="test", fsync=False)
    store.open_user("u", str(root)).folder("INBOX").messages()
    assert os.listdir(root / "tmp") == []


def test_python_mailbox_module_reads_our_maildir(tmp_path: Path) -> None:
    """Another Maildir reader (Python's mailbox.Maildir, as mutt would) sees
    our messages, flags and folders; a message it adds is numbered by us."""
    import mailbox

    root = tmp_path / "m"
    mbox = _store().open_user("u", str(root))
    inbox = mbox.folder("INBOX")
    uid = inbox.append(MSG)
    inbox.set_flags(uid, ["\\Seen", "\\Answered"], FlagMode.ADD)
    mbox.list_folders()  # a client lists folders: the special-use ones are made
    theirs = mailbox.Maildir(str(root), create=False)
    (key,) = theirs.keys()
    assert theirs.get_bytes(key) == MSG
    assert theirs.get_message(key).get_flags() == "RS"
    assert {"Sent", "Trash", "Drafts", "Junk", "Archive"} <= set(theirs.list_folders())
    theirs.add(mailbox.MaildirMessage(b"Subject: from mailbox\n\nhi\n"))
    (added,) = inbox.refresh()
    assert inbox.header_bytes(added.uid) == b"Subject: from mailbox\n\n"


def test_new_mail_is_numbered_in_arrival_order_across_microsecond_widths() -> None:
    """Maildir names of one second compare their microseconds as numbers:
    M99999 arrived before M123456, so it gets the lower UID (as text it
    would sort after it)."""
    from pymta.mailstore.names import arrival_key

    names = ["1700000000.M123456P1Q2.host", "1700000000.M99999P1Q1.host", "1699999999.M5P1Q9.h"]
    assert sorted(names, key=arrival_key) == [names[2], names[1], names[0]]


def _unindexed_inbox(root: Path, names: list[str]) -> MaildirFolder:
    """An INBOX whose cur/ holds ``names`` (MSG each), never opened by pymta,
    its directories quiet long enough for their mtimes to be trusted."""
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name in names:
        _drop(root, "cur", name)
    for sub in ("new", "cur"):
        os.utime(root / sub, (1000, 1000))
    return _inbox(root)


def test_first_scan_takes_sizes_from_names_without_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder's first scan opens no message whose name carries ``S=`` (the
    real size) and ``W=``: RFC822.SIZE is the name's W=, INTERNALDATE the
    file's mtime (one lstat). A name without them, or whose S= is not the
    file's size, is read to count its lines."""
    size = len(MSG)
    root = tmp_path / "m"
    inbox = _unindexed_inbox(
        root,
        [f"1.M1P1.h,S={size},W=999:2,S", "2.M1P1.h:2,", f"3.M1P1.h,S={size + 1},W=7:2,"],
    )
    os.utime(root / "cur" / f"1.M1P1.h,S={size},W=999:2,S", (5000, 5000))
    opened: list[str] = []
    real_open = os.open

    def counted(path: str, *args: object, **kwargs: object) -> int:
        if "/cur/" in str(path) or "/new/" in str(path):
            opened.append(os.path.basename(str(path)))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", counted)
    inbox.refresh()
    infos = inbox.messages()
    real_size = size + MSG.count(b"\n")
    assert [(m.uid, m.rfc822_size) for m in infos] == [(1, 999), (2, real_size), (3, real_size)]
    assert infos[0].internal_date == 5000 and infos[0].flags == {"\\Seen"}
    assert sorted(opened) == ["2.M1P1.h:2,", f"3.M1P1.h,S={size + 1},W=7:2,"]


def _locks_free_to_another_thread(inbox: Any, root: Path) -> tuple[bool, bool]:
    """Whether another thread could take the folder's mutex, and the
    folder's flock, at this moment."""
    import fcntl
    import threading

    from pymta.mailstore.index import LOCK_NAME

    got: list[bool] = []

    def try_mutex() -> None:
        ok = inbox._mutex.acquire(timeout=5)
        got.append(ok)
        if ok:
            inbox._mutex.release()

    other = threading.Thread(target=try_mutex)
    other.start()
    other.join()
    fd = os.open(str(root / LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        free = True
    except BlockingIOError:
        free = False
    finally:
        os.close(fd)
    return got[0], free


def test_first_scan_lists_and_measures_outside_the_folder_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first scan of a big unindexed folder lists and measures its
    files without the folder's mutex or the index's flock (another thread
    or process gets them meanwhile), then numbers them under the lock from
    that same listing: the directories are listed once. (Names without
    sizes: only those are measured.)"""

    from pymta.mailstore import folder_scan

    root = tmp_path / "m"
    names = [f"{i}.M{i}P1.h:2," for i in range(1, 6)]
    inbox = _unindexed_inbox(root, names)
    held: list[tuple[bool, bool]] = []
    real_measure = folder_scan.measure_at

    def measure(dir_fd: int, path: str, sub: str, name: str) -> object:
        held.append(_locks_free_to_another_thread(inbox, root))
        return real_measure(dir_fd, path, sub, name)

    listings: list[str] = []
    real_list = MaildirFolder._list

    def counted(folder: MaildirFolder) -> dict[str, tuple[str, str]]:
        listings.append(folder.path)
        return real_list(folder)

    monkeypatch.setattr(folder_scan, "measure_at", measure)
    monkeypatch.setattr(MaildirFolder, "_list", counted)
    appended = inbox.refresh()
    assert [m.uid for m in appended] == [1, 2, 3, 4, 5]
    assert [m.filename for m in appended] == [f"cur/{n}" for n in names]
    assert held == [(True, True)] * 5
    assert len(listings) == 1


def test_first_scan_orders_new_files_outside_the_folder_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first scan puts the files it measured in arrival order before it
    takes the folder's lock (only numbering them is left under the lock),
    and numbers them in that order: ``<secs>.M<usecs>`` compared as numbers
    (M99999 before M123456 of the same second), whichever directory holds
    them."""

    from pymta.mailstore import folder_scan

    root = tmp_path / "m"
    names = [
        f"7.M123456P1.h,S={len(MSG)},W={len(MSG) + 3}:2,",
        f"7.M99999P1.h,S={len(MSG)},W={len(MSG) + 3}:2,S",
        f"6.M5P1.h,S={len(MSG)},W={len(MSG) + 3}:2,",
    ]
    inbox = _unindexed_inbox(root, names)
    _drop(root, "new", "8.M1P1.h")
    for sub in ("new", "cur"):
        os.utime(root / sub, (1000, 1000))
    held: list[tuple[bool, bool]] = []
    real_key = folder_scan.sized_name_match

    def key(name: str) -> Any:
        # Each name's arrival key is taken here (or, for a name without
        # both sizes, by arrival_key right after).
        held.append(_locks_free_to_another_thread(inbox, root))
        return real_key(name)

    monkeypatch.setattr(folder_scan, "sized_name_match", key)
    appended = inbox.refresh()
    assert [(m.uid, m.filename) for m in appended] == [
        (1, f"cur/{names[2]}"),
        (2, f"cur/{names[1]}"),
        (3, f"cur/{names[0]}"),
        (4, "new/8.M1P1.h"),
    ]
    assert [m.recent for m in appended] == [False, False, False, True]
    assert appended[1].flags == {"\\Seen"}
    assert held == [(True, True)] * 4


def test_first_scan_image_is_what_the_file_says(tmp_path: Path) -> None:
    """The records a first scan keeps in memory (flags, keywords from
    dovecot-keywords letters, \\Recent for new/, sizes, dates) are exactly
    what another process reading the index file gets."""
    from pymta.mailstore.index import UidIndex

    root = tmp_path / "m"
    names = [
        f"1.M1P1.h,S={len(MSG)},W={len(MSG) + 3}:2,FS",
        f"2.M1P1.h,S={len(MSG)},W={len(MSG) + 3}:2,ab",
        "3.M1P1.h:2,T",
    ]
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "dovecot-keywords").write_text("0 $Junk\n1 work\n")
    for name in names:
        _drop(root, "cur", name)
    _drop(root, "new", "4.M1P1.h")
    for sub in ("new", "cur"):
        os.utime(root / sub, (1000, 1000))
    inbox = _inbox(root)
    mine = {m.uid: m for m in inbox.messages()}
    reader = UidIndex(str(root))
    with reader.locked():
        reader.sync()
    assert reader.records == mine
    assert reader.by_base == inbox._index.by_base
    assert (reader.uidnext, reader.highest_modseq) == (inbox.uidnext, inbox.highest_modseq)
    assert mine[2].keywords == {"$Junk", "work"} and mine[1].flags == {"\\Flagged", "\\Seen"}
    assert [m.recent for m in mine.values()] == [False, False, False, True]


def test_rescan_after_a_delivery_lists_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rescan of an indexed folder just after a delivery (its directory's
    mtime too recent to trust) lists the folder once, under the lock: a
    listing made before the lock could not be reused then."""
    root = tmp_path / "m"
    inbox, _ = _settled_inbox(root)
    _drop(root, "new", "9.other.host")
    listings: list[str] = []
    real_list = MaildirFolder._list

    def counted(folder: MaildirFolder) -> dict[str, tuple[str, str]]:
        listings.append(folder.path)
        return real_list(folder)

    monkeypatch.setattr(MaildirFolder, "_list", counted)
    assert [m.filename for m in inbox.refresh()] == ["new/9.other.host"]
    assert len(listings) == 1
