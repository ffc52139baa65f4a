"""One asynchronous contract, two mail stores: the Deferred API
(pymta.mailstore.asyncstore) of MemoryStore and MaildirStore behaves alike;
the Maildir store runs its calls in its own threads, one folder's in order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from pymta.mailstore import maildir_folder
from pymta.mailstore.asyncstore import IAsyncFolder, IAsyncMailStore, IAsyncUserMailbox
from pymta.mailstore.interface import (
    FlagMode,
    FolderChange,
    FolderExists,
    IMailStore,
    NoSuchFolder,
    NoSuchMessage,
)
from pymta.mailstore.maildir import MaildirStore
from pymta.mailstore.memory import MemoryStore
from tests.test_imap_prefetch import QueuedRunner

MSG = b"From: a@example.org\nSubject: hi\n\nbody line\n"


def _now(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has fired (a Failure for an errback)."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the call did not answer"
    return out[0]


@pytest.fixture(params=["memory", "maildir"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> IMailStore:
    clock = Clock()
    clock.advance(1_700_000_000)
    if request.param == "memory":
        return MemoryStore(clock)
    return MaildirStore(clock, hostname="test", fsync=False)


def _mailbox(store: IMailStore, tmp_path: Path) -> Any:
    return _now(store.asynchronous().open_user("u", str(tmp_path / "u")))


def test_async_interfaces(store: IMailStore, tmp_path: Path) -> None:
    """Both stores offer the asynchronous API fully, one object per store,
    per mailbox and per folder."""
    face = store.asynchronous()
    assert verifyObject(IAsyncMailStore, face) and store.asynchronous() is face
    mailbox = _mailbox(store, tmp_path)
    assert verifyObject(IAsyncUserMailbox, mailbox)
    assert _mailbox(store, tmp_path) is mailbox
    inbox = _now(mailbox.folder("INBOX"))
    assert verifyObject(IAsyncFolder, inbox)
    assert _now(mailbox.folder("inbox")) is inbox


def test_async_append_read_flags_expunge(store: IMailStore, tmp_path: Path) -> None:
    """append, read, set_flags, status and expunge answer as the
    synchronous calls do, and listeners hear each change."""
    inbox = _now(_mailbox(store, tmp_path).folder("INBOX"))
    heard: list[str] = []
    inbox.add_listener(lambda change: heard.append(change.kind))
    uid = _now(inbox.append(MSG, ["\\Flagged"]))
    assert _now(inbox.read(uid)) == MSG
    assert _now(inbox.header_bytes(uid)).startswith(b"From: a@example.org\n")
    info = _now(inbox.set_flags(uid, ["\\Deleted"], FlagMode.ADD))
    assert info.flags == {"\\Flagged", "\\Deleted"}
    status = _now(inbox.status())
    assert (status.messages, status.uidnext) == (1, uid + 1)
    assert _now(inbox.expunge()) == [uid]
    assert _now(inbox.messages()) == []
    assert heard == ["append", "flags", "expunge"]


def test_async_append_many_all_or_nothing(
    store: IMailStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """append_many stores every message, UIDs in order; when one of them
    cannot be stored the error arrives as the errback and none of them is
    in the folder (RFC 3502 MULTIAPPEND)."""
    inbox = _now(_mailbox(store, tmp_path).folder("INBOX"))
    uids = _now(inbox.append_many([(b"Subject: a\n\nx\n", ["\\Seen"], None), (MSG, [], None)]))
    assert uids == [1, 2]
    assert _now(inbox.get(1)).flags == frozenset({"\\Seen"})
    folder = inbox.folder
    real = type(folder).append
    calls: list[int] = []

    def second_fails(self: Any, content: bytes, *args: Any) -> int:
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(self, content, *args)

    monkeypatch.setattr(type(folder), "append", second_fails)
    if isinstance(store, MaildirStore):  # stages first: make the second write fail
        real_write = maildir_folder.MaildirFolder._write_tmp

        def write(self: Any, content: bytes, idate: float) -> Any:
            calls.append(1)
            if len(calls) == 2:
                raise OSError(28, "No space left on device")
            return real_write(self, content, idate)

        monkeypatch.setattr(maildir_folder.MaildirFolder, "_write_tmp", write)
    failure = _now(inbox.append_many([(MSG, [], None), (MSG, [], None), (MSG, [], None)]))
    assert failure.check(OSError)
    assert [m.uid for m in _now(inbox.messages())] == [1, 2]


def test_async_errors_are_errbacks(store: IMailStore, tmp_path: Path) -> None:
    """The store's errors arrive as errbacks, never raised at the call."""
    mailbox = _mailbox(store, tmp_path)
    assert _now(mailbox.folder("Nope")).check(NoSuchFolder)
    inbox = _now(mailbox.folder("INBOX"))
    assert _now(inbox.get(99)).check(NoSuchMessage)
    _now(mailbox.create_folder("Work"))
    assert _now(mailbox.create_folder("Work")).check(FolderExists)


