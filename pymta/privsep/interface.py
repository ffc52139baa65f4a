"""interface: the "become the user" seam of local delivery.

Mirrors the privileged half of Postfix's local(8) (set_eugid() around
mail_copy() and pipe_command()). Everything that writes or runs something
as a Unix user goes through :class:`IUserDelivery`; the local agent itself
never changes its identity. Today's implementation
(:class:`pymta.privsep.spawn.SpawningUserDelivery`) spawns a child per
delivery; a privileged helper process that receives the same requests from
unprivileged agents fits the same interface.

Each request also carries its :class:`Grounds`: the root helper
(:mod:`pymta.privsep.helper`) takes from the asker only what it cannot know
(the recipient, why, the message) and works out the user, the path, the
identity and the permission itself; the in-process implementations ignore
them (they hold no more privilege than the agent).

Statuses are values: ``(enhanced status, text)`` as the local agent
reports them; commands answer with their :class:`CommandResult`.
"""

from __future__ import annotations

import json
import pwd
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from pymta.delivery.command import CommandResult
from pymta.queue.reference import IMessageContent

Outcome = tuple[str, str]


@dataclass(frozen=True)
class ForwardFile:
    """What forward_path found: the file's path and text, or warnings
    (:mod:`pymta.delivery.local_forward` reads it, here because requests
    carry it)."""

    path: str | None
    text: str
    warnings: tuple[str, ...] = ()


#: Why a delivery runs as a user (:class:`Grounds`): the recipient's
#: mailbox, a /file or |command of the recipient's .forward or alias entry,
#: main.cf's mailbox_command, or a master.cf pipe service.
GROUNDS = ("mailbox", "forward", "alias", "mailbox_command", "pipe")


@dataclass(frozen=True)
class Grounds:
    """Why a delivery runs as a user, in terms the root helper checks for
    itself: it derives the user, the mailbox path and whether a file or
    command is really in the .forward or alias entry from the recipient (or
    the pipe service's master.cf line), never from the asker's word."""

    reason: str
    #: The address being delivered (local(8)), its local part names the
    #: user or the alias; empty for pipe.
    recipient: str = ""
    #: The master.cf service name (pipe).
    service: str = ""


@dataclass(frozen=True)
class UnixUser:
    """Who a delivery runs as: a passwd entry."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str

    @classmethod
    def from_pwd(cls, entry: pwd.struct_passwd) -> UnixUser:
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell)


@dataclass(frozen=True)
class SieveResult:
    """A mailbox delivery through the user's Sieve script
    (:meth:`IUserDelivery.deliver_sieve`): the status of the copies the
    child wrote as the user, and what is left for the agent to do as
    ``mail_owner``: redirects and vacation replies to submit through
    cleanup, warnings to log (:mod:`pymta.sieve.local`)."""

    status: str
    text: str
    redirects: tuple[str, ...] = ()
    #: Each ``{"to": address, "reason": text, "params": {...}}``.
    vacations: tuple[dict[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()

    @classmethod
    def parse(cls, outcome: Outcome, output: bytes) -> SieveResult:
        """From the child's status and output (its second line is JSON; a
        child that wrote none, or bad JSON, has nothing more to do)."""
        lines = output.decode("utf-8", "replace").splitlines()
        details: Any = {}
        if len(lines) > 1:
            try:
                details = json.loads(lines[1])
            except ValueError:
                details = {}
        if not isinstance(details, dict):
            details = {}

        def strings(key: str) -> tuple[str, ...]:
            value = details.get(key)
            return tuple(str(v) for v in value) if isinstance(value, list) else ()

        vacations = details.get("vacations")
        return cls(
            outcome[0],
            outcome[1],
            strings("redirects"),
            tuple(v for v in vacations if isinstance(v, dict))
            if isinstance(vacations, list)
            else (),
            strings("warnings"),
        )


def find_user(name: str) -> UnixUser | None:
    """The passwd entry of name (None when there is none)."""
    try:
        return UnixUser.from_pwd(pwd.getpwnam(name))
    except (KeyError, UnicodeEncodeError, ValueError):
        return None


def find_uid(uid: int) -> UnixUser | None:
    """The passwd entry of uid (None when there is none)."""
    try:
        return UnixUser.from_pwd(pwd.getpwuid(uid))
    except KeyError:
        return None


class IUserDelivery(Interface):
    """Write mailboxes and run commands as a Unix user."""

    privileged = Attribute("True when any user can be become (root, or the root helper).")

    def can_become(user: UnixUser) -> bool:
        """True when deliveries as ``user`` are possible (root can become
        anyone; another user only itself)."""

    def append_mbox(
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
        """Append one mbox record to ``path`` as ``user`` (durable when it
        fires). ``grounds`` say why (the root helper needs them; it refuses a
        request without them)."""

    def deliver_maildir(
        user: UnixUser,
        path: str,
        headers: bytes,
        message: IMessageContent,
        grounds: Grounds | None = None,
    ) -> Deferred[Outcome]:
        """Deliver into the Maildir ``path`` (ending in ``/``) as ``user``."""

    def deliver_sieve(
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
        """A mailbox delivery (``path``: the Maildir ending in ``/`` or the
        mbox) through the user's active Sieve script, run as the user
        (:mod:`pymta.sieve.local`); the plain write when there is none.
        ``sieve`` holds the script limits (the root helper takes its own
        from main.cf, as it works out the path)."""

    def run_command(
        user: UnixUser,
        command: str,
        stdin: bytes,
        message: IMessageContent,
        env: Mapping[str, str],
        time_limit: float,
        cwd: str,
        grounds: Grounds | None = None,
    ) -> Deferred[CommandResult]:
        """Run ``/bin/sh -c command`` as ``user`` with ``stdin`` then the message."""

    def read_forward(
        user: UnixUser, paths: Sequence[str], grounds: Grounds
    ) -> Deferred[ForwardFile]:
        """The first of ``paths`` (the recipient's forward_path) that exists
        and passes Postfix's checks, read as the user where this can become
        them (the root helper works the paths out itself from ``grounds``)."""

    def run_program(
        user: UnixUser,
        argv: Sequence[str],
        stdin: bytes,
        message: IMessageContent,
        env: Mapping[str, str],
        time_limit: float,
        cwd: str,
        grounds: Grounds | None = None,
    ) -> Deferred[CommandResult]:
        """Execute ``argv`` (no shell; ``argv[0]`` is searched in PATH) as
        ``user`` with ``stdin`` then the message on its standard input."""


class IHelperConnections(Interface):
    """A user-delivery service that can hand each worker process of
    :mod:`pymta.master.workers` a connection of its own (the root helper)."""

    def connection() -> socket.socket:
        """A new connection for a worker to inherit."""
