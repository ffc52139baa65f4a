"""pymta.reactor: Twisted's epoll reactor without the per-event log context.

Each test runs a reactor of its own (not the test run's global one) on a
socket pair, turning it by hand: ``doIteration`` blocks in ``epoll_wait``
until the event under test arrives, so nothing sleeps.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import epollreactor
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from pymta import reactor as pymta_reactor
from pymta.reactor import PymtaEPollReactor

ROOT = Path(__file__).resolve().parent.parent


class Boom(Exception):
    """What the failing handler raises."""


class Recorder(Protocol):
    """Keeps what it reads and how its connection ended; raises Boom on
    input when told to."""

    def __init__(self, explode: bool = False) -> None:
        self.explode = explode
        self.received = b""
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        if self.explode:
            raise Boom("handler failed")
        self.received += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = reason


@pytest.fixture
def own_reactor() -> Iterator[PymtaEPollReactor]:
    r = PymtaEPollReactor()
    yield r
    for selectable in r.removeAll():
        selectable.connectionLost(Failure(ConnectionDone()))
    r._poller.close()


def adopt(r: PymtaEPollReactor, protocol: Recorder) -> tuple[socket.socket, Any]:
    """A socket pair, one end the reactor's connection to protocol; the
    other end (the test's) and the connection."""
    ours, theirs = socket.socketpair()
    factory = Factory.forProtocol(lambda: protocol)
    connection = r.adoptStreamConnection(theirs.fileno(), socket.AF_UNIX, factory)
    theirs.close()  # the reactor holds its own duplicate
    return ours, connection


def turn_until(r: PymtaEPollReactor, done: Callable[[], bool], seconds: float = 10.0) -> None:
    """Run reactor turns (each waits in epoll for the next event) until done."""
    deadline = time.monotonic() + seconds
    while not done():
        left = deadline - time.monotonic()
        assert left > 0, "the event never came"
        r.runUntilCurrent()
        r.doIteration(min(left, 1.0))


def test_twisted_still_has_what_the_reactor_relies_on() -> None:
    """The private parts of Twisted's epoll reactor that pymta.reactor
    uses exist in the installed Twisted: this fails when an upgrade
    renames them (and install() would then keep Twisted's reactor)."""
    assert pymta_reactor.supported()
    r = epollreactor.EPollReactor()
    try:
        assert isinstance(r._selectables, dict)
        assert callable(r._poller.poll)
        assert r._POLL_IN == epollreactor.EPOLLIN
        assert r._POLL_OUT == epollreactor.EPOLLOUT
    finally:
        r._poller.close()


def test_input_reaches_the_protocol(own_reactor: PymtaEPollReactor) -> None:
    """A plain read event calls the connection's doRead: the bytes reach
    dataReceived."""
    protocol = Recorder()
    ours, _ = adopt(own_reactor, protocol)
    ours.sendall(b"EHLO client\r\n")
    turn_until(own_reactor, lambda: protocol.received == b"EHLO client\r\n")
    ours.close()


def test_buffered_output_is_written_on_write_events(own_reactor: PymtaEPollReactor) -> None:
    """More than the socket takes at once is written by the reactor's
    write events, all of it, in order."""
    protocol = Recorder()
    ours, connection = adopt(own_reactor, protocol)
    ours.setblocking(False)
    payload = os.urandom(4 << 20)
    connection.write(payload)
    got = bytearray()

    def drained() -> bool:
        try:
            got.extend(ours.recv(1 << 20))
        except BlockingIOError:
            pass
        return len(got) == len(payload)

    turn_until(own_reactor, drained)
    assert bytes(got) == payload
    ours.close()


def test_peer_close_ends_the_connection_cleanly(own_reactor: PymtaEPollReactor) -> None:
    """When the peer closes, the handler's "lost" answer closes the
    connection: connectionLost with ConnectionDone, and the reactor no
    longer watches it."""
    protocol = Recorder()
    ours, connection = adopt(own_reactor, protocol)
    ours.close()
    turn_until(own_reactor, lambda: protocol.lost is not None)
    assert protocol.lost is not None and protocol.lost.check(ConnectionDone)
    assert connection not in own_reactor.getReaders()


@implementer(IHalfCloseableProtocol)
class HalfCloseable(Recorder):
    """Keeps its connection open when the peer only stops sending."""

    read_closed = False

    def readConnectionLost(self) -> None:
        self.read_closed = True

    def writeConnectionLost(self) -> None:
        pass


def test_peer_half_close_reaches_a_half_closeable_protocol(
    own_reactor: PymtaEPollReactor,
) -> None:
    """When the peer shuts down only its sending side, a half-closeable
    protocol hears readConnectionLost and its connection stays open for
    writing (Twisted's rule for a read that returned "done")."""
    protocol = HalfCloseable()
    ours, connection = adopt(own_reactor, protocol)
    ours.shutdown(socket.SHUT_WR)
    turn_until(own_reactor, lambda: protocol.read_closed)
    assert protocol.lost is None
    connection.write(b"still writing\r\n")
    ours.settimeout(10)
    turn_until(own_reactor, lambda: not own_reactor.getWriters())
    assert ours.recv(100) == b"still writing\r\n"
    ours.close()


def test_handler_exception_is_logged_and_closes_the_connection(
    own_reactor: PymtaEPollReactor,
) -> None:
    """An exception in a read handler is logged with its traceback under
    the connection's log prefix, as Twisted's callWithLogger logs it, and
    closes that connection with the exception as the reason; the reactor
    goes on serving the others."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        failing = Recorder(explode=True)
        healthy = Recorder()
        bad_end, bad_connection = adopt(own_reactor, failing)
        good_end, _ = adopt(own_reactor, healthy)
        bad_end.sendall(b"anything\r\n")
        turn_until(own_reactor, lambda: failing.lost is not None)
        good_end.sendall(b"still here\r\n")
        turn_until(own_reactor, lambda: healthy.received == b"still here\r\n")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert failing.lost is not None and failing.lost.check(Boom)
    assert healthy.lost is None
    logged = [e for e in events if isinstance(e.get("failure"), Failure)]
    assert [e["failure"].type for e in logged] == [Boom]
    assert len(logged) == 1
    assert logged[0]["log_system"] == bad_connection.logPrefix()
    bad_end.close()
    good_end.close()


def test_install_keeps_an_installed_reactor() -> None:
    """install() never replaces a reactor already installed (the test
    run's, or the one twistd's --reactor chose)."""
    from twisted.internet import reactor

    assert not pymta_reactor.install()
    from twisted.internet import reactor as after

    assert after is reactor


@pytest.mark.parametrize(
    "code",
    [
        "from pymta.tap import _install_reactor; _install_reactor()",
        "from pymta.master.worker import global_reactor; global_reactor()",
    ],
)
def test_twistd_pymta_and_workers_run_pymtas_reactor(code: str) -> None:
    """``twistd pymta`` (tap's makeService) and the reactor processes of
    pymta_processes (the worker's main) install PymtaEPollReactor as the
    process's reactor."""
    check = f"{code}\nfrom twisted.internet import reactor\nprint(type(reactor).__name__)\n"
    out = subprocess.run(
        [sys.executable, "-c", check],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["PymtaEPollReactor"]


def test_next_turn_calls_run_in_order_on_the_next_turn(own_reactor: PymtaEPollReactor) -> None:
    """call_next_turn runs nothing at once; the next turn runs the calls in
    their order (one added meanwhile waits for the turn after), with no
    timer made, and while any wait the reactor polls without sleeping."""
    ran: list[str] = []

    def second() -> None:
        ran.append("second")
        own_reactor.call_next_turn(ran.append, "later")

    own_reactor.call_next_turn(ran.append, "first")
    own_reactor.call_next_turn(second)
    assert ran == []
    assert own_reactor.getDelayedCalls() == []
    assert own_reactor.timeout() == 0.0
    own_reactor.runUntilCurrent()
    assert ran == ["first", "second"]
    assert own_reactor.timeout() == 0.0
    own_reactor.runUntilCurrent()
    assert ran == ["first", "second", "later"]
    assert own_reactor.timeout() is None  # nothing left: free to sleep


def test_next_turn_calls_run_after_the_turns_thread_calls_and_timers(
    own_reactor: PymtaEPollReactor,
) -> None:
    """Within a turn, the next-turn calls come last: after the calls from
    threads and the timed calls due (so that one mail log flush writes
    the lines all of them logged)."""
    ran: list[str] = []
    own_reactor.call_next_turn(ran.append, "next turn")
    own_reactor.callLater(0, ran.append, "timer")
    own_reactor.callFromThread(ran.append, "thread")
    own_reactor.runUntilCurrent()
    assert ran == ["thread", "timer", "next turn"]


def test_next_turn_call_failure_is_logged_and_the_rest_run(
    own_reactor: PymtaEPollReactor,
) -> None:
    """An exception in a next-turn call is logged with its traceback; the
    calls after it still run."""
    events: list[dict[str, Any]] = []
    ran: list[str] = []
    own_reactor.call_next_turn(lambda: 1 / 0)
    own_reactor.call_next_turn(ran.append, "after")
    globalLogPublisher.addObserver(events.append)
    try:
        own_reactor.runUntilCurrent()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert ran == ["after"]
    failures = [e["log_failure"] for e in events if "log_failure" in e]
    assert [f.type for f in failures] == [ZeroDivisionError]


def test_lose_connection_closes_on_the_next_turn_without_a_timer(
    own_reactor: PymtaEPollReactor,
) -> None:
    """pymta.output.lose_connection on pymta's reactor: the reply already
    sent, the connection is closed on the next turn with no DelayedCall;
    the peer reads the reply, then end of file."""
    from pymta.output import lose_connection, send

    protocol = Recorder()
    ours, _ = adopt(own_reactor, protocol)
    ours.settimeout(10)
    transport = protocol.transport
    send(transport, b"221 2.0.0 Bye\r\n")
    lose_connection(transport)
    assert own_reactor.getDelayedCalls() == []
    assert protocol.lost is None  # not inside the caller
    turn_until(own_reactor, lambda: protocol.lost is not None)
    assert protocol.lost is not None and protocol.lost.check(ConnectionDone)
    assert ours.recv(100) == b"221 2.0.0 Bye\r\n"
    assert ours.recv(100) == b""
    ours.close()


def test_turn_answers_as_twisteds_with_and_without_timers(own_reactor: PymtaEPollReactor) -> None:
    """timeout() and runUntilCurrent() skip Twisted's code only when it has
    nothing to do: the wait asked for is Twisted's in every timer state (none,
    new, pending, due, cancelled at the heap's head, far away), due and
    delayed timers run as Twisted runs them, and one not due does not."""
    now = [1000.0]
    own_reactor.seconds = lambda: now[0]  # type: ignore[method-assign]

    def twisteds() -> float | None:
        return epollreactor.EPollReactor.timeout(own_reactor)

    assert own_reactor.timeout() is None and twisteds() is None
    ran: list[str] = []
    far = own_reactor.callLater(10_000_000, ran.append, "far")
    assert own_reactor.timeout() == twisteds() == 2147483  # filed on the way
    soon = own_reactor.callLater(5, ran.append, "soon")
    assert own_reactor.timeout() == 5 == twisteds()
    own_reactor.runUntilCurrent()
    assert ran == []
    now[0] += 5
    assert own_reactor.timeout() == 0 == twisteds()
    own_reactor.runUntilCurrent()
    assert ran == ["soon"] and not soon.active()
    later = own_reactor.callLater(3, ran.append, "delayed")
    own_reactor.runUntilCurrent()  # files it
    later.delay(2)
    now[0] += 3
    own_reactor.runUntilCurrent()  # due by its old time: Twisted moves it on
    assert ran == ["soon"]
    now[0] += 2
    own_reactor.runUntilCurrent()
    assert ran == ["soon", "delayed"]
    cancelled = own_reactor.callLater(1, ran.append, "cancelled")
    own_reactor.runUntilCurrent()
    cancelled.cancel()
    assert own_reactor.timeout() == twisteds()
    now[0] += 1
    own_reactor.runUntilCurrent()
    assert ran == ["soon", "delayed"]
    far.cancel()


def test_main_loop_logs_an_error_that_escapes_a_turn_and_goes_on(
    own_reactor: PymtaEPollReactor,
) -> None:
    """An exception that escapes a turn of the loop (not a handler's: the
    loop's own) is logged as Twisted's "Unexpected error in main loop" and
    the loop goes on turning until the reactor is stopped."""
    turns: list[int] = []
    real_timeout = own_reactor.timeout

    def failing_once() -> float | None:
        turns.append(1)
        if len(turns) == 1:
            raise Boom("the loop itself failed")
        return real_timeout()

    own_reactor.timeout = failing_once  # type: ignore[method-assign]
    # Stopped on the turn after the failed one.
    own_reactor.callLater(0, lambda: own_reactor.callLater(0, own_reactor.stop))
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        own_reactor.run(installSignalHandlers=False)
    finally:
        globalLogPublisher.removeObserver(events.append)
    failures = [e["log_failure"] for e in events if "log_failure" in e]
    assert [f.type for f in failures] == [Boom]
    assert len(turns) >= 2


class _CountingListener:
    """A listening socket that counts accept() calls and their outcome."""

    def __init__(self, real: socket.socket) -> None:
        self._real = real
        self.accepted = 0
        self.found_nothing = 0

    def accept(self) -> tuple[socket.socket, Any]:
        try:
            pair = self._real.accept()
        except BlockingIOError:
            self.found_nothing += 1
            raise
        self.accepted += 1
        return pair

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.mark.parametrize("adopted", [False, True])
def test_listener_takes_a_lone_client_with_one_accept_and_a_burst_together(
    own_reactor: PymtaEPollReactor, adopted: bool
) -> None:
    """pymta's TCP ports (listenTCP, and adoptStreamPort as the workers of
    pymta_processes use it): a client arriving after a quiet spell costs
    one accept, never a second one that finds nothing (Twisted's port
    tried again until EAGAIN every other connection); three clients
    waiting at once are all taken, the first alone, the other two together
    on the next turn."""
    made: list[Recorder] = []

    def build() -> Recorder:
        made.append(Recorder())
        return made[-1]

    factory = Factory.forProtocol(build)
    if adopted:
        bound = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        bound.bind(("127.0.0.1", 0))
        bound.listen(50)
        bound.setblocking(False)
        port: Any = own_reactor.adoptStreamPort(bound.fileno(), socket.AF_INET, factory)
        bound.close()  # the port holds its own duplicate
    else:
        port = own_reactor.listenTCP(0, factory, interface="127.0.0.1")
    assert isinstance(port, pymta_reactor.OneAcceptPort)
    counting = port.socket = _CountingListener(port.socket)
    address = ("127.0.0.1", port.getHost().port)
    clients: list[socket.socket] = []
    try:
        for expected in (1, 2, 3):
            own_reactor.doIteration(0)  # a quiet turn: nobody waiting
            clients.append(socket.create_connection(address))
            turn_until(own_reactor, lambda n=expected: len(made) == n)  # type: ignore[misc]
            assert (counting.accepted, counting.found_nothing) == (expected, 0)
        own_reactor.doIteration(0)
        clients += [socket.create_connection(address) for _ in range(3)]
        own_reactor.doIteration(1.0)
        assert counting.accepted == 4  # the first alone
        own_reactor.doIteration(1.0)
        assert counting.accepted == 6  # the rest of the burst together
        assert len(made) == 6
    finally:
        for client in clients:
            client.close()
        port.socket = counting._real
        port.stopListening()