def test_async_folders_copy_and_move(store: IMailStore, tmp_path: Path) -> None:
    """Folders are made, listed and renamed; copy and move keep flags and
    give (old, new) UID pairs, as the synchronous calls do."""
    mailbox = _mailbox(store, tmp_path)
    inbox = _now(mailbox.folder("INBOX"))
    work = _now(mailbox.create_folder("Work"))
    uid = _now(inbox.append(MSG, ["\\Seen"]))
    [(old, new)] = _now(inbox.copy([uid], work))
    assert old == uid and _now(work.get(new)).flags == {"\\Seen"}
    assert _now(inbox.move([uid], work)) == [(uid, new + 1)]
    assert _now(inbox.messages()) == []
    _now(mailbox.rename_folder("Work", "Done"))
    names = [f.name for f in _now(mailbox.list_folders())]
    assert "Done" in names and "Work" not in names
    _now(mailbox.subscribe("Done"))
    assert "Done" in _now(mailbox.subscriptions())


def test_maildir_calls_run_in_the_store_threads_in_order(tmp_path: Path) -> None:
    """The Maildir store runs its calls through its own runner (threads in
    production): nothing touches the disk at the call, and one folder's
    calls run in the order made, each after the previous one finished."""
    runner = QueuedRunner()
    clock = Clock()
    clock.advance(1_700_000_000)
    store = MaildirStore(clock, hostname="test", fsync=False, run_in_thread=runner)
    opened = store.asynchronous().open_user("u", str(tmp_path / "u"))
    assert not (tmp_path / "u").exists()  # not even the Maildir yet
    assert runner.run_all() == 1
    mailbox = _now(opened)
    got = mailbox.folder("INBOX")
    runner.run_all()
    inbox = _now(got)
    order: list[str] = []
    appended = inbox.append(MSG).addCallback(lambda uid: order.append("append") or uid)
    listed = inbox.messages().addCallback(lambda m: order.append("messages") or m)
    assert order == [] and len(runner.jobs) == 1  # the second waits for the first
    runner.run_all()
    assert order == ["append", "messages"]
    assert [m.uid for m in _now(listed)] == [_now(appended)]


def test_memory_calls_answer_at_once(tmp_path: Path) -> None:
    """The memory store answers every call before it returns."""
    store = MemoryStore(Clock())
    inbox = _now(_now(store.asynchronous().open_user("u", "u")).folder("INBOX"))
    changes: list[FolderChange] = []
    inbox.add_listener(changes.append)
    d = inbox.append(MSG)
    assert d.called and changes and changes[0].kind == "append"


def _search_folder(store: IMailStore, tmp_path: Path, count: int) -> Any:
    inbox = _now(_mailbox(store, tmp_path).folder("INBOX"))
    for n in range(1, count + 1):
        body = b"the needle\n" if n % 5 == 0 else b"hay\n"
        _now(inbox.append(b"From: a@example.org\nSubject: m%d\n\n%s" % (n, body)))
    return inbox


def _has_needle(key: Any, info: Any, content: bytes) -> bool:
    """A picklable match (module level) for scan."""
    return b"needle" in content


def test_async_get_many(store: IMailStore, tmp_path: Path) -> None:
    """get_many gives the records of the UIDs present, by UID, in one call
    (a few looked up one by one, many from the whole index alike)."""
    inbox = _search_folder(store, tmp_path, 70)
    few = _now(inbox.get_many([3, 99, 1]))
    assert sorted(few) == [1, 3] and few[3] == _now(inbox.get(3))
    many = _now(inbox.get_many([*range(1, 71), 500]))
    assert sorted(many) == list(range(1, 71)) and many[70] == _now(inbox.get(70))


def test_async_headers_and_prefetch(store: IMailStore, tmp_path: Path) -> None:
    """headers gives each present message's header block by UID (as
    header_bytes does) and leaves gone UIDs out; prefetch_headers answers
    with how many it read; headers_may_contain never leaves out a message
    whose header holds a needle."""
    inbox = _search_folder(store, tmp_path, 12)
    assert _now(inbox.prefetch_headers([1, 2, 3])) == 0  # few: left to the reads
    blocks = _now(inbox.headers([1, 7, 99]))
    assert sorted(blocks) == [1, 7]
    assert blocks[7] == _now(inbox.header_bytes(7)) == b"From: a@example.org\nSubject: m7\n\n"
    hits = _now(inbox.headers_may_contain([b"subject: m7"], list(range(1, 13))))
    assert hits is None or 7 in hits


