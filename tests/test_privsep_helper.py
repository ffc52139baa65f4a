"""The root helper works out every target itself: honest requests (the
recipient and why) land where the configuration and the user's own files
say, as the user; forged requests from the unprivileged side — a path
outside the user's mailbox or .forward, a user the recipient is not, a
command not in the .forward or alias, uid 0, the old uid-and-path form —
are refused, touch nothing and are logged by the helper itself.

Needs root and useradd (a throw-away user, removed after); the helper is
the real one (a root process on a socketpair), on the real reactor."""

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
from twisted.internet import reactor  # noqa: F401 (pytest-twisted's reactor)

from pymta.privsep.client import HelperUserDelivery, start_helper
from pymta.privsep.interface import Grounds, UnixUser
from pymta.queue.reference import BytesContent

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None, reason="needs root and useradd"
)

MESSAGE = b"Subject: hi\n\nbody\n"
NOW = 1_800_000_000.0


@pytest.fixture
def root() -> Iterator[Path]:
    """A directory other users may traverse: config, a Debian-style spool, out/."""
    path = Path(tempfile.mkdtemp(prefix="pymta-helper-", dir="/tmp"))
    path.chmod(0o755)
    spool = path / "mail"
    spool.mkdir()
    os.chown(spool, 0, grp.getgrnam("mail").gr_gid)
    spool.chmod(0o2775)
    (path / "out").mkdir()
    (path / "out").chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def user(root: Path) -> Iterator[UnixUser]:
    name = f"pymtah{os.getpid() % 100000}"
    subprocess.run(
        ["useradd", "-m", "-d", str(root / "home"), "-s", "/bin/sh", "-U", name],
        check=True,
        capture_output=True,
    )
    try:
        yield UnixUser.from_pwd(pwd.getpwnam(name))
    finally:
        subprocess.run(["userdel", "-r", name], check=False, capture_output=True)
        subprocess.run(["groupdel", name], check=False, capture_output=True)


@pytest.fixture
def helper(root: Path) -> Iterator[HelperUserDelivery]:
    etc = root / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text(
        f"mail_spool_directory = {root}/mail\n"
        "alias_maps = texthash:$config_directory/aliases\n"
        "default_privs = nobody\nrecipient_delimiter = +\n"
    )
    (etc / "aliases").write_text(f'whoami: "|id -un > {root}/out/alias-user"\n')
    (etc / "master.cf").write_text(
        "smtp inet n - n - - smtpd\n"
        "myfilter unix - n n - - pipe flags=R user=nobody argv=/bin/cat\n"
    )
    users = start_helper(str(etc), str(root / "helper.log"))
    yield users
    users.close()
    assert users.pid is not None
    os.waitpid(users.pid, 0)  # it exits once its socket is closed


def log(root: Path) -> str:
    try:
        return (root / "helper.log").read_text()
    except OSError:
        return ""


def ask(helper: HelperUserDelivery, request: dict[str, Any]) -> Any:
    """A raw request, as a compromised mail_owner process could send it."""
    return helper._ask(request, b"", BytesContent(MESSAGE))


def own(user: UnixUser, path: Path, text: str) -> None:
    path.write_text(text)
    os.chown(path, user.uid, user.gid)
    path.chmod(0o644)


@pytest_twisted.inlineCallbacks
def test_mailbox_path_is_the_helpers_not_the_askers(
    root: Path, user: UnixUser, helper: HelperUserDelivery
) -> Any:
    """A mailbox request lands in mail_spool_directory/USER as the user,
    whatever path and user the asker named; the recipient's extension is
    stripped to find the user."""
    elsewhere = root / "out" / "chosen-by-asker"
    nobody = UnixUser.from_pwd(pwd.getpwnam("nobody"))
    outcome = yield helper.append_mbox(
        nobody, str(elsewhere), "a@example.org", b"X: 1\n", BytesContent(MESSAGE),
        NOW, ["fcntl"], 0, grounds=Grounds("mailbox", f"{user.name}+ext@localhost"),
    )  # fmt: skip
    spool = root / "mail" / user.name
    assert outcome == ("2.0.0", f"delivered to mailbox {spool}")
    assert spool.stat().st_uid == user.uid
    assert b"X: 1\nSubject: hi" in spool.read_bytes()
    assert not elsewhere.exists()


