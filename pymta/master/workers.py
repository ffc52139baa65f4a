"""workers: the master's pool of reactor processes sharing its listening sockets.

Mirrors the part of Postfix's master(8) that forks daemons onto the
listening sockets it opened, and restarts one that dies. With
``pymta_processes = N`` (N > 1; 0 means one per CPU) the twistd process is
the master: it binds every master.cf listener (privilegedStartService, as
with one process), recovers the queue, then :class:`WorkerPool` spawns N-1
workers (``python -m pymta.master.worker``) with ``reactor.spawnProcess``,
handing them the listening sockets as inherited file descriptors 3, 4, ...
(:func:`worker_command`). Each worker builds the same parts from the same
configuration directory and adopts the sockets; the kernel spreads new
connections over every process accepting on them.

Workers are spawned from startService, so they run with the uid/gid twistd
dropped to; when the master has the root helper of :mod:`pymta.privsep`
(started as root with ``-u``), each worker gets a connection of its own to
it (``--helper FD``), so that mail a worker accepts for local users is
delivered by that worker as the master's would be. Their stdin is a pipe
from the master: when the master dies, even by SIGKILL, they see
end-of-file and exit. stopService sends SIGTERM
and waits (SIGKILL after 30 seconds). A worker that
exits while the pool runs is logged as Postfix's master logs a daemon's
death (``warning: process pymta/worker pid 4242 exit status 1``, ``...
killed by signal 9``) and restarted after a second, or after
``service_throttle_time`` when it died before it reported ready (a line
``ready`` on its stdout; Postfix's ``bad command startup -- throttling``
for a daemon that never became available); ``on_exit`` then lets the master's queue
manager take the messages the dead worker left in incoming/ and active/.

Untrusted input: none (the command line is built here; worker output is
only relayed to the log). May write: nothing. Logs: the master's warnings
through :func:`pymta.maillog.maillog`; worker stdout/stderr lines to the
twistd log, prefixed ``worker[pid]``.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from pymta.config import Config
from pymta.maillog import maillog

log = Logger(namespace="pymta.master")

#: How the master names a worker in its log lines (Postfix names the program).
PROGRAM = "pymta/worker"

#: What a worker writes on its stdout once it accepts on the sockets.
READY = b"ready"

#: The first descriptor a worker finds its listening sockets at.
FIRST_LISTEN_FD = 3

#: Seconds before a dead worker is restarted.
RESTART_DELAY = 1.0

#: Longest wait for workers to exit after SIGTERM before SIGKILL.
STOP_TIMEOUT = 30.0


def process_count(config: Config, cpu_count: Callable[[], int | None] = os.cpu_count) -> int:
    """The number of reactor processes ``pymta_processes`` asks for (0: one per CPU)."""
    wanted = config.get_int("pymta_processes")
    if wanted <= 0:
        return max(1, cpu_count() or 1)
    return wanted


@dataclass(frozen=True)
class WorkerCommand:
    """The argv of a worker and the descriptors it inherits (child fd -> parent fd
    or "r"/"w" for pipes), as ``spawnProcess(childFDs=...)`` takes them."""

    argv: list[str]
    child_fds: dict[int, int | str] = field(default_factory=dict)


def worker_command(
    executable: str,
    config_directory: str,
    sockets: Iterable[tuple[str, int]],
    slot: int,
    control: int | None = None,
    helper: int | None = None,
) -> WorkerCommand:
    """Build the command of worker ``slot`` for the master's listening sockets.

    ``sockets`` are (listener key, the master's descriptor); the worker gets
    them at FIRST_LISTEN_FD, FIRST_LISTEN_FD + 1, ... and learns which is
    which from ``--listen KEY=FD``. stdin is a pipe (the master's death is
    its end-of-file), stdout and stderr are pipes relayed to the log.
    ``control`` is the worker's end of its control socket (a Unix socket
    pair: reload requests with the sockets of new listeners), passed after
    the listening sockets and named by ``--control FD``. ``helper`` is the
    worker's connection to the root helper of :mod:`pymta.privsep`
    (``--helper FD``), so that it delivers to local users as the master does.
    """
    argv = [
        executable,
        "-m",
        "pymta.master.worker",
        "--config",
        os.path.abspath(config_directory),
        "--slot",
        str(slot),
    ]
    child_fds: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
    for number, (key, parent_fd) in enumerate(sockets, start=FIRST_LISTEN_FD):
        if "=" in key:
            raise ValueError(f"listener name {key!r} contains '='")
        argv += ["--listen", f"{key}={number}"]
        child_fds[number] = parent_fd
    if control is not None:
        number = max(max(child_fds) + 1, FIRST_LISTEN_FD)
        argv += ["--control", str(number)]
        child_fds[number] = control
    if helper is not None:
        number = max(max(child_fds) + 1, FIRST_LISTEN_FD)
        argv += ["--helper", str(number)]
        child_fds[number] = helper
    return WorkerCommand(argv, child_fds)


def parse_listen(values: Sequence[str]) -> dict[str, int]:
    """``["KEY=FD", ...]`` of a worker's command line -> {key: fd}."""
    result: dict[str, int] = {}
    for value in values:
        key, sep, fd = value.rpartition("=")
        if not sep or not key or not fd.isdigit():
            raise ValueError(f"bad --listen {value!r}: expected NAME=FD")
        result[key] = int(fd)
    return result