def test_async_scan_matches_whole_messages(store: IMailStore, tmp_path: Path) -> None:
    """scan matches each message's whole content, answers (key, record) in
    the order asked, and leaves gone UIDs out; through worker runners too,
    where the match and the batch are pickled."""
    import pickle

    inbox = _search_folder(store, tmp_path, 20)
    items = [(f"k{u}", u) for u in (20, 15, 3, 10, 99, 5)]
    found = _now(inbox.scan(items, _has_needle))
    assert [(k, info.uid) for k, info in found] == [
        ("k20", 20),
        ("k15", 15),
        ("k10", 10),
        ("k5", 5),
    ]

    def pickling_workers(work: Any) -> Deferred[Any]:
        from twisted.internet.defer import succeed

        return succeed(pickle.loads(pickle.dumps(work))())

    again = _now(inbox.scan(items, _has_needle, workers=pickling_workers))
    assert [(k, info.uid) for k, info in again] == [(k, info.uid) for k, info in found]


def _threaded_inbox(tmp_path: Path, clock: Clock, runner: QueuedRunner) -> IAsyncFolder:
    """u's INBOX under tmp_path through a Maildir store whose thread work
    ``runner`` holds until the test runs it (the opening's jobs run here)."""
    threaded = MaildirStore(clock, hostname="test", fsync=False, run_in_thread=runner)
    opened = threaded.asynchronous().open_user("u", str(tmp_path / "u"))
    runner.run_all()
    got = _now(opened).folder("INBOX")
    runner.run_all()
    return _now(got)


def test_maildir_prefetch_reads_headers_in_the_store_threads(tmp_path: Path) -> None:
    """The Maildir store reads many uncached header blocks in its threads,
    then answers headers from its cache; its cache rules out messages
    whose header lacks every needle."""
    from pymta.mailstore.prefetch import PREFETCH_MIN

    runner = QueuedRunner()
    clock = Clock()
    store = MaildirStore(clock, hostname="test", fsync=False)
    count = PREFETCH_MIN + 6
    inbox = _search_folder(store, tmp_path, count)
    face = _threaded_inbox(tmp_path, clock, runner)
    uids = list(range(1, count + 1))
    filling = face.prefetch_headers(uids)
    assert not filling.called and len(runner.jobs) == 1
    runner.run_all()
    assert _now(filling) == count
    blocks = face.headers(uids)
    assert blocks.called and len(_now(blocks)) == count and runner.jobs == []
    hits = _now(face.headers_may_contain([b"subject: m7\n"], uids))
    assert hits == {7}
    del inbox


def test_maildir_prefetch_of_one_folder_runs_once_at_a_time(tmp_path: Path) -> None:
    """A second header prefetch of a folder asked while one is under way
    waits for it and then reads only what is still uncached (nothing
    twice)."""
    from pymta.mailstore.prefetch import PREFETCH_MIN

    runner = QueuedRunner()
    clock = Clock()
    count = PREFETCH_MIN + 6
    _search_folder(MaildirStore(clock, hostname="test", fsync=False), tmp_path, count)
    face = _threaded_inbox(tmp_path, clock, runner)
    uids = list(range(1, count + 1))
    first, second = face.prefetch_headers(uids), face.prefetch_headers(uids)
    assert len(runner.jobs) == 1
    runner.run_all()
    assert (_now(first), _now(second)) == (count, 0)
    assert runner.jobs == []


def _subject_digest(header: bytes, internal_date: float) -> tuple[str, int]:
    """A header digest: the Subject line's value and the INTERNALDATE."""
    for line in header.splitlines():
        if line.lower().startswith(b"subject:"):
            return line[8:].strip().decode(), int(internal_date)
    return "", int(internal_date)


class _SubjectDigest:
    """A picklable header digest kept in ``pymta-test-digest``."""

    name = "pymta-test-digest"
    magic = b"pymta-test-digest 1"

    def __call__(self, header: bytes, internal_date: float) -> tuple[str, int]:
        return _subject_digest(header, internal_date)

    def decode(self, item: Any) -> tuple[int, tuple[str, int]] | None:
        if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is int):
            return None
        return item[0], tuple(item[1])


def _pickling_workers(jobs: list[Any]) -> Any:
    """A worker runner that pickles each job there and back (as a process
    pool does) and runs it at once, counting the jobs."""
    import pickle

    from twisted.internet.defer import succeed

    def run(work: Any) -> Deferred[Any]:
        jobs.append(work)
        return succeed(pickle.loads(pickle.dumps(pickle.loads(pickle.dumps(work))())))

    return run


