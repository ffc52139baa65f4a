"""client: IUserDelivery through the root helper (:mod:`pymta.privsep.helper`).

When twistd is started as root with ``-u`` (the documented deployment),
:func:`start_helper` forks the helper while still root, before the switch,
with one end of a ``SOCK_SEQPACKET`` socketpair; the server keeps the other
end and :class:`HelperUserDelivery` sends it one packet per delivery: a
JSON request (the recipient and why, with :class:`Grounds`, never a uid
or a mailbox path: the helper works those out, :mod:`pymta.privsep.verify`)
and the queue file's descriptor (opened read-only here, so
the helper reads only what pymta itself could read). A message that is not
a queue file (a pipe(8) transformation, tests' in-memory content) is first
copied into an anonymous file in a thread. Replies come back as packets,
matched by request id, read when the socket is readable: the reactor never
waits on a delivery.

The helper can become any user, so :attr:`privileged` is true: the local
agent then delivers to every Unix user although this process runs as the
unprivileged ``-u`` user. Untrusted input: the helper's replies (JSON of a
process we started). Writes nothing. Logs a helper that went away.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pymta.delivery.command import CommandResult
from pymta.delivery.local_forward import ForwardFile
from pymta.privsep.interface import (
    Grounds,
    IHelperConnections,
    IUserDelivery,
    Outcome,
    SieveResult,
    UnixUser,
)
from pymta.privsep.spawn import _child_outcome
from pymta.queue.reference import BLOCK_SIZE, IMessageContent, QueueFileContent

_log = Logger(namespace="pymta.privsep")
PACKET_LIMIT = 1 << 20


def start_helper(
    config_dir: str, log_file: str | None = None, python: str | None = None
) -> HelperUserDelivery:
    """Fork the root helper (call while root, before twistd's switch). It
    works out every target from the configuration in ``config_dir`` and
    logs the requests it refuses to ``log_file`` (None: its standard error,
    the caller's)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [
            python or sys.executable,
            "-m",
            "pymta.privsep.helper",
            str(theirs.fileno()),
            os.path.abspath(config_dir),
            *([os.path.abspath(log_file)] if log_file else []),
        ],
        pass_fds=[theirs.fileno()],
        # Nothing inherited but its socket: a held stdout would keep
        # `pymta start` (and whoever reads twistd's output) waiting for EOF.
        # Its refusals go to log_file, else to our standard error (twistd -n).
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if log_file else None,
        env=env,
        cwd="/",
        start_new_session=True,
    )
    theirs.close()
    return HelperUserDelivery(ours, process.pid)


