"""Tests of group commit (pymta.sync)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from pymta.sync import (
    ImmediateSyncBarrier,
    ISyncBarrier,
    SyncBarrier,
    fsync_paths,
    syncfs_directory,
)


class ControlledThread:
    """Stands in for the thread pool: records each batch's work and lets the
    test decide when the batch finishes."""

    def __init__(self) -> None:
        self.started: list[tuple[Callable[[], None], Deferred[None]]] = []

    def __call__(self, work: Callable[[], None]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.started.append((work, d))
        return d

    def finish(self, n: int) -> None:
        work, d = self.started[n]
        try:
            work()
        except Exception as e:
            d.errback(e)
        else:
            d.callback(None)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[str]]] = []

    def __call__(self, files: Sequence[str], dirs: Sequence[str]) -> None:
        self.calls.append((list(files), list(dirs)))


def _barrier(method: str = "syncfs") -> tuple[SyncBarrier, ControlledThread, Recorder]:
    thread = ControlledThread()
    recorder = Recorder()
    barrier = SyncBarrier("/nonexistent", method, run_in_thread=thread, sync_function=recorder)
    return barrier, thread, recorder


def test_barriers_provide_interface() -> None:
    """Both barriers implement ISyncBarrier."""
    barrier, _, _ = _barrier()
    assert verifyObject(ISyncBarrier, barrier)
    assert verifyObject(ISyncBarrier, ImmediateSyncBarrier())


def test_immediate_barrier_fires_at_once() -> None:
    """ImmediateSyncBarrier's Deferred has already fired and it counts calls."""
    barrier = ImmediateSyncBarrier()
    fired: list[object] = []
    barrier.sync().addCallback(fired.append)
    assert fired == [None]
    assert barrier.calls == 1


def test_concurrent_callers_share_one_sync() -> None:
    """Many callers that arrive together are served by one sync."""
    barrier, thread, recorder = _barrier()
    fired: list[int] = []
    for i in range(20):
        barrier.sync().addCallback(lambda _, i=i: fired.append(i))
    # The first caller started a sync; the other 19 wait for the next one.
    assert len(thread.started) == 1
    thread.finish(0)
    assert fired == [0]
    assert len(thread.started) == 2
    thread.finish(1)
    assert fired == list(range(20))
    assert len(recorder.calls) == 2
    assert barrier.syncs == 2


def test_caller_during_sync_waits_for_next_sync() -> None:
    """A caller arriving while a sync runs is not served by that sync, but by
    one that starts after its call."""
    barrier, thread, recorder = _barrier()
    first: list[object] = []
    late: list[object] = []
    barrier.sync().addCallback(first.append)
    assert len(thread.started) == 1
    # The sync is running (not finished) when the second caller arrives.
    barrier.sync().addCallback(late.append)
    assert len(thread.started) == 1
    thread.finish(0)
    assert first == [None]
    assert late == []
    assert len(thread.started) == 2
    assert len(recorder.calls) == 1
    thread.finish(1)
    assert late == [None]
    assert len(recorder.calls) == 2


def test_idle_barrier_starts_a_sync_immediately() -> None:
    """When no sync is running, a call starts one at once (no batching delay)."""
    barrier, thread, _ = _barrier()
    barrier.sync()
    thread.finish(0)
    barrier.sync()
    assert len(thread.started) == 2


def test_failure_reaches_every_waiter_of_the_batch() -> None:
    """A failed sync errbacks every caller it was to cover; the next batch
    still runs."""
    thread = ControlledThread()
    outcomes: list[str] = []

    def failing(files: Sequence[str], dirs: Sequence[str]) -> None:
        raise OSError(5, "I/O error")

    barrier = SyncBarrier("/x", run_in_thread=thread, sync_function=failing)
    barrier.sync().addCallbacks(lambda _: outcomes.append("ok"), lambda f: outcomes.append("err"))
    barrier.sync().addCallbacks(lambda _: outcomes.append("ok"), lambda f: outcomes.append("err"))
    barrier.sync().addCallbacks(lambda _: outcomes.append("ok"), lambda f: outcomes.append("err"))
    thread.finish(0)
    assert outcomes == ["err"]
    thread.finish(1)
    assert outcomes == ["err", "err", "err"]


