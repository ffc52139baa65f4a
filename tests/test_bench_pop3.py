"""Tests of the POP3/IMAP benchmarks' own logic (bench/): no servers are run."""

from __future__ import annotations

import poplib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import pop3_bench
from dovecot_setup import dovecot_conf
from retrieval_corpus import Corpus, count_messages, make_users, passwd_text
from retrieval_run import RunFigures, median_of


def figures(rate: float, errors: list[str] | None = None) -> RunFigures:
    """A run that downloaded `rate` messages in one second."""
    return RunFigures("x", 1, 1, 1.0, 0, int(rate), 0, 0.0, 0.0, 0, errors or [])


def test_corpus_is_deterministic_sized_and_exercises_dot_stuffing() -> None:
    """The same seed gives the same bytes; messages are about the asked size;
    bodies hold lines starting with '.' and a lone '.'."""
    a = Corpus.generate(20, 4096, seed=3)
    b = Corpus.generate(20, 4096, seed=3)
    assert a == b
    assert a != Corpus.generate(20, 4096, seed=4)
    for m in a.messages:
        assert 4096 <= len(m.content) < 4096 + 200
        assert m.content.endswith(b"\n") and b"\r" not in m.content
        lines = m.lines()
        assert b"." in lines
        assert any(line.startswith(b".") and line != b"." for line in lines)
    assert len({m.message_id for m in a.messages}) == 20
    assert len({m.name for m in a.messages}) == 20


def test_top_is_header_blank_line_and_n_body_lines() -> None:
    """Message.top(n) is what RFC 1939 TOP returns: the header, the blank
    line and the first n lines of the body."""
    m = Corpus.generate(1, 2048).messages[0]
    lines = m.lines()
    blank = lines.index(b"")
    assert m.top(3) == lines[: blank + 4]
    assert m.top(0)[-1] == b""


def test_write_maildir_and_copy_count(tmp_path: Path) -> None:
    """write_maildir puts every message into new/; count_messages sees them."""
    corpus = Corpus.generate(7, 1024)
    corpus.write_maildir(tmp_path / "md")
    assert count_messages(tmp_path / "md") == 7
    assert sorted(p.name for p in (tmp_path / "md" / "new").iterdir()) == sorted(
        m.name for m in corpus.messages
    )


def test_passwd_file_gives_each_user_a_home_under_the_mail_root(tmp_path: Path) -> None:
    """One passwd-file line per client and repetition (0 = warm-up), PLAIN
    password, the home field naming that user's Maildir."""
    users = make_users(clients=2, repeats=1)
    assert [u.name for u in users] == [
        "r0c00@bench.test",
        "r0c01@bench.test",
        "r1c00@bench.test",
        "r1c01@bench.test",
    ]
    text = passwd_text(users, tmp_path, 65534, 65534)
    first = text.splitlines()[0].split(":")
    assert first[:4] == ["r0c00@bench.test", "{PLAIN}pw-r0c00", "65534", "65534"]
    assert first[5] == str(tmp_path / "bench.test" / "r0c00")


