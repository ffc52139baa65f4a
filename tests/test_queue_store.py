"""The IQueueStore contract, run against FileQueueStore and MemoryQueueStore,
and the file store's own rules (format validation, quarantine, in-place marks)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from pymta.queue import record
from pymta.queue.interface import QUEUE_NAMES, IQueueStore, QueueFileError
from pymta.queue.memory import MemoryQueueStore
from pymta.queue.model import Envelope, Recipient
from pymta.queue.qid import QueueIdAllocator, check_queue_id, is_queue_id
from pymta.queue.store import FileQueueStore
from pymta.sync import ImmediateSyncBarrier

Store = FileQueueStore | MemoryQueueStore


def _envelope() -> Envelope:
    return Envelope(
        "sender@example.org",
        [
            Recipient("a@example.com", "A@example.com", "rfc822;A@example.com", "SUCCESS,FAILURE"),
            Recipient("b@example.com", "b@example.com"),
            Recipient("weird\tname%\n@example.com", ""),
        ],
        1700000000.25,
        {"client_name": "mail.example.org", "client_address": "192.0.2.1", "helo_name": "x\ny"},
    )


CONTENT = b"Subject: hi\n\nbody line\n.\n"


def _enqueue(store: Store, envelope: Envelope, content: bytes = CONTENT) -> str:
    results: list[str] = []
    store.enqueue(envelope, content).addCallback(results.append)
    assert len(results) == 1
    return results[0]


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    clock = Clock()
    clock.advance(1700000000)
    if request.param == "file":
        yield FileQueueStore(str(tmp_path / "queue"), ImmediateSyncBarrier(), clock)
    else:
        yield MemoryQueueStore(clock)


def test_store_provides_interface(store: Store) -> None:
    """Every store implements IQueueStore."""
    assert verifyObject(IQueueStore, store)


def test_round_trip(store: Store) -> None:
    """What is enqueued reads back equal, into incoming/, escaped fields included."""
    qid = _enqueue(store, _envelope())
    assert is_queue_id(qid)
    assert store.list("incoming") == [qid]
    envelope, content = store.read(qid, "incoming")
    assert envelope == _envelope()
    assert content == CONTENT
    assert store.find(qid) == "incoming"


def test_arrival_time_defaults_to_clock(store: Store) -> None:
    """An envelope without arrival time gets the store clock's time."""
    qid = _enqueue(store, Envelope("", [Recipient("x@y")]))
    envelope, content = store.read(qid, "incoming")
    assert envelope.arrival_time == 1700000000.0
    assert envelope.sender == ""
    assert content == CONTENT


def test_new_queue_id_is_used_by_enqueue(store: Store) -> None:
    """An id allocated first (for the Received header) is the id enqueue uses."""
    qid = store.new_queue_id()
    results: list[str] = []
    store.enqueue(_envelope(), CONTENT, qid).addCallback(results.append)
    assert results == [qid]
    assert store.list("incoming") == [qid]


def test_move_and_list(store: Store) -> None:
    """move renames between queues; each message is in exactly one queue."""
    qid = _enqueue(store, _envelope())
    store.move(qid, "incoming", "active")
    assert store.list("incoming") == []
    assert store.list("active") == [qid]
    store.move(qid, "active", "deferred")
    assert store.find(qid) == "deferred"
    assert store.read(qid, "deferred")[1] == CONTENT


def test_mark_done_survives_reread(store: Store) -> None:
    """A recipient marked done reads back done; the others stay pending."""
    qid = _enqueue(store, _envelope())
    store.move(qid, "incoming", "active")
    store.mark_done(qid, "active", 1)
    envelope, content = store.read(qid, "active")
    assert [r.done for r in envelope.recipients] == [False, True, False]
    assert content == CONTENT
    with pytest.raises(IndexError):
        store.mark_done(qid, "active", 3)


def test_next_attempt(store: Store) -> None:
    """set_next_attempt is what next_attempt reports; unknown ids are KeyError."""
    qid = _enqueue(store, _envelope())
    store.move(qid, "incoming", "deferred")
    store.set_next_attempt(qid, 1700000300.0)
    assert store.next_attempt(qid) == 1700000300.0
    with pytest.raises(KeyError):
        store.next_attempt("ABCDEF0123")


