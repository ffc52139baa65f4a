"""scheduler: run delivery jobs within per-transport and per-destination limits.

Mirrors Postfix qmgr's transport and queue structures (qmgr_transport.c,
qmgr_queue.c): each transport has a process limit (master.cf maxproc), each
destination of a transport a concurrency limit
(``<transport>_destination_concurrency_limit``). Jobs wait in FIFO order per
destination; destinations take turns (round robin) so that one busy
destination does not starve the others. A limit of 0 or less is unlimited.

Optionally (qmgr passes :class:`~pymta.qmgr.feedback.DestinationFeedback`)
``window(transport, destination)`` replaces the fixed destination limit by
a window that grows and shrinks with delivery feedback, and
``wait(transport, destination)`` holds a destination back for a rate delay;
the scheduler then wakes itself through ``clock.callLater``.

Jobs may finish synchronously (an agent that answers at once): finishing
inside the dispatch loop does not recurse, the loop simply continues, so a
long queue of instant deliveries uses constant stack. Trusts its callers;
writes and logs nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class SchedulableJob(Protocol):
    transport: str
    destination: str


J = TypeVar("J", bound=SchedulableJob)


class _Destination(Generic[J]):
    __slots__ = ("active", "jobs", "name", "ready")

    def __init__(self, name: str) -> None:
        self.name = name
        self.active = 0
        self.jobs: deque[J] = deque()
        self.ready = False


class _Transport(Generic[J]):
    __slots__ = ("active", "dest_limit", "dests", "dispatching", "name", "process_limit", "ready")

    def __init__(self, name: str, process_limit: int, dest_limit: int) -> None:
        self.name = name
        self.process_limit = process_limit if process_limit > 0 else 1 << 62
        self.dest_limit = dest_limit if dest_limit > 0 else 1 << 62
        self.active = 0
        self.dests: dict[str, _Destination[J]] = {}
        self.ready: deque[_Destination[J]] = deque()
        self.dispatching = False


class Scheduler(Generic[J]):
    """Starts jobs through ``start(job)`` as limits allow; call ``finished(job)``
    when a job's delivery is over (success or not)."""

    def __init__(
        self,
        start: Callable[[J], None],
        limits: Callable[[str], tuple[int, int]],
        *,
        window: Callable[[str, str], int] | None = None,
        wait: Callable[[str, str], float] | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        self._start = start
        self._limits = limits  # transport -> (process limit, destination limit)
        self._window = window
        self._wait = wait if clock is not None else None
        self._clock = clock
        self._wakeups: dict[str, IDelayedCall] = {}
        self._transports: dict[str, _Transport[J]] = {}
        self.paused = False

    def _transport(self, name: str) -> _Transport[J]:
        transport = self._transports.get(name)
        if transport is None:
            process_limit, dest_limit = self._limits(name)
            transport = self._transports[name] = _Transport(name, process_limit, dest_limit)
        return transport

    def add(self, job: J) -> None:
        """Queue a job and start it at once if the limits allow."""
        transport = self._transport(job.transport)
        dest = transport.dests.get(job.destination)
        if dest is None:
            dest = transport.dests[job.destination] = _Destination(job.destination)
        dest.jobs.append(job)
        if not dest.ready:
            dest.ready = True
            transport.ready.append(dest)
        if not transport.dispatching:
            self._dispatch(transport)

    def finished(self, job: J) -> None:
        """Release the job's slots and start what now fits."""
        transport = self._transports[job.transport]
        dest = transport.dests[job.destination]
        transport.active -= 1
        dest.active -= 1
        if dest.active == 0 and not dest.jobs:
            del transport.dests[job.destination]
        if not transport.dispatching:
            self._dispatch(transport)

    def active(self, transport: str) -> int:
        t = self._transports.get(transport)
        return t.active if t else 0

    def active_for(self, transport: str, destination: str) -> int:
        t = self._transports.get(transport)
        d = t.dests.get(destination) if t else None
        return d.active if d else 0

    def waiting(self) -> int:
        return sum(len(d.jobs) for t in self._transports.values() for d in t.dests.values())

    def drain(self, transport: str, destination: str) -> list[J]:
        """Remove and return the jobs of one destination not yet started
        (qmgr defers them when the destination is dead)."""
        t = self._transports.get(transport)
        dest = t.dests.get(destination) if t else None
        if t is None or dest is None:
            return []
        jobs = list(dest.jobs)
        dest.jobs.clear()
        if dest.ready:
            dest.ready = False
            t.ready = type(t.ready)(d for d in t.ready if d is not dest)
        if dest.active == 0:
            del t.dests[destination]
        return jobs

    def _wake_later(self, transport: _Transport[J], delay: float) -> None:
        assert self._clock is not None
        call = self._wakeups.get(transport.name)
        if call is not None and call.active():
            if call.getTime() <= self._clock.seconds() + delay:
                return
            call.cancel()

        def wake() -> None:
            self._wakeups.pop(transport.name, None)
            self._dispatch(transport)

        self._wakeups[transport.name] = self._clock.callLater(delay, wake)

    def cancel_wakeups(self) -> None:
        """Cancel pending rate-delay wakeups (on stop)."""
        for call in self._wakeups.values():
            if call.active():
                call.cancel()
        self._wakeups.clear()

    def abandon(self) -> list[J]:
        """Drop every job not yet started (they stay queued on disk) and return them."""
        dropped: list[J] = []
        for transport in self._transports.values():
            for dest in list(transport.dests.values()):
                dropped.extend(dest.jobs)
                dest.jobs.clear()
                dest.ready = False
                if dest.active == 0:
                    del transport.dests[dest.name]
            transport.ready.clear()
        return dropped

    def resume(self) -> None:
        """Undo ``paused`` and start what fits."""
        self.paused = False
        for transport in list(self._transports.values()):
            self._dispatch(transport)

    def _dispatch(self, transport: _Transport[J]) -> None:
        if self.paused or transport.dispatching:
            return
        transport.dispatching = True
        try:
            ready = transport.ready
            blocked = 0
            while ready and blocked < len(ready) and transport.active < transport.process_limit:
                if self.paused:
                    break
                dest = ready.popleft()
                limit = (
                    transport.dest_limit
                    if self._window is None
                    else self._window(transport.name, dest.name)
                )
                if dest.active >= limit:
                    ready.append(dest)
                    blocked += 1
                    continue
                if self._wait is not None:
                    delay = self._wait(transport.name, dest.name)
                    if delay > 0:
                        ready.append(dest)
                        blocked += 1
                        self._wake_later(transport, delay)
                        continue
                job = dest.jobs.popleft()
                if dest.jobs:
                    ready.append(dest)
                else:
                    dest.ready = False
                dest.active += 1
                transport.active += 1
                blocked = 0
                self._start(job)
        finally:
            transport.dispatching = False