def describe_exit(reason: Failure) -> str | None:
    """Postfix's wording of a child's death, or None for a clean exit (status 0)."""
    value = reason.value
    signal_number = getattr(value, "signal", None)
    if signal_number is not None:
        return f"killed by signal {signal_number}"
    code = getattr(value, "exitCode", None)
    if code:
        return f"exit status {code}"
    return None


class _WorkerProtocol(ProcessProtocol):
    def __init__(self, pool: WorkerPool, slot: int) -> None:
        self._pool = pool
        self.slot = slot
        self.pid: int | None = None
        self.ready = False
        self.ended: Deferred[None] = Deferred()
        self._partial: dict[int, bytes] = {}
        #: The master's end of the worker's control socket.
        self.control: socket.socket | None = None
        #: The listener keys whose sockets the worker holds.
        self.keys: set[str] = set()

    def connectionMade(self) -> None:
        transport: Any = self.transport
        self.pid = transport.pid

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        lines = (self._partial.pop(childFD, b"") + data).split(b"\n")
        if lines[-1]:
            self._partial[childFD] = lines[-1]
        for line in lines[:-1]:
            if childFD == 1 and line.strip() == READY:
                self.ready = True
                continue
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                log.info("worker[{pid}]: {line}", pid=self.pid, line=text)

    def processEnded(self, reason: Failure) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None
        self._pool._ended(self, reason)
        self.ended.callback(None)


