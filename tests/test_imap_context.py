"""CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267) over StringTransport: SEARCH
and SORT RETURN (UPDATE), unsolicited ADDTO / REMOVEFROM, CANCELUPDATE,
NOUPDATE, body keys tested again in the scan runner while the tagged
response waits."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymta.imap import context
from pymta.imap.protocol import BASE_CAPABILITIES
from pymta.mailstore.interface import FlagMode
from pymta.mailstore.prefetch import PREFETCH_MIN
from tests.test_imap_harness import Session, World
from tests.test_imap_prefetch import NEEDLES, QueuedRunner, hold, world_with_big_inbox
from tests.test_imap_prefetch import logged_in as logged_in_prefetch
from tests.test_imap_scan import logged_in, world_with_bodies


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path)
    inbox = w.mailbox().folder("INBOX")
    for n in range(1, 6):
        inbox.append(b"Subject: s%d\n\nbody of %d\n" % (n, n), [], 1_700_000_000.0)
    inbox.claim_recent()
    return w


def session(world: World) -> Session:
    s = world.connect()
    s.login()
    s.select()
    return s


def test_capability_is_announced() -> None:
    """CONTEXT=SEARCH and CONTEXT=SORT are announced."""
    assert "CONTEXT=SEARCH" in BASE_CAPABILITIES
    assert "CONTEXT=SORT" in BASE_CAPABILITIES


def test_own_store_adds_and_removes(world: World) -> None:
    """A STORE of this session that makes messages match or stop matching is
    followed by ADDTO / REMOVEFROM (position, sequence set) before its OK."""
    s = session(world)
    assert s.lines("t SEARCH RETURN (UPDATE) SEEN") == [
        b'* ESEARCH (TAG "t")',
        b"t OK Search completed.",
    ]
    assert s.lines("a STORE 1,2,4 +FLAGS.SILENT (\\Seen)") == [
        b'* ESEARCH (TAG "t") ADDTO (1 1:2,4)',
        b"a OK Store completed.",
    ]
    assert s.lines("b STORE 2 -FLAGS.SILENT (\\Seen)") == [
        b'* ESEARCH (TAG "t") REMOVEFROM (2 2)',
        b"b OK Store completed.",
    ]
    # A flag that does not change the match sends nothing.
    assert s.lines("c STORE 1 +FLAGS.SILENT (\\Flagged)") == [b"c OK Store completed."]


def test_initial_result_is_all_and_uid_form(world: World) -> None:
    """UPDATE alone answers ALL first; a UID search is updated with UIDs."""
    world.mailbox().folder("INBOX").set_flags(3, ["\\Seen"], FlagMode.ADD)
    s = session(world)
    assert s.lines("t UID SEARCH RETURN (UPDATE) SEEN") == [
        b'* ESEARCH (TAG "t") UID ALL 3',
        b"t OK Search completed.",
    ]
    assert s.lines("a UID STORE 5 +FLAGS.SILENT (\\Seen)") == [
        b'* ESEARCH (TAG "t") UID ADDTO (2 5)',
        b"a OK Store completed.",
    ]


def test_other_session_changes_arrive_with_noop(world: World) -> None:
    """Flag changes made by another session are tested again and announced
    with the next command's updates, after the FETCH FLAGS."""
    s = session(world)
    other = session(world)
    s.lines("t SEARCH RETURN (UPDATE ALL) FLAGGED")
    other.lines("o STORE 4 +FLAGS.SILENT (\\Flagged)")
    assert s.lines("n NOOP") == [
        b"* 4 FETCH (UID 4 FLAGS (\\Flagged))",
        b'* ESEARCH (TAG "t") ADDTO (1 4)',
        b"n OK NOOP completed.",
    ]


def test_expunge_removefrom_comes_before_expunge_numbers(world: World) -> None:
    """REMOVEFROM for expunged messages uses the numbers before the expunge,
    so it comes before the EXPUNGE responses (RFC 5267 4.4.1)."""
    s = session(world)
    s.lines("x STORE 3:5 +FLAGS.SILENT (\\Seen)")
    s.lines("t SEARCH RETURN (UPDATE) SEEN")
    s.lines("d STORE 4 +FLAGS.SILENT (\\Deleted)")
    assert s.lines("e EXPUNGE") == [
        b'* ESEARCH (TAG "t") REMOVEFROM (2 4)',
        b"* 4 EXPUNGE",
        b"e OK Expunge completed.",
    ]
    # Later numbers are those after the expunge.
    assert s.lines("f STORE 4 -FLAGS.SILENT (\\Seen)") == [
        b'* ESEARCH (TAG "t") REMOVEFROM (2 4)',
        b"f OK Store completed.",
    ]


