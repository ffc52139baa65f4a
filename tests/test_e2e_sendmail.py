"""End to end: sendmail (one process per message) → maildrop → pickup → a
real ``twistd pymta`` → the virtual mailbox; as root and as other Unix users.

The server's files live in a world-traversable temporary directory so that
test users (made with useradd, removed after) reach the maildrop; those users
run sendmail with Debian's /usr/bin/python3 and a world-readable copy of
the worktree's pymta package (the python3 on PATH may live under /root).
Waiting is on log lines and files, with deadlines.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import DEFAULT_MASTER_CF, REPO, PymtaServer, wait_for_file

MASTER_CF = DEFAULT_MASTER_CF + "pickup unix n - n 60 1 pickup\n"
SYSTEM_PYTHON = "/usr/bin/python3"
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"
MESSAGE = b"Subject: {subject}\n\nHello from sendmail.\n"

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("runuser") is None,
    reason="needs root, useradd and runuser",
)


@pytest.fixture
def root() -> Iterator[Path]:
    """A temporary directory other users may traverse (tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="pymta-sendmail-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def wait_maildrop(instance: PymtaServer) -> None:
    """pickup makes maildrop (1733) as it starts, just after the listeners
    bind: users other than root cannot make it themselves."""
    maildrop = instance.root / "spool" / "maildrop"
    wait_for_file(maildrop, maildrop.is_dir)


@pytest.fixture
def server(root: Path) -> Iterator[PymtaServer]:
    with PymtaServer(root, master_cf=MASTER_CF) as instance:
        instance.start()
        wait_maildrop(instance)
        yield instance
        instance.stop()


def sendmail(
    server: PymtaServer, args: list[str], data: bytes, user: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run sendmail -C <the server's etc> ARGS with data on stdin, as root or user."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    if user is None:
        env["PYTHONPATH"] = str(REPO)
        command = [sys.executable, "-m", "pymta.sendmail"]
    else:
        env["PYTHONPATH"] = str(_readable_copy(server.root))
        command = [RUNUSER, "-u", user, "--", SYSTEM_PYTHON, "-m", "pymta.sendmail"]
    return subprocess.run(
        [*command, "-C", str(server.config_dir), *args],
        input=data,
        capture_output=True,
        env=env,
        timeout=60,
        cwd="/",
    )


def _readable_copy(root: Path) -> Path:
    lib = root / "pylib"
    if not lib.exists():
        shutil.copytree(REPO / "pymta", lib / "pymta", ignore=shutil.ignore_patterns("__pycache__"))
        for directory, _dirs, files in os.walk(lib):
            os.chmod(directory, 0o755)
            for name in files:
                os.chmod(os.path.join(directory, name), 0o644)
    return lib


def _find(server: PymtaServer, user: str, subject: str) -> email.message.Message | None:
    for raw in server.messages(user):
        message = email.message_from_bytes(raw)
        if message["Subject"] == subject:
            return message
    return None


def wait_delivered(server: PymtaServer, user: str, subject: str) -> email.message.Message:
    """Wait (inotify on the Maildir's new/) for the message with that subject."""
    wait_for_file(server.maildir(user) / "new", lambda: _find(server, user, subject) is not None)
    message = _find(server, user, subject)
    assert message is not None
    return message


def test_sendmail_delivers_to_a_virtual_mailbox(server: PymtaServer) -> None:
    """sendmail RCPT queues the message; it lands in the mailbox with a
    Received header naming the submitter's uid, From/Date/Message-ID added,
    and the log has pickup's ``uid=0 from=<root@...>`` line."""
    result = sendmail(server, ["alice@example.test"], MESSAGE.replace(b"{subject}", b"one"))
    assert result.returncode == 0, result.stderr
    message = wait_delivered(server, "alice", "one")
    assert "(pymta, from userid 0)" in message["Received"]
    assert message["Return-Path"] == "<root@mx.example.test>"
    assert message["From"] == "root@mx.example.test"
    assert message["Date"] and message["Message-ID"]
    server.wait_for_log(r"pickup: \w+: uid=0 from=<root@mx\.example\.test>")
    assert not os.listdir(server.root / "spool" / "maildrop")


def test_message_submitted_while_down_goes_out_at_start(root: Path) -> None:
    """With the server never started, and again while it is stopped, sendmail
    exits 0 at once; the files wait in maildrop and are delivered at start."""
    instance = PymtaServer(root, master_cf=MASTER_CF)
    with instance:
        first = sendmail(instance, ["alice@example.test"], MESSAGE.replace(b"{subject}", b"a"))
        assert first.returncode == 0, first.stderr
        maildrop = root / "spool" / "maildrop"
        assert (maildrop.stat().st_mode & 0o7777) == 0o1733
        instance.start()
        wait_delivered(instance, "alice", "a")
        instance.stop()
        second = sendmail(instance, ["bob@example.test"], MESSAGE.replace(b"{subject}", b"b"))
        assert second.returncode == 0, second.stderr
        assert len(os.listdir(maildrop)) == 1
        instance.start()
        wait_delivered(instance, "bob", "b")
        instance.stop()


def test_t_with_bcc(server: PymtaServer) -> None:
    """-t sends to To, Cc and Bcc; the Bcc header is removed from every copy."""
    data = (
        b"From: Root <root@mx.example.test>\nTo: alice@example.test\n"
        b"Bcc: bob@example.test\nSubject: secret\n\nhi\n"
    )
    result = sendmail(server, ["-t", "-i"], data)
    assert result.returncode == 0, result.stderr
    for user in ("alice", "bob"):
        message = wait_delivered(server, user, "secret")
        assert message["Bcc"] is None
        assert b"bob@example.test" not in message.as_bytes().split(b"\n\n")[0].replace(
            b"Delivered-To: bob@example.test", b""
        ).replace(b"for <bob@example.test>", b"")


def test_sendmail_bs_speaks_smtp_on_stdio(server: PymtaServer) -> None:
    """-bs answers SMTP on stdin/stdout and queues what DATA carries (dot-unstuffed)."""
    session = (
        b"EHLO me\r\nMAIL FROM:<root@mx.example.test>\r\nRCPT TO:<alice@example.test>\r\n"
        b"DATA\r\nSubject: over-bs\r\n\r\n..dot\r\n.\r\nQUIT\r\n"
    )
    result = sendmail(server, ["-bs"], session)
    replies = [line for line in result.stdout.decode().splitlines() if line[3:4] == " "]
    assert [line[:3] for line in replies] == ["220", "250", "250", "250", "354", "250", "221"]
    message = wait_delivered(server, "alice", "over-bs")
    assert message.get_payload() == ".dot\n"


def test_cron_style_invocation_without_a_tty(server: PymtaServer) -> None:
    """A job with no controlling terminal, a minimal environment and stdin
    from a file (as cron runs it) submits with plain ``sendmail -oi -t``."""
    job = server.root / "job.txt"
    job.write_bytes(b"To: alice@example.test\nSubject: cron\n\noutput\n")
    with job.open("rb") as stdin:
        result = subprocess.run(
            ["setsid", sys.executable, "-m", "pymta.sendmail", "-oi", "-t"],
            stdin=stdin,
            capture_output=True,
            env={
                "PATH": "/usr/bin:/bin",
                "PYTHONPATH": str(REPO),
                "MAIL_CONFIG": str(server.config_dir),
            },
            cwd="/",
            timeout=60,
            start_new_session=True,
        )
    assert result.returncode == 0, result.stderr
    wait_delivered(server, "alice", "cron")


def test_s_nail_with_pymta_sendmail_as_mta(server: PymtaServer) -> None:
    """s-nail's ``mail -s`` with mta= pointing at pymta-sendmail delivers."""
    if shutil.which("s-nail") is None:
        pytest.skip("s-nail is not installed (tools/install-test-deps)")
    wrapper = server.root / "pymta-sendmail"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH={REPO} exec {sys.executable} -m pymta.sendmail "
        f'-C {server.config_dir} "$@"\n'
    )
    wrapper.chmod(0o755)
    result = subprocess.run(
        [
            "s-nail",
            "-n",
            "-S",
            f"mta={wrapper}",
            "-S",
            "sendwait",
            "-s",
            "via s-nail",
            "alice@example.test",
        ],
        input=b"Hello from s-nail.\n",
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(server.root), "LANG": "C.UTF-8"},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    message = wait_delivered(server, "alice", "via s-nail")
    assert "Hello from s-nail." in message.get_payload()


def test_bad_usage_and_no_recipients_fail_clearly(server: PymtaServer) -> None:
    """Unknown flags exit 64 with a usage line; no recipients exits 64; nothing is queued."""
    bad = sendmail(server, ["-z", "alice@example.test"], b"x\n")
    assert bad.returncode == 64
    assert b"sendmail: fatal: invalid option -- 'z'" in bad.stderr
    none = sendmail(server, ["-t"], b"Subject: none\n\nx\n")
    assert none.returncode == 64
    assert b"No recipient addresses found" in none.stderr
    assert not os.listdir(server.root / "spool" / "maildrop")


# --- other Unix users ------------------------------------------------------------


@pytest.fixture
def users() -> Iterator[list[str]]:
    """Two throw-away Unix users, removed afterwards."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd")
    names = [f"pymta{os.getpid() % 10000}{tag}" for tag in ("a", "b")]
    for name in names:
        subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", name], check=True)
    try:
        yield names
    finally:
        for name in names:
            subprocess.run(["userdel", name], check=False)


def _uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid


@needs_root
def test_user_cannot_forge_the_recorded_uid(server: PymtaServer, users: list[str]) -> None:
    """A user who writes a maildrop file claiming uid 0 (and -f root) is still
    recorded with the kernel's uid in the Received header and the log."""
    user = users[0]
    uid = _uid(user)
    result = sendmail(
        server,
        ["-f", "root@mx.example.test", "alice@example.test"],
        MESSAGE.replace(b"{subject}", b"forged-f"),
        user=user,
    )
    assert result.returncode == 0, result.stderr
    message = wait_delivered(server, "alice", "forged-f")
    assert f"(pymta, from userid {uid})" in message["Received"]
    server.wait_for_log(rf"pickup: \w+: uid={uid} from=<root@mx\.example\.test>")
    # Now a hand-made file that claims another identity in its records.
    forged = b"PYMTAM 1\nT0.0\nAuid=0\nAlogin=root\nN1\nRalice@example.test\t\nL%d\n%bE\n"
    body = b"Subject: forged-file\n\nx\n"
    script = (
        "import os,sys,secrets;"
        f"p='{server.root}/spool/maildrop/';n='%013x'%1+secrets.token_hex(8);"
        "f=open(p+'tmp.'+n,'wb');f.write(sys.stdin.buffer.read());f.close();"
        "os.rename(p+'tmp.'+n,p+n)"
    )
    made = subprocess.run(
        [RUNUSER, "-u", user, "--", SYSTEM_PYTHON, "-c", script],
        input=forged % (len(body), body),
        capture_output=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    message = wait_delivered(server, "alice", "forged-file")
    assert f"(pymta, from userid {uid})" in message["Received"]
    assert message["Return-Path"] == f"<{user}@mx.example.test>"
    server.wait_for_log(r"ignoring attribute 'uid'")
    server.wait_for_log(rf"pickup: \w+: uid={uid} from=<{user}@mx\.example\.test>")


@needs_root
def test_user_cannot_read_list_or_remove_anothers_maildrop_file(
    root: Path, users: list[str]
) -> None:
    """With the server down, user A's file waits in maildrop: user B can
    neither list the directory nor read or remove the file; A's mail is
    delivered with A's uid at the next start."""
    owner, other = users
    instance = PymtaServer(root, master_cf=MASTER_CF)
    with instance:
        instance.start()
        wait_maildrop(instance)
        instance.stop()
        result = sendmail(
            instance,
            ["-v", "alice@example.test"],
            MESSAGE.replace(b"{subject}", b"private"),
            user=owner,
        )
        assert result.returncode == 0, result.stderr
        path = re.search(rb"queued as (\S+)", result.stderr)
        assert path is not None
        name = path.group(1).decode()
        assert os.stat(name).st_uid == _uid(owner)
        for attempt in (
            ["ls", str(root / "spool" / "maildrop")],
            ["cat", name],
            ["rm", "-f", name],
        ):
            tried = subprocess.run(
                [RUNUSER, "-u", other, "--", *attempt], capture_output=True, timeout=60
            )
            assert tried.returncode != 0, attempt
            assert (
                b"Permission denied" in tried.stderr or b"Operation not permitted" in tried.stderr
            )
        assert os.path.exists(name)
        instance.start()
        message = wait_delivered(instance, "alice", "private")
        assert f"(pymta, from userid {_uid(owner)})" in message["Received"]
        instance.stop()


@needs_root
def test_authorized_submit_users_refuses_a_user(root: Path, users: list[str]) -> None:
    """A user left out of authorized_submit_users gets exit 77 from sendmail;
    a file that user drops anyway is removed by pickup with a warning."""
    allowed, refused = users
    instance = PymtaServer(
        root, master_cf=MASTER_CF, main_cf_extra=f"authorized_submit_users = root, {allowed}\n"
    )
    with instance:
        instance.start()
        wait_maildrop(instance)
        result = sendmail(instance, ["alice@example.test"], b"Subject: no\n\nx\n", user=refused)
        assert result.returncode == 77
        assert b"is not allowed to submit mail" in result.stderr
        ok = sendmail(instance, ["alice@example.test"], b"Subject: yes\n\nx\n", user=allowed)
        assert ok.returncode == 0, ok.stderr
        wait_delivered(instance, "alice", "yes")
        instance.stop()
