"""Tests of the queue admin commands: mailq, postqueue -p/-j, postsuper."""

from __future__ import annotations

import datetime
import io
import json
from pathlib import Path

import pytest

from pymta.cli.queue import format_mailq, run_mailq, run_postqueue, run_postsuper, scan
from pymta.queue.model import Envelope, Recipient
from pymta.queue.store import FileQueueStore
from pymta.sync import ImmediateSyncBarrier

T = 1700000000.0  # Tue Nov 14 22:13:20 2023 UTC


@pytest.fixture
def setup(tmp_path: Path) -> tuple[str, FileQueueStore]:
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    queue_dir = tmp_path / "spool"
    (config_dir / "main.cf").write_text(f"queue_directory = {queue_dir}\n")
    store = FileQueueStore(str(queue_dir), ImmediateSyncBarrier())
    return str(config_dir), store


def _put(store: FileQueueStore, sender: str, rcpts: list[str], size: int, queue: str) -> str:
    envelope = Envelope(sender, [Recipient(r) for r in rcpts], T)
    qid = store.new_queue_id()
    store.enqueue(envelope, b"x" * size, qid)
    if queue != "incoming":
        store.move(qid, "incoming", queue)
    return qid


def test_mailq_golden(setup: tuple[str, FileQueueStore]) -> None:
    """The listing has Postfix's header, '*' for active and '!' for hold, the
    null sender as MAILER-DAEMON, delay reasons in parentheses, done
    recipients left out, and the Kbytes/Requests trailer."""
    _, store = setup
    a = _put(store, "alice@example.org", ["bob@example.com"], 1500, "active")
    d = _put(store, "", ["x@far.example", "y@far.example", "z@far.example"], 600, "deferred")
    store.record_defer(d, 0, "4.4.1", "connect to far.example[192.0.2.1]:25: Connection refused")
    store.record_defer(d, 2, "4.4.1", "connect to far.example[192.0.2.1]:25: Connection refused")
    store.mark_done(d, "deferred", 1)
    h = _put(store, "carol@example.org", ["dave@example.net"], 10, "hold")
    text = format_mailq(list(scan(store)), datetime.UTC)
    pad = " " * 50
    expected = (
        "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n"
        f"{a}*    1500 Tue Nov 14 22:13:20  alice@example.org\n"
        f"{pad}bob@example.com\n"
        "\n"
        f"{d}      600 Tue Nov 14 22:13:20  MAILER-DAEMON\n"
        "(connect to far.example[192.0.2.1]:25: Connection refused)\n"
        f"{pad}x@far.example\n"
        f"{pad}z@far.example\n"
        "\n"
        f"{h}!      10 Tue Nov 14 22:13:20  carol@example.org\n"
        f"{pad}dave@example.net\n"
        "\n"
        "-- 3 Kbytes in 3 Requests.\n"
    )
    assert text == expected


def test_mailq_empty(setup: tuple[str, FileQueueStore], capsys: pytest.CaptureFixture[str]) -> None:
    """An empty queue says so, as Postfix's mailq does."""
    config_dir, _ = setup
    assert run_mailq([], config_dir) == 0
    assert capsys.readouterr().out == "Mail queue is empty\n"


def test_mailq_skips_corrupt(
    setup: tuple[str, FileQueueStore], capsys: pytest.CaptureFixture[str]
) -> None:
    """A corrupt queue file does not stop the listing."""
    config_dir, store = setup
    good = _put(store, "a@b.example", ["c@d.example"], 100, "deferred")
    Path(store.path("ABCDEF0123456789ABC", "deferred")).write_bytes(b"junk")
    assert run_mailq(["-c", config_dir], "/nonexistent") == 0
    out = capsys.readouterr().out
    assert good in out and "ABCDEF0123456789ABC" not in out
    assert out.endswith("-- 1 Kbytes in 1 Request.\n")


def test_missing_queue_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A queue directory that does not exist is a fatal error, not a traceback."""
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}/none\n")
    assert run_mailq([], str(tmp_path)) == 1
    assert "fatal" in capsys.readouterr().err


def test_postqueue_json(
    setup: tuple[str, FileQueueStore], capsys: pytest.CaptureFixture[str]
) -> None:
    """postqueue -j prints one JSON object per message with Postfix's field names."""
    config_dir, store = setup
    qid = _put(store, "s@example.org", ["r1@x.example", "r2@x.example"], 42, "deferred")
    store.record_defer(qid, 1, "4.2.2", "mailbox full")
    assert run_postqueue(["-j"], config_dir) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [
        {
            "queue_name": "deferred",
            "queue_id": qid,
            "arrival_time": 1700000000,
            "message_size": 42,
            "forced_expire": False,
            "sender": "s@example.org",
            "recipients": [
                {"address": "r1@x.example"},
                {"address": "r2@x.example", "delay_reason": "mailbox full"},
            ],
        }
    ]
    assert run_postqueue(["-p"], config_dir) == 0
    assert "-- 1 Kbytes in 1 Request." in capsys.readouterr().out
    assert run_postqueue([], config_dir) == 1


