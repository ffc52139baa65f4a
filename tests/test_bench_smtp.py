"""Tests of the SMTP benchmark's own logic (bench/): no servers are run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import bench_measure
import smtp_bench
from bench_measure import ProcStat, count_maildir_new, descendants, parse_proc_stat
from bench_setup import MailSetup


def stat_line(pid: int, comm: str, ppid: int, utime: int, stime: int, cut: int, cst: int) -> str:
    """A /proc/PID/stat line with the fields the bench reads filled in."""
    fields = ["S", str(ppid), "1", "1", "0", "-1", "0", "0", "0", "0", "0"]
    fields += [str(utime), str(stime), str(cut), str(cst), "20", "0", "1", "0", "100"]
    return f"{pid} ({comm}) " + " ".join(fields) + "\n"


def test_parse_proc_stat_comm_with_spaces_and_parens() -> None:
    """A command name holding spaces and ')' does not shift the fields."""
    stat = parse_proc_stat(42, stat_line(42, "smtpd -n) x", 7, 10, 20, 3, 4))
    assert stat == ProcStat(pid=42, ppid=7, ticks=37)


def test_descendants_follow_the_whole_tree_only() -> None:
    """The tree of a root includes grandchildren and excludes strangers."""
    table = {
        1: ProcStat(1, 0, 0),
        10: ProcStat(10, 1, 0),  # master
        11: ProcStat(11, 10, 0),  # smtpd
        12: ProcStat(12, 11, 0),  # its child
        20: ProcStat(20, 1, 0),  # a system Postfix master: not ours
        21: ProcStat(21, 20, 0),
    }
    assert descendants(table, [10]) == {10, 11, 12}
    assert descendants(table, [99]) == set()


def test_main_thread_cpu_seconds_leaves_out_other_threads(tmp_path: Path) -> None:
    """The main-thread figure counts each tree process's thread PID (utime +
    stime) and neither its other threads nor processes outside the tree."""
    for pid, ppid, tasks in (
        (10, 1, {10: (100, 50), 13: (7, 900)}),  # reactor + a worker thread
        (11, 10, {11: (20, 30)}),
        (20, 1, {20: (999, 0)}),
    ):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(stat_line(pid, "p", ppid, 1, 1, 0, 0))
        for tid, (utime, stime) in tasks.items():
            task = tmp_path / str(pid) / "task" / str(tid)
            task.mkdir(parents=True)
            (task / "stat").write_text(stat_line(tid, "p", ppid, utime, stime, 0, 0))
    ticks = bench_measure.CLOCK_TICKS
    assert bench_measure.main_thread_cpu_seconds([10], proc=tmp_path) == pytest.approx(200 / ticks)


def test_main_thread_cpu_between_never_counts_an_exited_process_back() -> None:
    """Between two readings, a process that exited counts nothing (the
    figure never goes negative, as it did when Postfix's smtpd processes
    exited mid-run), a new one counts all its ticks, the others their
    growth."""
    ticks = bench_measure.CLOCK_TICKS
    before = {10: 100, 11: 500}
    after = {10: 130, 12: 20}
    assert bench_measure.main_thread_cpu_between(before, after) == pytest.approx(50 / ticks)


def test_tree_cpu_seconds_sums_reaped_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CPU of a tree counts utime, stime and the reaped children's times."""
    monkeypatch.setattr(bench_measure, "CLOCK_TICKS", 100)
    for pid, ppid, times in (
        (10, 1, (100, 50, 30, 20)),
        (11, 10, (5, 5, 0, 0)),
        (20, 1, (999, 0, 0, 0)),
    ):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(stat_line(pid, "p", ppid, *times))
    (tmp_path / "self").mkdir()
    assert bench_measure.tree_cpu_seconds([10], proc=tmp_path) == pytest.approx(2.1)


def test_tree_pss_sums_the_whole_tree_only(tmp_path: Path) -> None:
    """The memory figure sums the Pss: line of each tree process's
    smaps_rollup, not of processes outside the tree; a process without one
    (exited, a kernel thread) counts nothing."""
    for pid, ppid, pss in ((10, 1, 30000), (11, 10, 2500), (12, 10, None), (20, 1, 99999)):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(stat_line(pid, "p", ppid, 1, 1, 0, 0))
        if pss is not None:
            (tmp_path / str(pid) / "smaps_rollup").write_text(
                f"00400000-7fff [rollup]\nRss:   {pss * 2} kB\nPss:   {pss} kB\n"
            )
    assert bench_measure.tree_pss_kib([10], proc=tmp_path) == 32500


def test_table_shows_both_servers_memory() -> None:
    """The table's last two columns are each server's peak PSS in MiB."""
    table = smtp_bench.render_table(
        [run("postfix", 500.0), run("pymta", 1000.0)], {"1 thread": 1400}
    )
    assert "pf MiB" in table.splitlines()[0]
    assert table.splitlines()[2].split()[-2:] == ["60.0", "40.0"]


def test_count_maildir_new(tmp_path: Path) -> None:
    """new/ is counted without dot files, and a missing new/ counts 0."""
    new = tmp_path / "new"
    assert count_maildir_new(new) == 0
    new.mkdir()
    for name in ("1.a.host", "2.b.host", ".hidden"):
        (new / name).write_bytes(b"x")
    assert count_maildir_new(new) == 2


