"""NOTIFY (RFC 5465) over StringTransport: the grammar and its refusals, the
initial STATUS, unsolicited STATUS / EXISTS / FETCH / EXPUNGE / LIST between
commands, and NOTIFY NONE."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from pymta.imap import notify
from pymta.imap.protocol import BASE_CAPABILITIES
from pymta.mailstore.interface import FlagMode, IWatchedMailbox
from pymta.mailstore.maildir import MaildirStore
from tests.test_imap_harness import Session, World
from tests.test_imap_prefetch import QueuedRunner

MESSAGE = b"Subject: hello\r\n\r\nbody\r\n"


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path)
    mailbox = w.mailbox()
    mailbox.create_folder("Other")
    mailbox.create_folder("Lists/a")
    mailbox.folder("Other").append(MESSAGE, [], 1_700_000_000.0)
    inbox = mailbox.folder("INBOX")
    inbox.append(MESSAGE, [], 1_700_000_000.0)
    inbox.claim_recent()
    return w


def session(world: World, select: bool = True) -> Session:
    s = world.connect()
    s.login()
    if select:
        s.select()
    return s


def deliver(world: World, name: str) -> None:
    """Mail arriving from outside the sessions (the delivery agent)."""
    world.mailbox().folder(name).append(MESSAGE, [], 1_700_000_100.0)


def unsolicited(world: World, s: Session) -> list[bytes]:
    """What the server sent on its own after this reactor turn."""
    world.clock.advance(0)
    return s.read().split(b"\r\n")[:-1]


def test_capability_is_announced() -> None:
    """NOTIFY is announced."""
    assert "NOTIFY" in BASE_CAPABILITIES


def test_set_status_sends_status_of_watched_mailboxes(world: World) -> None:
    """NOTIFY SET STATUS sends the STATUS of each non-selected mailbox its
    message events cover before the OK; without STATUS nothing is sent."""
    s = session(world)
    assert s.lines("n NOTIFY SET STATUS (mailboxes (Other INBOX) (MessageNew MessageExpunge))") == [
        b'* STATUS "Other" (MESSAGES 1 UIDNEXT 2 UIDVALIDITY %d UNSEEN 1)'
        % world.mailbox().folder("Other").uidvalidity,
        b"n OK NOTIFY completed.",
    ]
    assert s.lines("n2 NOTIFY SET (mailboxes Other (MessageNew MessageExpunge))") == [
        b"n2 OK NOTIFY completed."
    ]
    line = s.lines("n3 NOTIFY SET STATUS (mailboxes Other (FlagChange))")[0]
    assert line.endswith(b" HIGHESTMODSEQ 2)")


def test_new_mail_elsewhere_is_told_between_commands(world: World) -> None:
    """Mail delivered to a watched mailbox is announced as STATUS with no
    command in progress; one STATUS for several changes in one turn."""
    s = session(world)
    s.lines("n NOTIFY SET (personal (MessageNew MessageExpunge FlagChange))")
    deliver(world, "Other")
    deliver(world, "Other")
    assert unsolicited(world, s) == [b'* STATUS "Other" (MESSAGES 3 UIDNEXT 4 UNSEEN 3)']
    world.mailbox().folder("Lists/a").append(MESSAGE, [], 1_700_000_100.0)
    assert unsolicited(world, s) == [b'* STATUS "Lists/a" (MESSAGES 1 UIDNEXT 2 UNSEEN 1)']


def test_event_filtering_by_mailbox_and_kind(world: World) -> None:
    """Only the events asked for, of the mailboxes asked for, are told."""
    s = session(world)
    s.lines("n NOTIFY SET (subtree Lists (MessageNew MessageExpunge))")
    deliver(world, "Other")
    assert unsolicited(world, s) == []
    folder = world.mailbox().folder("Lists/a")
    folder.append(MESSAGE, [], 1_700_000_100.0)
    assert unsolicited(world, s) == [b'* STATUS "Lists/a" (MESSAGES 1 UIDNEXT 2 UNSEEN 1)']
    folder.set_flags(1, ["\\Seen"], FlagMode.ADD)  # FlagChange was not asked
    assert unsolicited(world, s) == []


def test_changes_during_a_command_come_before_its_tagged_response(world: World) -> None:
    """A change heard while this session is answering a command waits for
    that command's tagged response (nothing is sent in the middle of it)."""
    s = session(world)
    s.lines("n NOTIFY SET (mailboxes Other (MessageNew MessageExpunge))")
    reply = s.lines(f"a APPEND Other {{{len(MESSAGE)}+}}")
    assert reply == []
    reply = s.send(MESSAGE + b"\r\n").split(b"\r\n")[:-1]
    assert reply[0] == b'* STATUS "Other" (MESSAGES 2 UIDNEXT 3 UNSEEN 2)'
    assert reply[1].startswith(b"a OK [APPENDUID ")
    assert unsolicited(world, s) == []