def test_async_header_digests(store: IMailStore, tmp_path: Path) -> None:
    """header_digests gives digest(header block, INTERNALDATE) of each
    present message by UID and leaves gone UIDs out, asked with few or
    many messages, with and without worker processes."""
    inbox = _search_folder(store, tmp_path, 80)
    date = int(_now(inbox.get(7)).internal_date)
    few = _now(inbox.header_digests([7, 3, 999], _SubjectDigest()))
    assert few == {7: ("m7", date), 3: ("m3", date)}
    jobs: list[Any] = []
    many = _now(inbox.header_digests(range(1, 81), _SubjectDigest(), _pickling_workers(jobs)))
    assert sorted(many) == list(range(1, 81))
    assert all(many[u] == (f"m{u}", date) for u in many)
    assert _now(inbox.header_digests([], _SubjectDigest())) == {}
    stopped = _now(inbox.header_digests(range(1, 81), _SubjectDigest(), stopped=lambda: True))
    assert set(stopped) <= set(range(1, 81))  # partial: the caller is gone


def test_maildir_header_digests_read_files_in_the_workers_and_keep_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Maildir store reads uncached headers from their files in the
    worker processes, in batches (never through the folder's own header
    reads), keeps the values in the digest's file, and another store (a
    restarted server) answers from that file without reading a message; a
    damaged file is not used and is written again."""
    from pymta.mailstore import digests

    monkeypatch.setattr(digests, "BATCH", 16)
    monkeypatch.setattr(digests, "AT_ONCE", 8)
    clock = Clock()
    _search_folder(MaildirStore(clock, hostname="test", fsync=False), tmp_path, 40)
    store = MaildirStore(clock, hostname="test", fsync=False)
    inbox = _now(_mailbox(store, tmp_path).folder("INBOX"))
    real = maildir_folder.MaildirFolder.header_bytes
    monkeypatch.setattr(
        maildir_folder.MaildirFolder, "header_bytes", lambda *a: pytest.fail("read by the folder")
    )
    jobs: list[Any] = []
    values = _now(inbox.header_digests(range(1, 41), _SubjectDigest(), _pickling_workers(jobs)))
    assert len(values) == 40 and len(jobs) == 3  # 40 files in batches of 16
    kept = tmp_path / "u" / "pymta-test-digest"
    assert kept.read_bytes().startswith(b"pymta-test-digest 1 V")

    again = MaildirStore(clock, hostname="test", fsync=False)
    face = _now(_mailbox(again, tmp_path).folder("INBOX"))
    jobs.clear()
    assert _now(face.header_digests(range(1, 41), _SubjectDigest(), _pickling_workers(jobs))) == (
        values
    )
    assert jobs == []

    monkeypatch.setattr(maildir_folder.MaildirFolder, "header_bytes", real)
    kept.write_bytes(kept.read_bytes().split(b"\n")[0] + b"\n[[1]]\n[]\n")
    third = MaildirStore(clock, hostname="test", fsync=False)
    face = _now(_mailbox(third, tmp_path).folder("INBOX"))
    assert _now(face.header_digests(range(1, 41), _SubjectDigest())) == values
    fourth = MaildirStore(clock, hostname="test", fsync=False)
    face = _now(_mailbox(fourth, tmp_path).folder("INBOX"))
    monkeypatch.setattr(
        maildir_folder.MaildirFolder, "header_bytes", lambda *a: pytest.fail("read again")
    )
    assert _now(face.header_digests(range(1, 41), _SubjectDigest())) == values


def test_kept_digests_give_what_the_store_keeps_and_compute_nothing(
    store: IMailStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kept_digests gives the values the store keeps for the asked
    messages and computes none: nothing before header_digests ran (and
    nothing ever for the memory store, which keeps nothing); after it,
    the Maildir store's kept file answers, in a restarted store too,
    without a message read."""
    inbox = _search_folder(store, tmp_path, 10)
    assert _now(inbox.kept_digests(range(1, 11), _SubjectDigest())) == {}
    values = _now(inbox.header_digests(range(1, 6), _SubjectDigest()))
    assert len(values) == 5
    kept = _now(inbox.kept_digests(range(1, 11), _SubjectDigest()))
    if isinstance(store, MemoryStore):
        assert kept == {}
        return
    assert kept == values
    monkeypatch.setattr(
        maildir_folder.MaildirFolder, "header_bytes", lambda *a: pytest.fail("read a message")
    )
    again = MaildirStore(Clock(), hostname="test", fsync=False)
    face = _now(_mailbox(again, tmp_path).folder("INBOX"))
    assert _now(face.kept_digests([3, 4, 8, 999], _SubjectDigest())) == {
        3: values[3],
        4: values[4],
    }


