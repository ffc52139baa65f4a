"""Tests of the queue's intake log (pymta.queue.intake) and its commit
through the queue barrier (pymta.sync) and store (pymta.queue.store)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock

from pymta.queue import record
from pymta.queue.intake import (
    LOG_NAME,
    IntakeLog,
    encode_message,
    encode_retired,
    read_generation,
    recover,
    scan,
)
from pymta.queue.model import Envelope, Recipient
from pymta.queue.store import FileQueueStore
from pymta.sync import SyncBarrier

SIZE = 256 * 1024


class Thread:
    """Runs each batch at once on the calling thread (the barrier's fake)."""

    def __call__(self, work: Callable[[], None]) -> Deferred[None]:
        return maybeDeferred(work)


class Syncs:
    """Records what the barrier synced and how often the log was made durable."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[str]]] = []
        self.durable = 0

    def __call__(self, files: Sequence[str], dirs: Sequence[str]) -> None:
        self.calls.append((list(files), list(dirs)))

    def make_durable(self) -> None:
        self.durable += 1


class Now:
    def __init__(self) -> None:
        self.value = 100.0

    def __call__(self) -> float:
        return self.value


def _log(directory: Path, syncs: Syncs, now: Now | None = None, size: int = SIZE) -> IntakeLog:
    log = IntakeLog(str(directory / LOG_NAME), size, syncs.make_durable, 1.0, now=now or Now())
    log.open()
    log.start()
    return log


def _store(
    tmp_path: Path, now: Now | None = None, size: int = SIZE
) -> tuple[FileQueueStore, IntakeLog, Syncs]:
    syncs = Syncs()
    queue = tmp_path / "queue"
    queue.mkdir(exist_ok=True)
    log = _log(queue, syncs, now, size)
    barrier = SyncBarrier(
        str(queue), run_in_thread=Thread(), sync_function=syncs, single_function=syncs
    )
    barrier.intake = log
    store = FileQueueStore(str(queue), barrier, clock=Clock(), intake=log)
    return store, log, syncs


def _envelope() -> Envelope:
    return Envelope(
        sender="a@example.test",
        recipients=[Recipient("b@example.test"), Recipient("c@example.test")],
        arrival_time=1.0,
    )


def _enqueue(store: FileQueueStore, content: bytes, queue: str = "incoming") -> str:
    done: list[str] = []
    store.enqueue(_envelope(), content, queue=queue).addCallback(done.append)
    assert len(done) == 1
    return done[0]


def _reopen(tmp_path: Path) -> IntakeLog:
    log = IntakeLog(str(tmp_path / "queue" / LOG_NAME), SIZE, Syncs().make_durable)
    log.open()
    return log


def test_records_encode_and_scan() -> None:
    """A scan returns the message records of its generation in order, with
    their queue id, target and bytes, and the retired ids."""
    data = (
        encode_message(7, "AAAAAAAAAAAA", "incoming", [b"one", b"two"])
        + encode_retired(7, "BBBBBBBBBBBB")
        + encode_message(7, "CCCCCCCCCCCC", "hold", [b"three"])
    )
    messages, retired, length = scan(data + bytes(100), 7)
    assert [(m.queue_id, m.target, m.data) for m in messages] == [
        ("AAAAAAAAAAAA", "incoming", b"onetwo"),
        ("CCCCCCCCCCCC", "hold", b"three"),
    ]
    assert retired == {"BBBBBBBBBBBB"}
    assert length == len(data)


def test_scan_stops_at_a_torn_record_and_at_another_generation() -> None:
    """A record whose bytes do not match its checksum ends the scan (never
    acknowledged), and so does a record of an older generation left behind
    the current one's."""
    first = encode_message(3, "AAAAAAAAAAAA", "incoming", [b"whole"])
    torn = bytearray(encode_message(3, "BBBBBBBBBBBB", "incoming", [b"torn file"]))
    torn[-2] ^= 0xFF
    messages, _, length = scan(first + bytes(torn), 3)
    assert [m.queue_id for m in messages] == ["AAAAAAAAAAAA"]
    assert length == len(first)
    cut = encode_message(3, "BBBBBBBBBBBB", "incoming", [b"cut short"])[:-3]
    assert [m.queue_id for m in scan(first + cut, 3)[0]] == ["AAAAAAAAAAAA"]
    old = encode_message(2, "CCCCCCCCCCCC", "incoming", [b"freed"])
    assert [m.queue_id for m in scan(first + old, 3)[0]] == ["AAAAAAAAAAAA"]
    assert scan(first, 4)[0] == []


def test_log_is_made_at_full_size_with_a_header(tmp_path: Path) -> None:
    """A new log is its whole size at once, its header naming generation 1."""
    log = _log(tmp_path, Syncs())
    assert os.path.getsize(log.path) == SIZE
    fd = os.open(log.path, os.O_RDONLY)
    try:
        assert read_generation(fd) == 1
    finally:
        os.close(fd)


def test_committed_record_survives_a_reopen(tmp_path: Path) -> None:
    """A message committed through the barrier is in the log when it is
    opened again (a crash), with its file's exact bytes; its file was not
    synced on its own."""
    store, _, syncs = _store(tmp_path)
    qid = _enqueue(store, b"Subject: x\r\n\r\nbody\r\n")
    assert syncs.calls == []  # the log, not the file, made it durable
    found = _reopen(tmp_path).found
    assert [m.queue_id for m in found] == [qid]
    assert found[0].data == Path(store.path(qid, "incoming")).read_bytes()


def test_checkpoint_frees_the_records(tmp_path: Path) -> None:
    """After a checkpoint (files made durable, next generation) a reopened
    log holds no record, and new records start at the beginning again."""
    store, log, syncs = _store(tmp_path)
    _enqueue(store, b"one\r\n")
    assert log.checkpoint()
    assert syncs.durable == 1
    assert _reopen(tmp_path).found == []
    qid = _enqueue(store, b"two\r\n")
    assert [m.queue_id for m in _reopen(tmp_path).found] == [qid]


def test_checkpoint_is_due_by_age_and_by_fill(tmp_path: Path) -> None:
    """A checkpoint is due once the oldest record is checkpoint_time old,
    or once half the log is used; a batch after that runs it."""
    now = Now()
    store, log, syncs = _store(tmp_path, now)
    assert not log.checkpoint_due()
    _enqueue(store, b"x\r\n")
    now.value += 0.5
    assert not log.checkpoint_due()
    now.value += 0.6
    assert log.checkpoint_due()
    _enqueue(store, b"y\r\n")  # its batch checkpoints after firing it
    assert syncs.durable == 1 and not log.checkpoint_due()
    for _ in range(11):
        _enqueue(store, b"z" * 10000 + b"\r\n")  # 11 x 10 KiB of 256 KiB: under half
    assert syncs.durable == 1
    for _ in range(3):
        _enqueue(store, b"z" * 10000 + b"\r\n")
    assert syncs.durable == 2  # half full: checkpointed without waiting a second


def test_oversized_message_is_synced_instead(tmp_path: Path) -> None:
    """A message bigger than a sixteenth of the log is not logged: its file
    and directory are synced as without a log."""
    store, _, syncs = _store(tmp_path)
    qid = _enqueue(store, b"z" * (SIZE // 16) + b"\r\n")
    path = store.path(qid, "incoming")
    assert syncs.calls == [([path], [os.path.dirname(path)])]
    assert _reopen(tmp_path).found == []


def test_full_log_syncs_the_message_that_does_not_fit(tmp_path: Path) -> None:
    """While checkpoints fail (the queue's sync fails: logged, the records
    stay live), the log fills; a message whose record does not fit in the
    space left is then synced as without a log, and none is lost."""
    store, log, syncs = _store(tmp_path, size=72 * 1024)

    def failing() -> None:
        raise OSError(5, "EIO")

    log.make_durable = failing
    queued = [_enqueue(store, b"z" * 3000 + b"\r\n") for _ in range(30)]
    assert log.checkpoints == 0
    logged = [m.queue_id for m in _reopen(tmp_path).found]
    synced = [os.path.basename(files[0]) for files, _ in syncs.calls]
    assert 15 < len(logged) < 30
    assert logged + synced == queued


def test_replay_skips_retired_messages(tmp_path: Path) -> None:
    """A message removed after its delivery (a retired record) is not
    written again by a replay; one that was not is."""
    store, _, _ = _store(tmp_path)
    delivered = _enqueue(store, b"delivered\r\n")
    kept = _enqueue(store, b"kept\r\n")
    done: list[bool] = []
    store.remove(delivered, "incoming").addCallback(done.append)
    store._sync.drain()  # type: ignore[attr-defined]
    assert done == [True]
    os.unlink(store.path(kept, "incoming"))  # lost in a power loss
    reopened = _reopen(tmp_path)
    assert recover(reopened, store.directory) == [(kept, "incoming")]
    assert not os.path.exists(store.path(delivered, "incoming"))
    assert os.path.exists(store.path(kept, "incoming"))


def test_replay_writes_missing_and_torn_files_and_leaves_whole_ones(tmp_path: Path) -> None:
    """Replay writes a missing file into its target queue and a torn one
    anew, both ready and valid; a whole file elsewhere (moved to deferred/
    with a recipient marked done) is left as it is. Then the log is free."""
    store, _, _ = _store(tmp_path)
    missing = _enqueue(store, b"missing\r\n")
    torn = _enqueue(store, b"torn\r\n")
    held = _enqueue(store, b"held\r\n", queue="hold")
    whole = _enqueue(store, b"whole\r\n")
    original = Path(store.path(missing, "incoming")).read_bytes()
    os.unlink(store.path(missing, "incoming"))
    with open(store.path(torn, "incoming"), "r+b") as f:
        f.truncate(20)
    os.unlink(store.path(held, "hold"))
    store.mark_done(whole, "incoming", 0)
    store.move(whole, "incoming", "deferred")
    store._sync.drain()  # type: ignore[attr-defined]
    marked = Path(store.path(whole, "deferred")).read_bytes()

    reopened = _reopen(tmp_path)
    recovered = recover(reopened, store.directory)
    assert sorted(recovered) == sorted([(missing, "incoming"), (torn, "incoming"), (held, "hold")])
    assert Path(store.path(missing, "incoming")).read_bytes() == original
    for qid, queue in recovered:
        path = store.path(qid, queue)
        assert os.stat(path).st_mode & stat.S_IXUSR
        record.decode(Path(path).read_bytes())
    assert Path(store.path(whole, "deferred")).read_bytes() == marked
    assert not os.path.exists(store.path(whole, "incoming"))
    assert _reopen(tmp_path).found == []


def test_idle_log_is_checkpointed_once_its_oldest_record_is_old(tmp_path: Path) -> None:
    """With no further commits, the barrier runs the checkpoint itself once
    the oldest record is checkpoint_time old (a timer on its clock); a
    clean stop's checkpoint frees what is left at once."""
    now = Now()
    syncs = Syncs()
    queue = tmp_path / "queue"
    queue.mkdir()
    log = _log(queue, syncs, now)
    clock = Clock()
    barrier = SyncBarrier(
        str(queue), run_in_thread=Thread(), sync_function=syncs, single_function=syncs, clock=clock
    )
    barrier.intake = log
    store = FileQueueStore(str(queue), barrier, clock=clock, intake=log)
    _enqueue(store, b"idle\r\n")
    assert syncs.durable == 0 and log.has_records
    now.value += 1.0
    clock.advance(1.0)
    assert syncs.durable == 1 and not log.has_records
    _enqueue(store, b"stop\r\n")
    stopped: list[None] = []
    barrier.checkpoint().addCallback(stopped.append)
    assert stopped == [None] and syncs.durable == 2
    assert _reopen(tmp_path).found == []
    now.value += 1.0
    clock.advance(1.0)  # the timer of the second record finds nothing to do
    assert syncs.durable == 2


def test_shared_queue_replays_and_removes_a_left_log(tmp_path: Path) -> None:
    """Several processes on the queue use no log: one an earlier run left
    (one process, killed) is replayed at start and removed, so its
    acknowledged messages are not lost by the change of process count."""
    from pymta.assemble import _open_intake
    from pymta.config.config import Config

    store, log, _ = _store(tmp_path)
    qid = _enqueue(store, b"left behind\r\n")
    os.unlink(store.path(qid, "incoming"))
    log.close()
    config = Config.from_text(f"queue_directory = {store.directory}\n", "main.cf")
    assert _open_intake(config, store.directory, keep=False) is None
    assert os.path.exists(store.path(qid, "incoming"))
    assert not os.path.exists(os.path.join(store.directory, LOG_NAME))
    kept = _open_intake(config, store.directory, keep=True)
    assert kept is not None and os.path.getsize(kept.path) == 16 * 1024 * 1024
    kept.close()
