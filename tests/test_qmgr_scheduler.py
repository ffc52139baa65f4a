"""The qmgr scheduler: limits, round robin between destinations, constant stack."""

from __future__ import annotations

from dataclasses import dataclass

from pymta.qmgr.scheduler import Scheduler


@dataclass(eq=False)
class Job:
    transport: str
    destination: str
    name: str = ""


def test_destinations_take_turns() -> None:
    """With one process slot, jobs of different destinations alternate
    instead of one destination's backlog running first."""
    started: list[Job] = []
    scheduler: Scheduler[Job] = Scheduler(started.append, lambda t: (1, 10))
    for i in range(3):
        scheduler.add(Job("smtp", "a.example", f"a{i}"))
    for i in range(2):
        scheduler.add(Job("smtp", "b.example", f"b{i}"))
    while len(started) < 5:
        scheduler.finished(started[-1])
    # a1 was queued before b0 arrived; from then on a and b alternate.
    assert [j.name for j in started] == ["a0", "a1", "b0", "a2", "b1"]
    scheduler.finished(started[-1])
    assert scheduler.active("smtp") == 0 and scheduler.waiting() == 0


def test_destination_limit_does_not_block_other_destinations() -> None:
    """A destination at its concurrency limit waits while others proceed."""
    started: list[Job] = []
    scheduler: Scheduler[Job] = Scheduler(started.append, lambda t: (10, 1))
    scheduler.add(Job("smtp", "a.example", "a0"))
    scheduler.add(Job("smtp", "a.example", "a1"))
    scheduler.add(Job("smtp", "b.example", "b0"))
    assert [j.name for j in started] == ["a0", "b0"]
    assert scheduler.active_for("smtp", "a.example") == 1
    scheduler.finished(started[0])
    assert [j.name for j in started] == ["a0", "b0", "a1"]


def test_synchronous_completion_uses_constant_stack() -> None:
    """Jobs that finish inside start() do not recurse: 20,000 of them run
    through a single-slot transport without RecursionError."""
    count = [0]
    scheduler: Scheduler[Job]

    def start(job: Job) -> None:
        count[0] += 1
        scheduler.finished(job)

    scheduler = Scheduler(start, lambda t: (1, 1))
    scheduler.paused = True
    for _ in range(20_000):
        scheduler.add(Job("local", "bob"))
    scheduler.resume()
    assert count[0] == 20_000
    assert scheduler.waiting() == 0


def test_abandon_drops_waiting_jobs_only() -> None:
    """abandon() returns the jobs not started; running ones stay counted."""
    started: list[Job] = []
    scheduler: Scheduler[Job] = Scheduler(started.append, lambda t: (1, 1))
    scheduler.add(Job("virtual", "x", "run"))
    scheduler.add(Job("virtual", "x", "wait"))
    dropped = scheduler.abandon()
    assert [j.name for j in dropped] == ["wait"]
    assert scheduler.active("virtual") == 1
    scheduler.finished(started[0])
    assert scheduler.active("virtual") == 0 and len(started) == 1