def test_maildir_header_digests_run_in_the_store_threads(tmp_path: Path) -> None:
    """With threads, the Maildir store's header_digests answers only once
    its threads have run (the kept file's read, the header reads): the
    caller's thread never reads a file."""
    runner = QueuedRunner()
    clock = Clock()
    _search_folder(MaildirStore(clock, hostname="test", fsync=False), tmp_path, 70)
    face = _threaded_inbox(tmp_path, clock, runner)
    d = face.header_digests(range(1, 71), _SubjectDigest())
    assert not d.called and runner.jobs
    runner.run_all()
    assert sorted(_now(d)) == list(range(1, 71))


class _ThreadedClock(Clock):
    """A Clock with a thread pool the test runs by hand (what the Maildir
    store's default runner, deferToThreadPool, needs of a reactor)."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[tuple[Any, Any]] = []

    def getThreadPool(self) -> Any:
        return self

    def callInThreadWithCallback(self, on_result: Any, work: Any) -> None:
        self.jobs.append((on_result, work))

    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)

    def run_jobs(self) -> int:
        ran = 0
        while self.jobs:
            on_result, work = self.jobs.pop(0)
            on_result(True, work())
            ran += 1
        return ran


def test_maildir_read_behind_a_write_runs_in_its_turn_on_the_reactor(tmp_path: Path) -> None:
    """With the reactor's own thread pool (production), a read made while
    its folder's write waits in a thread runs after it on the reactor
    thread, in the reactor's next turn: no thread hop of its own (every
    IDLE session's update read after an inotify rescan would otherwise
    take one, one after another)."""
    from pymta.mailstore.tmpclean import TmpCleaner

    reactor = _ThreadedClock()
    cleaner = TmpCleaner(Clock())  # its scans at once, not in the pool counted here
    store = MaildirStore(reactor, hostname="test", fsync=False, tmp_cleaner=cleaner)
    opening = store.asynchronous().open_user("u", str(tmp_path / "u"))
    reactor.run_jobs()
    inbox = _now(_now(opening).folder("INBOX"))
    order: list[str] = []
    inbox.append(MSG).addCallback(lambda uid: order.append("append"))
    inbox.messages().addCallback(lambda m: order.append(f"messages {len(m)}"))
    assert len(reactor.jobs) == 1 and order == []
    assert reactor.run_jobs() == 1  # the append only
    assert order == ["append"]
    reactor.advance(0)
    assert order == ["append", "messages 1"] and reactor.jobs == []


def test_a_worker_takes_batches_only_once_it_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the store's threads and worker processes, a worker lane first
    asks its worker to answer and takes no batch until it does (a worker
    still starting would hold up the answer): the store's thread takes
    every batch meanwhile; a worker that answers takes batches too."""
    from twisted.internet.defer import Deferred

    from pymta.mailstore import digests

    monkeypatch.setattr(digests, "BATCH", 8)
    monkeypatch.setattr(digests, "AT_ONCE", 8)
    clock = Clock()
    _search_folder(MaildirStore(clock, hostname="test", fsync=False), tmp_path, 40)
    runner = QueuedRunner()
    face = _threaded_inbox(tmp_path, clock, runner)
    held: list[tuple[Any, Deferred[Any]]] = []

    def starting_workers(work: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        held.append((work, d))
        return d

    d = face.header_digests(range(1, 41), _SubjectDigest(), starting_workers)
    runner.run_all()  # the store's thread: every batch, the workers silent
    assert sorted(_now(d)) == list(range(1, 41))
    assert len(held) == digests.WORKER_LANES  # a ping each, no batch

    # The header blocks read went to the folder's header cache: a digest
    # asked next (not kept in a file) reads no message file.
    unkept = _SubjectDigest()
    unkept.name = ""
    jobs: list[Any] = []
    d = face.header_digests(range(1, 41), unkept, _pickling_workers(jobs))
    runner.run_all()
    assert sorted(_now(d)) == list(range(1, 41)) and jobs == []

    _search_folder(MaildirStore(clock, hostname="test", fsync=False), tmp_path / "v", 40)
    other = _threaded_inbox(tmp_path / "v", clock, runner)
    d = other.header_digests(range(1, 41), unkept, _pickling_workers(jobs))
    runner.run_all()
    assert sorted(_now(d)) == list(range(1, 41))
    assert len(jobs) == 5 + digests.WORKER_LANES  # pings, then every batch
