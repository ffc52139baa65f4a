"""The selected mailbox's untagged updates (EXISTS, RECENT, FETCH FLAGS)
read the store through its asynchronous API: with work of the folder
waiting in the Maildir store's "threads" (a runner the test drives), a
command's tagged response waits for the records, and the updates still
come before it; IDLE pushes them once the store answered; \\Recent of a new
message goes to one session only; a flag change heard while its record
was being read is read again, never told stale."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock

from pymta.imap.view import SelectedView
from pymta.mailstore.asyncstore import IAsyncFolder
from pymta.mailstore.interface import FlagMode, FolderChange, IFolder
from pymta.mailstore.maildir import MaildirStore
from pymta.mailstore.memory import MemoryStore
from tests.test_imap_harness import Session, World
from tests.test_imap_prefetch import QueuedRunner

MSG = b"From: a@example.org\nSubject: hi\n\nbody\n"


def open_sessions(tmp_path: Path, count: int) -> tuple[World, list[Session], QueuedRunner]:
    runner = QueuedRunner()
    store = MaildirStore(Clock(), "host", fsync=False, run_in_thread=runner)
    world = World(tmp_path, store=store)
    inbox = world.mailbox().folder("INBOX")
    for _ in range(3):
        inbox.append(MSG)
    inbox.claim_recent()
    sessions: list[Session] = []
    for i in range(count):
        s = world.connect()
        s.send(f"a{i} LOGIN alice@example.org secret")
        runner.run_all()
        assert s.read().startswith(b"a%d OK" % i)
        s.send(f"b{i} SELECT INBOX")
        runner.run_all()
        assert b"OK [READ-WRITE]" in s.read()
        sessions.append(s)
    return world, sessions, runner


def busy_folder(world: World, runner: QueuedRunner) -> IAsyncFolder:
    """INBOX's asynchronous face with a rescan waiting in the store's
    threads: every call on the folder made now waits behind it."""
    store = world.store.asynchronous()
    opened: list[IAsyncFolder] = []
    d = store.open_user("alice@example.org", f"{world.root}/alice")
    runner.run_all()
    d.addCallback(lambda mailbox: mailbox.folder("INBOX")).addCallback(opened.append)
    face = opened[0]
    done: list[object] = []
    face.refresh().addBoth(done.append)
    assert not done and len(runner.jobs) == 1
    return face


def test_new_message_updates_wait_for_the_store_and_come_first(tmp_path: Path) -> None:
    """A delivery while the folder's store work waits: CAPABILITY's tagged
    response waits until the store has read the new message's record and
    claimed its \\Recent, then EXISTS and RECENT come before it (they used
    to be read from the synchronous folder at once)."""
    world, (s,), runner = open_sessions(tmp_path, 1)
    busy_folder(world, runner)
    world.mailbox().folder("INBOX").append(MSG)
    answer = s.send("c CAPABILITY")
    assert answer.startswith(b"* CAPABILITY ") and b"EXISTS" not in answer
    assert b"c OK" not in answer
    runner.run_all()
    assert s.read() == b"* 4 EXISTS\r\n* 1 RECENT\r\nc OK Capability completed.\r\n"


def test_recent_goes_to_one_session(tmp_path: Path) -> None:
    """Two read-write sessions hear of one new message while the store's
    work waits: both tell EXISTS, exactly one of them RECENT 1 (the claim
    by UID says which), and the message is \\Recent for it only."""
    world, (s1, s2), runner = open_sessions(tmp_path, 2)
    busy_folder(world, runner)
    world.mailbox().folder("INBOX").append(MSG)
    s1.send("c NOOP")
    s2.send("c NOOP")
    runner.run_all()
    answers = [s1.read(), s2.read()]
    assert all(a.startswith(b"* 4 EXISTS\r\n") for a in answers)
    recent = sorted(a.split(b"\r\n")[1] for a in answers)
    assert recent == [b"* 0 RECENT", b"* 1 RECENT"]
    flags = [s.send("d FETCH 4 FLAGS") for s in (s1, s2)]
    assert sorted(b"\\Recent" in f for f in flags) == [False, True]


def test_idle_pushes_once_the_store_answered(tmp_path: Path) -> None:
    """An idling session hears of a delivery while the folder's store work
    waits: nothing is pushed until the store answered, then EXISTS/RECENT."""
    world, (s,), runner = open_sessions(tmp_path, 1)
    s.send("i IDLE")
    runner.run_all()  # IDLE's check of the folder on disk
    assert s.read() == b"+ idling\r\n"
    busy_folder(world, runner)
    world.mailbox().folder("INBOX").append(MSG)
    assert s.read() == b""
    runner.run_all()
    assert s.read() == b"* 4 EXISTS\r\n* 1 RECENT\r\n"
    assert s.send("DONE") == b"i OK Idle completed.\r\n"


def test_flag_change_heard_while_reading_is_read_again(tmp_path: Path) -> None:
    """Another session's flag change is heard and its record read in the
    store's thread; a second change of the same message comes after that
    read but before its answer reached the session: what is told is the
    flags after the second change, not the first read's."""
    world, (s,), runner = open_sessions(tmp_path, 1)
    inbox = world.mailbox().folder("INBOX")
    busy_folder(world, runner)
    inbox.set_flags(2, ["\\Flagged"], FlagMode.ADD)
    assert s.send("c CAPABILITY").startswith(b"* CAPABILITY ")
    work, d = runner.jobs.pop(0)
    d.callback(work())  # the rescan: the record's read is queued behind it
    work, d = runner.jobs.pop(0)
    records = work()  # read (\Flagged only) ...
    inbox.set_flags(2, ["\\Seen"], FlagMode.ADD)  # ... changed again ...
    d.callback(records)  # ... then the old read arrives
    runner.run_all()
    assert s.read() == (
        b"* 2 FETCH (UID 2 FLAGS (\\Flagged \\Seen))\r\nc OK Capability completed.\r\n"
    )