def test_mail_setup_maps_each_recipient_to_a_maildir(tmp_path: Path) -> None:
    """Every recipient gets a Maildir (trailing /) where maildir_new looks."""
    setup = MailSetup(("run1@bench.test", "run2@bench.test"), 65534, 65534)
    assert setup.vmailbox_text() == (
        "run1@bench.test\tbench.test/run1/\nrun2@bench.test\tbench.test/run2/\n"
    )
    assert setup.maildir_new(tmp_path, "run2@bench.test") == tmp_path / "bench.test/run2/new"
    master = MailSetup.master_cf(2525)
    assert master.splitlines()[1].split() == [
        "127.0.0.1:2525",
        "inet",
        "n",
        "-",
        "n",
        "-",
        "-",
        "smtpd",
    ]
    # No service is chrooted: the fifth column is "n" everywhere.
    assert {line.split()[4] for line in master.splitlines()[1:]} == {"n"}


def test_smtp_source_sends_one_message_per_connection() -> None:
    """The load generator is run without -d, so each message has its own connection."""
    argv = smtp_bench.smtp_source_argv(2525, 20, 5000, 1024, "run1@bench.test")
    assert "-d" not in argv
    assert argv[-1] == "127.0.0.1:2525"
    assert argv[argv.index("-s") + 1] == "20"
    assert argv[argv.index("-m") + 1] == "5000"
    assert argv[argv.index("-l") + 1] == "1024"


def run(server: str, rate: float | None, error: str | None = None) -> smtp_bench.RunResult:
    """A RunResult with the figures that the table reads."""
    return smtp_bench.RunResult(
        server=server,
        recipient="run1@bench.test",
        size=1024,
        connections=20,
        messages=100,
        delivered=100,
        accept_seconds=1.0,
        deliver_seconds=None if rate is None else 100 / rate,
        accept_rate=100.0,
        rate=rate,
        cpu_seconds=0.2,
        cpu_ms_per_message=2.0,
        main_thread_ms_per_message=1.0,
        peak_pss_mib=40.0 if server == "pymta" else 60.0,
        error=error,
    )


def test_table_reports_the_ratio_pymta_over_postfix() -> None:
    """The ratio column is pymta's rate divided by Postfix's."""
    table = smtp_bench.render_table(
        [run("postfix", 500.0), run("pymta", 1000.0)], {"1 thread": 1400}
    )
    row = table.splitlines()[2]
    assert row.split()[:5] == ["1024", "20", "|", "500", "1000"]
    assert "2.00" in row
    assert "geometric mean 2.00" in table.splitlines()[-1]


def test_failed_run_has_no_ratio_and_is_listed() -> None:
    """A run that failed shows no ratio and its error appears in the report."""
    table = smtp_bench.render_table(
        [run("postfix", 500.0), run("pymta", None, "timeout: 3/100 delivered")], {}
    )
    assert "geometric mean" not in table
    assert "pymta 1024 B x 20: timeout: 3/100 delivered" in table


def fake_generator(new: Path, files: int, status: int = 0) -> list[str]:
    """A stand-in for smtp-source that 'delivers' files into new/ itself."""
    code = (
        "import pathlib, sys\n"
        f"new = pathlib.Path({str(new)!r}); new.mkdir(parents=True, exist_ok=True)\n"
        f"for i in range({files}): (new / f'{{i}}.bench').write_bytes(b'x')\n"
        f"sys.exit({status})\n"
    )
    return [sys.executable, "-c", code]


def test_run_load_waits_until_every_message_is_in_new(tmp_path: Path) -> None:
    """A run is complete when new/ holds as many files as messages were sent."""
    new = tmp_path / "Maildir" / "new"
    with open(tmp_path / "out", "wb") as out:
        result = bench_measure.run_load(fake_generator(new, 30), new, 30, 60.0, out)
    assert result.returncode == 0
    assert result.delivered == 30
    assert result.delivered_after is not None
    assert result.delivered_after >= result.accepted_after


def test_run_load_reports_a_failed_generator(tmp_path: Path) -> None:
    """A generator that fails ends the run with its status and no delivery time."""
    new = tmp_path / "Maildir" / "new"
    with open(tmp_path / "out", "wb") as out:
        result = bench_measure.run_load(fake_generator(new, 3, status=1), new, 30, 60.0, out)
    assert result.returncode == 1
    assert result.delivered == 3
    assert result.delivered_after is None


def test_median_run_picks_the_middle_rate_and_shows_failures() -> None:
    """With repeats the table uses the median run; a failed repeat is never hidden."""
    runs = [run("pymta", 300.0), run("pymta", 900.0), run("pymta", 500.0)]
    median = smtp_bench.median_run(runs)
    assert median is not None and median.rate == 500.0
    failed = run("pymta", None, "timeout")
    assert smtp_bench.median_run([*runs, failed]) is failed
    assert smtp_bench.median_run([]) is None


def test_repeat_must_be_positive() -> None:
    """A zero repeat count is a usage error, not an empty benchmark."""
    with pytest.raises(SystemExit):
        smtp_bench.parse_args(["--repeat", "0"])
    assert smtp_bench.parse_args(["--repeat", "3"]).repeat == 3
