"""End to end: a real ``twistd pymta`` run as root delivers SMTP mail for
Unix users (made with useradd, removed after) as those users: into a
Debian-style spool (root:mail 2775) and ~/Maildir, through a .forward to a
file, a program and another address, and an alias command as nobody.

Waiting is on files (inotify), with deadlines."""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import smtplib
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import DEFAULT_MASTER_CF, PymtaServer, wait_for_file
from tests.system_python import system_python

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None, reason="needs root and useradd"
)


@pytest.fixture
def root() -> Iterator[Path]:
    """A temporary directory other users may traverse, with a spool like
    Debian's /var/mail and a directory nobody may write (for the alias)."""
    path = Path(tempfile.mkdtemp(prefix="pymta-local-", dir="/tmp"))
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
def user(root: Path) -> Iterator[pwd.struct_passwd]:
    name = f"pymtae{os.getpid() % 100000}"
    subprocess.run(
        ["useradd", "-m", "-d", str(root / "home"), "-s", "/bin/sh", "-U", name],
        check=True,
        capture_output=True,
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "-r", name], check=False, capture_output=True)
        subprocess.run(["groupdel", name], check=False, capture_output=True)


def send(server: PymtaServer, recipient: str, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
        client.sendmail(
            "sender@example.org",
            [recipient],
            f"From: sender@example.org\nSubject: {subject}\n\nhello\n".encode(),
        )


def server_for(root: Path, extra: str = "", master_cf: str = DEFAULT_MASTER_CF) -> PymtaServer:
    return PymtaServer(
        root,
        master_cf=master_cf,
        main_cf_extra=f"mail_spool_directory = {root}/mail\n" + extra,
        aliases=(f'postmaster: alice@example.test\nwhoami: "|id -un > {root}/out/alias-user"\n'),
    )


def test_spool_forward_and_alias_command(root: Path, user: pwd.struct_passwd) -> None:
    """Mail for a Unix user lands in the spool owned by the user; with a
    .forward it goes to a file and a program (both as the user), to another
    address and (\\user) to the mailbox again; an alias command runs as nobody."""
    with server_for(root) as server:
        server.start()
        spool = root / "mail" / user.pw_name
        send(server, f"{user.pw_name}@localhost", "first")
        wait_for_file(spool.parent, lambda: b"Subject: first" in _read(spool))
        info = spool.stat()
        assert (info.st_uid, info.st_mode & 0o777) == (user.pw_uid, 0o600)
        assert b"Delivered-To: " + user.pw_name.encode() + b"@localhost" in spool.read_bytes()

        home = Path(user.pw_dir)
        forward = home / ".forward"
        forward.write_text(
            f'alice@example.test, {home}/saved, "|cat > {home}/piped", \\{user.pw_name}\n'
        )
        os.chown(forward, user.pw_uid, user.pw_gid)
        forward.chmod(0o644)
        send(server, f"{user.pw_name}@localhost", "second")
        wait_for_file(spool.parent, lambda: b"Subject: second" in _read(spool))
        for path in (home / "saved", home / "piped"):
            wait_for_file(home, lambda p=path: b"Subject: second" in _read(p))
            assert path.stat().st_uid == user.pw_uid
        wait_for_file(
            server.maildir("alice") / "new",
            lambda: any(b"Subject: second" in m for m in server.messages("alice")),
        )

        send(server, "whoami@localhost", "alias")
        out = root / "out" / "alias-user"
        wait_for_file(out.parent, lambda: _read(out).endswith(b"\n"))
        assert out.read_text() == "nobody\n"
        server.stop()


def test_home_maildir(root: Path, user: pwd.struct_passwd) -> None:
    """home_mailbox = Maildir/: the message lands in ~/Maildir/new, owned by the user."""
    with server_for(root, "home_mailbox = Maildir/\n") as server:
        server.start()
        send(server, f"{user.pw_name}@localhost", "maildir")
        new = Path(user.pw_dir) / "Maildir" / "new"
        wait_for_file(Path(user.pw_dir), lambda: new.is_dir() and bool(os.listdir(new)))
        [name] = os.listdir(new)
        assert (new / name).stat().st_uid == user.pw_uid
        assert b"Subject: maildir" in (new / name).read_bytes()
        server.stop()


def test_pipe_transport_runs_a_real_program_as_its_user(
    root: Path, user: pwd.struct_passwd
) -> None:
    """A master.cf pipe service (flags=DRX, user=, argv= with ${recipient})
    runs a real program as that user with the message on stdin."""
    script = root / "out" / "filter.sh"
    script.write_text('#!/bin/sh\nid -un > "$1.user"\ncat > "$1"\n')
    script.chmod(0o755)
    master_cf = (
        DEFAULT_MASTER_CF + "myfilter unix - n n - - pipe flags=DRX "
        f"user={user.pw_name} argv={script} {root}/out/${{recipient}}\n"
    )
    extra = "relay_domains = pipe.example\ntransport_maps = inline:{ pipe.example=myfilter: }\n"
    with server_for(root, extra, master_cf) as server:
        server.start()
        assert "(pipe)" not in server.log()
        send(server, "someone@pipe.example", "piped")
        out = root / "out" / "someone@pipe.example"
        wait_for_file(out.parent, lambda: b"Subject: piped" in _read(out))
        assert out.read_bytes().startswith(
            b"Return-Path: <sender@example.org>\nDelivered-To: someone@pipe.example\n"
        )
        assert out.stat().st_uid == user.pw_uid
        assert (root / "out" / "someone@pipe.example.user").read_text() == f"{user.pw_name}\n"
        server.wait_for_log(r"to=<someone@pipe\.example>, relay=myfilter.*status=sent")
        server.stop()


def _uids(pid: int) -> set[int]:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)", status, re.M)
    assert match
    return {int(u) for u in match.groups()}


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry))
    return found