def test_fsync_mode_passes_files_and_deduplicated_dirs() -> None:
    """In fsync mode a batch syncs every caller's files and each directory once."""
    barrier, thread, recorder = _barrier("fsync")
    barrier.sync()
    barrier.sync(files=["/q/incoming/A"], dirs=["/q/incoming"])
    barrier.sync(files=["/q/incoming/B"], dirs=["/q/incoming"])
    thread.finish(0)
    thread.finish(1)
    assert recorder.calls == [([], []), (["/q/incoming/A", "/q/incoming/B"], ["/q/incoming"])]


def test_syncfs_mode_passes_directories_not_files() -> None:
    """In syncfs mode the file list is not needed; the directories are passed
    (de-duplicated) so that every file system written to is synced."""
    barrier, thread, recorder = _barrier("syncfs")
    barrier.sync(files=["/q/a"], dirs=["/q"])
    barrier.sync(files=["/q/b"], dirs=["/q", "/mail"])
    thread.finish(0)
    thread.finish(1)
    assert recorder.calls == [([], ["/q"]), ([], ["/q", "/mail"])]


def test_syncfs_syncs_each_file_system_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One syncfs per device among the batch's directories and the queue's."""
    from pymta import sync as sync_module

    synced: list[str] = []
    monkeypatch.setattr(sync_module, "syncfs_directory", synced.append)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    barrier = SyncBarrier(str(tmp_path), "syncfs", run_in_thread=ControlledThread())
    barrier._syncfs([], [str(tmp_path / "a"), str(tmp_path / "b"), "/proc", str(tmp_path / "gone")])
    assert synced == [str(tmp_path / "a"), "/proc"]


def test_unknown_method_is_rejected() -> None:
    """A sync method other than syncfs or fsync is an error."""
    with pytest.raises(ValueError, match="unknown sync method"):
        SyncBarrier("/x", "sometimes", run_in_thread=ControlledThread())


def test_real_sync_functions_work_on_a_directory(tmp_path: Path) -> None:
    """syncfs and fsync of real files succeed, and fail clearly on a missing path."""
    f = tmp_path / "f"
    f.write_bytes(b"x")
    syncfs_directory(str(tmp_path))
    fsync_paths([str(f)], [str(tmp_path)])
    with pytest.raises(OSError):
        fsync_paths([str(tmp_path / "missing")], [])


@pytest_twisted.inlineCallbacks
def test_real_barrier_in_thread_pool(tmp_path: Path):  # type: ignore[no-untyped-def]
    """With the real reactor the barrier syncs in a thread and fires every caller."""
    from twisted.internet import reactor

    for method in ("syncfs", "fsync"):
        barrier = SyncBarrier(str(tmp_path), method, reactor)
        path = tmp_path / method
        path.write_bytes(b"data")
        waiting = [barrier.sync(files=[str(path)], dirs=[str(tmp_path)]) for _ in range(5)]
        for d in waiting:
            value = yield d
            assert value is None
        assert barrier.syncs == 2
    assert os.path.exists(tmp_path / "fsync")


class _ThreadReactor:
    """Just enough reactor for a SyncBarrier on its real worker thread: calls
    from the thread are queued for the test to run, timers are a Clock."""

    def __init__(self) -> None:
        import queue

        from twisted.internet.task import Clock

        self.clock = Clock()
        self.calls: queue.SimpleQueue[tuple[Callable[..., object], tuple[object, ...]]] = (
            queue.SimpleQueue()
        )

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        self.calls.put((f, args))

    def callLater(self, delay: float, f: Callable[..., object], *args: object) -> object:
        return self.clock.callLater(delay, f, *args)

    def addSystemEventTrigger(self, *args: object) -> None:
        pass

    def run_one(self) -> None:
        f, args = self.calls.get(timeout=10)
        f(*args)


def test_durable_waiters_are_told_before_the_batchs_other_work() -> None:
    """In a batch that mixes durable work with work that needs no sync (an
    unlink of an earlier message), the durable waiters hear of their sync
    before the other work has run: a client's 250 never waits for it."""
    import threading

    reactor = _ThreadReactor()
    order: list[str] = []
    release = threading.Event()
    barrier = SyncBarrier(
        "/q", "syncfs", reactor=reactor, sync_function=lambda f, d: order.append("sync")
    )

    def slow_unlink() -> None:
        release.wait(10)
        order.append("unlink")

    told: list[object] = []
    barrier.run(slow_unlink, durable=False)  # waits for company
    barrier.run(lambda: order.append("write"), durable=True).addCallback(told.append)
    reactor.run_one()  # the early notice, posted while the unlink still blocks
    assert told == [None]
    assert order == ["write", "sync"]
    release.set()
    reactor.run_one()  # the batch's end
    assert order == ["write", "sync", "unlink"]