def test_new_mail_addto_after_exists(world: World) -> None:
    """A message delivered meanwhile that matches is announced after EXISTS."""
    s = session(world)
    s.lines("t SEARCH RETURN (UPDATE) SUBJECT fresh")
    world.mailbox().folder("INBOX").append(b"Subject: fresh\n\nx\n", [], 1_700_000_001.0)
    world.mailbox().folder("INBOX").append(b"Subject: stale\n\nx\n", [], 1_700_000_002.0)
    assert s.lines("n NOOP") == [
        b"* 7 EXISTS",
        b"* 2 RECENT",
        b'* ESEARCH (TAG "t") ADDTO (1 6)',
        b"n OK NOOP completed.",
    ]


def test_min_max_count_are_sent_again_when_they_change(world: World) -> None:
    """Without ALL, a change sends the new MIN / MAX / COUNT asked for."""
    s = session(world)
    s.lines("x STORE 2 +FLAGS.SILENT (\\Seen)")
    assert s.lines("t SEARCH RETURN (UPDATE MIN COUNT) SEEN")[0] == (
        b'* ESEARCH (TAG "t") MIN 2 COUNT 1'
    )
    assert s.lines("a STORE 1 +FLAGS.SILENT (\\Seen)") == [
        b'* ESEARCH (TAG "t") MIN 1 COUNT 2',
        b"a OK Store completed.",
    ]


def test_cancelupdate_and_unselect_end_updates(world: World) -> None:
    """CANCELUPDATE stops one search's updates; an unknown tag is BAD; a new
    SELECT ends every updating search."""
    s = session(world)
    s.lines("t SEARCH RETURN (UPDATE) SEEN")
    s.lines("u SEARCH RETURN (UPDATE CONTEXT) FLAGGED")
    assert s.lines('c CANCELUPDATE "t"') == [b"c OK Cancelupdate completed."]
    assert s.lines('c2 CANCELUPDATE "nope"') == [b"c2 BAD Unknown search tag."]
    assert s.lines("a STORE 1 +FLAGS.SILENT (\\Seen \\Flagged)") == [
        b'* ESEARCH (TAG "u") ADDTO (1 1)',
        b"a OK Store completed.",
    ]
    s.select()
    assert s.lines("b STORE 2 +FLAGS.SILENT (\\Flagged)") == [b"b OK Store completed."]
    assert s.lines('c3 CANCELUPDATE "u"') == [b"c3 BAD Unknown search tag."]


