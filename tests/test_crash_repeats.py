"""kill -9 under load repeats no delivery already logged as sent (issue 11).

Each run sends bursts of 20 messages per connection from three clients,
kills the server with SIGKILL once some deliveries are logged
``status=sent`` (at a different point each run), restarts it and counts
the copies in the Maildir (tests/crashload.py). bench/attacks/crash_repeats.py
runs the same case 50 times and prints the figures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.crashload import crash_run

RUNS = 5


@pytest.mark.parametrize("run", range(RUNS))
def test_kill_under_load_repeats_no_delivery_logged_as_sent(tmp_path: Path, run: int) -> None:
    """Nothing acknowledged is lost, and no message whose status=sent line
    was logged before the kill arrives twice: the done mark reaches the
    queue file before that line is logged."""
    result = crash_run(tmp_path, kill_after=3 + 11 * run)
    assert result.acknowledged, "no message was acknowledged before the kill"
    assert result.sent_before_kill, "the kill came before any delivery"
    assert result.lost == []
    assert result.repeated_after_sent == []