def test_durable_delay_gathers_writes_into_one_sync() -> None:
    """With durable_delay (mailbox writes), durable work arriving at an idle
    barrier waits that long for company: two deliveries made within the delay
    share one batch and one sync, and no batch starts before the delay is over."""
    from twisted.internet.task import Clock

    clock = Clock()
    thread = ControlledThread()
    recorder = Recorder()
    barrier = SyncBarrier(
        "/m", "syncfs", run_in_thread=thread, sync_function=recorder, clock=clock,
        durable_delay=0.01,
    )  # fmt: skip
    done: list[object] = []
    barrier.run(lambda: "first", durable=True).addCallback(done.append)
    clock.advance(0.005)
    barrier.sync(dirs=["/m/new"]).addCallback(done.append)
    assert thread.started == []
    clock.advance(0.005)  # the delay is over: one batch for both
    assert len(thread.started) == 1
    thread.finish(0)
    assert done == ["first", None]
    assert recorder.calls == [([], ["/m/new"])] and barrier.syncs == 1


def test_without_durable_delay_durable_work_starts_at_once() -> None:
    """The queue's barrier (no delay): durable work starts its batch at
    once, without waiting for the clock."""
    from twisted.internet.task import Clock

    thread = ControlledThread()
    barrier = SyncBarrier(
        "/q", "syncfs", run_in_thread=thread, sync_function=Recorder(), clock=Clock()
    )
    done: list[object] = []
    barrier.run(lambda: "written", durable=True).addCallback(done.append)
    assert len(thread.started) == 1
    thread.finish(0)
    assert done == ["written"]


def test_after_publishes_once_synced_before_the_waiter_hears() -> None:
    """``after`` (a Maildir rename into new/) runs after the batch's sync, in
    the same batch, and the waiter hears only once it ran; it does not run
    for work that failed, and an error in it reaches that waiter alone."""
    thread = ControlledThread()
    order: list[str] = []
    barrier = SyncBarrier(
        "/m", "syncfs", run_in_thread=thread, sync_function=lambda f, d: order.append("sync")
    )

    def fails() -> None:
        raise OSError(28, "No space left on device")

    def after_fails() -> None:
        raise OSError(2, "tmp file gone")

    results: list[object] = []
    barrier.sync()  # a batch is running: the next three share the following one
    barrier.run(lambda: order.append("write 1"), after=lambda: order.append("rename 1")).addBoth(
        results.append
    )
    barrier.run(fails, after=lambda: order.append("rename 2")).addBoth(results.append)
    barrier.run(lambda: order.append("write 3"), after=after_fails).addBoth(results.append)
    thread.finish(0)
    assert len(thread.started) == 2 and order == ["sync"]
    barrier.run(lambda: order.append("write 4"), after=lambda: order.append("rename 4"))
    thread.finish(1)
    assert order == ["sync", "write 1", "write 3", "sync", "rename 1"]
    assert results[0] is None
    assert isinstance(results[1], Failure) and results[1].check(OSError)
    assert isinstance(results[2], Failure) and "tmp file gone" in str(results[2].value)
    assert barrier.syncs == 2