class WorkerPool(service.Service):
    """Runs ``count`` worker processes on the master's listening sockets."""

    name = "workers"

    def __init__(
        self,
        config_directory: str,
        sockets: Callable[[], Mapping[str, int]],
        count: int,
        reactor: Any,
        *,
        on_exit: Callable[[], object] | None = None,
        throttle_time: float = 60.0,
        executable: str = sys.executable,
        environment: Mapping[str, str] | None = None,
        helper: Callable[[], socket.socket] | None = None,
    ) -> None:
        self._config_directory = config_directory
        self._sockets = sockets
        self._count = count
        self._reactor = reactor
        self._on_exit = on_exit
        self._throttle_time = throttle_time
        self._executable = executable
        self._environment = environment
        #: A new connection to the root helper for each worker (None: no helper).
        self._helper = helper
        self._workers: dict[int, _WorkerProtocol] = {}
        self._restarts: dict[int, IDelayedCall] = {}

    def startService(self) -> None:
        super().startService()
        for slot in range(1, self._count + 1):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        self._restarts.pop(slot, None)
        if not self.running:
            return
        sockets = sorted(self._sockets().items())
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        helper: socket.socket | None = None
        if self._helper is not None:
            try:
                helper = self._helper()
            except OSError as e:  # the worker still starts; its local mail defers
                log.error(
                    "worker {slot}: no connection to the local delivery helper: {e}", slot=slot, e=e
                )
        command = worker_command(
            self._executable,
            self._config_directory,
            sockets,
            slot,
            theirs.fileno(),
            helper.fileno() if helper is not None else None,
        )
        protocol = _WorkerProtocol(self, slot)
        protocol.keys = {key for key, _fd in sockets}
        env = dict(os.environ if self._environment is None else self._environment)
        try:
            self._reactor.spawnProcess(
                protocol, command.argv[0], command.argv, env=env, childFDs=command.child_fds
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the worker holds its own copy
            if helper is not None:
                helper.close()
        ours.setblocking(False)
        protocol.control = ours
        self._workers[slot] = protocol
        log.info("worker {slot} started, pid {pid}", slot=slot, pid=protocol.pid)

    def _ended(self, protocol: _WorkerProtocol, reason: Failure) -> None:
        if self._workers.get(protocol.slot) is protocol:
            del self._workers[protocol.slot]
        if not self.running:
            return
        how = describe_exit(reason) or "exit status 0"
        maillog("master", f"process {PROGRAM} pid {protocol.pid} {how}", LogLevel.warn)
        delay = RESTART_DELAY
        if not protocol.ready:
            maillog("master", f"{PROGRAM}: bad command startup -- throttling", LogLevel.warn)
            delay = self._throttle_time
        self._restarts[protocol.slot] = self._reactor.callLater(delay, self._respawn, protocol.slot)
        if self._on_exit is not None:
            self._on_exit()

    def _respawn(self, slot: int) -> None:
        # Look for the dead worker's mail once more before replacing it: under
        # heavy load a message of a killed worker was once seen left in the
        # queue after the scan made at its death; a second scan is cheap.
        if self._on_exit is not None:
            self._on_exit()
        self._spawn(slot)

    def reload(self, command: str = "reload") -> None:
        """Tell every worker to reload (after the master reloaded), handing
        each the master's sockets of listeners it does not hold yet; with
        ``command = "reopen"`` only to reopen the mail log."""
        current = self._sockets()
        for protocol in list(self._workers.values()):
            new: list[str] = []
            if command == "reload":
                new = sorted(key for key in current if key not in protocol.keys)
            message = (" ".join([command, *new]) + "\n").encode()
            try:
                if protocol.control is None:
                    raise OSError("no control socket")
                # A few bytes on a fresh socket pair: never blocks.
                socket.send_fds(protocol.control, [message], [current[key] for key in new])
            except OSError as e:
                log.warn("reload: cannot reach worker pid {pid}: {e}", pid=protocol.pid, e=e)
                continue
            if command == "reload":  # the worker closes what is gone itself
                protocol.keys = set(current)

    def signal_all(self, number: int) -> None:
        """Send signal ``number`` to every running worker."""
        for protocol in list(self._workers.values()):
            _signal(protocol, number)

    def pids(self) -> dict[int, int | None]:
        """{slot: pid} of the workers running now."""
        return {slot: p.pid for slot, p in self._workers.items()}

    def stopService(self) -> Deferred[object]:
        super().stopService()
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        waiting = list(self._workers.values())
        if not waiting:
            return succeed(None)
        for protocol in waiting:
            _signal(protocol, signal.SIGTERM)

        def kill() -> None:
            for protocol in waiting:
                if not protocol.ended.called:
                    log.warn("worker pid {pid} ignored SIGTERM: killing it", pid=protocol.pid)
                    _signal(protocol, signal.SIGKILL)

        timer = self._reactor.callLater(STOP_TIMEOUT, kill)

        def done(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        return DeferredList([p.ended for p in waiting]).addBoth(done)


def _signal(protocol: _WorkerProtocol, number: int) -> None:
    transport: Any = protocol.transport
    try:
        transport.signalProcess(number)
    except Exception:  # ProcessExitedAlready: it is on its way out
        pass
