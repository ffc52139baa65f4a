"""pymta.master: worker command lines, the socket hand-off, the worker pool's
life cycle (restart, throttling, stop), inherited listeners, queue-file
claims and the O_APPEND maillog stream — with task.Clock and fakes."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from pymta.config import Config
from pymta.master import workers
from pymta.master.adopt import AdoptedListener, socket_family
from pymta.master.appendlog import AppendLineStream
from pymta.master.claims import QueueClaims
from pymta.master.worker import parse_args
from pymta.master.workers import (
    WorkerPool,
    describe_exit,
    parse_listen,
    process_count,
    worker_command,
)

# worker command lines -------------------------------------------------------


def test_worker_command_hands_each_socket_down_at_its_own_descriptor() -> None:
    """The master's listening descriptors become the worker's 3, 4, ...; the
    command line names which listener each one is; stdin/stdout/stderr are pipes."""
    command = worker_command(
        "/usr/bin/python3", "etc", [("127.0.0.1:0::2525", 7), ("[::1]:0:::110", 12)], 2
    )
    assert command.argv[:3] == ["/usr/bin/python3", "-m", "pymta.master.worker"]
    assert command.argv[command.argv.index("--config") + 1] == os.path.abspath("etc")
    assert command.argv[command.argv.index("--slot") + 1] == "2"
    listens = [command.argv[i + 1] for i, a in enumerate(command.argv) if a == "--listen"]
    assert listens == ["127.0.0.1:0::2525=3", "[::1]:0:::110=4"]
    assert command.child_fds == {0: "w", 1: "r", 2: "r", 3: 7, 4: 12}


def test_worker_command_round_trips_through_the_worker_parser() -> None:
    """What the master writes, the worker reads back as {listener key: descriptor}."""
    command = worker_command("python", "/etc/pymta", [("smtp:127.0.0.1:25", 5)], 1)
    args = parse_args(command.argv[3:])
    assert args.config == "/etc/pymta"
    assert args.slot == 1
    assert parse_listen(args.listen) == {"smtp:127.0.0.1:25": 3}


def test_worker_command_passes_the_helper_connection_after_the_control_socket() -> None:
    """The worker's connection to the root helper is inherited after the
    control socket and named by --helper, which the worker parses back."""
    command = worker_command("python", "etc", [("smtp:127.0.0.1:25", 5)], 1, 8, 9)
    assert command.child_fds == {0: "w", 1: "r", 2: "r", 3: 5, 4: 8, 5: 9}
    args = parse_args(command.argv[3:])
    assert (args.control, args.helper) == (4, 5)


@pytest.mark.parametrize("bad", ["smtp", "=3", "smtp=", "smtp=x3", "smtp=-1"])
def test_parse_listen_refuses_malformed_values(bad: str) -> None:
    """A --listen value that is not NAME=FD is an error, not a guess."""
    with pytest.raises(ValueError):
        parse_listen([bad])


def test_worker_command_refuses_a_listener_name_with_equals() -> None:
    """A key containing '=' could not be parsed back: refused up front."""
    with pytest.raises(ValueError):
        worker_command("python", "etc", [("a=b", 3)], 1)


@pytest.mark.parametrize(
    ("value", "cpus", "expected"),
    [("1", 8, 1), ("3", 8, 3), ("0", 8, 8), ("0", None, 1)],
)
def test_process_count(value: str, cpus: int | None, expected: int) -> None:
    """pymta_processes is the number of reactor processes; 0 means one per CPU."""
    config = Config.from_text(f"pymta_processes = {value}\n")
    assert process_count(config, lambda: cpus) == expected


def test_describe_exit_uses_postfix_wording() -> None:
    """Postfix's master says "exit status N" or "killed by signal N"; a clean
    exit is not a failure."""
    assert describe_exit(Failure(ProcessTerminated(exitCode=1))) == "exit status 1"
    assert describe_exit(Failure(ProcessTerminated(signal=9))) == "killed by signal 9"
    assert describe_exit(Failure(ProcessDone(0))) is None


# the pool -----------------------------------------------------------------------


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[int] = []

    def signalProcess(self, number: int) -> None:
        self.signals.append(number)


class FakeReactor(Clock):
    """A clock that records spawnProcess calls."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, FakeProcess, list[str], dict[int, Any]]] = []
        self._next_pid = 100

    def spawnProcess(
        self,
        protocol: ProcessProtocol,
        executable: str,
        args: list[str],
        env: dict[str, str] | None = None,
        childFDs: dict[int, Any] | None = None,
    ) -> FakeProcess:
        self._next_pid += 1
        process = FakeProcess(self._next_pid)
        protocol.makeConnection(process)
        self.spawned.append((protocol, process, args, dict(childFDs or {})))
        return process


