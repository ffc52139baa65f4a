"""Tests of bench/imaptest_stress_bench.py's reading of imaptest's output:
no servers and no imaptest are run (the sample is written by hand in the
layout imaptest prints)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import imaptest_stress_bench as bench

SAMPLE = """\
Logi List Stat Sele Fetc Fet2 Stor Dele Expu Appe Logo
100%  50%  50% 100% 100% 100%  50% 100% 100% 100% 100%
                          30%                  5%
  12    6    5   12   12   17    4    6   12    7   12   5/  5
   3    2    1    3    3    4    1    2    3    9    2 ms/cmd avg
Error: u1@bench.test[3]: UID 17 lost flags: \\Seen
Error: u1@bench.test[4]: UID 23 lost flags: \\Seen
Error: u1@bench.test[2]: Unexpected BYE
 Error inside a line is not a report

Totals:
Logi List Stat Sele Fetc Fet2 Stor Dele Expu Appe Logo
100%  50%  50% 100% 100% 100%  50% 100% 100% 100% 100%
                          30%                  5%
 100   50   40  100  100  150   30   60  100   70  100
"""


def test_total_commands_sums_the_totals_row_not_the_progress_rows() -> None:
    """The command count is the sum of the counts under "Totals:" (the
    per-second progress rows above it, with their "5/ 5" client column,
    and the percentage rows are not counted)."""
    assert (
        bench.total_commands(SAMPLE) == 100 + 50 + 40 + 100 + 100 + 150 + 30 + 60 + 100 + 70 + 100
    )


def test_total_commands_is_none_without_totals() -> None:
    """An output that stops before "Totals:" (imaptest killed, or it could
    not connect) gives no count, so the run is reported as failed."""
    cut = SAMPLE.split("Totals:")[0]
    assert bench.total_commands(cut) is None
    assert bench.total_commands("Error: connect(127.0.0.1:1) failed: Connection refused\n") is None


def test_error_lines_and_kinds() -> None:
    """Errors are the lines starting with "Error"; kinds group reports that
    differ only in the client's user name and numbers, most frequent first."""
    errors = bench.error_lines(SAMPLE)
    assert len(errors) == 3
    kinds = bench.error_kinds(errors)
    assert kinds[0] == (2, "Error: #: UID # lost flags: \\Seen")
    assert kinds[1] == (1, "Error: #: Unexpected BYE")


def test_median_run_prefers_a_failed_run_and_takes_the_lower_median() -> None:
    """The reported run of several is the lower median by rate, unless one
    failed: then the failure is what the table shows."""

    def run(commands: int, failure: str = "") -> bench.StressRun:
        return bench.StressRun("pymta", 5, 1, 10.0, commands, 1.0, failure=failure)

    assert bench.median_run([run(300), run(100), run(200), run(400)]).commands == 200
    assert bench.median_run([run(300), run(0, "no totals"), run(200)]).failure == "no totals"


def test_stress_users_are_fresh_per_clients_and_repetition() -> None:
    """Each clients value and repetition gets its own user, so every run
    starts from an empty mailbox."""
    users = bench.stress_users([5, 50], 2)
    assert len({u.name for u in users}) == 4
    assert {(u.client, u.rep) for u in users} == {(5, 1), (5, 2), (50, 1), (50, 2)}