def test_defer_reasons_are_per_recipient_and_removed(store: Store) -> None:
    """The last reason per recipient is kept, and goes away with the message."""
    qid = _enqueue(store, _envelope())
    assert store.defer_reasons(qid) == {}
    store.record_defer(qid, 0, "4.4.1", "connect refused")
    store.record_defer(qid, 2, "4.2.2", "mailbox full")
    store.record_defer(qid, 0, "4.4.2", "lost connection\nwith host")
    reasons = store.defer_reasons(qid)
    assert reasons[2] == ("4.2.2", "mailbox full")
    assert reasons[0][0] == "4.4.2"
    assert reasons[0][1].startswith("lost connection")
    store.remove(qid, "incoming")
    assert store.find(qid) is None
    assert store.defer_reasons(qid) == {}


def test_quarantine_moves_to_corrupt(store: Store) -> None:
    """quarantine moves a message to corrupt/, where it stays."""
    qid = _enqueue(store, _envelope())
    store.quarantine(qid, "incoming", "test")
    assert store.list("corrupt") == [qid]
    assert store.list("incoming") == []


def test_malformed_queue_id_is_a_programming_error(store: Store) -> None:
    """An id that is not a queue id never becomes a path."""
    for bad in ("../etc/passwd", "abcdef", "", "ABC", "ABCDEF/../X"):
        with pytest.raises(ValueError):
            store.read(bad, "incoming")
    with pytest.raises(ValueError):
        store.read("ABCDEF0123", "nosuchqueue")