def test_catenate_url_is_read_in_the_folders_order(tmp_path: Path) -> None:
    """CATENATE reads the message a URL names through the store's
    asynchronous API, after the folder's calls made before it: an expunge
    of that message waiting in the store's threads comes first, so the URL
    names a message gone (NO [BADURL], nothing stored), where a read of the
    synchronous folder would have copied it."""
    world, (s,), runner = open_sessions(tmp_path, 1)
    face = busy_folder(world, runner)
    gone: list[object] = []
    face.expunge([1]).addBoth(gone.append)
    command = b'c APPEND Archive CATENATE (URL "/INBOX/;UID=1" TEXT {5+}\r\nmore\n)\r\n'
    assert s.send(command) == b""
    runner.run_all()
    assert gone == [[1]]
    assert s.read() == b"* 1 EXPUNGE\r\nc NO [BADURL /INBOX/;UID=1] Invalid URL.\r\n"
    archive = world.mailbox().folder("Archive")
    assert archive.messages() == []
    answer = s.send(b'd APPEND Archive CATENATE (URL "/INBOX/;UID=2/;SECTION=HEADER")\r\n')
    assert answer == b""  # the append itself: in the store's threads
    runner.run_all()
    assert s.read().startswith(b"d OK [APPENDUID ")
    assert [archive.read(m.uid) for m in archive.messages()] == [
        b"From: a@example.org\nSubject: hi\n\n"
    ]


def test_metadata_reads_the_mailbox_through_the_store(tmp_path: Path) -> None:
    """SETMETADATA and GETMETADATA learn a mailbox's MAILBOXID from its
    status through the store's asynchronous API: with the folder's work
    waiting in the store's threads both wait (the pipelined GETMETADATA
    behind the SETMETADATA), then are answered in order; a mailbox that
    does not exist is still [NONEXISTENT] at once."""
    world, (s,), runner = open_sessions(tmp_path, 1)
    busy_folder(world, runner)
    command = (
        b'c SETMETADATA INBOX (/private/comment "hi")\r\nd GETMETADATA INBOX /private/comment\r\n'
    )
    assert s.send(command) == b""
    runner.run_all()
    assert s.read() == (
        b"c OK Setmetadata completed.\r\n"
        b'* METADATA "INBOX" ("/private/comment" "hi")\r\n'
        b"d OK Getmetadata completed.\r\n"
    )
    answer = s.send("e GETMETADATA Nowhere /private/comment")
    assert answer == b"e NO [NONEXISTENT] Mailbox doesn't exist.\r\n"