@pytest.fixture
def maillines() -> Iterator[list[str]]:
    lines: list[str] = []

    @implementer(ILogObserver)
    def observer(event: dict[str, Any]) -> None:
        if event.get("pymta_maillog"):
            lines.append(f"{event['service']}: {event['text']}")

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


def _pool(reactor: FakeReactor, count: int = 2, exits: list[int] | None = None) -> WorkerPool:
    reactor.advance(1000)
    return WorkerPool(
        "/etc/pymta",
        lambda: {"smtp:127.0.0.1:25": 6, "pop3:127.0.0.1:110": 9},
        count,
        reactor,
        on_exit=(lambda: exits.append(1)) if exits is not None else None,
        throttle_time=60.0,
        executable="/usr/bin/python3",
        environment={},
    )


def _end(protocol: ProcessProtocol, reason: Exception) -> None:
    protocol.processEnded(Failure(reason))


def test_pool_spawns_workers_with_the_master_sockets() -> None:
    """startService spawns count workers, each inheriting every listening socket."""
    reactor = FakeReactor()
    pool = _pool(reactor, count=2)
    pool.startService()
    assert len(reactor.spawned) == 2
    for slot, (_protocol, _process, args, fds) in enumerate(reactor.spawned, start=1):
        assert args[args.index("--slot") + 1] == str(slot)
        assert {fds[3], fds[4]} == {6, 9}
    assert sorted(pool.pids()) == [1, 2]


def test_a_dead_worker_is_logged_and_restarted(maillines: list[str]) -> None:
    """A worker killed while the pool runs is logged like Postfix's master and
    respawned after a second; the master is told to recover its messages."""
    reactor = FakeReactor()
    exits: list[int] = []
    pool = _pool(reactor, count=1, exits=exits)
    pool.startService()
    protocol, process, _, _ = reactor.spawned[0]
    protocol.childDataReceived(1, b"ready\n")
    _end(protocol, ProcessTerminated(signal=9))
    assert f"master: process pymta/worker pid {process.pid} killed by signal 9" in maillines
    assert exits == [1]
    assert len(reactor.spawned) == 1 and pool.pids() == {}
    reactor.advance(workers.RESTART_DELAY)
    assert len(reactor.spawned) == 2
    assert pool.pids() == {1: reactor.spawned[1][1].pid}


def test_a_worker_that_dies_at_startup_is_throttled(maillines: list[str]) -> None:
    """A worker that exits before it reported ready is restarted only after
    service_throttle_time ("bad command startup -- throttling")."""
    reactor = FakeReactor()
    pool = _pool(reactor, count=1)
    pool.startService()
    protocol, process, _, _ = reactor.spawned[0]
    _end(protocol, ProcessTerminated(exitCode=1))
    assert f"master: process pymta/worker pid {process.pid} exit status 1" in maillines
    assert "master: pymta/worker: bad command startup -- throttling" in maillines
    reactor.advance(59)
    assert len(reactor.spawned) == 1
    reactor.advance(1)
    assert len(reactor.spawned) == 2
    assert sum("throttling" in line for line in maillines) == 1


def test_stop_terminates_workers_and_waits_without_restarting() -> None:
    """stopService sends SIGTERM and fires only once every worker has exited;
    a worker ending during the stop is not restarted, nor a pending restart run."""
    reactor = FakeReactor()
    pool = _pool(reactor, count=2)
    pool.startService()
    (p1, w1, _, _), (p2, w2, _, _) = reactor.spawned
    p1.childDataReceived(1, b"ready\n")
    _end(p1, ProcessTerminated(exitCode=1))  # restart pending
    stopped = pool.stopService()
    assert isinstance(stopped, Deferred)
    assert w2.signals == [signal.SIGTERM] and w1.signals == []
    assert not stopped.called
    _end(p2, ProcessDone(0))
    assert stopped.called
    reactor.advance(120)
    assert len(reactor.spawned) == 2


def test_stop_kills_a_worker_that_ignores_sigterm() -> None:
    """A worker still alive STOP_TIMEOUT seconds after SIGTERM gets SIGKILL."""
    reactor = FakeReactor()
    pool = _pool(reactor, count=1)
    pool.startService()
    protocol, process, _, _ = reactor.spawned[0]
    stopped = pool.stopService()
    reactor.advance(workers.STOP_TIMEOUT)
    assert process.signals == [signal.SIGTERM, signal.SIGKILL]
    assert not stopped.called
    _end(protocol, ProcessTerminated(signal=9))
    assert stopped.called


