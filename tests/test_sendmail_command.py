"""The sendmail command in process: exit statuses, argv[0] names, -C, -bs."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from pymta.sendmail import command
from pymta.sendmail.options import parse
from pymta.sendmail.postdrop import full_flag_path
from pymta.sendmail.record import decode
from pymta.sendmail.smtp import serve


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text(
        f"queue_directory = {tmp_path}/spool\nmyhostname = mx.example.test\n"
        "message_size_limit = 1000\nalias_database =\n"
    )
    (etc / "master.cf").write_text("")
    return etc


def _maildrop(config_dir: Path) -> list[Path]:
    return sorted((config_dir.parent / "spool" / "maildrop").iterdir())


def _submit(config_dir: Path, argv: list[str], data: bytes) -> str:
    return command.submit(parse(argv), str(config_dir), io.BytesIO(data), os.getuid())


def test_submit_writes_one_private_durable_file(config_dir: Path) -> None:
    """The file is 0600, owned by the caller, and decodes to what was asked."""
    path = Path(_submit(config_dir, ["-f", "me@x", "-N", "never", "a@x, B <b@x>"], b"Hi\n"))
    assert _maildrop(config_dir) == [path]
    st = path.stat()
    assert st.st_mode & 0o777 == 0o600 and st.st_uid == os.getuid()
    message = decode(path.read_bytes())
    assert message.sender == "me@x"
    assert message.recipients == [("a@x", "NEVER"), ("b@x", "NEVER")]
    assert message.content == b"Hi\n"


@pytest.mark.parametrize(
    ("argv", "data", "status", "text"),
    [
        (["-z"], b"", 64, "invalid option"),
        ([], b"x\n", 64, "Recipient addresses must be specified"),
        (["a@x"], b"x" * 2000 + b"\n", 65, "message file too big"),
        (["-bv", "a@x"], b"", 69, "-bv"),
        (["-qRx"], b"", 64, "per-site"),
    ],
)
def test_failures_exit_with_sysexits(
    config_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    data: bytes,
    status: int,
    text: str,
) -> None:
    """Each failure has its sysexits status and a ``sendmail: fatal:`` line; nothing is queued."""
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert command.run_as("sendmail", ["-C", str(config_dir), *argv]) == status
    assert text in capsys.readouterr().err
    maildrop = config_dir.parent / "spool" / "maildrop"
    assert not maildrop.exists() or not os.listdir(maildrop)


def test_full_maildrop_is_a_temporary_failure(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """While pickup's full flag exists sendmail exits 75 (EX_TEMPFAIL)."""
    flag = Path(full_flag_path(str(config_dir.parent / "spool")))
    flag.parent.mkdir(parents=True)
    flag.touch()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"x\n")))
    assert command.run_as("sendmail", ["-C", str(config_dir / "main.cf"), "a@x"]) == 75
    assert "maildrop is full" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "expected"), [("mailq", "Mail queue is empty")])
def test_argv0_mailq_lists_the_queue(
    config_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    expected: str,
) -> None:
    """Invoked as /usr/bin/mailq, sendmail lists the queue (as -bp)."""
    (config_dir.parent / "spool").mkdir()
    monkeypatch.setenv("MAIL_CONFIG", str(config_dir))
    assert command.main([f"/usr/bin/{name}"]) == 0
    assert expected in capsys.readouterr().out


def test_argv0_newaliases_and_bi_rebuild_aliases(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invoked as newaliases, or with -bi / -I, sendmail runs newaliases."""
    calls: list[str] = []
    monkeypatch.setattr(command, "_run_admin", lambda mode, directory: calls.append(mode) or 0)
    monkeypatch.setenv("MAIL_CONFIG", str(config_dir))
    assert command.main(["/usr/bin/newaliases"]) == 0
    assert command.main(["sendmail", "-bi"]) == 0
    assert command.main(["sendmail", "-I"]) == 0
    assert command.main(["sendmail", "-q"]) == 0
    assert command.main(["sendmail", "-bp"]) == 0
    assert calls == ["newaliases", "newaliases", "newaliases", "flush", "mailq"]


def test_bs_session_in_memory(config_dir: Path) -> None:
    """-bs: greeting, EHLO, a transaction queued as a maildrop file, sequence
    errors and unknown commands answered, QUIT."""
    stdin = io.BytesIO(
        b"RCPT TO:<a@x>\r\nEHLO me\r\nMAIL FROM:<s@x> RET=HDRS\r\nRCPT TO:<a@x> NOTIFY=NEVER\r\n"
        b"DATA\r\nSubject: s\r\n\r\n..x\r\n.\r\nVRFY a\r\nMAIL FROM:<s@x> FOO=1\r\nQUIT\r\n"
    )
    stdout = io.BytesIO()
    assert serve(parse(["-bs"]), str(config_dir), stdin, stdout, os.getuid()) == 0
    replies = [r for r in stdout.getvalue().decode().split("\r\n") if r[3:4] == " "]
    assert [r[:3] for r in replies] == [
        "220",
        "503",
        "250",
        "250",
        "250",
        "354",
        "250",
        "502",
        "555",
        "221",
    ]
    [path] = _maildrop(config_dir)
    message = decode(path.read_bytes())
    assert message.sender == "s@x" and message.attributes == {"ret": "HDRS"}
    assert message.recipients == [("a@x", "NEVER")]
    assert message.content == b"Subject: s\n\n.x\n"


def test_relative_queue_directory_is_next_to_etc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded default's ``queue_directory = var/spool`` resolves against
    the directory holding etc/ (where twistd runs), whatever sendmail's cwd."""
    etc = tmp_path / "clone" / "etc"
    etc.mkdir(parents=True)
    (etc / "main.cf").write_text("queue_directory = var/spool\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = _submit(etc, ["a@x"], b"x\n")
    assert Path(path).parent == tmp_path / "clone" / "var" / "spool" / "maildrop"


@pytest.mark.parametrize(
    ("main_cf", "fast"),
    [
        ("", True),
        ("queue_directory = /q\nmessage_size_limit = 5000\n", True),
        ("queue_directory = /a\nqueue_directory = /b\n", True),
        ("authorized_submit_users = alice,\n    bob\n# note\n", True),
        ("queue_directory = $data_directory/q\n", False),
        ("message_size_limit = 10k\n", False),
        ("myhostname = $mydomain\nqueue_directory = /q\n", True),
        ("  continuation first\n", False),
    ],
)
def test_fast_parameter_reader_agrees_with_main_cf_reader(
    tmp_path: Path, main_cf: str, fast: bool
) -> None:
    """sendmail's quick main.cf reader gives what the full reader gives for
    its three parameters, or defers to it (None) for expansions and oddities."""
    from pymta.sendmail.params import read_fast

    (tmp_path / "main.cf").write_text(main_cf)
    values = read_fast(str(tmp_path))
    assert (values is not None) is fast
    if values is not None:
        assert values == command._read_full(str(tmp_path))