def test_ids_unique_in_a_burst(store: Store) -> None:
    """A quick burst of ids under a clock that stands still never repeats."""
    ids = [store.new_queue_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert all(is_queue_id(i) for i in ids)


def test_ids_differ_between_processes() -> None:
    """Two processes (different pids) at the same instant make different ids."""
    now: Callable[[], float] = lambda: 1700000000.0  # noqa: E731
    a = QueueIdAllocator(now, pid=100)
    b = QueueIdAllocator(now, pid=101)
    assert {a() for _ in range(100)}.isdisjoint({b() for _ in range(100)})
    qid = a()
    assert check_queue_id(qid) == qid


# -- file store only ----------------------------------------------------------


@pytest.fixture
def fstore(tmp_path: Path) -> FileQueueStore:
    clock = Clock()
    clock.advance(1700000000)
    return FileQueueStore(str(tmp_path / "q"), ImmediateSyncBarrier(), clock)


def test_directories_created(fstore: FileQueueStore) -> None:
    """The queue directories and defer/ exist after construction."""
    for name in (*QUEUE_NAMES, "defer"):
        assert os.path.isdir(os.path.join(fstore.directory, name))


def test_enqueue_fires_only_after_sync(tmp_path: Path) -> None:
    """enqueue's Deferred waits for the sync barrier; the file is already
    in incoming/ under its final name (no temporary) and marked ready (mode
    0700, Postfix's ready mark) before that sync, and is named to the
    barrier."""
    from twisted.internet.defer import Deferred, succeed

    class HeldBarrier:
        def __init__(self) -> None:
            self.waiting: list[tuple[list[str], list[str], Deferred[None]]] = []

        def sync(self, files: list[str] = [], dirs: list[str] = []) -> Deferred[None]:  # noqa: B006
            d: Deferred[None] = Deferred()
            self.waiting.append((list(files), list(dirs), d))
            return d

        def run(
            self,
            work: Callable[[], object],
            durable: bool = True,
            files: list[str] = [],  # noqa: B006
            dirs: list[str] = [],  # noqa: B006
            soon: bool = False,
        ) -> Deferred[object]:
            work()  # the work is done now; the sync is held
            return self.sync(files, dirs) if durable else succeed(None)

    barrier = HeldBarrier()
    store = FileQueueStore(str(tmp_path / "q"), barrier, Clock())  # type: ignore[arg-type]
    results: list[str] = []
    store.enqueue(_envelope(), CONTENT).addCallback(results.append)
    assert results == []
    files, dirs, d = barrier.waiting[0]
    qid = os.path.basename(files[0])
    assert dirs == [os.path.join(store.directory, "incoming")]
    assert os.listdir(dirs[0]) == [qid]
    assert os.stat(files[0]).st_mode & 0o777 == 0o700
    d.callback(None)
    assert results == [qid]


def test_enqueue_failure_leaves_nothing(fstore: FileQueueStore) -> None:
    """A write error (here: incoming/ gone) errbacks and leaves no temporary."""
    incoming = os.path.join(fstore.directory, "incoming")
    os.rmdir(incoming)
    failures: list[object] = []
    fstore.enqueue(_envelope(), CONTENT).addErrback(failures.append)
    assert len(failures) == 1
    assert not os.path.exists(incoming)


def test_mark_done_is_one_byte_in_place(fstore: FileQueueStore) -> None:
    """mark_done changes exactly one byte of the file, and works from a
    fresh store that has not seen the file (it reads the offsets first)."""
    qid = _enqueue(fstore, _envelope())
    path = fstore.path(qid, "incoming")
    before = Path(path).read_bytes()
    fresh = FileQueueStore(fstore.directory, ImmediateSyncBarrier(), Clock())
    fresh.mark_done(qid, "incoming", 2)
    after = Path(path).read_bytes()
    assert len(before) == len(after)
    assert sum(1 for x, y in zip(before, after, strict=True) if x != y) == 1
    assert [r.done for r in fstore.read(qid, "incoming")[0].recipients] == [False, False, True]


def _good_file() -> bytes:
    buffers, _ = record.encode(_envelope(), CONTENT)
    return b"".join(buffers)


def _bad_files() -> dict[str, bytes]:
    good = _good_file()
    return {
        "empty": b"",
        "truncated in header": good[:40],
        "truncated in content": good[: len(good) - 6],
        "missing end marker": good[:-2] + b"X\n",
        "trailing garbage": good + b"more",
        "bad magic": b"PYMTAQ 9\n" + good[len(record.MAGIC) :],
        "record order": good.replace(b"\nS", b"\nX", 1),
        "bad count": good.replace(b"\nN3\n", b"\nN4\n", 1),
        "count too low": good.replace(b"\nN3\n", b"\nN2\n", 1),
        "bad flag": good.replace(b"\nR-a@", b"\nR?a@", 1),
        "bad length": good.replace(b"\nL25\n", b"\nLxx\n", 1),
        "garbage": os.urandom(64) + b"\n" * 3,
        "bad arrival": good.replace(b"T1700000000.25", b"Tsoon", 1),
        # Found by fuzz/targets/queue_file.py: float() takes these, and a
        # message that arrived at nan or inf never expires and retries at nan.
        "arrival nan": good.replace(b"T1700000000.25", b"Tnan", 1),
        "arrival inf": good.replace(b"T1700000000.25", b"T-Infinity", 1),
        "arrival 1e400": good.replace(b"T1700000000.25", b"T1e400", 1),
    }


@pytest.mark.parametrize("kind", sorted(_bad_files()))
def test_corrupt_files_are_rejected(fstore: FileQueueStore, kind: str) -> None:
    """Each kind of damage makes read raise QueueFileError naming the file."""
    assert b"\nN3\n" in _good_file() and b"\nL25\n" in _good_file()
    qid = fstore.new_queue_id()
    Path(fstore.path(qid, "active")).write_bytes(_bad_files()[kind])
    with pytest.raises(QueueFileError, match=f"active/{qid}"):
        fstore.read(qid, "active")


def test_corrupt_files_go_to_corrupt_and_others_keep_moving(fstore: FileQueueStore) -> None:
    """A scan that quarantines bad files still reads every good one."""
    good_ids = [_enqueue(fstore, _envelope()) for _ in range(3)]
    bad_ids = []
    for data in _bad_files().values():
        qid = fstore.new_queue_id()
        path = Path(fstore.path(qid, "incoming"))
        path.write_bytes(data)
        path.chmod(0o700)  # damaged after it was finished
        bad_ids.append(qid)
    read_ok = []
    for qid in fstore.list("incoming"):
        try:
            fstore.read(qid, "incoming")
        except QueueFileError as e:
            fstore.quarantine(qid, "incoming", str(e))
        else:
            read_ok.append(qid)
    assert sorted(read_ok) == sorted(good_ids)
    assert fstore.list("corrupt") == sorted(bad_ids)
    assert fstore.list("incoming") == sorted(good_ids)


def test_list_skips_temporaries_and_strangers(fstore: FileQueueStore) -> None:
    """Temporary files and names that are not queue ids are not listed;
    stale temporaries can be removed."""
    incoming = Path(fstore.directory, "incoming")
    (incoming / "ABCDEF012345.tmp").write_bytes(b"half")
    (incoming / "README").write_bytes(b"x")
    os.utime(incoming / "ABCDEF012345.tmp", (100, 100))
    assert fstore.list("incoming") == []
    assert fstore.remove_stale_temporaries(200) == ["ABCDEF012345.tmp"]
    assert sorted(os.listdir(incoming)) == ["README"]


def test_list_skips_files_not_ready(fstore: FileQueueStore) -> None:
    """A queue file in incoming/ without its ready mark (being written, or
    its writer died) is not listed: the queue manager never reads half a
    file; once marked it is."""
    qid = fstore.new_queue_id()
    path = Path(fstore.path(qid, "incoming"))
    path.write_bytes(_good_file()[:20])
    path.chmod(0o600)
    assert fstore.list("incoming") == []
    path.write_bytes(_good_file())
    path.chmod(0o700)
    assert fstore.list("incoming") == [qid]


def test_remove_stale_removes_unfinished_and_marks_whole_files(fstore: FileQueueStore) -> None:
    """At start, a not-ready file older than the limit that is not a whole
    queue file goes (never acknowledged); a not-ready one that is whole (an
    earlier pymta renamed finished files and did not mark them) is marked
    ready and listed, never deleted; younger ones are left alone."""
    incoming = Path(fstore.directory, "incoming")
    half, whole, young = (fstore.new_queue_id() for _ in range(3))
    (incoming / half).write_bytes(_good_file()[:-5])
    (incoming / whole).write_bytes(_good_file())
    (incoming / young).write_bytes(_good_file()[:10])
    for qid in (half, whole, young):
        (incoming / qid).chmod(0o600)
    for qid in (half, whole):
        os.utime(incoming / qid, (100, 100))
    os.utime(incoming / young, (300, 300))
    assert fstore.remove_stale_temporaries(200) == [half]
    assert sorted(os.listdir(incoming)) == sorted([whole, young])
    assert fstore.list("incoming") == [whole]
    assert fstore.read(whole, "incoming")[1] == b"Subject: hi\n\nbody line\n.\n"


def test_remove_unlinks_a_defer_log_only_where_one_may_exist(
    fstore: FileQueueStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """remove() of a message this store wrote and never deferred tries no
    defer log (no failing unlink per delivered message); after a deferral,
    and for a message it did not write, the defer log goes with the file."""
    unlinked: list[str] = []
    real_unlink = os.unlink

    def unlink(path: str) -> None:
        unlinked.append(os.path.basename(os.path.dirname(path)))
        real_unlink(path)

    plain = _enqueue(fstore, _envelope())
    deferred = _enqueue(fstore, _envelope())
    fstore.record_defer(deferred, 0, "4.0.0", "try later")
    other = fstore.new_queue_id()
    Path(fstore.path(other, "active")).write_bytes(_good_file())
    Path(fstore.directory, "defer", other).write_bytes(b"0\t4.0.0\tearlier\n")
    monkeypatch.setattr(os, "unlink", unlink)
    fstore.remove(plain, "incoming")
    assert unlinked == ["incoming"]
    del unlinked[:]
    fstore.remove(deferred, "incoming")
    fstore.remove(other, "active")
    assert unlinked == ["incoming", "defer", "active", "defer"]
    assert os.listdir(os.path.join(fstore.directory, "defer")) == []


def test_next_attempt_is_file_mtime(fstore: FileQueueStore) -> None:
    """As in Postfix, the next attempt time is the queue file's mtime."""
    qid = _enqueue(fstore, _envelope())
    fstore.move(qid, "incoming", "deferred")
    fstore.set_next_attempt(qid, 1800000000.0)
    assert os.stat(fstore.path(qid, "deferred")).st_mtime == 1800000000.0


def test_memory_store_corrupt_helper() -> None:
    """MemoryQueueStore.corrupt makes reads fail so qmgr can test quarantine."""
    store = MemoryQueueStore()
    qid = _enqueue(store, _envelope())
    store.corrupt(qid)
    with pytest.raises(QueueFileError):
        store.read(qid, "incoming")