@pytest_twisted.inlineCallbacks
def test_forward_targets_are_read_back_as_the_user(
    root: Path, user: UnixUser, helper: HelperUserDelivery
) -> Any:
    """A /file and a |command of the user's .forward run as the user; the
    command's environment keeps local(8)'s names and loses what the asker
    slipped in (LD_PRELOAD), and HOME/USER are the helper's."""
    home = Path(user.home)
    saved, out = home / "saved", home / "env"
    own(user, home / ".forward", f'{saved}, "|env > {out}"\n')
    grounds = Grounds("forward", f"{user.name}@localhost")
    outcome = yield helper.append_mbox(
        user, str(saved), "a@example.org", b"", BytesContent(MESSAGE), NOW, ["fcntl"], 0,
        grounds=grounds,
    )  # fmt: skip
    assert outcome[0] == "2.0.0", outcome
    assert saved.stat().st_uid == user.uid
    env = {"SENDER": "a@example.org", "LD_PRELOAD": "/tmp/evil.so", "HOME": "/root"}
    result = yield helper.run_command(
        user, f"env > {out}", b"", BytesContent(MESSAGE), env, 60.0, "/", grounds=grounds
    )
    assert result.exit_code == 0, result
    lines = set(out.read_text().splitlines())
    assert {"SENDER=a@example.org", f"HOME={home}", f"USER={user.name}"} <= lines
    assert not any(line.startswith("LD_PRELOAD") for line in lines)
    assert out.stat().st_uid == user.uid
    assert "refused" not in log(root)


@pytest_twisted.inlineCallbacks
def test_forged_requests_are_refused_and_logged(
    root: Path, user: UnixUser, helper: HelperUserDelivery
) -> Any:
    """What a compromised mail_owner process might ask is refused, nothing
    is written and each refusal is in the helper's own log: a file outside
    the user's .forward, a command not in it, a file for a recipient whose
    .forward names it but who is not the user of the request, an alias
    file for a non-alias, root's .forward, a mailbox_command that is not
    main.cf's, a pipe service that is not one, the old uid-and-path form
    (uid 0), and a request with no grounds."""
    home = Path(user.home)
    own(user, home / ".forward", f"{home}/saved\n")
    precious = root / "precious"
    precious.write_text("keep\n")
    forged = [
        {"kind": "file", "path": str(precious), "grounds": {"reason": "forward",
         "recipient": f"{user.name}@localhost"}},
        {"kind": "command", "command": "id", "grounds": {"reason": "forward",
         "recipient": f"{user.name}@localhost"}},
        {"kind": "file", "path": f"{home}/saved", "grounds": {"reason": "forward",
         "recipient": "nobody@localhost"}},
        {"kind": "file", "path": str(precious), "grounds": {"reason": "alias",
         "recipient": f"{user.name}@localhost"}},
        {"kind": "command", "command": "id", "grounds": {"reason": "forward",
         "recipient": "root@localhost"}},
        {"kind": "command", "command": "id", "grounds": {"reason": "mailbox_command",
         "recipient": "root@localhost"}},
        {"kind": "program", "argv": ["/bin/sh", "-c", "id"], "grounds": {"reason": "pipe",
         "service": "smtp"}},
        {"kind": "program", "argv": ["/bin/sh", "-c", "id"], "grounds": {"reason": "pipe",
         "service": "myfilter"}},
        {"kind": "mailbox", "uid": 0, "gid": 0, "child": {"action": "mbox",
         "path": str(precious)}},
        {"kind": "file", "path": str(precious), "uid": 0, "gid": 0},
    ]  # fmt: skip
    for request in forged:
        reply = yield ask(helper, request)
        assert reply.get("refused") is True, (request, reply)
        assert reply["exit_code"] is None
    assert precious.read_text() == "keep\n"
    assert not (home / "saved").exists()
    lines = [line for line in log(root).splitlines() if "refused" in line]
    assert len(lines) == len(forged), log(root)
    assert "is not in the .forward of" in lines[0]
    assert "nobody has no usable .forward" in lines[2]
    assert "a request without grounds" in lines[-1]