def test_worker_output_is_relayed_line_by_line() -> None:
    """Worker stderr lines reach the master's log prefixed with the worker pid,
    also when a line arrives in pieces."""
    events: list[dict[str, Any]] = []

    @implementer(ILogObserver)
    def observer(event: dict[str, Any]) -> None:
        events.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        reactor = FakeReactor()
        pool = _pool(reactor, count=1)
        pool.startService()
        protocol, process, _, _ = reactor.spawned[0]
        protocol.childDataReceived(2, b"first li")
        protocol.childDataReceived(1, b"ready\n")
        protocol.childDataReceived(2, b"ne\nsecond line\n")
    finally:
        globalLogPublisher.removeObserver(observer)
    relayed = [e["line"] for e in events if e.get("pid") == process.pid and "line" in e]
    assert relayed == ["first line", "second line"]
    assert protocol.ready  # the readiness line is consumed, not relayed


# inherited listeners -----------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "address"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
)
def test_adopted_listener_uses_the_socket_family_and_closes_the_inherited_fd(
    family: int, address: str
) -> None:
    """The worker adopts the inherited socket with its own address family and
    closes its copy of the descriptor (the reactor keeps a duplicate)."""
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        pytest.skip("address family unavailable")
    sock.bind((address, 0))
    sock.listen(5)
    fd = os.dup(sock.fileno())
    sock.close()
    assert socket_family(fd) == family
    reactor = MemoryReactor()
    factory = Factory()
    listener = AdoptedListener(fd, factory, reactor)
    listener.privilegedStartService()
    assert len(reactor.adoptedPorts) == 1
    adopted_fd, adopted_family, adopted_factory = reactor.adoptedPorts[0][:3]
    assert (adopted_fd, adopted_family, adopted_factory) == (fd, family, factory)
    with pytest.raises(OSError):
        os.fstat(fd)


# claims --------------------------------------------------------------------------


def _queue_file(tmp_path: Path, queue: str, queue_id: str) -> Path:
    (tmp_path / queue).mkdir(exist_ok=True)
    path = tmp_path / queue / queue_id
    path.write_bytes(b"queue file")
    return path


def test_claims_are_exclusive_between_owners(tmp_path: Path) -> None:
    """A message claimed by one process cannot be claimed by another (a
    separate open file description) until released."""
    _queue_file(tmp_path, "active", "ABC")
    ours = QueueClaims(lambda qid, q: str(tmp_path / q / qid))
    theirs = QueueClaims(lambda qid, q: str(tmp_path / q / qid))
    assert ours.claim("ABC", "active")
    assert ours.claim("ABC", "active")  # idempotent for the owner
    assert not theirs.claim("ABC", "active")
    ours.release("ABC")
    assert theirs.claim("ABC", "active")
    assert theirs.held() == ["ABC"]


def test_claim_follows_the_file_through_a_rename(tmp_path: Path) -> None:
    """The lock is on the inode: once incoming/X moved to active/X, it is
    still owned; a missing or moved file cannot be claimed."""
    path = _queue_file(tmp_path, "incoming", "X1")
    (tmp_path / "active").mkdir()
    ours = QueueClaims(lambda qid, q: str(tmp_path / q / qid))
    theirs = QueueClaims(lambda qid, q: str(tmp_path / q / qid))
    assert ours.claim("X1", "incoming")
    path.rename(tmp_path / "active" / "X1")
    assert not theirs.claim("X1", "active")
    assert not theirs.claim("X1", "incoming")
    assert not theirs.claim("NOPE", "active")


def _claiming_store(tmp_path: Path, ours: QueueClaims) -> Any:
    from pymta.queue.store import FileQueueStore
    from pymta.sync import ImmediateSyncBarrier

    clock = Clock()
    clock.advance(1700000000)
    store = FileQueueStore(str(tmp_path), ImmediateSyncBarrier(), clock)
    store.claim_new = ours.adopt
    store.unclaim = ours.release
    return store