def test_postsuper_delete(
    setup: tuple[str, FileQueueStore], capsys: pytest.CaptureFixture[str]
) -> None:
    """-d QID deletes one message (and its defer log); -d ALL deferred only that queue."""
    config_dir, store = setup
    one = _put(store, "a@x", ["b@y"], 1, "deferred")
    store.record_defer(one, 0, "4.0.0", "later")
    two = _put(store, "a@x", ["b@y"], 1, "deferred")
    keep = _put(store, "a@x", ["b@y"], 1, "hold")
    assert run_postsuper(["-d", one], config_dir) == 0
    assert "postsuper: Deleted: 1 message\n" in capsys.readouterr().err
    assert store.find(one) is None and store.defer_reasons(one) == {}
    assert run_postsuper(["-d", "ALL", "deferred"], config_dir) == 0
    assert store.find(two) is None
    assert store.find(keep) == "hold"


def test_postsuper_hold_release_requeue(
    setup: tuple[str, FileQueueStore], capsys: pytest.CaptureFixture[str]
) -> None:
    """-h moves to hold, -H releases to deferred (due now), -r makes it due
    now in deferred/ (the queue manager resolves it again when it takes it)."""
    config_dir, store = setup
    qid = _put(store, "a@x", ["b@y"], 1, "deferred")
    assert run_postsuper(["-h", qid], config_dir) == 0
    assert store.find(qid) == "hold"
    assert "Placed on hold: 1 message" in capsys.readouterr().err
    assert run_postsuper(["-H", "ALL"], config_dir) == 0
    assert store.find(qid) == "deferred"
    assert "Released from hold: 1 message" in capsys.readouterr().err
    store.set_next_attempt(qid, T + 10**9)
    assert run_postsuper(["-h", qid], config_dir) == 0
    assert run_postsuper(["-r", qid], config_dir) == 0
    assert store.find(qid) == "deferred"
    assert store.next_attempt(qid) < T + 10**9
    assert "Requeued: 1 message" in capsys.readouterr().err


def test_postsuper_stdin_and_bad_ids(
    setup: tuple[str, FileQueueStore],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """'-' reads ids from stdin; a malformed id is warned about and never a path."""
    config_dir, store = setup
    a = _put(store, "a@x", ["b@y"], 1, "deferred")
    b = _put(store, "a@x", ["b@y"], 1, "active")
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{a}\n{b}\n../../etc/passwd\n"))
    assert run_postsuper(["-d", "-"], config_dir) == 0
    err = capsys.readouterr().err
    assert "invalid mail queue id: ../../etc/passwd" in err
    assert "Deleted: 2 messages" in err
    assert store.list("deferred") == [] and store.list("active") == []
    assert run_postsuper(["-d", "ALL", "nosuchqueue"], config_dir) == 1


def test_postqueue_f_and_flush_write_the_trigger(
    setup: tuple[str, FileQueueStore], capsys: pytest.CaptureFixture[str]
) -> None:
    """``postqueue -f`` and ``pymta flush`` write F to public/qmgr of a
    running server; with no server they fail with Postfix's message."""
    import os

    from pymta.cli.queue import run_flush
    from pymta.qmgr.trigger import fifo_path

    config_dir, store = setup
    assert run_postqueue(["-f", "-c", config_dir], "") == 1
    assert "Cannot flush mail queue - mail system is down" in capsys.readouterr().err
    path = fifo_path(store.directory)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mkfifo(path)
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)  # what the server holds open
    try:
        assert run_postqueue(["-c", config_dir, "-f"], "") == 0
        assert run_flush(["-c", config_dir], "") == 0
        assert os.read(fd, 100) == b"FF"
    finally:
        os.close(fd)
    assert run_flush(["-c", config_dir], "") == 1
    assert "mail system is down" in capsys.readouterr().err


def _with_fifo(store: FileQueueStore) -> int:
    """The FIFO a running server holds open; returns its read end."""
    import os

    from pymta.qmgr.trigger import fifo_path

    path = fifo_path(store.directory)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mkfifo(path)
    return os.open(path, os.O_RDWR | os.O_NONBLOCK)


def test_postsuper_requeue_wakes_a_running_queue_manager_and_logs(
    setup: tuple[str, FileQueueStore], tmp_path: Path
) -> None:
    """postsuper -r on a running server writes W to its FIFO (the queue
    manager takes due deferred mail at once), and every action is a mail
    log line in maillog_file, as Postfix's postsuper logs through syslog."""
    import os

    config_dir, store = setup
    maillog = tmp_path / "maillog"
    main_cf = Path(config_dir) / "main.cf"
    main_cf.write_text(main_cf.read_text() + f"maillog_file = {maillog}\n")
    qid = _put(store, "a@x", ["b@y"], 1, "hold")
    other = _put(store, "a@x", ["b@y"], 1, "deferred")
    fd = _with_fifo(store)
    try:
        assert run_postsuper(["-r", qid, "-d", other], config_dir) == 0
        assert os.read(fd, 100) == b"W"
    finally:
        os.close(fd)
    lines = maillog.read_text().splitlines()
    assert lines[0].endswith(f"postfix/postsuper[{os.getpid()}]: {qid}: requeued")
    assert lines[1].endswith(f": {other}: removed")


