"""Destination concurrency feedback (slow start, back-off, dead destinations,
rate delay) and its use by the scheduler, with task.Clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from twisted.internet.task import Clock

from pymta.config import Config
from pymta.qmgr.feedback import (
    DestinationFeedback,
    DestinationParams,
    Feedback,
    destination_params,
)
from pymta.qmgr.scheduler import Scheduler


def _feedback(clock: Clock, **params: object) -> DestinationFeedback:
    p = DestinationParams(**params)  # type: ignore[arg-type]
    return DestinationFeedback(clock, lambda transport: p)


def test_slow_start_grows_one_per_success_up_to_the_limit() -> None:
    """A destination starts at the initial concurrency and each success adds
    one (positive feedback 1), never beyond the destination limit."""
    fb = _feedback(Clock(), initial=2, limit=4)
    assert fb.window("smtp", "d") == 2
    fb.success("smtp", "d")
    assert fb.window("smtp", "d") == 3
    for _ in range(5):
        fb.success("smtp", "d")
    assert fb.window("smtp", "d") == 4


def test_per_window_feedback_needs_a_window_of_successes() -> None:
    """With ``1/concurrency`` feedback a window of w grows after w successes."""
    fb = _feedback(Clock(), initial=3, limit=10, positive=Feedback(1.0, per_window=True))
    fb.success("smtp", "d")
    fb.success("smtp", "d")
    assert fb.window("smtp", "d") == 3
    fb.success("smtp", "d")
    assert fb.window("smtp", "d") == 4


def test_failures_shrink_the_window_then_kill_the_destination() -> None:
    """Each failure narrows the window by one and adds 1/window to the failed
    cohorts; with cohort limit 1 and initial window 5 the 4th failure in a
    row (0.2+0.25+0.33+0.5 >= 1) makes the destination dead for
    minimal_backoff_time, keeping the last reason."""
    clock = Clock()
    fb = _feedback(clock, initial=5, limit=20, dead_time=300.0)
    assert fb.failure("smtp", "d", "r1") is False
    assert fb.window("smtp", "d") == 4
    assert fb.failure("smtp", "d", "r2") is False
    assert fb.failure("smtp", "d", "r3") is False
    assert fb.window("smtp", "d") == 2
    assert fb.failure("smtp", "d", "connection refused") is True
    assert fb.window("smtp", "d") == 0
    assert fb.dead_reason("smtp", "d") == "connection refused"
    assert fb.window("smtp", "other") == 5  # other destinations are unaffected
    clock.advance(299)
    assert fb.dead_reason("smtp", "d") == "connection refused"
    clock.advance(1)
    assert fb.dead_reason("smtp", "d") is None
    assert fb.window("smtp", "d") == 5


def test_success_clears_failed_cohorts() -> None:
    """A success between failures resets the failed-cohort count: alternating
    success and failure never kills the destination."""
    fb = _feedback(Clock(), initial=2, limit=20)
    for _ in range(20):
        assert fb.failure("smtp", "d", "x") is False
        fb.success("smtp", "d")
    assert fb.dead_reason("smtp", "d") is None
    assert fb.window("smtp", "d") >= 1


def test_cohort_limit_zero_never_kills() -> None:
    """failed_cohort_limit = 0 turns dead destinations off; the window stays >= 1."""
    fb = _feedback(Clock(), initial=3, cohort_limit=0)
    for _ in range(10):
        assert fb.failure("smtp", "d", "x") is False
    assert fb.window("smtp", "d") == 1


def test_revive_all() -> None:
    """revive_all (a flush) brings dead destinations back at the initial window."""
    fb = _feedback(Clock(), initial=1)
    assert fb.failure("smtp", "d", "down") is True
    fb.revive_all()
    assert fb.dead_reason("smtp", "d") is None
    assert fb.window("smtp", "d") == 1


def test_destination_params_from_main_cf() -> None:
    """Per-transport parameters override the default_* ones; unset ones fall back."""
    config = Config.from_text(
        "smtp_initial_destination_concurrency = 2\n"
        "smtp_destination_concurrency_limit = 7\n"
        "smtp_destination_concurrency_negative_feedback = 1/concurrency\n"
        "default_destination_concurrency_positive_feedback = 1/4\n"
        "smtp_destination_rate_delay = 2s\n"
        "minimal_backoff_time = 100s\n"
    )
    p = destination_params(config, "smtp")
    assert (p.initial, p.limit, p.rate_delay, p.dead_time) == (2, 7, 2.0, 100.0)
    assert p.negative == Feedback(1.0, per_window=True)
    assert p.positive == Feedback(0.25)
    q = destination_params(config, "relay")
    assert (q.initial, q.limit, q.rate_delay, q.cohort_limit) == (5, 20, 0.0, 1)


@pytest.mark.parametrize("bad", ["0", "2", "x", "1/0", "-1"])
def test_bad_feedback_value(bad: str) -> None:
    """Feedback values outside (0, 1] or not numbers are refused."""
    with pytest.raises(ValueError):
        Feedback.parse(bad)


@dataclass
class Job:
    transport: str
    destination: str


def test_scheduler_follows_the_window() -> None:
    """The scheduler starts as many jobs as the window allows, and more as it grows."""
    clock = Clock()
    fb = _feedback(clock, initial=2, limit=10)
    started: list[Job] = []
    scheduler: Scheduler[Job] = Scheduler(
        started.append, lambda t: (100, 10), window=fb.window, wait=fb.wait, clock=clock
    )
    jobs = [Job("smtp", "d") for _ in range(6)]
    for job in jobs:
        scheduler.add(job)
    assert len(started) == 2
    fb.success("smtp", "d")  # window 3
    scheduler.finished(started[0])  # one slot freed + one more allowed
    assert len(started) == 4
    assert scheduler.active_for("smtp", "d") == 3


def test_scheduler_rate_delay() -> None:
    """With a rate delay, one delivery at a time and the next one only when
    the delay since the previous start has passed (woken by the clock)."""
    clock = Clock()
    fb = _feedback(clock, initial=5, rate_delay=10.0)
    started: list[Job] = []

    def start(job: Job) -> None:
        fb.started(job.transport, job.destination)
        started.append(job)

    scheduler: Scheduler[Job] = Scheduler(
        start, lambda t: (100, 10), window=fb.window, wait=fb.wait, clock=clock
    )
    for _ in range(3):
        scheduler.add(Job("smtp", "d"))
    assert len(started) == 1
    scheduler.finished(started[0])
    assert len(started) == 1
    clock.advance(9)
    assert len(started) == 1
    clock.advance(1)
    assert len(started) == 2
    scheduler.finished(started[1])
    clock.advance(10)
    assert len(started) == 3


def test_scheduler_drain() -> None:
    """drain returns the waiting jobs of one destination and leaves others."""
    started: list[Job] = []
    scheduler: Scheduler[Job] = Scheduler(started.append, lambda t: (100, 1))
    a = [Job("smtp", "a") for _ in range(3)]
    b = [Job("smtp", "b") for _ in range(2)]
    for job in a + b:
        scheduler.add(job)
    assert scheduler.drain("smtp", "a") == a[1:]
    assert scheduler.waiting() == 1
    scheduler.finished(started[0])
    scheduler.finished(started[1])
    assert started == [a[0], b[0], b[1]]
