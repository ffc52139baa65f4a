"""command: run a delivery command with the message on stdin; map its exit status.

Mirrors Postfix's pipe_command() and sys_exits.c, as local(8) uses them for
``|command`` aliases: the command runs as ``/bin/sh -c command`` through
reactor.spawnProcess (never blocking the reactor), with the message on its
standard input — fed from the queue file one block at a time, as the pipe
drains (a pull producer) — and a local(8)-style environment; stdout and stderr are
collected (up to a limit) as the diagnostic. Exit 0 is success; the
sysexits(3) codes map to Postfix's enhanced status codes (EX_TEMPFAIL and
EX_OSERR defer, the others bounce); any other code bounces; a command killed
by a signal or by the time limit defers.

Untrusted input: the message and the envelope addresses, passed only as
stdin and environment values, never through the shell's command line.
Writes: nothing itself (the command may). Logs: nothing (statuses are values).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IPullProducer, IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from pymta.queue.reference import BLOCK_SIZE, ContentReader, IMessageContent

# sysexits.h -> (enhanced status, text), as Postfix's sys_exits.c.
SYSEXITS: dict[int, tuple[str, str]] = {
    64: ("5.3.0", "command line usage error"),
    65: ("5.6.0", "data format error"),
    66: ("5.3.0", "cannot open input"),
    67: ("5.1.1", "user unknown"),
    68: ("5.1.2", "host name unknown"),
    69: ("5.3.0", "service unavailable"),
    70: ("5.3.0", "internal software error"),
    71: ("4.3.0", "system resource problem"),
    72: ("5.3.0", "critical OS file missing"),
    73: ("5.2.0", "can't create user output file"),
    74: ("5.3.0", "input/output error"),
    75: ("4.3.0", "temporary failure"),
    76: ("5.5.0", "remote error in protocol"),
    77: ("5.7.0", "permission denied"),
    78: ("5.3.5", "local configuration error"),
}

OUTPUT_LIMIT = 2048


@dataclass(frozen=True)
class CommandResult:
    """How a command ended: exit code (None when killed), signal, its output,
    and whether the time limit killed it."""

    exit_code: int | None
    signal: int | None
    output: bytes
    timed_out: bool = False


def command_status(command: str, result: CommandResult) -> tuple[str, str]:
    """(enhanced status, reason) for a finished command, as Postfix words it."""
    output = " ".join(result.output.decode("utf-8", "replace").split())
    suffix = f". Command output: {output}" if output else ""
    if result.timed_out:
        return "4.3.0", f'Command time limit exceeded: "{command}"{suffix}'
    if result.exit_code is None:
        return "4.3.0", f'Command killed by signal {result.signal}: "{command}"{suffix}'
    if result.exit_code == 0:
        return "2.0.0", f"delivered to command: {command}"
    mapped = SYSEXITS.get(result.exit_code)
    if mapped is not None:
        status, text = mapped
        return status, f"{text}{suffix}"
    return "5.3.0", f'Command died with status {result.exit_code}: "{command}"{suffix}'


@implementer(IPullProducer)
class _StdinFeeder:
    """Writes a queued message to a command's stdin block by block, then
    closes stdin. A command that exits without reading it all ends the
    feed (stopProducing)."""

    def __init__(self, transport: Any, content: IMessageContent) -> None:
        self._transport = transport
        self._reader: ContentReader | None = content.open()

    def resumeProducing(self) -> None:
        if self._reader is None:
            return
        try:
            block = self._reader.read(BLOCK_SIZE)
        except OSError:
            block = b""  # the command sees a short message; the status says the rest
        if block:
            self._transport.write(block)
            return
        self._end()
        self._transport.unregisterProducer()
        self._transport.closeStdin()

    def stopProducing(self) -> None:
        self._end()

    def _end(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class _CommandProtocol(ProcessProtocol):
    def __init__(
        self,
        stdin: bytes,
        done: Deferred[CommandResult],
        content: IMessageContent | None = None,
        output_limit: int = OUTPUT_LIMIT,
    ) -> None:
        self._limit = output_limit
        self._stdin = stdin
        self._content = content
        self._feeder: _StdinFeeder | None = None
        self._done = done
        self._output: list[bytes] = []
        self._size = 0
        self.timed_out = False
        self.timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._stdin)
        if self._content is None:
            self.transport.closeStdin()
            return
        try:
            self._feeder = _StdinFeeder(self.transport, self._content)
        except OSError:
            self.transport.closeStdin()
            return
        # Process transports are consumers of stdin (twisted.internet.process).
        transport: Any = self.transport
        transport.registerProducer(self._feeder, False)

    def _collect(self, data: bytes) -> None:
        if self._size < self._limit:
            chunk = data[: self._limit - self._size]
            self._output.append(chunk)
            self._size += len(chunk)

    def outReceived(self, data: bytes) -> None:
        self._collect(data)

    def errReceived(self, data: bytes) -> None:
        self._collect(data)

    def processEnded(self, reason: Failure) -> None:
        if self._feeder is not None:
            self._feeder.stopProducing()
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        exit_code: int | None = None
        signal: int | None = None
        if isinstance(reason.value, ProcessDone):
            exit_code = 0
        elif isinstance(reason.value, ProcessTerminated):
            exit_code = reason.value.exitCode
            signal = reason.value.signal
        output = b"".join(self._output)
        self._done.callback(CommandResult(exit_code, signal, output, self.timed_out))


def run_command(
    reactor: IReactorProcess,
    clock: IReactorTime,
    command: str,
    stdin: bytes,
    env: Mapping[str, str],
    time_limit: float = 1000.0,
    path: str = "/",
    content: IMessageContent | None = None,
    uid: int | None = None,
    gid: int | None = None,
) -> Deferred[CommandResult]:
    """Run ``/bin/sh -c command`` with ``stdin`` and then ``content`` (read
    from the queue file in blocks) on its standard input; fires with its
    CommandResult (never errbacks for a failing command; OSError from
    spawnProcess is raised). ``uid``/``gid``: the identity the child takes
    (Twisted's spawnProcess: setgid, initgroups, setuid) before exec."""
    return run_program(
        reactor,
        clock,
        "/bin/sh",
        ["sh", "-c", command],
        stdin,
        env,
        time_limit,
        path,
        content,
        uid,
        gid,
    )


def run_program(
    reactor: IReactorProcess,
    clock: IReactorTime,
    executable: str,
    args: list[str],
    stdin: bytes,
    env: Mapping[str, str],
    time_limit: float = 1000.0,
    path: str = "/",
    content: IMessageContent | None = None,
    uid: int | None = None,
    gid: int | None = None,
    output_limit: int = OUTPUT_LIMIT,
) -> Deferred[CommandResult]:
    """run_command for any program and argument vector (no shell); the
    first ``output_limit`` bytes of its output are kept."""
    done: Deferred[CommandResult] = Deferred()
    protocol = _CommandProtocol(stdin, done, content, output_limit)
    process = reactor.spawnProcess(
        protocol, executable, args, env=dict(env), path=path, uid=uid, gid=gid
    )

    def kill() -> None:
        protocol.timed_out = True
        try:
            process.signalProcess("KILL")
        except ProcessExitedAlready:
            pass

    protocol.timer = clock.callLater(time_limit, kill)
    return done