def test_too_many_and_partial_get_noupdate(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_UPDATING searches, and with PARTIAL, the search is answered
    but refused updates with an untagged NO [NOUPDATE "tag"]."""
    monkeypatch.setattr(context, "MAX_UPDATING", 1)
    s = session(world)
    s.lines("t SEARCH RETURN (UPDATE) SEEN")
    assert s.lines("u SEARCH RETURN (UPDATE) FLAGGED") == [
        b'* NO [NOUPDATE "u"] Too many updating searches',
        b'* ESEARCH (TAG "u")',
        b"u OK Search completed.",
    ]
    assert s.lines("p SEARCH RETURN (UPDATE PARTIAL 1:2) ALL")[0] == (
        b'* NO [NOUPDATE "p"] PARTIAL is not kept updated'
    )
    assert s.lines("a STORE 1 +FLAGS.SILENT (\\Flagged)") == [b"a OK Store completed."]


def test_unknown_return_option_is_still_bad(world: World) -> None:
    """Only UPDATE and CONTEXT were added to RFC 4731's options."""
    s = session(world)
    assert s.lines("t SEARCH RETURN (NOTHING) ALL")[0].startswith(b"t BAD ")


def test_body_key_is_tested_again_in_the_scan_runner(tmp_path: Path) -> None:
    """An updating BODY search tests changed messages in the scan runner, not
    in the reactor: the STORE's tagged response (and a pipelined NOOP) wait
    until the runner is done, then ADDTO comes before the OK."""
    runner = QueuedRunner()
    world = world_with_bodies(tmp_path)
    world.factory.scan_in_thread = runner
    s = logged_in(world)
    assert s.send("t SEARCH RETURN (UPDATE) BODY needle SEEN") == b""
    runner.run_all()
    assert s.read().split(b"\r\n")[:-1] == [b'* ESEARCH (TAG "t")', b"t OK Search completed."]
    assert s.send(b"a STORE 6:8 +FLAGS.SILENT (\\Seen)\r\nn NOOP\r\n") == b""
    assert len(runner.jobs) == 1
    runner.run_all()
    assert s.read().split(b"\r\n")[:-1] == [
        b'* ESEARCH (TAG "t") ADDTO (1 7)',
        b"a OK Store completed.",
        b"n OK NOOP completed.",
    ]


def test_updates_are_pushed_in_idle_after_the_scan(tmp_path: Path) -> None:
    """In IDLE, new mail matching an updating BODY search is announced as
    EXISTS at once and as ADDTO once the scan runner has tested it (the
    search hears of the change after the view: it must wake the session
    itself)."""
    runner = QueuedRunner()
    world = world_with_bodies(tmp_path)
    world.factory.scan_in_thread = runner
    s = logged_in(world)
    s.send("t SEARCH RETURN (UPDATE) BODY needle")
    runner.run_all()
    s.read()
    assert s.lines("i IDLE") == [b"+ idling"]
    world.mailbox().folder("INBOX").append(b"Subject: x\n\nthe needle\n")
    assert s.read().split(b"\r\n")[:-1] == [b"* 41 EXISTS", b"* 41 RECENT"]
    assert len(runner.jobs) == 1
    runner.run_all()
    assert s.read().split(b"\r\n")[:-1] == [b'* ESEARCH (TAG "t") ADDTO (6 41)']
    assert s.lines("DONE") == [b"i OK Idle completed."]


@pytest.fixture
def subjects(tmp_path: Path) -> World:
    w = World(tmp_path)
    inbox = w.mailbox().folder("INBOX")
    for subject in (b"d", b"b", b"e", b"a"):
        inbox.append(b"Subject: " + subject + b"\n\nx\n", [], 1_700_000_000.0)
    inbox.claim_recent()
    return w


def test_sort_update_keeps_sort_order(subjects: World) -> None:
    """CONTEXT=SORT: an updating SORT announces messages at their place in
    sort order, one ADDTO / REMOVEFROM per run of neighbouring positions
    (removals from the last position back, so each applies in order)."""
    s = session(subjects)
    assert s.lines("t SORT RETURN (UPDATE) (SUBJECT) UTF-8 SEEN") == [
        b'* ESEARCH (TAG "t")',
        b"t OK Sort completed.",
    ]
    assert s.lines("a STORE 1:4 +FLAGS.SILENT (\\Seen)") == [
        b'* ESEARCH (TAG "t") ADDTO (1 4,2,1,3)',
        b"a OK Store completed.",
    ]
    inbox = subjects.mailbox().folder("INBOX")
    inbox.append(b"Subject: c\n\nx\n", ["\\Seen"], 1_700_000_001.0)
    inbox.append(b"Subject: f\n\nx\n", ["\\Seen"], 1_700_000_002.0)
    assert s.lines("n NOOP")[-3:] == [
        b'* ESEARCH (TAG "t") ADDTO (3 5)',
        b'* ESEARCH (TAG "t") ADDTO (6 6)',
        b"n OK NOOP completed.",
    ]
    # Sorted now: a(4) b(2) c(5) d(1) e(3) f(6); b and e leave.
    assert s.lines("b STORE 2,3 -FLAGS.SILENT (\\Seen)") == [
        b'* ESEARCH (TAG "t") REMOVEFROM (5 3)',
        b'* ESEARCH (TAG "t") REMOVEFROM (2 2)',
        b"b OK Store completed.",
    ]


def test_sort_update_min_max_follow_sort_order(subjects: World) -> None:
    """MIN and MAX of an updating SORT are the first and last in sort order,
    sent again only when one of them changes."""
    s = session(subjects)
    s.lines("x STORE 1:4 +FLAGS.SILENT (\\Seen)")
    assert s.lines("t UID SORT RETURN (UPDATE MIN MAX) (REVERSE SUBJECT) UTF-8 SEEN")[0] == (
        b'* ESEARCH (TAG "t") UID MIN 3 MAX 4'
    )
    assert s.lines("a STORE 1 -FLAGS.SILENT (\\Seen)") == [b"a OK Store completed."]
    assert s.lines("b STORE 3 -FLAGS.SILENT (\\Seen)") == [
        b'* ESEARCH (TAG "t") UID MIN 2 MAX 4',
        b"b OK Store completed.",
    ]


def test_many_new_uncached_headers_are_read_in_the_thread(tmp_path: Path) -> None:
    """An updating header SEARCH that must test many new messages whose
    headers are not cached has them read in the thread runner first (the
    NOOP's reply waits for it), not in the reactor call."""
    world = world_with_big_inbox(tmp_path)
    runner = QueuedRunner()
    s = logged_in_prefetch(world)
    hold(world, runner)
    assert s.send("t SEARCH RETURN (UPDATE COUNT) SUBJECT needle") == b""
    runner.run_all()
    first = s.read().split(b"\r\n")[:-1]
    assert first[-1] == b"t OK Search completed."
    inbox = world.mailbox().folder("INBOX")
    for n in range(PREFETCH_MIN + 1):
        inbox.append(b"From: a@example.org\nSubject: needle new %d\n\nbody\n" % n)
    assert s.send("n NOOP") == b""
    assert len(runner.jobs) >= 1
    out = b""
    for _ in range(10):  # the reads, then the tests one slice per reactor turn
        runner.run_all()
        world.clock.advance(0)
        out += s.read()
    lines = out.split(b"\r\n")[:-1]
    count = len(NEEDLES) + PREFETCH_MIN + 1
    assert lines[-2:] == [b'* ESEARCH (TAG "t") COUNT %d' % count, b"n OK NOOP completed."]