def test_after_does_not_run_when_the_sync_fails() -> None:
    """A failed sync: nothing is published, every waiter of the batch hears
    of the failure."""
    thread = ControlledThread()
    renamed: list[str] = []

    def broken_sync(files: Sequence[str], dirs: Sequence[str]) -> None:
        raise OSError(5, "Input/output error")

    barrier = SyncBarrier("/m", "syncfs", run_in_thread=thread, sync_function=broken_sync)
    results: list[object] = []
    barrier.run(lambda: None, after=lambda: renamed.append("x")).addBoth(results.append)
    thread.finish(0)
    assert renamed == []
    assert isinstance(results[0], Failure) and results[0].check(OSError)


def test_soon_work_needs_no_company() -> None:
    """Work without a sync waits for company (LAZY_DELAY), unless ``soon``
    (a move into active/ the queue manager waits for): it starts a batch at
    once on an idle barrier, and the batch right after a running one."""
    from twisted.internet.task import Clock

    clock = Clock()
    thread = ControlledThread()
    recorder = Recorder()
    barrier = SyncBarrier("/q", "syncfs", run_in_thread=thread, sync_function=recorder, clock=clock)
    order: list[str] = []
    barrier.run(lambda: order.append("lazy"), durable=False)
    assert thread.started == []  # waiting for company
    barrier.run(lambda: order.append("move"), durable=False, soon=True)
    assert len(thread.started) == 1  # at once, taking the lazy work with it
    barrier.run(lambda: order.append("next move"), durable=False, soon=True)
    thread.finish(0)
    assert len(thread.started) == 2  # the next batch starts right after
    thread.finish(1)
    assert order == ["lazy", "move", "next move"]
    assert recorder.calls == []  # no sync for any of them


def test_durable_delay_ends_once_the_last_batchs_size_waits() -> None:
    """Under load the mailbox barrier does not idle: after a batch of three
    deliveries, the next starts as soon as three are pending, without
    waiting out the delay; fewer still wait for it (and a lone one after a
    batch of one waits too: no history of company)."""
    from twisted.internet.task import Clock

    clock = Clock()
    thread = ControlledThread()
    barrier = SyncBarrier(
        "/m", "syncfs", run_in_thread=thread, sync_function=Recorder(), clock=clock,
        durable_delay=0.01,
    )  # fmt: skip
    for _ in range(3):
        barrier.run(lambda: None, durable=True)
    assert thread.started == []
    clock.advance(0.01)
    assert len(thread.started) == 1
    thread.finish(0)
    barrier.run(lambda: None, durable=True)
    barrier.run(lambda: None, durable=True)
    assert len(thread.started) == 1  # two of three: still waiting
    barrier.run(lambda: None, durable=True)
    assert len(thread.started) == 2  # the third: at once, clock untouched
    thread.finish(1)
    barrier.run(lambda: None, durable=True)
    assert len(thread.started) == 2
    clock.advance(0.01)
    assert len(thread.started) == 3
    thread.finish(2)
    barrier.run(lambda: None, durable=True)
    assert len(thread.started) == 3  # after a batch of one: the delay again
    clock.advance(0.01)
    assert len(thread.started) == 4