def memory_view() -> tuple[IFolder, SelectedView]:
    """alice's INBOX in a memory store, one message, and a read-write view
    of it opened (the memory store answers at once)."""
    store = MemoryStore(Clock())
    folder = store.open_user("alice", "alice").folder("INBOX")
    folder.append(MSG)
    face = store.asynchronous().open_user("alice", "alice")
    opened: list[IAsyncFolder] = []
    face.addCallback(lambda mailbox: mailbox.folder("INBOX")).addCallback(opened.append)
    view = SelectedView(False, opened[0])
    ensureDeferred(view.open_async())
    return folder, view


def test_append_heard_during_select_is_not_told_twice(tmp_path: Path) -> None:
    """An append heard while SELECT read the folder (its UID already in the
    view) is dropped by the next updates, next to a really new message
    that is told: one EXISTS, for the new one only."""
    folder, view = memory_view()
    assert list(view.uids) == [1]
    view._on_change(FolderChange("append", (1,), folder.status().highest_modseq))
    folder.append(MSG)
    assert view.prepare() is None  # the memory store answers at once
    assert view.updates(True, False, False) == [b"* 2 EXISTS\r\n", b"* 2 RECENT\r\n"]
    assert not view.has_updates()


def test_notify_watches_through_the_store_and_not_after_logout(tmp_path: Path) -> None:
    """NOTIFY SET opens the folders it watches through the store's
    asynchronous API (the look-up waits behind the user's store work): a
    session gone meanwhile leaves no listener on the folder once it is
    done; one that stays has one listener there and hears a delivery to
    it (STATUS pushed)."""
    world, (s,), runner = open_sessions(tmp_path, 1)
    archive = world.mailbox().folder("Archive")
    before = len(archive._listeners)  # type: ignore[attr-defined]
    faces = world.store.asynchronous().open_user("alice@example.org", f"{world.root}/alice")
    mailboxes = []
    faces.addCallback(mailboxes.append)
    runner.run_all()
    assert s.send("n NOTIFY SET (mailboxes Archive (MessageNew))") == b""
    # The folder list and the subscriptions are read in the store's
    # threads; once they are in, another call of the user's waits there, so
    # the look-up of Archive waits behind it.
    work, d = runner.jobs.pop(0)
    d.callback(work())
    work, d = runner.jobs.pop(0)
    mailboxes[0].list_folders()
    d.callback(work())
    assert len(runner.jobs) == 1  # the list_folders: Archive's look-up behind it
    s.drop()
    runner.run_all()
    assert len(archive._listeners) == before  # type: ignore[attr-defined]

    s2 = world.connect()
    s2.send("a LOGIN alice@example.org secret")
    runner.run_all()
    s2.read()
    s2.send("n NOTIFY SET (mailboxes Archive (MessageNew))")
    runner.run_all()
    assert s2.read() == b"n OK NOTIFY completed.\r\n"
    assert len(archive._listeners) == before + 1  # type: ignore[attr-defined]
    archive.append(MSG)
    world.clock.advance(0)
    runner.run_all()  # STATUS of a folder changed on disk: the store's threads
    world.clock.advance(0)
    assert s2.read().startswith(b'* STATUS "Archive" (MESSAGES 1 UIDNEXT 2')


def test_own_store_after_a_read_record_is_never_told_stale(tmp_path: Path) -> None:
    """Another session's flag change is read (prepare) but not yet told;
    then this session's own STORE changes the same message (muted: it
    answers with its own FETCH and the new MODSEQ). The next updates must
    not tell the record read before the STORE: its MODSEQ would go
    backwards (imaptest's stress: "MODSEQ dropped"). It is read again and
    told with the current flags and MODSEQ."""
    folder, view = memory_view()
    folder.set_flags(1, ["\\Flagged"], FlagMode.ADD)  # another session's change
    assert view.prepare() is None  # read (the memory store answers at once)
    view.mute([1])
    folder.set_flags(1, ["\\Seen"], FlagMode.ADD)  # this session's STORE
    view.mute(None)
    current = folder.get(1).modseq
    assert view.prepare() is None
    assert view.updates(True, False, True) == [
        b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent \\Seen) MODSEQ (%d))\r\n" % current
    ]