def _sockets(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            continue
    return count


def test_twistd_u_keeps_root_only_in_the_helper(root: Path, user: pwd.struct_passwd) -> None:
    """Started as root with -u nobody: the server (which holds the network
    sockets and reads the queue) runs as nobody; the one process left as
    root is the local-delivery helper, which holds a single socket (its end
    of the socketpair); through it, mail for a Unix user still lands in the
    spool owned by that user and in the file its .forward names (in a 0700
    home: the helper reads it as the user), root's mail in root's spool mailbox, an alias
    command runs as nobody and a pipe service's program as its user=."""
    pidfile = root / "run" / "pymta.pid"
    script = root / "out" / "filter.sh"
    script.write_text('#!/bin/sh\nid -un > "$1.user"\ncat > "$1"\n')
    script.chmod(0o755)
    master_cf = (
        DEFAULT_MASTER_CF + "myfilter unix - n n - - pipe flags=DR "
        f"user={user.pw_name} argv={script} {root}/out/${{recipient}}\n"
    )
    extra = "relay_domains = pipe.example\ntransport_maps = inline:{ pipe.example=myfilter: }\n"
    with server_for(root, extra, master_cf) as server:
        for path in server.config_dir.iterdir():
            path.chmod(0o644)
        server.start(twistd_options=["-u", "nobody", "-g", "nogroup", "--pidfile", str(pidfile)])
        server.wait_for_log(r"set uid/gid")
        pid = int(pidfile.read_text())
        nobody = pwd.getpwnam("nobody").pw_uid
        assert _uids(pid) == {nobody}
        [helper] = [
            child
            for child in _children(pid)
            if b"pymta.privsep.helper" in Path(f"/proc/{child}/cmdline").read_bytes()
        ]
        assert _uids(helper) == {0}
        assert _sockets(helper) == 1
        assert all(_uids(child) == {nobody} for child in _children(pid) if child != helper)

        spool = root / "mail" / user.pw_name
        home = Path(user.pw_dir)
        home.chmod(0o700)  # Debian's adduser default: nobody cannot read it
        saved = home / "saved"
        forward = home / ".forward"
        forward.write_text(f"{saved}, \\{user.pw_name}\n")
        os.chown(forward, user.pw_uid, user.pw_gid)
        send(server, f"{user.pw_name}@localhost", "privsep")
        wait_for_file(spool.parent, lambda: b"Subject: privsep" in _read(spool))
        assert spool.stat().st_uid == user.pw_uid
        # The .forward in the 0700 home was read (by the helper, as the user).
        wait_for_file(home, lambda: b"Subject: privsep" in _read(saved))
        assert saved.stat().st_uid == user.pw_uid
        send(server, "whoami@localhost", "alias")
        out = root / "out" / "alias-user"
        wait_for_file(out.parent, lambda: _read(out).endswith(b"\n"))
        assert out.read_text() == "nobody\n"
        send(server, "root@localhost", "for-root")
        root_box = root / "mail" / "root"
        wait_for_file(root_box.parent, lambda: b"Subject: for-root" in _read(root_box))
        assert root_box.stat().st_uid == 0
        send(server, "someone@pipe.example", "piped")
        piped = root / "out" / "someone@pipe.example"
        wait_for_file(piped.parent, lambda: b"Subject: piped" in _read(piped))
        assert piped.stat().st_uid == user.pw_uid
        server.stop()
    assert "Traceback" not in server.log()


def test_workers_deliver_through_the_helper(root: Path, user: pwd.struct_passwd) -> None:
    """With pymta_processes = 2, started as root with -u nobody: the worker
    runs as nobody and has a connection of its own to the root helper (the
    helper holds two sockets), so mail the worker accepts for a Unix user is
    delivered by the worker into the spool as that user (without it, the
    worker deferred it as "pymta does not run as root")."""
    python = system_python()
    if python is None:
        pytest.skip("no venv of /usr/bin/python3 with pymta's requirements")
    pidfile = root / "run" / "pymta.pid"
    with server_for(root, "pymta_processes = 2\n") as server:
        for path in server.config_dir.iterdir():
            path.chmod(0o644)
        server.start(
            twistd_options=["-u", "nobody", "-g", "nogroup", "--pidfile", str(pidfile)],
            python=python,
        )
        server.wait_for_log(r"worker 1 running")
        pid = int(pidfile.read_text())
        nobody = pwd.getpwnam("nobody").pw_uid
        children = {child: Path(f"/proc/{child}/cmdline").read_bytes() for child in _children(pid)}
        [helper] = [c for c, line in children.items() if b"pymta.privsep.helper" in line]
        [worker] = [c for c, line in children.items() if b"pymta.master.worker" in line]
        assert _uids(helper) == {0} and _uids(worker) == {nobody}
        assert _sockets(helper) == 2  # the master's connection and the worker's
        rcpt = f"{user.pw_name}@localhost"
        by_worker = re.compile(rf"worker\[{worker}\]: .*to=<{re.escape(rcpt)}>.*status=")
        sent = 0
        # The kernel spreads connections over both processes: send until
        # one has reached the worker (each message has its own connection).
        while sent < 40 and not by_worker.search(server.log()):
            send(server, rcpt, f"worker-{sent}")
            sent += 1
            if sent % 5 == 0:
                server.wait_for_log(r"to=<" + re.escape(rcpt) + ">.*status=", count=sent)
        [line] = server.wait_for_log(by_worker.pattern)[:1]
        assert "relay=local" in line and "status=sent" in line, line
        spool = root / "mail" / user.pw_name
        wait_for_file(spool.parent, lambda: _read(spool).count(b"Subject: worker-") == sent)
        assert spool.stat().st_uid == user.pw_uid
        server.stop()
    assert "Traceback" not in server.log()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
