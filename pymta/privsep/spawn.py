"""spawn: IUserDelivery by one short child process per delivery.

Mirrors how Postfix's local(8) takes the recipient's identity for a
mailbox or a command, with a child process in place of set_eugid(): the
reactor process never changes its own uid.

- Mailboxes (mbox, Maildir): ``python -I -S -c <pymta.privsep.child>``,
  standard library only, started with the running identity; it drops to the
  user (setgroups with the user's groups, setgid, setuid) before it reads
  the message. For a mail spool directory that is group-writable (Debian's
  ``/var/mail``, ``root:mail 2775``) the directory's group is added to the
  child's groups, so that the dot lock can be made, as Debian's set-gid
  ``mail`` MUAs do; the mailbox itself is created as the user, mode 0600.
- Commands: ``/bin/sh -c`` through spawnProcess with the user's uid and
  gid (Twisted's child does setgid, initgroups, setuid before exec).

The message reaches the child on its standard input, read from the queue
file in blocks (:mod:`pymta.delivery.command`'s feeder). When pymta does not
run as root only its own user can be become (:meth:`can_become`); the
local agent defers the others and says so once.

Untrusted input: the message (copied by the child). Writes nothing itself.
"""

from __future__ import annotations

import grp
import json
import os
import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from zope.interface import implementer

from pymta.delivery.command import CommandResult, run_command, run_program
from pymta.delivery.local_forward import ForwardFile
from pymta.privsep.interface import Grounds, IUserDelivery, Outcome, SieveResult, UnixUser
from pymta.queue.reference import IMessageContent

_CHILD_SOURCE = (Path(__file__).parent / "child.py").read_text(encoding="utf-8")
#: The package root the child loads pymta.sieve from (a user's Sieve script).
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
#: What a Sieve delivery's child may answer (its JSON details line).
SIEVE_OUTPUT_LIMIT = 64 * 1024
#: How long a mailbox child may take (a stuck NFS spool, a full disk).
CHILD_TIME_LIMIT = 600.0
_CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C"}


def user_groups(user: UnixUser) -> list[int]:
    """The user's primary and supplementary groups (what initgroups sets)."""
    try:
        return sorted(set(os.getgrouplist(user.name, user.gid)))
    except OSError:
        return [user.gid]


