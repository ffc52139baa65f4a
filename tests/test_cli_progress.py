"""Progress of long admin commands: on a terminal only, rate-limited, cleared."""

from __future__ import annotations

import io

from pymta.cli.progress import Progress, counted


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_on_a_terminal_is_rate_limited_and_cleared() -> None:
    """Nothing in the first 0.2 s; then one rewrite per 0.2 s with done/total;
    the line is cleared at the end."""
    stream, clock = Terminal(), FakeClock()
    with Progress("postsuper: Deleted", 100_000, stream, clock) as progress:
        progress.step(10)
        assert stream.getvalue() == ""
        clock.now = 0.25
        progress.step(990)
        progress.step()  # same instant: not shown again
        assert stream.getvalue() == "\rpostsuper: Deleted: 1,000/100,000\x1b[K"
    assert stream.getvalue().endswith("\r\x1b[K")


def test_no_progress_without_a_terminal() -> None:
    """A pipe, cron or a log file sees nothing."""
    stream, clock = io.StringIO(), FakeClock()
    progress = Progress("x", 3, stream, clock)
    clock.now = 10
    assert list(counted([1, 2, 3], progress)) == [1, 2, 3]
    progress.finish()
    assert progress.done == 3 and stream.getvalue() == ""
