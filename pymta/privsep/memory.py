"""memory: an IUserDelivery that stays in this process, for tests.

It records each request (who, what, where) and performs it as the running
user: mailboxes through the same functions the child runs
(:mod:`pymta.privsep.child`), synchronously, and commands through
:func:`pymta.delivery.command.run_command` without an identity change. It
blocks on the disk, so it serves tests and never a running server.
``can_become`` answers from the uids it is given (default: every user).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from zope.interface import implementer

from pymta.delivery.command import CommandResult, run_command
from pymta.delivery.local_forward import ForwardFile
from pymta.privsep import child
from pymta.privsep.interface import Grounds, IUserDelivery, Outcome, SieveResult, UnixUser
from pymta.privsep.spawn import sieve_request
from pymta.queue.reference import IMessageContent, read_all


@dataclass(frozen=True)
class Call:
    """One request: the kind (mbox, maildir, command), the user and the target."""

    kind: str
    user: str
    target: str


@implementer(IUserDelivery)
class RecordingUserDelivery:
    """Records requests and carries them out as the running user (see module doc)."""

    def __init__(
        self,
        reactor: IReactorProcess | None = None,
        clock: IReactorTime | None = None,
        allowed_uids: Iterable[int] | None = None,
    ) -> None:
        self.calls: list[Call] = []
        #: The grounds each request carried (what the root helper would check).
        self.grounds: list[Grounds | None] = []
        self.environments: list[dict[str, str]] = []
        #: What run_program's programs would have read (it runs nothing).
        self.stdins: list[bytes] = []
        self.exit_code = 0
        self._reactor = reactor
        self._clock = clock
        self._allowed = None if allowed_uids is None else set(allowed_uids)
        self.privileged = self._allowed is None

    def can_become(self, user: UnixUser) -> bool:
        return self._allowed is None or user.uid in self._allowed

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
        self.calls.append(Call("mbox", user.name, path))
        self.grounds.append(grounds)
        request = {"path": path, "sender": sender, "time": now, "locks": list(locks)}
        request["size_limit"] = size_limit
        return self._perform(child.append_mbox, request, headers, message)

    def deliver_maildir(
        self,
        user: UnixUser,
        path: str,
        headers: bytes,
        message: IMessageContent,
        grounds: Grounds | None = None,
    ) -> Deferred[Outcome]:
        self.calls.append(Call("maildir", user.name, path))
        self.grounds.append(grounds)
        return self._perform(child.deliver_maildir, {"path": path}, headers, message)

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
        # Recorded as the mailbox write it is; the child's own sieve action,
        # in this process, as the running user.
        self.calls.append(Call("maildir" if path.endswith("/") else "mbox", user.name, path))
        self.grounds.append(grounds)
        request = sieve_request(
            user, path, sender, now, locks, size_limit, sieve, grounds.recipient
        )
        source = io.BytesIO(headers + read_all(message))
        try:
            output = child.sieve(request, source, child.load_sieve(request))
        except child.Outcome as e:
            return succeed(SieveResult(e.status, e.text))
        except OSError as e:
            return fail(e)
        status, _, text = output.partition("\n")[0].partition(" ")
        return succeed(SieveResult.parse((status, text), output.encode()))

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
        self.calls.append(Call("command", user.name, command))
        self.grounds.append(grounds)
        self.environments.append(dict(env))
        if self._reactor is None or self._clock is None:
            return succeed(CommandResult(0, None, b""))
        return run_command(
            self._reactor, self._clock, command, stdin, env, time_limit, "/", content=message
        )

    def read_forward(
        self, user: UnixUser, paths: Sequence[str], grounds: Grounds
    ) -> Deferred[ForwardFile]:
        from pymta.delivery.local_forward import read_forward

        self.grounds.append(grounds)
        return succeed(read_forward(list(paths), user))

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
        self.calls.append(Call("program", user.name, " ".join(argv)))
        self.grounds.append(grounds)
        self.environments.append(dict(env))
        self.stdins.append(stdin + read_all(message))
        return succeed(CommandResult(self.exit_code, None, b""))

    def _perform(
        self, action: object, request: dict[str, object], headers: bytes, message: IMessageContent
    ) -> Deferred[Outcome]:
        source = io.BytesIO(headers + read_all(message))
        try:
            outcome = action(request, source)  # type: ignore[operator]
        except child.Outcome as e:
            return succeed((e.status, e.text))
        except OSError as e:
            return fail(e)
        return succeed((outcome.status, outcome.text))