def test_each_durable_batch_times_its_wait_work_and_sync(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A durable batch appends its three phases: the wait from its oldest
    caller until the batch began on the thread, its work, its sync."""
    import time

    from twisted.internet.task import Clock

    readings = [10.0, 10.1, 10.5, 10.6, 10.9]

    def monotonic() -> float:
        # The barrier's readings in turn; anyone else reading meanwhile
        # would shift them (and fail the test), never exhaust them.
        return readings.pop(0) if len(readings) > 1 else readings[0]

    monkeypatch.setattr(time, "monotonic", monotonic)
    thread = ControlledThread()
    barrier = SyncBarrier(
        "/m", "syncfs", run_in_thread=thread, sync_function=Recorder(), clock=Clock()
    )
    barrier.run(lambda: None, durable=True)  # 10.0
    barrier.run(lambda: None, durable=False)  # 10.1, not durable: not timed
    thread.finish(0)  # began 10.5, worked 10.6, synced 10.9
    timings = list(barrier.timings)
    assert [phase for phase, _ in timings] == ["wait", "work", "sync"]
    assert [round(seconds, 6) for _, seconds in timings] == [0.5, 0.1, 0.3]


def test_fsync_skips_what_failed_work_named_and_fails_it_alone() -> None:
    """In fsync mode a piece of durable work that failed (its file removed,
    as a refused quota removes a delivery's) is not fsynced: it fails with
    its own error, and the rest of the batch is synced and succeeds."""
    barrier, thread, recorder = _barrier("fsync")
    outcomes: list[object] = []

    def refused() -> None:
        raise OSError(122, "Disk quota exceeded")

    barrier.sync()  # a batch in flight: the next three wait for the next one
    barrier.run(lambda: "first", files=["/q/a"], dirs=["/q"]).addCallback(outcomes.append)
    failed = barrier.run(refused, files=["/m/tmp/b"], dirs=["/m/tmp"])
    failed.addErrback(lambda f: outcomes.append(f.value.errno))
    barrier.run(lambda: "third", files=["/q/c"], dirs=["/q"]).addCallback(outcomes.append)
    thread.finish(0)
    thread.finish(1)
    assert recorder.calls[1:] == [(["/q/a", "/q/c"], ["/q"])]
    assert outcomes == ["first", 122, "third"]


def test_syncfs_mode_fsyncs_a_batch_of_one_write_and_syncs_several() -> None:
    """In syncfs mode a batch carrying a single write (one client at a
    time) fsyncs that write's file and directory instead, which commits
    the journal for it alone; a batch of two or more writes, or a plain
    sync() naming no file, is one syncfs. Work that failed does not count."""
    thread = ControlledThread()
    whole, single = Recorder(), Recorder()
    barrier = SyncBarrier(
        "/q", "syncfs", run_in_thread=thread, sync_function=whole, single_function=single
    )
    barrier.run(lambda: None, files=["/q/a"], dirs=["/q/in", "/q/in"])
    thread.finish(0)
    assert single.calls == [(["/q/a"], ["/q/in"])] and whole.calls == []

    def refused() -> None:
        raise OSError(122, "Disk quota exceeded")

    barrier.sync()  # in flight: the next writes share the batch after it
    barrier.run(lambda: None, files=["/q/b"], dirs=["/q/in"])
    barrier.run(lambda: None, files=["/q/c"], dirs=["/q/in"])
    thread.finish(1)
    thread.finish(2)
    assert whole.calls == [([], []), ([], ["/q/in"])] and len(single.calls) == 1

    barrier.sync()
    barrier.run(lambda: None, files=["/q/d"], dirs=["/q/in"])
    barrier.run(refused, files=["/q/e"], dirs=["/q/in"]).addErrback(lambda f: None)
    thread.finish(3)
    thread.finish(4)
    assert single.calls[1:] == [(["/q/d"], ["/q/in"])]


def test_fsync_paths_syncs_several_real_files_and_their_directories(tmp_path: Path) -> None:
    """fsync_paths with several files (their write-back started and waited
    for first) and their directories works on real files, and a file that
    cannot be opened fails the call with its OSError before any fsync."""
    paths = []
    for name in ("a", "b", "c"):
        path = tmp_path / name
        path.write_bytes(b"x" * 5000)
        paths.append(str(path))
    fsync_paths(paths, [str(tmp_path)])
    with pytest.raises(FileNotFoundError):
        fsync_paths([*paths, str(tmp_path / "gone")], [str(tmp_path)])