def test_a_message_is_claimed_by_its_writer_from_the_start(tmp_path: Path) -> None:
    """With claims, the process whose store wrote a queue file owns it
    before it is ready: another process cannot claim it in incoming/ nor
    after the move to active/; the owner's own claim is already held."""
    from pymta.queue.model import Envelope, Recipient

    ours = QueueClaims(lambda qid, q: str(tmp_path / q / qid))
    theirs = QueueClaims(lambda qid, q: str(tmp_path / q / qid))
    store = _claiming_store(tmp_path, ours)
    queued: list[str] = []
    envelope = Envelope("a@example.org", [Recipient("b@example.com", "b@example.com")])
    store.enqueue(envelope, b"Subject: x\n\nbody\n").addCallback(queued.append)
    [qid] = queued
    assert ours.held() == [qid]
    assert not theirs.claim(qid, "incoming")
    assert ours.claim(qid, "incoming")
    store.move(qid, "incoming", "active")
    assert not theirs.claim(qid, "active")
    ours.release(qid)
    assert theirs.claim(qid, "active")


def test_a_message_not_made_durable_is_given_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the write fails (incoming/ is gone) the writer's claim is
    released again: nothing stays held for a file nobody acknowledged."""
    from pymta.queue.model import Envelope, Recipient

    ours = QueueClaims(lambda qid, q: str(tmp_path / q / qid))
    store = _claiming_store(tmp_path, ours)

    def failing_fchmod(fd: int, mode: int) -> None:
        raise OSError(28, "No space left on device")

    failures: list[Failure] = []
    envelope = Envelope("a@example.org", [Recipient("b@example.com", "b@example.com")])
    monkeypatch.setattr(os, "fchmod", failing_fchmod)
    store.enqueue(envelope, b"body\n").addErrback(failures.append)
    assert len(failures) == 1
    assert ours.held() == []
    assert os.listdir(tmp_path / "incoming") == []


def test_release_waits_for_the_queue_changes_queued_before() -> None:
    """A claim is released on the store's background thread, after the file
    changes queued before it (done flags, unlink): the next owner sees them."""

    class HeldBarrier:
        def __init__(self) -> None:
            self.work: list[Any] = []

        def run(
            self,
            work: Any,
            durable: bool = True,
            files: Any = (),
            dirs: Any = (),
            soon: bool = False,
        ) -> Any:
            self.work.append(work)
            return Deferred()

        def sync(self, files: Any = (), dirs: Any = ()) -> Any:
            return Deferred()

    barrier = HeldBarrier()
    read_fd, write_fd = os.pipe()
    os.close(write_fd)
    claims = QueueClaims(lambda qid, q: f"/dev/fd/{read_fd}", barrier)  # type: ignore[arg-type]
    claims._held["Q"] = read_fd  # a descriptor standing for a held lock
    claims.release("Q")
    assert claims.held() == []
    os.fstat(read_fd)  # not closed yet: queued behind earlier work
    barrier.work[0]()
    with pytest.raises(OSError):
        os.fstat(read_fd)


# the maillog stream --------------------------------------------------------------


def test_append_stream_writes_whole_lines_once_per_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every flush is one write(2) of whole lines on an O_APPEND descriptor, so
    two processes' lines never interleave inside a line."""
    path = tmp_path / "maillog"
    first = AppendLineStream(str(path))
    second = AppendLineStream(str(path))
    writes: list[bytes] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    first.write("one a\n")
    second.write("two a\n")
    first.write("one b\n")
    second.flush()
    first.flush()
    first.flush()  # nothing pending: no write
    first.close()
    second.close()
    assert writes == [b"two a\n", b"one a\none b\n"]
    assert path.read_text() == "two a\none a\none b\n"
    assert first.closed and second.closed


def test_reload_closes_only_the_descriptors_no_listener_adopted() -> None:
    """After a reload in a worker, a descriptor the master sent that a
    listener adopted is left to it; one no listener took is closed (the
    listener's own inherited descriptor is asked for by name, not read
    from a private attribute)."""
    from pymta.master.worker import _Control

    adopted_fd, unused_fd = os.open(os.devnull, os.O_RDONLY), os.open(os.devnull, os.O_RDONLY)
    listener = AdoptedListener(adopted_fd, Factory(), MemoryReactor())

    class System:
        ports = {"smtp": listener}

    try:
        _Control(System())._close_unused(None, {"smtp": adopted_fd, "imap": unused_fd})
        os.fstat(adopted_fd)
        with pytest.raises(OSError):
            os.fstat(unused_fd)
    finally:
        os.close(adopted_fd)


def test_every_kind_of_listener_provides_the_listener_interface() -> None:
    """TCP, UNIX-socket and adopted listeners all provide IListener, the
    type of MailSystem.ports (what reload and the worker pool use)."""
    from zope.interface.verify import verifyClass

    from pymta.listeners import IListener, TCPListener, UnixListener

    for kind in (TCPListener, UnixListener, AdoptedListener):
        assert verifyClass(IListener, kind)