@pytest.mark.skipif(shutil.which("doveconf") is None, reason="dovecot not installed")
def test_dovecot_accepts_the_generated_configuration(tmp_path: Path) -> None:
    """doveconf parses dovecot.conf as written (an unknown setting would fail)."""
    (tmp_path / "passwd").write_text("")
    conf = tmp_path / "dovecot.conf"
    conf.write_text(
        dovecot_conf(
            root=tmp_path,
            passwd=tmp_path / "passwd",
            uid=65534,
            gid=65534,
            pop3_port=1110,
            imap_port=1143,
        )
    )
    out = subprocess.run(
        ["doveconf", "-n", "-c", str(conf)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "mail_location = maildir:~" in out.stdout
    assert "port = 1110" in out.stdout


def test_median_of_takes_the_lower_median_and_reports_failures() -> None:
    """The median run is the lower median by rate; a run with errors is
    shown instead of any figure, so a failure is never hidden."""
    runs = [figures(30), figures(10), figures(20), figures(40)]
    assert median_of(runs, lambda r: r.message_rate).messages == 20
    broken = figures(50, ["bad"])
    assert median_of([*runs, broken], lambda r: r.message_rate) is broken


Lines = list[bytes]  # FakePOP3.list shadows the builtin inside the class


class FakePOP3:
    """A stand-in for poplib.POP3 serving a corpus, optionally corrupted."""

    corpus: Corpus
    corrupt: set[int] = set()

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.deleted: list[int] = []

    def user(self, name: str) -> bytes:
        return b"+OK"

    def pass_(self, password: str) -> bytes:
        return b"+OK"

    def stat(self) -> tuple[int, int]:
        return len(self.corpus.messages), self.corpus.total_bytes()

    def list(self) -> tuple[bytes, Lines, int]:
        n = len(self.corpus.messages)
        return b"+OK", [f"{i} 100".encode() for i in range(1, n + 1)], 0

    def uidl(self) -> tuple[bytes, Lines, int]:
        n = len(self.corpus.messages)
        return b"+OK", [f"{i} u{i}".encode() for i in range(1, n + 1)], 0

    def retr(self, n: int) -> tuple[bytes, Lines, int]:
        lines = list(self.corpus.messages[n - 1].lines())
        if n in self.corrupt:
            lines[-1] = lines[-1] + b"x"
        return b"+OK", lines, sum(len(line) + 2 for line in lines)

    def top(self, n: int, count: int) -> tuple[bytes, Lines, int]:
        return b"+OK", self.corpus.messages[n - 1].top(count), 0

    def dele(self, n: int) -> bytes:
        self.deleted.append(n)
        return b"+OK"

    def quit(self) -> bytes:
        return b"+OK bye"

    def close(self) -> None:
        pass


@pytest.mark.parametrize("corrupt", [set(), {3}])
def test_pop3_session_verifies_every_message(
    monkeypatch: pytest.MonkeyPatch, corrupt: set[int]
) -> None:
    """A session counts the commands it sent and the messages it verified;
    a message whose bytes differ from its file is an error, not a figure."""
    corpus = Corpus.generate(20, 1024)
    monkeypatch.setattr(FakePOP3, "corpus", corpus, raising=False)
    monkeypatch.setattr(FakePOP3, "corrupt", corrupt)
    monkeypatch.setattr(poplib, "POP3", FakePOP3)
    user = make_users(1, 1)[1]
    plan = pop3_bench.Pop3Plan(top_every=10, top_lines=5, dele_every=4)
    result = pop3_bench.pop3_session("127.0.0.1", 1, user, corpus, plan, client=0)
    # USER PASS STAT LIST UIDL, 20 RETR, 2 TOP, 5 DELE, QUIT
    assert result.operations == 5 + 20 + 2 + 5 + 1
    assert result.messages == 20 - len(corrupt)
    assert len(result.errors) == len(corrupt)
    if corrupt:
        assert "RETR 3" in result.errors[0]
    assert plan.deleted(20) == 5


def test_pymta_runs_one_process_per_cpu_unless_told() -> None:
    """The retrieval benches give pymta ``pymta_processes = 0`` (one reactor
    per CPU) by default, before any --pymta-main-cf line (which may
    override it), take --pymta-processes, and refuse a negative count."""
    from retrieval_bench import pymta_lines

    args = pop3_bench.parse_args(["--pymta-main-cf", "pop3d_timeout = 60s"])
    assert pymta_lines(args) == ["pymta_processes = 0", "pop3d_timeout = 60s"]
    assert pymta_lines(pop3_bench.parse_args(["--pymta-processes", "1"])) == ["pymta_processes = 1"]
    with pytest.raises(SystemExit):
        pymta_lines(pop3_bench.parse_args(["--pymta-processes", "-1"]))


def test_latency_table_gives_medians_p90_and_ratio() -> None:
    """imap_latency_bench prints, per command and server, the median and
    90th-percentile wall time in ms, then pymta's median over Dovecot's."""
    import imap_latency_bench

    times = {c: [0.001 * n for n in range(1, 11)] for c in imap_latency_bench.COMMANDS}
    slow = {c: [t * 20 for t in v] for c, v in times.items()}
    table = imap_latency_bench.render({"dovecot": times, "pymta": slow}).splitlines()
    noop = [line.split() for line in table if line.startswith("NOOP")]
    assert noop[0][1:] == ["dovecot", "6.00", "10.00"]
    assert noop[1][1:] == ["pymta", "120.00", "200.00"]
    assert noop[2][1:3] == ["ratio", "20.00"]
