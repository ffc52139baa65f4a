"""The real "become the user" step: SpawningUserDelivery's child process
writes mbox and Maildir deliveries as a Unix user (made with useradd,
removed after) and runs commands as that user, on the real reactor.

Needs root; the spool directory is a copy of Debian's /var/mail
(root:mail 2775) in a temporary directory other users may traverse."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from pymta.privsep.interface import Grounds, UnixUser
from pymta.privsep.spawn import SpawningUserDelivery
from pymta.queue.reference import BytesContent

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None, reason="needs root and useradd"
)

MESSAGE = b"Subject: hi\n\nFrom the start\nbody\n"


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pymta-privsep-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def user(root: Path) -> Iterator[UnixUser]:
    """A throw-away Unix user whose home is under root."""
    name = f"pymtap{os.getpid() % 100000}"
    home = root / "home"
    subprocess.run(
        ["useradd", "-m", "-d", str(home), "-s", "/bin/sh", "-U", name],
        check=True,
        capture_output=True,
    )
    try:
        yield UnixUser.from_pwd(pwd.getpwnam(name))
    finally:
        subprocess.run(["userdel", "-r", name], check=False, capture_output=True)
        subprocess.run(["groupdel", name], check=False, capture_output=True)


def spool(root: Path) -> Path:
    """Debian's /var/mail: root:mail, 2775."""
    path = root / "mail"
    path.mkdir()
    os.chown(path, 0, grp.getgrnam("mail").gr_gid)
    path.chmod(0o2775)
    return path


@pytest_twisted.inlineCallbacks
def test_mbox_in_the_spool_is_the_users(root: Path, user: UnixUser) -> Any:
    """An mbox delivery to a Debian-style spool creates the mailbox owned by
    the user, mode 0600, with the From_ line, >From quoting and the
    dot lock removed."""
    users = SpawningUserDelivery(reactor, reactor)
    path = spool(root) / user.name
    outcome = yield users.append_mbox(
        user,
        str(path),
        "a@example.org",
        b"Delivered-To: x@y\n",
        BytesContent(MESSAGE),
        1_800_000_000.0,
        ["fcntl", "dotlock"],
        0,
    )
    assert outcome == ("2.0.0", f"delivered to mailbox {path}")
    info = path.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (user.uid, 0o600)
    data = path.read_bytes()
    assert data.startswith(b"From a@example.org  Fri Jan 15 08:00:00 2027\nDelivered-To: x@y\n")
    assert b"\n>From the start\n" in data and data.endswith(b"body\n\n")
    assert not (path.parent / f"{user.name}.lock").exists()


@pytest_twisted.inlineCallbacks
def test_maildir_in_home_is_the_users(root: Path, user: UnixUser) -> Any:
    """A Maildir delivery creates ~/Maildir and its message as the user."""
    users = SpawningUserDelivery(reactor, reactor)
    maildir = f"{user.home}/Maildir/"
    outcome = yield users.deliver_maildir(user, maildir, b"X: y\n", BytesContent(MESSAGE))
    assert outcome[0] == "2.0.0", outcome
    [name] = os.listdir(f"{maildir}new")
    info = os.stat(f"{maildir}new/{name}")
    assert (info.st_uid, info.st_mode & 0o777) == (user.uid, 0o600)
    assert os.stat(maildir).st_uid == user.uid
    assert Path(f"{maildir}new/{name}").read_bytes() == b"X: y\n" + MESSAGE


@pytest_twisted.inlineCallbacks
def test_planted_symlink_is_refused(root: Path, user: UnixUser) -> Any:
    """A symlink in place of the mailbox (to a file root owns) is refused
    and the target is untouched."""
    users = SpawningUserDelivery(reactor, reactor)
    directory = spool(root)
    target = root / "precious"
    target.write_bytes(b"keep\n")
    (directory / user.name).symlink_to(target)
    outcome = yield users.append_mbox(
        user,
        str(directory / user.name),
        "a@example.org",
        b"",
        BytesContent(MESSAGE),
        1_800_000_000.0,
        ["fcntl"],
        0,
    )
    assert outcome[0].startswith("5."), outcome
    assert target.read_bytes() == b"keep\n"


@pytest_twisted.inlineCallbacks
def test_commands_run_as_the_user(root: Path, user: UnixUser) -> Any:
    """run_command runs /bin/sh as the user (uid, gid and groups) with the
    message on stdin, in the given directory."""
    users = SpawningUserDelivery(reactor, reactor)
    out = Path(user.home) / "out"
    result = yield users.run_command(
        user,
        f"id -u > {out}; id -g >> {out}; cat >> {out}",
        b"first\n",
        BytesContent(b"second\n"),
        {"PATH": "/usr/bin:/bin"},
        60.0,
        user.home,
    )
    assert result.exit_code == 0, result
    assert out.read_text() == f"{user.uid}\n{user.gid}\nfirst\nsecond\n"
    assert out.stat().st_uid == user.uid


def test_not_root_becomes_only_itself() -> None:
    """Not running as root, only the running user can be become."""
    users = SpawningUserDelivery(reactor, reactor, euid=1234)
    assert users.can_become(UnixUser("me", 1234, 1234, "/", "/bin/sh"))
    assert not users.can_become(UnixUser("other", 1235, 1235, "/", "/bin/sh"))


@pytest_twisted.inlineCallbacks
def test_sieve_runs_as_the_user(root: Path, user: UnixUser) -> Any:
    """deliver_sieve: the child runs the user's active script in a 0700
    home as the user: fileinto :create makes ~/Maildir/.Lists and its
    message, the vacation tracking file is written, all owned by the user;
    the redirect and the vacation reply come back for the agent."""
    home = Path(user.home)
    home.chmod(0o700)
    (home / "sieve").mkdir()
    (home / "sieve" / "main.sieve").write_text(
        'require ["fileinto", "mailbox", "vacation"];\n'
        'fileinto :create "Lists";\nredirect "c@example.net";\n'
        'vacation :addresses ["x@y"] "Away.";\n'
    )
    (home / ".dovecot.sieve").symlink_to("sieve/main.sieve")
    for path in (home / "sieve", home / "sieve" / "main.sieve", home / ".dovecot.sieve"):
        os.lchown(path, user.uid, user.gid)
    users = SpawningUserDelivery(reactor, reactor)
    maildir = f"{user.home}/Maildir/"
    message = b"To: x@y\nSubject: hi\n\nbody\n"
    result = yield users.deliver_sieve(
        user,
        maildir,
        "a@example.org",
        b"Delivered-To: x@y\n",
        BytesContent(message),
        1_800_000_000.0,
        ["fcntl"],
        0,
        {"max_script_size": 1 << 20},
        Grounds("mailbox", "x@y"),
    )
    assert (result.status, result.text) == (
        "2.0.0",
        "delivered by Sieve: Lists, redirected to c@example.net",
    ), result
    assert result.redirects == ("c@example.net",)
    [vacation] = result.vacations
    assert (vacation["to"], vacation["reason"]) == ("a@example.org", "Away.")
    [name] = os.listdir(f"{maildir}.Lists/new")
    for path in (maildir, f"{maildir}.Lists", f"{maildir}.Lists/new/{name}"):
        assert os.stat(path).st_uid == user.uid, path
    assert Path(f"{maildir}.Lists/new/{name}").read_bytes() == b"Delivered-To: x@y\n" + message
    assert (home / ".pymta-sieve-tracking").stat().st_uid == user.uid