@implementer(IReadDescriptor)
class _Replies:
    """Reads the helper's reply packets and fires the waiting Deferreds."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.waiting: dict[int, Deferred[dict[str, Any]]] = {}

    def fileno(self) -> int:
        return self._sock.fileno()

    def logPrefix(self) -> str:
        return "pymta-helper"

    def doRead(self) -> None:
        while True:
            try:
                data = self._sock.recv(PACKET_LIMIT, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as e:
                self._lost(str(e))
                return
            if not data:
                self._lost("the helper closed its socket")
                return
            try:
                reply = json.loads(data)
            except ValueError:
                continue
            waiter = self.waiting.pop(reply.get("id"), None)
            if waiter is not None:
                waiter.callback(reply)

    def connectionLost(self, reason: Failure) -> None:
        self._lost(reason.getErrorMessage())

    def _lost(self, why: str) -> None:
        from twisted.internet import reactor

        reactor.removeReader(self)
        if self.waiting:
            _log.error("local delivery helper went away: {why}", why=why)
        waiting, self.waiting = self.waiting, {}
        for waiter in waiting.values():
            waiter.callback({"exit_code": None, "signal": None, "output": f"helper gone: {why}"})


@implementer(IUserDelivery, IHelperConnections)
class HelperUserDelivery:
    """Deliveries as any user through the root helper (see module doc)."""

    privileged = True

    def __init__(self, sock: socket.socket, pid: int | None = None) -> None:
        self.pid = pid
        self._sock = sock
        self._ids = itertools.count(1)
        self._replies = _Replies(sock)
        self._reading = False

    def can_become(self, user: UnixUser) -> bool:
        return True

    def connection(self) -> socket.socket:
        """A new connection to the helper, for a worker process of
        :mod:`pymta.master.workers`: one end of a fresh socketpair goes to
        the helper over this one (it serves it as it serves this), the
        other is returned for the worker to inherit. The helper's
        connections end with the worker's end; all of them with this one."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            socket.send_fds(
                self._sock, [json.dumps({"kind": "connect"}).encode()], [theirs.fileno()]
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        return ours

    @classmethod
    def inherited(cls, fd: int) -> HelperUserDelivery:
        """The helper connection a worker inherited at descriptor fd."""
        return cls(socket.socket(fileno=fd))

    def close(self) -> None:
        """Close our end: the helper sees end-of-file and exits."""
        if self._reading:
            from twisted.internet import reactor

            reactor.removeReader(self._replies)
            self._reading = False
        self._sock.close()

    def _ask(
        self, request: dict[str, Any], prefix: bytes, message: IMessageContent
    ) -> Deferred[dict[str, Any]]:
        request["id"] = next(self._ids)
        request["prefix"] = prefix.decode("latin-1")
        d = _content_fd(message)

        def send(where: tuple[int, int, int]) -> Deferred[dict[str, Any]]:
            fd, offset, size = where
            request.update(offset=offset, size=size)
            try:
                return self._send(request, [fd])
            finally:
                os.close(fd)

        def unreadable(failure: Failure) -> dict[str, Any]:
            failure.trap(OSError)
            return {"exit_code": None, "signal": None, "output": failure.getErrorMessage()}

        return d.addCallbacks(send, unreadable)

    def _send(self, request: dict[str, Any], fds: list[int]) -> Deferred[dict[str, Any]]:
        """One request packet; its reply when it comes."""
        waiter: Deferred[dict[str, Any]] = Deferred()
        self._replies.waiting[request["id"]] = waiter
        if not self._reading:
            from twisted.internet import reactor

            reactor.addReader(self._replies)
            self._reading = True
        try:
            socket.send_fds(self._sock, [json.dumps(request).encode()], fds)
        except OSError as e:
            self._replies.waiting.pop(request["id"], None)
            waiter.callback(
                {"exit_code": None, "signal": None, "output": f"helper unavailable: {e}"}
            )
        return waiter

    def read_forward(
        self, user: UnixUser, paths: Sequence[str], grounds: Grounds
    ) -> Deferred[ForwardFile]:
        """The recipient's .forward, read by the helper as the user (homes
        are often 0700: mail_owner could not read it). The helper works the
        paths out itself; ``paths`` are only this process's view."""
        request = {"id": next(self._ids), "kind": "forward", "grounds": _grounds(grounds)}

        def got(reply: dict[str, Any]) -> ForwardFile:
            self._check(reply)
            if "text" not in reply:
                raise OSError(0, str(reply.get("output", "no answer")))
            path = reply.get("path")
            warnings = tuple(str(w) for w in reply.get("warnings", []))
            return ForwardFile(str(path) if path else None, str(reply["text"]), warnings)

        return self._send(request, []).addCallback(got)

    def _check(self, reply: dict[str, Any]) -> dict[str, Any]:
        if reply.get("refused"):
            _log.warn("local delivery helper refused: {why}", why=reply.get("output", ""))
        return reply

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
        # Only the path of a /file target, the sender and the time go: the
        # helper works out the user, a mailbox's path, its locks and limit.
        request = {"sender": sender, "time": now}
        return self._write(request, path, headers, message, grounds)

    def deliver_maildir(
        self,
        user: UnixUser,
        path: str,
        headers: bytes,
        message: IMessageContent,
        grounds: Grounds | None = None,
    ) -> Deferred[Outcome]:
        return self._write({}, path, headers, message, grounds)

    def _write(
        self,
        request: dict[str, Any],
        path: str,
        headers: bytes,
        message: IMessageContent,
        grounds: Grounds | None,
    ) -> Deferred[Outcome]:
        if grounds is not None and grounds.reason == "mailbox":
            request["kind"] = "mailbox"
        else:
            request.update(kind="file", path=path)
        request["grounds"] = _grounds(grounds)
        d = self._ask(request, headers, message).addCallback(self._check)
        return d.addCallback(_as_result).addCallback(_child_outcome)

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
        # The helper works out the user, the mailbox and the Sieve limits
        # itself (its main.cf); only the envelope and the grounds go.
        request = {"kind": "sieve", "sender": sender, "time": now, "grounds": _grounds(grounds)}
        d = self._ask(request, headers, message).addCallback(self._check)

        def parsed(reply: dict[str, Any]) -> SieveResult:
            result = _as_result(reply)
            return SieveResult.parse(_child_outcome(result), result.output)

        return d.addCallback(parsed)

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
        request: dict[str, Any] = {
            "kind": "command",
            "command": command,
            "env": dict(env),
            "time_limit": time_limit,
            "grounds": _grounds(grounds),
        }
        return self._ask(request, stdin, message).addCallback(self._check).addCallback(_as_result)

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
        request: dict[str, Any] = {
            "kind": "program",
            "argv": list(argv),
            "time_limit": time_limit,
            "grounds": _grounds(grounds),
        }
        return self._ask(request, stdin, message).addCallback(self._check).addCallback(_as_result)


def _grounds(grounds: Grounds | None) -> dict[str, str] | None:
    if grounds is None:
        return None
    return {"reason": grounds.reason, "recipient": grounds.recipient, "service": grounds.service}


def _as_result(reply: dict[str, Any]) -> CommandResult:
    return CommandResult(
        reply.get("exit_code"),
        reply.get("signal"),
        str(reply.get("output", "")).encode("latin-1", "replace"),
        bool(reply.get("timed_out", False)),
    )


def _content_fd(message: IMessageContent) -> Deferred[tuple[int, int, int]]:
    """(descriptor, offset, size) of the content: the queue file itself, or
    an anonymous copy (made in a thread) for anything else."""
    if isinstance(message, QueueFileContent):
        try:
            return succeed((os.open(message.path, os.O_RDONLY), message.offset, message.size))
        except OSError:
            pass  # the copy below reports the error the same way
    from twisted.internet.threads import deferToThread

    def copy() -> tuple[int, int, int]:
        fd = os.memfd_create("pymta-message")
        size = 0
        reader = message.open()
        try:
            while True:
                block = reader.read(BLOCK_SIZE)
                if not block:
                    break
                os.write(fd, block)
                size += len(block)
        finally:
            reader.close()
        return fd, 0, size

    return deferToThread(copy)
