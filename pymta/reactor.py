"""reactor: Twisted's epoll reactor, without a log context per socket event.

pymta-only (Postfix's daemons have their own event loops). Installed by
the programs that own their process — ``twistd pymta`` (unless twistd's
``--reactor`` chose one) and the reactor processes of ``pymta_processes``
— before anything imports ``twisted.internet.reactor``; never by
embedding (``pymta.service.makeService``), whose host owns its reactor.

Twisted's epoll reactor hands every ready socket to its handler through
``log.callWithLogger``: it asks the socket for its log prefix and pushes
a copy of the legacy log context with that prefix as ``system`` (a dict
copy and half a dozen calls), so that a legacy ``log.msg`` inside the
handler is labelled with the connection. pymta logs through
twisted.logger, which never reads that context, and an SMTP message
costs about seven socket events: :class:`PymtaEPollReactor` calls the
handler directly for a plain read or write event. What stays the same:

- an exception in a handler is logged with its traceback under the
  connection's prefix (``log.err(system=PREFIX)``, as before) and the
  connection is closed with that exception as the reason
  (``connectionLost``);
- a handler's "lost" answer (``doRead``/``doWrite`` returning a reason)
  closes the connection as before, and a descriptor that went away
  (``fileno() == -1``) is reported as Twisted does;
- every other event (hang-up, error, read and write at once) goes
  through Twisted's own ``_doReadOrWrite`` under ``callWithLogger``,
  unchanged.

What differs: a legacy ``twisted.python.log.msg`` made by Twisted code
inside a plain read or write handler is labelled ``-`` instead of the
connection's prefix. pymta's own lines (mail log, twisted.logger events)
are unchanged.

It also offers :meth:`PymtaEPollReactor.call_next_turn`, what
``callLater(0, f, *args)`` is used for — run f once the current handler
and the events already polled are done — without a timer: a
``DelayedCall`` goes through the timer heap, whose every comparison is a
Python method call. The calls run in their order at the next
``runUntilCurrent``, after the threads' calls and the timed calls (a
call added while they run waits for the turn after), and while any wait
the reactor does not sleep. An exception in one is logged and the others still run.
Callers that may run on another reactor (tests' clocks, embedding) look
for the method and fall back to ``callLater(0, ...)``.

The loop's own turn is kept short, since at one connection (one client,
one message, one reply at a time) the reactor goes round about eight
times a message, nearly every time for one socket event: ``mainLoop``
enters Twisted's error handler once, not once per turn (an exception
escaping a turn is still logged and the loop goes on), and
``runUntilCurrent`` and ``timeout`` answer from the timer heap's head
without Twisted's calls when no thread call, new timer or stop is waiting
and no timer is due (the same answers: Twisted's code runs whenever one
is).

Its TCP listening ports (``listenTCP``, and ``adoptStreamPort`` for an
inherited IPv4 or IPv6 socket: the workers of ``pymta_processes``) take
the first connection after a quiet spell alone (:class:`OneAcceptPort`).
Twisted's port accepts until ``accept`` fails with EAGAIN, up to a count
it adapts (+20 when it took as many as it tried, else as many as came),
so that one client at a time paid a failing ``accept4`` (and its
exception) every other connection, after the greeting and before the
client's EHLO could be read. When the listening socket is ready again on
the very next turn (epoll is level-triggered: more clients were
waiting), Twisted's count applies and the rest of the burst is taken
together, so that busy sessions keep arriving in step and their queue
files share group commits (a strict one per turn cost 5% more reactor
instructions per message at 20 connections).

Twisted attributes relied on (``_poller``, ``_selectables``,
``_disconnectSelectable``, ``_doReadOrWrite``, ``_pendingTimedCalls``,
``_newTimedCalls``, ``_justStopped``, ``_started``, a TCP port's
``numberAccepts``, and the module's ``_NO_FILEDESC``) are private;
``tests/test_reactor.py`` fails when a Twisted version changes them, and
:func:`install` falls back to Twisted's default reactor when one is
missing.

Untrusted input: none. Writes: nothing. Logs: a handler's exception.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import epollreactor, posixbase, tcp
from twisted.logger import Logger
from twisted.python import log

_log = Logger()

_IN = epollreactor.EPOLLIN
_OUT = epollreactor.EPOLLOUT

#: The reason Twisted gives a selectable whose descriptor is gone.
_NO_FILEDESC: Any = getattr(posixbase, "_NO_FILEDESC", None)
#: The longest sleep Twisted asks for: 2**31 ms, epoll_wait's C int.
_LONGEST_WAIT = 2147483


class OneAcceptPort(tcp.Port):
    """Twisted's TCP port, taking the first connection after a quiet
    spell alone (see the module doc)."""

    #: The reactor's poll count at the last readiness event.
    _last_poll = -2

    def doRead(self) -> None:
        polls: int | None = getattr(self.reactor, "polls", None)
        if polls is not None:
            if polls - self._last_poll > 1:
                # Not ready on the turn before: most likely one client.
                self.numberAccepts = 1
            self._last_poll = polls
        # Twisted's doRead accepts up to numberAccepts, then sets it anew.
        super().doRead()


class PymtaEPollReactor(epollreactor.EPollReactor):
    """Twisted's epoll reactor; a plain read or write event calls its
    handler without the legacy log context (see the module doc)."""

    def __init__(self) -> None:
        self._next_turn: list[tuple[Callable[..., object], tuple[Any, ...]]] = []
        #: How many times the loop has polled (OneAcceptPort's clock).
        self.polls = 0
        super().__init__()

    def call_next_turn(self, f: Callable[..., object], *args: Any) -> None:
        """Call ``f(*args)`` once the current handler has returned, at the
        reactor's next ``runUntilCurrent`` (as ``callLater(0, f, *args)``
        would, without a timer)."""
        self._next_turn.append((f, args))

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        listening = OneAcceptPort(port, factory, backlog, interface, self)
        listening.startListening()
        return listening

    def adoptStreamPort(self, fileDescriptor: int, addressFamily: Any, factory: Any) -> Any:
        if addressFamily not in (socket.AF_INET, socket.AF_INET6):
            return super().adoptStreamPort(fileDescriptor, addressFamily, factory)
        listening = OneAcceptPort._fromListeningDescriptor(
            self, fileDescriptor, addressFamily, factory
        )
        listening.startListening()
        return listening

    def mainLoop(self) -> None:
        # Twisted's, with its "Unexpected error in main loop" handler
        # entered once instead of at every turn (module doc).
        while self._started:
            try:
                while self._started:
                    self.runUntilCurrent()
                    wait = self.timeout()
                    self.doPoll(self.running and wait)
            except BaseException:  # as Twisted's handler: log, go on
                _log.failure("Unexpected error in main loop")
        _log.info("Main loop terminated.")

    def runUntilCurrent(self) -> None:
        # Twisted's only when it has something to do: a thread's call, a
        # timer to file, a stop, or a timer due (a cancelled one at the
        # head is due as well; Twisted drops it).
        pending = self._pendingTimedCalls
        if (
            self.threadCallQueue
            or self._newTimedCalls
            or self._justStopped
            or (pending and pending[0].time <= self.seconds())
        ):
            super().runUntilCurrent()
        # After the threads' calls and the timers, so that what they did
        # (a reply written, a session to close) is seen by these calls.
        if self._next_turn:
            calls, self._next_turn = self._next_turn, []
            for f, args in calls:
                try:
                    f(*args)
                except Exception:
                    _log.failure("while handling a call for the next reactor turn")

    def timeout(self) -> float | None:
        if self._next_turn:
            return 0.0  # calls wait for this turn: poll without sleeping
        if self._newTimedCalls:
            return super().timeout()  # files them, then answers
        # Twisted's answer from the heap's head, without its calls.
        pending = self._pendingTimedCalls
        if not pending:
            return None
        delay: float = pending[0].time - self.seconds()
        if delay <= 0:
            return 0
        return delay if delay < _LONGEST_WAIT else _LONGEST_WAIT

    def doPoll(self, timeout: float | None) -> None:
        if timeout is None:
            timeout = -1  # wait until an event comes
        selectables = self._selectables
        self.polls += 1
        try:
            # At most as many events as descriptors watched, as Twisted asks.
            events = self._poller.poll(timeout, len(selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue  # removed by an earlier handler of this batch
            if event == _IN or event == _OUT:
                self._ready(selectable, event == _IN)
            else:
                log.callWithLogger(selectable, self._doReadOrWrite, selectable, fd, event)

    doIteration = doPoll

    def _ready(self, selectable: Any, read: bool) -> None:
        """One plain read or write event: the handler, then the close it
        asks for (its "lost" answer or its exception)."""
        # As Twisted's: a read that returned is a read (a half-closeable
        # connection may then keep writing); anything else closes it.
        returned_from_read = False
        try:
            if selectable.fileno() == -1:
                why = _NO_FILEDESC
            elif read:
                why = selectable.doRead()
                returned_from_read = True
            else:
                why = selectable.doWrite()
        except KeyboardInterrupt:
            raise
        except BaseException:
            why = sys.exc_info()[1]
            log.err(system=_prefix(selectable))
        if why:
            self._disconnectSelectable(selectable, why, returned_from_read)


def _prefix(selectable: Any) -> str:
    """The connection's log prefix, as ``log.callWithLogger`` finds it."""
    try:
        return str(selectable.logPrefix())
    except KeyboardInterrupt:
        raise
    except BaseException:
        return "(buggy logPrefix method)"


def supported() -> bool:
    """Whether this Twisted has what :class:`PymtaEPollReactor` relies on."""
    return (
        _NO_FILEDESC is not None
        and callable(getattr(epollreactor.EPollReactor, "_disconnectSelectable", None))
        and callable(getattr(epollreactor.EPollReactor, "_doReadOrWrite", None))
    )


def _has_timer_state(reactor: Any) -> bool:
    """Whether a Twisted reactor keeps the timer and stop state that
    :meth:`PymtaEPollReactor.runUntilCurrent` and ``timeout`` read."""
    return all(
        hasattr(reactor, name)
        for name in ("_pendingTimedCalls", "_newTimedCalls", "_justStopped", "_started")
    )


def install() -> bool:
    """Install :class:`PymtaEPollReactor` as the global reactor when none
    is installed yet (twistd's ``--reactor`` wins) and this platform has
    epoll; True when it did."""
    if "twisted.internet.reactor" in sys.modules or not supported():
        return False
    reactor = PymtaEPollReactor()
    if not (
        hasattr(reactor, "_poller")
        and hasattr(reactor, "_selectables")
        and _has_timer_state(reactor)
    ):
        return False
    from twisted.internet.main import installReactor

    installReactor(reactor)
    return True
