"""IMAP's message commands on the mail store's asynchronous API: with the
Maildir store's calls held in its "threads" (a runner the test drives),
STORE of many messages, EXPUNGE, COPY and CLOSE answer only once the store
has, later commands wait meanwhile and are answered in order (FETCH's
\\Seen too, behind them); a flag change of a few messages is answered at
once; store errors get the same answers as before; NOOP and IDLE rescan a
folder changed on disk there too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from pymta.mailstore.asyncstore import LIGHT_MAX
from pymta.mailstore.interface import MailStoreError
from pymta.mailstore.maildir import MaildirStore
from tests.test_imap_harness import Session, World
from tests.test_imap_prefetch import QueuedRunner

MSG = b"From: a@example.org\nSubject: hi\n\nbody\n"


def held_world(tmp_path: Path, count: int = 3) -> tuple[World, Session, QueuedRunner]:
    """alice's INBOX with ``count`` messages, selected, on a Maildir store
    whose thread work waits for the test (reads of one message and small
    flag changes still answer at once when nothing waits)."""
    runner = QueuedRunner()
    store = MaildirStore(Clock(), "host", fsync=False, run_in_thread=runner)
    world = World(tmp_path, store=store)
    inbox = world.mailbox().folder("INBOX")
    for _ in range(count):
        inbox.append(MSG)
    inbox.claim_recent()  # old mail: no \Recent in the answers
    s = world.connect()
    assert s.send("a LOGIN alice@example.org secret") == b""
    runner.run_all()  # opening the mailbox: the store's threads
    assert s.read().startswith(b"a OK")
    s.send("b SELECT INBOX")
    runner.run_all()  # a folder changed on disk is rescanned: the store's threads
    assert b"b OK [READ-WRITE]" in s.read()
    return world, s, runner


def second_session(world: World, runner: QueuedRunner) -> Session:
    """Another session of alice's, with INBOX selected."""
    other = world.connect()
    assert other.send("a LOGIN alice@example.org secret") == b""
    runner.run_all()
    other.read()
    other.send("b SELECT INBOX")
    runner.run_all()
    assert b"b OK [READ-WRITE]" in other.read()
    return other


def test_store_waits_for_the_store_and_keeps_order(tmp_path: Path) -> None:
    """STORE of more than LIGHT_MAX messages runs in the store's thread, as
    one change: no answer, and a pipelined NOOP waits, until it is done;
    then both, in order. A STORE of one message is answered at once."""
    _, s, runner = held_world(tmp_path, LIGHT_MAX + 2)
    last = LIGHT_MAX + 2
    command = b"c STORE 1:%d +FLAGS (\\Flagged)\r\nd NOOP\r\n" % last
    assert s.send(command) == b""
    assert len(runner.jobs) == 1  # one store change for the set
    runner.run_all()
    lines = s.read().split(b"\r\n")[:-1]
    assert lines[0] == b"* 1 FETCH (FLAGS (\\Flagged))"
    assert len(lines) == last + 2
    assert lines[-2:] == [b"c OK Store completed.", b"d OK NOOP completed."]
    answer = s.send("e STORE 1 -FLAGS (\\Flagged)")
    assert answer == b"* 1 FETCH (FLAGS ())\r\ne OK Store completed.\r\n"


def test_fetch_seen_waits_behind_an_expunge(tmp_path: Path) -> None:
    """FETCH BODY[] pipelined behind an EXPUNGE that runs in the store's
    thread: its \\Seen (one folder's calls in order) and its answer wait
    for the expunge; then both are answered, in order."""
    _, s, runner = held_world(tmp_path)
    s.send("c STORE 3 +FLAGS.SILENT (\\Deleted)")
    assert s.send(b"d EXPUNGE\r\ne FETCH 1 BODY[]\r\n") == b""
    runner.run_all()
    answer = s.read()
    assert answer.startswith(b"* 3 EXPUNGE\r\nd OK Expunge completed.\r\n* 1 FETCH (BODY[] {")
    assert answer.endswith(b" FLAGS (\\Seen))\r\ne OK Fetch completed.\r\n")