@implementer(IUserDelivery)
class SpawningUserDelivery:
    """Become the user in a child process for each delivery (see module doc)."""

    def __init__(
        self,
        reactor: IReactorProcess,
        clock: IReactorTime,
        python: str | None = None,
        euid: int | None = None,
    ) -> None:
        self._reactor = reactor
        self._clock = clock
        self._python = python or sys.executable
        self._euid = os.geteuid() if euid is None else euid
        self.privileged = self._euid == 0

    def can_become(self, user: UnixUser) -> bool:
        return self._euid == 0 or user.uid == self._euid

    def _identity(self, user: UnixUser) -> tuple[int | None, int | None]:
        """uid/gid for spawnProcess: None when the child already is the user."""
        if self._euid != 0 or (user.uid == 0 and os.getegid() == user.gid):
            return None, None  # not root: only ourselves (can_become); root as root
        return user.uid, user.gid

    def _child(
        self, request: dict[str, object], prefix: bytes, message: IMessageContent
    ) -> Deferred[Outcome]:
        return self._run_child(request, prefix, message).addCallback(_child_outcome)

    def _run_child(
        self,
        request: dict[str, object],
        prefix: bytes,
        message: IMessageContent,
        output_limit: int = 2048,
    ) -> Deferred[CommandResult]:
        line = json.dumps(request).encode() + b"\n"
        try:
            return run_program(
                self._reactor,
                self._clock,
                self._python,
                [self._python, "-I", "-S", "-c", _CHILD_SOURCE],
                line + prefix,
                _CHILD_ENV,
                CHILD_TIME_LIMIT,
                "/",
                message,
                output_limit=output_limit,
            )
        except OSError as e:
            text = f"cannot start delivery process: {e.strerror}"
            return succeed(CommandResult(None, None, text.encode()))

    def _request(self, user: UnixUser, extra_groups: Sequence[int] = ()) -> dict[str, object]:
        if self._euid != 0:
            return {"uid": None}
        groups = sorted(set(user_groups(user)) | set(extra_groups))
        return {"uid": user.uid, "gid": user.gid, "groups": groups}

    def append_mbox(
        self,
        user: UnixUser,
        path: str,
        sender: str,
        headers: bytes,
        message: IMessageContent,
        now: float,
        locks: Sequence[str],
        size_limit: int,
        grounds: Grounds | None = None,
    ) -> Deferred[Outcome]:
        request = self._request(user, _spool_group(os.path.dirname(path)))
        request.update(
            action="mbox",
            path=path,
            sender=sender,
            time=now,
            locks=list(locks),
            size_limit=size_limit,
        )
        return self._child(request, headers, message)

    def deliver_maildir(
        self,
        user: UnixUser,
        path: str,
        headers: bytes,
        message: IMessageContent,
        grounds: Grounds | None = None,
    ) -> Deferred[Outcome]:
        request = self._request(user)
        request.update(action="maildir", path=path)
        return self._child(request, headers, message)

    def deliver_sieve(
        self,
        user: UnixUser,
        path: str,
        sender: str,
        headers: bytes,
        message: IMessageContent,
        now: float,
        locks: Sequence[str],
        size_limit: int,
        sieve: Mapping[str, Any],
        grounds: Grounds,
    ) -> Deferred[SieveResult]:
        request = self._request(
            user, [] if path.endswith("/") else _spool_group(os.path.dirname(path))
        )
        request.update(
            sieve_request(user, path, sender, now, locks, size_limit, sieve, grounds.recipient)
        )
        d = self._run_child(request, headers, message, SIEVE_OUTPUT_LIMIT)
        return d.addCallback(
            lambda result: SieveResult.parse(_child_outcome(result), result.output)
        )

    def run_command(
        self,
        user: UnixUser,
        command: str,
        stdin: bytes,
        message: IMessageContent,
        env: Mapping[str, str],
        time_limit: float,
        cwd: str,
        grounds: Grounds | None = None,
    ) -> Deferred[CommandResult]:
        uid, gid = self._identity(user)
        return run_command(
            self._reactor,
            self._clock,
            command,
            stdin,
            env,
            time_limit,
            path=cwd,
            content=message,
            uid=uid,
            gid=gid,
        )

    def read_forward(
        self, user: UnixUser, paths: Sequence[str], grounds: Grounds
    ) -> Deferred[ForwardFile]:
        from twisted.internet.threads import deferToThread

        from pymta.delivery.local_forward import read_forward

        # As the running user (root reads with the owner checks; another
        # user reads what it can): a thread, the disk may block.
        return deferToThread(read_forward, list(paths), user)

    def run_program(
        self,
        user: UnixUser,
        argv: Sequence[str],
        stdin: bytes,
        message: IMessageContent,
        env: Mapping[str, str],
        time_limit: float,
        cwd: str,
        grounds: Grounds | None = None,
    ) -> Deferred[CommandResult]:
        uid, gid = self._identity(user)
        executable = _which(argv[0], env.get("PATH", "/usr/bin:/bin"))
        return run_program(
            self._reactor,
            self._clock,
            executable,
            list(argv),
            stdin,
            env,
            time_limit,
            cwd,
            message,
            uid,
            gid,
        )


def sieve_request(
    user: UnixUser,
    path: str,
    sender: str,
    now: float,
    locks: Sequence[str],
    size_limit: int,
    sieve: Mapping[str, Any],
    recipient: str,
) -> dict[str, object]:
    """The child's ``sieve`` request (:func:`pymta.privsep.child.sieve`);
    without ``sieve`` settings (Sieve off), and for root (whose script
    would run as root, on untrusted mail), no home: the plain write."""
    return {
        "action": "sieve",
        "path": path,
        "home": user.home if sieve and user.uid != 0 else "",
        "user": user.name,
        "sender": sender,
        "recipient": recipient,
        "time": now,
        "locks": list(locks),
        "size_limit": size_limit,
        "sieve": dict(sieve),
        "root": PACKAGE_ROOT,
    }


def _which(name: str, path: str) -> str:
    """argv[0] as an executable path (pipe(8) searches PATH for a bare name)."""
    if "/" in name:
        return name
    for directory in path.split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.access(candidate, os.X_OK):
            return candidate
    return name


def _spool_group(directory: str) -> list[int]:
    """The group of a group-writable spool directory (Debian: ``mail``)."""
    try:
        info = os.stat(directory)
    except OSError:
        return []
    if info.st_mode & stat.S_IWGRP and not info.st_mode & stat.S_IWOTH:
        try:
            grp.getgrgid(info.st_gid)
        except KeyError:
            return []
        return [info.st_gid]
    return []


def _child_outcome(result: CommandResult) -> Outcome:
    text = result.output.decode("utf-8", "replace").strip()
    first = text.splitlines()[0] if text else ""
    status, _, reason = first.partition(" ")
    if result.exit_code == 0 and status[:1] in ("2", "4", "5") and status.count(".") == 2:
        return status, reason
    if result.timed_out:
        return "4.3.0", "delivery process time limit exceeded"
    detail = " ".join(text.split())[-300:]
    return "4.3.0", f"delivery process failed (exit {result.exit_code}): {detail}"