@pytest_twisted.inlineCallbacks
def test_alias_command_runs_as_default_privs(
    root: Path, user: UnixUser, helper: HelperUserDelivery
) -> Any:
    """An alias command (the aliases file is root's) runs as nobody, whatever
    user the asker named; a mailbox for root is root's spool mailbox."""
    result = yield helper.run_command(
        user, f"id -un > {root}/out/alias-user", b"", BytesContent(b""),
        {}, 60.0, "/", grounds=Grounds("alias", "whoami@localhost"),
    )  # fmt: skip
    assert result.exit_code == 0, result
    assert (root / "out" / "alias-user").read_text() == "nobody\n"
    outcome = yield helper.append_mbox(
        user, "/ignored", "a@example.org", b"", BytesContent(MESSAGE), NOW, ["fcntl"], 0,
        grounds=Grounds("mailbox", "root@localhost"),
    )  # fmt: skip
    assert outcome[0] == "2.0.0", outcome
    assert (root / "mail" / "root").stat().st_uid == 0


@pytest_twisted.inlineCallbacks
def test_pipe_runs_as_its_master_cf_user(
    root: Path, user: UnixUser, helper: HelperUserDelivery
) -> Any:
    """A pipe request runs the service's program as its user= from master.cf
    (not the user the asker named)."""
    result = yield helper.run_program(
        user, ["/bin/cat"], b"first\n", BytesContent(b"second\n"), {}, 60.0, "/",
        grounds=Grounds("pipe", service="myfilter"),
    )  # fmt: skip
    assert result.exit_code == 0, result
    assert result.output == b"first\nsecond\n"


@pytest_twisted.inlineCallbacks
def test_forward_is_read_as_the_user_from_a_closed_home(
    root: Path, user: UnixUser, helper: HelperUserDelivery
) -> Any:
    """The helper reads the recipient's .forward as the user (a 0700 home
    mail_owner cannot enter), from forward_path it expands itself (not the
    paths the asker named); a .forward the user does not own is ignored
    with Postfix's warning."""
    home = Path(user.home)
    home.chmod(0o700)
    own(user, home / ".forward", "someone@example.org\n")
    grounds = Grounds("forward", f"{user.name}@localhost")
    found = yield helper.read_forward(user, ["/etc/shadow"], grounds)
    assert (found.path, found.text) == (f"{home}/.forward", "someone@example.org\n")
    os.chown(home / ".forward", 0, 0)
    found = yield helper.read_forward(user, [], grounds)
    assert found.path is None
    assert found.warnings == (f"file {home}/.forward has bad owner uid 0; ignored",)


@pytest_twisted.inlineCallbacks
def test_sieve_mailbox_is_the_helpers_and_the_script_runs_as_the_user(
    root: Path, user: UnixUser, helper: HelperUserDelivery
) -> Any:
    """A sieve request runs the recipient's script from a 0700 home as the
    user, into the mailbox the helper derives (the spool, whatever path the
    asker named), with the helper's own Sieve limits; a request whose
    grounds are not a mailbox is refused and logged."""
    home = Path(user.home)
    home.chmod(0o700)
    (home / "sieve").mkdir()
    own(user, home / "sieve" / "main.sieve", 'redirect "c@example.net";\nkeep;\n')
    os.chown(home / "sieve", user.uid, user.gid)
    (home / ".dovecot.sieve").symlink_to("sieve/main.sieve")
    os.lchown(home / ".dovecot.sieve", user.uid, user.gid)
    elsewhere = root / "out" / "chosen-by-asker"
    result = yield helper.deliver_sieve(
        user, str(elsewhere), "a@example.org", b"X: 1\n", BytesContent(MESSAGE),
        NOW, ["fcntl"], 0, {"max_actions": 1000}, Grounds("mailbox", f"{user.name}@localhost"),
    )  # fmt: skip
    spool = root / "mail" / user.name
    assert (result.status, result.text) == (
        "2.0.0",
        "delivered by Sieve: INBOX, redirected to c@example.net",
    )
    assert result.redirects == ("c@example.net",)
    assert spool.stat().st_uid == user.uid
    assert b"X: 1\nSubject: hi" in spool.read_bytes()
    assert not elsewhere.exists()
    forged = yield helper.deliver_sieve(
        user, str(elsewhere), "a@example.org", b"", BytesContent(MESSAGE),
        NOW, ["fcntl"], 0, {}, Grounds("forward", f"{user.name}@localhost"),
    )  # fmt: skip
    assert forged.status.startswith("4."), forged
    assert "refused a sieve request" in log(root)
    assert not elsewhere.exists()