def test_expunge_and_copy_answer_after_the_store(tmp_path: Path) -> None:
    """EXPUNGE answers its EXPUNGE responses once the store removed the
    messages; COPY answers COPYUID once they are copied; a COPY to a
    missing folder is [TRYCREATE]."""
    world, s, runner = held_world(tmp_path)
    assert s.send("c STORE 2 +FLAGS.SILENT (\\Deleted)") == b"c OK Store completed.\r\n"
    assert s.send("d EXPUNGE") == b""
    runner.run_all()
    assert s.read() == b"* 2 EXPUNGE\r\nd OK Expunge completed.\r\n"
    assert s.send("e COPY 1:2 Archive") == b""
    runner.run_all()
    answer = s.read()
    assert answer.startswith(b"e OK [COPYUID ") and answer.endswith(
        b" 1,3 1:2] Copy completed.\r\n"
    )
    assert len(world.mailbox().folder("Archive").messages()) == 2
    answer = s.send("f COPY 1 Nowhere")  # folders are found at once
    assert answer == b"f NO [TRYCREATE] Mailbox doesn't exist.\r\n"


def test_close_whose_expunge_fails_still_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CLOSE whose expunge fails in the store logs it and closes the mailbox
    all the same (RFC 3501 6.4.2): OK, and no mailbox selected afterwards."""
    world, s, runner = held_world(tmp_path)
    inbox = world.mailbox().folder("INBOX")

    def fail(uids: Any = None) -> list[int]:
        raise MailStoreError("disk on fire")

    monkeypatch.setattr(inbox, "expunge", fail)
    assert s.send("c CLOSE") == b""
    runner.run_all()
    assert s.read() == b"c OK Close completed.\r\n"
    assert s.send("d FETCH 1 FLAGS").startswith(b"d BAD")
    errors = [e for e in world.events if e.get("log_format", "").endswith("CLOSE expunge: {error}")]
    assert [str(e["error"]) for e in errors] == ["disk on fire"]


def test_noop_and_idle_rescan_in_the_stores_threads(tmp_path: Path) -> None:
    """NOOP of a folder changed on disk (a delivery by another program)
    rescans it in the store's threads: no answer, and a pipelined command
    waits, until the scan is done; then the new message's EXISTS and both
    answers, in order. IDLE's rescan too: its continuation comes after."""
    _, s, runner = held_world(tmp_path)
    maildir = tmp_path / "alice"
    (maildir / "new" / "1700000001.M1P1.other").write_bytes(MSG)
    assert s.send(b"n NOOP\r\nm NOOP\r\n") == b""
    assert len(runner.jobs) == 1  # the rescan
    runner.run_all()  # (a directory changed this second is rescanned again)
    assert (
        s.read() == b"* 4 EXISTS\r\n* 1 RECENT\r\nn OK NOOP completed.\r\nm OK NOOP completed.\r\n"
    )
    (maildir / "new" / "1700000002.M2P1.other").write_bytes(MSG)
    assert s.send("i IDLE") == b""
    assert len(runner.jobs) == 1
    runner.run_all()
    assert s.read() == b"* 5 EXISTS\r\n* 2 RECENT\r\n+ idling\r\n"
    assert s.send("DONE") == b"i OK Idle completed.\r\n"


def test_select_of_a_session_gone_meanwhile_leaves_no_listener(tmp_path: Path) -> None:
    """A client that goes away while its SELECT waits for the store's
    rescan selects nothing: once the store is done, no view of it is left
    listening to the folder."""
    world, s, runner = held_world(tmp_path)
    folder = world.mailbox().folder("INBOX")
    listening = len(folder._listeners)
    (tmp_path / "alice" / "new" / "1700000001.M1P1.other").write_bytes(MSG)
    assert s.send("c SELECT INBOX") == b""
    s.drop()
    runner.run_all()
    assert len(folder._listeners) < listening