def test_postqueue_i_makes_one_message_due_now(
    setup: tuple[str, FileQueueStore], capsys: pytest.CaptureFixture[str]
) -> None:
    """postqueue -i QID makes that deferred message due and wakes the queue
    manager; an id not in deferred/ is an error."""
    import os

    config_dir, store = setup
    qid = _put(store, "a@x", ["b@y"], 1, "deferred")
    store.set_next_attempt(qid, T + 10**9)
    assert run_postqueue(["-i", qid], config_dir) == 1  # no server running
    assert "mail system is down" in capsys.readouterr().err
    fd = _with_fifo(store)
    try:
        assert run_postqueue(["-i", qid], config_dir) == 0
        assert os.read(fd, 100) == b"W"
    finally:
        os.close(fd)
    assert store.next_attempt(qid) < T + 10**9
    held = _put(store, "a@x", ["b@y"], 1, "hold")
    assert run_postqueue(["-i", held], config_dir) == 1
    assert "no such message in the deferred queue" in capsys.readouterr().err


def test_mailq_pads_the_day_with_a_space(setup: tuple[str, FileQueueStore]) -> None:
    """Arrival times read 'Dec  7' as Postfix's showq prints them, not 'Dec 07'."""
    _, store = setup
    qid = store.new_queue_id()
    moment = datetime.datetime(2026, 12, 7, 9, 5, 1, tzinfo=datetime.UTC).timestamp()
    store.enqueue(Envelope("a@x", [Recipient("b@y")], moment), b"x", qid)
    text = format_mailq(list(scan(store)), datetime.UTC)
    assert "Mon Dec  7 09:05:01" in text


def test_postcat_shows_envelope_header_and_body(
    setup: tuple[str, FileQueueStore], capsys: pytest.CaptureFixture[str]
) -> None:
    """postcat -q ID prints Postfix's sections; -e, -h and -b pick them;
    a bad id or an unknown message is an error, not a traceback."""
    from pymta.cli.postcat import run as run_postcat

    config_dir, store = setup
    qid = store.new_queue_id()
    envelope = Envelope(
        "a@x",
        [Recipient("b@y", "B@Y"), Recipient("c@y", done=True)],
        T,
        {"client_address": "192.0.2.1"},
    )
    store.enqueue(envelope, b"Subject: hi\nFrom: a@x\n\nhello\nworld\n", qid)
    assert run_postcat(["-q", qid], config_dir) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"*** ENVELOPE RECORDS incoming/{qid} ***\n")
    assert "sender: a@x\n" in out
    assert "named_attribute: client_address=192.0.2.1\n" in out
    assert "original_recipient: B@Y\nrecipient: b@y\n" in out
    assert "done_recipient: c@y\n" in out
    assert (
        f"*** MESSAGE CONTENTS incoming/{qid} ***\nSubject: hi\nFrom: a@x\n\nhello\nworld\n" in out
    )
    assert out.endswith(f"*** MESSAGE FILE END incoming/{qid} ***\n")
    assert run_postcat(["-b", "-q", qid], config_dir) == 0
    out = capsys.readouterr().out
    assert "Subject" not in out and "hello\nworld" in out and "ENVELOPE" not in out
    assert run_postcat(["-q", "../../etc/passwd"], config_dir) == 1
    assert "invalid mail queue id" in capsys.readouterr().err
    assert run_postcat(["-q", "ABCDEF12345"], config_dir) == 1


def test_postsuper_requeue_on_a_running_server_delivers(tmp_path: Path) -> None:
    """A held message requeued with postsuper -r while the server runs is
    delivered at once (the wake-up), not at the next start."""
    from pymta.qmgr.trigger import fifo_path
    from tests.harness import PymtaServer, wait_for_file

    with PymtaServer(tmp_path) as server:
        server.start()
        fifo = Path(fifo_path(str(tmp_path / "spool")))
        wait_for_file(fifo, fifo.exists)  # the queue manager listens for wake-ups
        store = FileQueueStore(str(tmp_path / "spool"), ImmediateSyncBarrier())
        qid = store.new_queue_id()
        envelope = Envelope("a@client.test", [Recipient("alice@example.test")], T)
        store.enqueue(envelope, b"Subject: held\n\nbody\n", qid)
        store.move(qid, "incoming", "hold")
        assert run_postsuper(["-r", qid], str(server.config_dir)) == 0
        server.wait_for_log(rf"{qid}: removed")
        (message,) = server.messages("alice")
        assert b"Subject: held" in message
        server.stop()