def test_selected_mailbox_pushes_exists_fetch_and_expunge(world: World) -> None:
    """With the selected filter, new mail is pushed as EXISTS and a FETCH of
    the attributes asked for, another session's flag change and expunge as
    FETCH and EXPUNGE, all without a command from this client."""
    s = session(world)
    s.lines(
        "n NOTIFY SET (selected (MessageNew (UID BODY.PEEK[HEADER.FIELDS (Subject)]) "
        "MessageExpunge FlagChange))"
    )
    deliver(world, "INBOX")
    assert unsolicited(world, s) == [
        b"* 2 EXISTS",
        b"* 1 RECENT",
        b"* 2 FETCH (UID 2 BODY[HEADER.FIELDS (SUBJECT)] {18}",
        b"Subject: hello",
        b"",
        b")",
    ]
    other = session(world)
    other.lines("o STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert unsolicited(world, s) == [b"* 1 FETCH (UID 1 FLAGS (\\Deleted))"]
    other.lines("o2 EXPUNGE")
    assert unsolicited(world, s) == [b"* 1 EXPUNGE"]


def test_selected_delayed_keeps_expunges_for_a_command(world: World) -> None:
    """selected-delayed pushes no EXPUNGE (and without FlagChange no flag
    change); the next NOOP reports the expunge."""
    s = session(world)
    s.lines("n NOTIFY SET (selected-delayed (MessageNew MessageExpunge))")
    other = session(world)
    other.lines("o STORE 1 +FLAGS.SILENT (\\Deleted)")
    other.lines("o2 EXPUNGE")
    assert unsolicited(world, s) == []
    assert s.lines("x NOOP") == [b"* 1 EXPUNGE", b"x OK NOOP completed."]


def test_mailbox_name_and_subscription_events(world: World) -> None:
    """Another session's CREATE, RENAME, SUBSCRIBE and DELETE reach a session
    that asked for MailboxName and SubscriptionChange as LIST responses."""
    s = session(world, select=False)
    s.lines("n NOTIFY SET (personal (MailboxName SubscriptionChange))")
    other = session(world, select=False)
    other.lines("c CREATE Foo")
    assert unsolicited(world, s) == [b'* LIST () "/" "Foo"']
    other.lines("r RENAME Foo Bar")
    assert unsolicited(world, s) == [b'* LIST () "/" "Bar" ("OLDNAME" ("Foo"))']
    other.lines("u SUBSCRIBE Bar")
    assert unsolicited(world, s) == [b'* LIST (\\Subscribed) "/" "Bar"']
    other.lines("u2 UNSUBSCRIBE Bar")
    assert unsolicited(world, s) == [b'* LIST () "/" "Bar"']
    other.lines("d DELETE Bar")
    assert unsolicited(world, s) == [b'* LIST (\\NonExistent) "/" "Bar"']


def test_notify_none_stops_everything(world: World) -> None:
    """NOTIFY NONE: no more unsolicited responses; the folders are released."""
    s = session(world)
    s.lines("n NOTIFY SET (personal (MessageNew MessageExpunge MailboxName))")
    assert s.lines("n2 NOTIFY NONE") == [b"n2 OK NOTIFY completed."]
    deliver(world, "Other")
    session(world).lines("c CREATE Foo")
    assert unsolicited(world, s) == []
    assert s.proto.notifier is None


@pytest.mark.parametrize(
    "command",
    [
        "NOTIFY",
        "NOTIFY SET",
        "NOTIFY BOGUS",
        "NOTIFY SET (selected (MessageNew))",
        "NOTIFY SET (selected (FlagChange))",
        "NOTIFY SET (selected (MessageNew MessageExpunge MailboxName))",
        "NOTIFY SET (selected NONE) (selected-delayed NONE)",
        "NOTIFY SET (nowhere (MessageNew))",
        "NOTIFY SET (personal (NoSuchEvent))",
        "NOTIFY SET (mailboxes (MessageNew))",
        "NOTIFY SET (selected (MessageNew (RFC822) MessageExpunge))",
    ],
)
def test_bad_syntax_is_bad(world: World, command: str) -> None:
    """Malformed NOTIFY commands and the selected filter's rules: BAD."""
    s = session(world)
    assert s.lines(f"b {command}")[-1].startswith(b"b BAD ")


def test_unsupported_events_and_overflow(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """AnnotationChange (no per-message annotations in pymta): NO [BADEVENT
    (supported)]; too many names or mailboxes: NO [NOTIFICATIONOVERFLOW]."""
    s = session(world)
    assert s.lines("b NOTIFY SET (personal (AnnotationChange))") == [
        b"b NO [BADEVENT (MessageNew MessageExpunge FlagChange MailboxName "
        b"SubscriptionChange MailboxMetadataChange ServerMetadataChange)] "
        b"Unsupported NOTIFY events."
    ]
    names = " ".join(f"m{i}" for i in range(notify.MAX_NAMES + 1))
    reply = s.lines(f"o NOTIFY SET (mailboxes ({names}) (MessageNew MessageExpunge))")
    assert reply[-1].startswith(b"o NO [NOTIFICATIONOVERFLOW]")
    monkeypatch.setattr(notify, "MAX_FOLDERS", 2)
    reply = s.lines("o2 NOTIFY SET (personal (MessageNew MessageExpunge))")
    assert reply[-1].startswith(b"o2 NO [NOTIFICATIONOVERFLOW]")


def test_maildir_mailbox_says_where_its_list_lives(tmp_path: Path) -> None:
    """The Maildir store provides IWatchedMailbox: its root is watched, and
    only folder directories and the subscriptions file count as list
    changes (not INBOX's new/ and cur/, nor pymta's own files)."""
    store = MaildirStore(Clock(), "host", fsync=False)
    mailbox = store.open_user("alice@example.org", str(tmp_path / "alice"))
    assert verifyObject(IWatchedMailbox, mailbox)
    watched = IWatchedMailbox(mailbox)
    assert watched.watch_directory() == str(tmp_path / "alice")
    for entry in (
        ".Sent",
        ".Lists.a",
        "..pymta-deleted-1-2",
        "subscriptions",
        "subscriptions.1.tmp",
    ):
        assert watched.is_list_entry(entry), entry
    for entry in ("new", "cur", "tmp", "pymta-uidvalidity", "maildirsize"):
        assert not watched.is_list_entry(entry), entry


def test_too_many_mailboxes_later_is_an_overflow(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When new mailboxes take a session past MAX_FOLDERS, it is told
    ``* OK [NOTIFICATIONOVERFLOW]`` and hears nothing more (RFC 5465 5.8);
    the session that made the mailbox is not disturbed."""
    monkeypatch.setattr(notify, "MAX_FOLDERS", len(world.mailbox().list_folders()))
    s = session(world)
    s.lines("n NOTIFY SET (personal (MessageNew MessageExpunge MailboxName))")
    other = session(world, select=False)
    assert other.lines("c CREATE Foo") == [b"c OK Create completed."]
    assert unsolicited(world, s) == [
        b'* LIST () "/" "Foo"',
        b"* OK [NOTIFICATIONOVERFLOW] Too many mailboxes to watch",
    ]
    deliver(world, "Other")
    other.lines("c2 CREATE Bar")
    assert unsolicited(world, s) == []


def test_nothing_is_pushed_into_a_command_being_received(world: World) -> None:
    """While part of a command has arrived, nothing is pushed (an EXPUNGE
    could renumber messages the command names); the command's response
    carries it."""
    s = session(world)
    s.lines("n NOTIFY SET (selected (MessageNew MessageExpunge)) (mailboxes Other (MessageNew))")
    assert s.send(b"a NO") == b""
    deliver(world, "Other")
    other = session(world)
    other.lines("o STORE 1 +FLAGS.SILENT (\\Deleted)")
    other.lines("o2 EXPUNGE")
    assert unsolicited(world, s) == []
    assert s.send(b"OP\r\n").split(b"\r\n")[:-1] == [
        b'* STATUS "Other" (MESSAGES 2 UIDNEXT 3 UNSEEN 2)',
        b"* 1 EXPUNGE",
        b"a OK NOOP completed.",
    ]
    assert unsolicited(world, s) == []


def test_metadata_events(world: World) -> None:
    """Another session's SETMETADATA reaches a session that asked for
    MailboxMetadataChange (for mailboxes its filter covers) and
    ServerMetadataChange as METADATA responses naming the entries."""
    s = session(world, select=False)
    s.lines("n NOTIFY SET (mailboxes Other (MailboxMetadataChange ServerMetadataChange))")
    other = session(world, select=False)
    assert other.lines('m SETMETADATA Other (/private/comment "hi")') == [
        b"m OK Setmetadata completed."
    ]
    assert unsolicited(world, s) == [b'* METADATA "Other" /private/comment']
    other.lines('m2 SETMETADATA INBOX (/private/comment "not watched")')
    assert unsolicited(world, s) == []
    other.lines('m3 SETMETADATA "" (/shared/admin "mailto:a@example.org" /private/x "1")')
    assert unsolicited(world, s) == [b'* METADATA "" /private/x /shared/admin']
    other.lines("m4 SETMETADATA Other (/private/comment NIL)")
    assert unsolicited(world, s) == [b'* METADATA "Other" /private/comment']


def held_maildir(tmp_path: Path) -> tuple[World, Session, QueuedRunner]:
    """A Maildir store whose thread work waits for the test, with INBOX and
    Other; alice logged in (not selected)."""
    runner = QueuedRunner()
    world = World(tmp_path, store=MaildirStore(Clock(), "host", fsync=False, run_in_thread=runner))
    mailbox = world.mailbox()
    mailbox.create_folder("Other")
    mailbox.folder("Other").append(MESSAGE, [], 1_700_000_000.0)
    s = world.connect()
    assert s.send("a LOGIN alice@example.org secret") == b""
    runner.run_all()
    assert s.read().startswith(b"a OK")
    return world, s, runner


def test_notify_reads_the_folder_list_and_status_in_the_store_threads(tmp_path: Path) -> None:
    """NOTIFY reads through the store's asynchronous API: SET STATUS waits
    for the folder list and the STATUS the store gives from its threads
    (a pipelined NOOP waits too); a folder another program changed on
    disk is rescanned there before its STATUS is pushed; the session's own
    CREATE is answered after the store has listed the folders again, with
    the LIST line before the OK."""
    world, s, runner = held_maildir(tmp_path)
    command = b"n NOTIFY SET STATUS (personal (MessageNew MessageExpunge MailboxName))\r\n"
    assert s.send(command + b"x NOOP\r\n") == b""
    runner.run_all()
    lines = s.read().split(b"\r\n")[:-1]
    uidvalidity = world.mailbox().folder("Other").uidvalidity
    status = b'* STATUS "Other" (MESSAGES 1 UIDNEXT 2 UIDVALIDITY %d UNSEEN 1)' % uidvalidity
    assert status in lines  # with the special-use folders' (made at first use)
    assert lines[-2:] == [b"n OK NOTIFY completed.", b"x OK NOOP completed."]

    # Another program drops a message into Other, and one more is filed
    # through the store: the STATUS counts both, after the rescan.
    other = tmp_path / "alice" / ".Other"
    (other / "new" / "1700000200.M1P1.elsewhere").write_bytes(MESSAGE)
    world.mailbox().folder("Other").append(MESSAGE, [], 1_700_000_100.0)
    assert unsolicited(world, s) == []  # the rescan is in the store's thread
    runner.run_all()
    assert unsolicited(world, s) == [b'* STATUS "Other" (MESSAGES 3 UIDNEXT 4 UNSEEN 3)']

    assert s.send("c CREATE Fresh") == b""
    for _ in range(5):  # the create, then the listing, in the store's threads
        runner.run_all()
        world.clock.advance(0)
    lines = s.read().split(b"\r\n")[:-1]
    # (The rescan's own news of the dropped message may come first.)
    assert lines[-2:] == [b'* LIST () "/" "Fresh"', b"c OK Create completed."]