def test_condstore_reads_wait_behind_the_folders_store_work(tmp_path: Path) -> None:
    """FETCH CHANGEDSINCE ... VANISHED reads the index (records, expunged
    UIDs) through the store's asynchronous API: while another session's
    change of the folder is still in the store's threads, the FETCH waits
    behind it, one folder's calls in order, and then reports it. A
    QRESYNC SELECT reads the expunged UIDs the same way."""
    world, s, runner = held_world(tmp_path, LIGHT_MAX + 2)
    assert s.lines("e ENABLE QRESYNC") == [b"* ENABLED QRESYNC", b"e OK Enabled."]
    uidvalidity = world.mailbox().folder("INBOX").uidvalidity
    modseq = world.mailbox().folder("INBOX").highest_modseq
    other = second_session(world, runner)
    last = LIGHT_MAX + 2
    assert other.send(f"c UID STORE 1:{last} +FLAGS.SILENT (\\Deleted)") == b""
    assert len(runner.jobs) == 1  # the other session's change, in the store's thread
    assert s.send(f"f UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)") == b""
    runner.run_all()
    other.read()
    lines = s.read().split(b"\r\n")[:-1]
    assert lines[-2].startswith(b"* %d FETCH (UID %d FLAGS (\\Deleted) MODSEQ" % (last, last))
    assert lines[-1] == b"f OK Fetch completed."

    # The other session expunges (in the store's thread); a QRESYNC SELECT
    # made meanwhile waits for it and reports the UIDs VANISHED.
    assert other.send("d EXPUNGE") == b""
    closed = s.send(f"g SELECT INBOX (QRESYNC ({uidvalidity} {modseq}))")
    assert closed == b"* OK [CLOSED] Previous mailbox closed.\r\n"  # and nothing more yet
    runner.run_all()
    lines = s.read().split(b"\r\n")[:-1]
    assert b"* VANISHED (EARLIER) 1:%d" % last in lines
    assert lines[-1] == b"g OK [READ-WRITE] Select completed."


def test_qresync_with_bad_parameters_selects_nothing(tmp_path: Path) -> None:
    """SELECT with malformed QRESYNC parameters is BAD before anything is
    done (RFC 3501: a BAD command changes no state): the mailbox selected
    before stays selected."""
    _, s, _ = held_world(tmp_path)
    s.lines("e ENABLE QRESYNC")
    reply = s.lines("g SELECT INBOX (QRESYNC (x 1))")
    assert len(reply) == 1 and reply[0].startswith(b"g BAD")
    assert s.lines("h FETCH 1 FLAGS")[-1] == b"h OK Fetch completed."


def test_a_fetch_that_waited_for_the_store_streams_before_later_commands(
    tmp_path: Path,
) -> None:
    """A FETCH whose index reads waited behind another session's change in
    the store's threads answers as a stream, whose message reads may wait
    for the store again; meanwhile the pipelined command behind it waits, so
    that nothing of another command (its tagged answer, an untagged
    EXPUNGE or FETCH) lands inside the FETCH (RFC 3501 7.4.1; imaptest's
    stress found both). Then the FETCH ends, then the next command."""
    world, s, runner = held_world(tmp_path, 2 * LIGHT_MAX + 2)
    other = second_session(world, runner)
    half = LIGHT_MAX + 1
    assert other.send(f"c STORE 1:{half} +FLAGS.SILENT (\\Flagged)") == b""
    assert s.send(b"f FETCH 1:2 (BODY.PEEK[])\r\ng CAPABILITY\r\n") == b""  # waits behind c
    assert other.send(f"d STORE {half + 1}:* +FLAGS.SILENT (\\Flagged)") == b""
    answered = b""
    done = b"g OK Capability completed."
    while runner.jobs:
        runner.run_one()  # c, then the FETCH's reads, then d: one at a time
        answered += s.read()
        tagged = [line for line in answered.split(b"\r\n") if line[:2] in (b"f ", b"g ")]
        assert tagged in ([], [b"f OK Fetch completed."], [b"f OK Fetch completed.", done])
    assert tagged == [b"f OK Fetch completed.", done]
