"""manager: the queue manager — from incoming to delivered, deferred or bounced.

Mirrors Postfix's qmgr(8). cleanup triggers it with a queue id (and the
envelope it has at hand) once a message is durable in incoming/ (the
queue manager provides :class:`~pymta.queue.trigger.IQueueTrigger`;
:meth:`QueueManager.notify_new` is its ``queued``): qmgr moves it to
active/ and, once the move is applied, resolves each recipient not yet
done to (transport, nexthop, recipient), groups them by transport and
destination, splits the groups by the transport's recipient limit and
hands the jobs to the delivery agents through the
:class:`~pymta.qmgr.scheduler.Scheduler` (process and destination
concurrency limits). qmgr never holds a message's content: a
job carries a reference to the queue file (:mod:`pymta.queue.reference`),
which the agent reads in blocks. Queue files found on disk (recovery,
deferred/) are read on a worker thread, records only (``read_envelope``).

Like Postfix's, the active queue is bounded: at most
``qmgr_message_active_limit`` messages, and no more recipients than
``qmgr_message_recipient_limit`` in memory (a single message larger than
that still goes alone, where Postfix would read its recipients in slices).
What does not fit stays in incoming/ or deferred/ and is taken when a
message leaves the active queue.

Outcomes are values (docs/architecture.md): 2.x.x marks the recipient done in the
queue file, after the agent reported it safe (at-least-once) — an agent
that marked it itself (Maildir, on its writer's thread) is not marked
again, any other is marked at once, before the ``status=sent`` line is
logged: a process crash never repeats a delivery logged as sent; 5.x.x is
collected, and the recipients are marked done only once bounce has queued
the DSN (or none is due); 4.x.x is written to the defer log. When every job
of a message is over: all done -> ``removed``; some deferred -> moved to
deferred/ with its next attempt (:func:`~pymta.qmgr.policy.backoff_delay`);
older than its lifetime -> ``status=expired, returned to sender`` with the
last deferral reasons. A resolver TableError, a transport without an agent
("4.3.0 mail transport unavailable") or an agent errback (a bug: logged with
its traceback) defers the recipients concerned.

Deferral features (Postfix's): each destination's concurrency window grows
on success and shrinks on failure, and a destination that keeps failing is
dead for minimal_backoff_time — its mail is deferred with "delivery
temporarily suspended: <reason>" without being tried
(:mod:`pymta.qmgr.feedback`); a message still deferred after
delay_warning_time gets one delay notice (the store remembers it across
restarts); mail for a transport in defer_transports is deferred
("deferred transport") until a flush takes it; recipients that asked for
NOTIFY=SUCCESS get a success DSN once delivered.

:meth:`start` recovers incoming/ and active/ and scans deferred/ now and
every queue_run_delay; :meth:`flush` retries all deferred mail now and
revives dead destinations (``postqueue -f`` through the trigger FIFO of
:mod:`pymta.qmgr.trigger`);
:meth:`stop` stops scheduling and waits for the deliveries in flight (what
is not marked done stays queued and is delivered after the next start).

Several reactor processes (``pymta_processes``, :mod:`pymta.master`): each
runs a queue manager for the mail its own smtpd accepted. A worker's is
built with ``scan=False``: it never recovers incoming/ or active/ and never
scans deferred/ (what it defers, the master's finds there). With ``claims``
(:class:`~pymta.master.claims.QueueClaims`) a queue manager holds a lock on
each message it took from incoming/ or active/ until it is settled, and
:meth:`recover_orphans` (on a worker's death, and with every scan of
deferred/) takes the messages of a process that died.

Untrusted input: queue files (the store validates them; a bad one is
quarantined and the rest keep moving). May write: the queue, through the
store. Logs: Postfix's qmgr lines (see :mod:`pymta.qmgr.log`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from pymta.bounce.bouncer import Bouncer, wants_success
from pymta.config import Config
from pymta.delivery.interface import (
    DeliveryRecipient,
    DeliveryRequest,
    IDeliveryAgent,
    RecipientStatus,
)
from pymta.maillog import maillog
from pymta.qmgr.feedback import DestinationFeedback, destination_params
from pymta.qmgr.log import log_active, log_delivery, log_expired, log_removed
from pymta.qmgr.policy import TransportLimits, backoff_delay, queue_lifetime, transport_limits
from pymta.qmgr.scheduler import Scheduler
from pymta.queue.interface import IQueueStore, QueueFileError
from pymta.queue.model import Envelope, Recipient
from pymta.queue.reference import IMessageContent, head
from pymta.queue.trigger import IQueueTrigger
from pymta.rewrite.interface import IResolver
from pymta.tables.interface import TableError

if TYPE_CHECKING:
    from pymta.master.claims import QueueClaims

_log = Logger(namespace="pymta.qmgr")

T = TypeVar("T")
#: How blocking queue-file reads run: (work) -> Deferred of its result.
ReadRunner = Callable[[Callable[[], Any]], "Deferred[Any]"]


def run_at_once(work: Callable[[], T]) -> Deferred[T]:
    """A ReadRunner that runs the read where it is called (tests with the
    memory store; production passes a thread pool's)."""
    return maybeDeferred(work)


@dataclass(eq=False)
class _Message:
    queue_id: str
    envelope: Envelope
    content: IMessageContent  # the queue file's content, by reference
    active_time: float
    pending: int = 0
    deferred: bool = False
    abandoned: bool = False
    bounced: list[tuple[Recipient, RecipientStatus]] = field(default_factory=list)
    # This attempt's deferrals (for the delay warning) and the recipients
    # delivered that asked for a success DSN (RFC 3461 NOTIFY=SUCCESS).
    delayed: list[tuple[Recipient, RecipientStatus]] = field(default_factory=list)
    succeeded: list[tuple[Recipient, RecipientStatus]] = field(default_factory=list)


@dataclass(eq=False)
class _Job:
    message: _Message
    transport: str
    nexthop: str
    destination: str
    recipients: list[DeliveryRecipient]
    handoff: float = 0.0


@implementer(IQueueTrigger)
class QueueManager:
    """Postfix's qmgr on one reactor (see module doc)."""

    def __init__(
        self,
        config: Config,
        store: IQueueStore,
        resolver: IResolver,
        agents: Mapping[str, IDeliveryAgent],
        bounce: Bouncer,
        clock: IReactorTime,
        process_limits: Mapping[str, int] | None = None,
        *,
        scan: bool = True,
        claims: QueueClaims | None = None,
        read_runner: ReadRunner = run_at_once,
    ) -> None:
        self._config = config
        self._read = read_runner
        self._active_limit = max(config.get_int("qmgr_message_active_limit"), 1)
        self._recipient_limit = max(config.get_int("qmgr_message_recipient_limit"), 1)
        self._bounce_size_limit = config.get_int("bounce_size_limit")
        # Messages being read or moved into the active queue, and their
        # recipients (they count against the limits already).
        self._loading: set[str] = set()
        self._recipients = 0
        # Something stayed behind in incoming/ for want of room.
        self._backlog = False
        self._refill_call: Any = None
        self._scan = scan
        self._claims = claims
        # Queue ids settled while an orphan recovery lists the queue.
        self._settling: list[set[str]] = []
        self._store = store
        self._resolver = resolver
        self._agents = agents
        self._bouncer = bounce
        self._clock = clock
        self._process_limits = dict(process_limits or {})
        self._limits: dict[str, TransportLimits] = {}
        self._messages: dict[str, _Message] = {}
        self._feedback = DestinationFeedback(clock, lambda t: destination_params(config, t))
        self._scheduler: Scheduler[_Job] = Scheduler(
            self._start_job,
            self._scheduler_limits,
            window=self._feedback.window,
            wait=self._feedback.wait,
            clock=clock,
        )
        self._delay_warning = config.get_time("delay_warning_time")
        self._minimal_backoff = config.get_time("minimal_backoff_time")
        self._maximal_backoff = config.get_time("maximal_backoff_time")
        self._run_delay = config.get_time("queue_run_delay")
        # Transports whose mail waits for a flush (Postfix's defer_transports).
        self._defer_transports = frozenset(config.get_list("defer_transports"))
        # Messages a flush is taking (until activated or given up):
        # defer_transports does not hold them.
        self._flushing: set[str] = set()
        self._scan_call: LoopingCall | None = None
        self._running = False
        self._busy = 0  # jobs running plus bounces being queued
        self._stop_waiters: list[Deferred[None]] = []

    # limits ---------------------------------------------------------------

    def limits(self, transport: str) -> TransportLimits:
        limits = self._limits.get(transport)
        if limits is None:
            limits = transport_limits(self._config, transport, self._process_limits)
            self._limits[transport] = limits
        return limits

    def _scheduler_limits(self, transport: str) -> tuple[int, int]:
        limits = self.limits(transport)
        return limits.process_limit, limits.destination_concurrency

    # the service ----------------------------------------------------------

    def start(self) -> None:
        """Recover incoming/ and active/, scan deferred/ now and every queue_run_delay."""
        self._running = True
        self._scheduler.paused = False
        if not self._scan:
            return  # a worker: the master's queue manager recovers and scans
        # Half-written queue files (not marked ready in incoming/) of a process that
        # died writing them were never acknowledged: no process writes yet,
        # so every one found now is such a leftover (postsuper's cleanup).
        for name in self._store.remove_stale_temporaries(self._clock.seconds()):
            maillog("qmgr", f"removed unfinished queue file incoming/{name}")
        self._refill()
        scan = LoopingCall(self._scan_deferred)
        scan.clock = self._clock
        self._scan_call = scan
        scan.start(self._run_delay, now=True)

    def stop(self) -> Deferred[None]:
        """Stop scheduling; fire once the deliveries in flight are over.

        Jobs not yet started are dropped: their messages stay in active/
        and are delivered after the next start (at-least-once)."""
        self._running = False
        if self._scan_call is not None and self._scan_call.running:
            self._scan_call.stop()
        self._scan_call = None
        self._scheduler.paused = True
        self._scheduler.cancel_wakeups()
        if self._refill_call is not None and self._refill_call.active():
            self._refill_call.cancel()
        self._refill_call = None
        for job in self._scheduler.abandon():
            job.message.abandoned = True
            job.message.pending -= 1
        for message in list(self._messages.values()):
            if message.abandoned and message.pending == 0:
                self._drop(message)
        if self._busy == 0:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._stop_waiters.append(d)
        return d

    def flush(self) -> None:
        """Retry every deferred message now (``postqueue -f``); like Postfix's
        flush request, dead destinations are given another chance too."""
        self._feedback.revive_all()
        self._scan_deferred(force=True)

    def scan(self) -> None:
        """Scan deferred/ for messages that are due (a wakeup trigger)."""
        self._scan_deferred()

    def notify_new(self, queue_id: str, envelope: Envelope) -> None:
        """A message is durable in incoming/: activate and schedule it now.

        ``envelope`` is the one cleanup wrote (no re-read); qmgr takes
        ownership of it (it records done flags in it). Without room in the
        active queue the message waits in incoming/ for the next refill."""
        if not self._running or self._known(queue_id):
            return  # recovered from incoming/ by the next start
        if not self._has_room(len(envelope.recipients)):
            self._backlog = True
            return
        if self._claims is not None and not self._claims.claim(queue_id, "incoming"):
            return  # the master recovered it meanwhile (see recover_orphans)
        self._load(queue_id, "incoming", envelope)

    def queued(self, queue_id: str, envelope: Envelope) -> None:
        """IQueueTrigger: cleanup's trigger is :meth:`notify_new`."""
        self.notify_new(queue_id, envelope)

    # the active queue's limits ----------------------------------------------

    def _known(self, queue_id: str) -> bool:
        return queue_id in self._messages or queue_id in self._loading

    def _has_room(self, recipients: int = 1) -> bool:
        """Room for one more message with that many recipients (Postfix's
        qmgr_message_active_limit and qmgr_message_recipient_limit; a
        message alone in memory always fits)."""
        active = len(self._messages) + len(self._loading)
        if active >= self._active_limit:
            return False
        return active == 0 or self._recipients + recipients <= self._recipient_limit

    def _refill(self, sources: tuple[str, ...] = ("active", "incoming")) -> None:
        """Take messages from active/ and incoming/ while there is room (at
        start), or from incoming/ (when a message left a full active queue:
        active/ may still list files whose removal is pending)."""
        self._backlog = False
        for source in sources:
            for queue_id in self._store.list(source):
                if not self._running:
                    return
                if self._known(queue_id):
                    continue
                if not self._has_room():
                    self._backlog = True
                    return
                self._take(queue_id, source)

    def recover_orphans(self) -> None:
        """Take the messages in incoming/ and active/ that no live process
        owns (another reactor process died); needs ``claims``.

        The directories are listed after this process's own queued file
        changes (a message it settled has left active/ by then), and what
        it settles while the listing runs is skipped."""
        if not self._running or self._claims is None:
            return
        settled: set[str] = set()
        self._settling.append(settled)
        store = self._store

        def listing() -> list[tuple[str, list[str]]]:
            return [(source, store.list(source)) for source in ("incoming", "active")]

        def take(found: list[tuple[str, list[str]]]) -> None:
            self._settling.remove(settled)
            if not self._running:
                return
            for source, queue_ids in found:
                for queue_id in queue_ids:
                    if self._known(queue_id) or queue_id in settled:
                        continue
                    if not self._has_room():
                        self._backlog = True
                        return
                    self._take(queue_id, source)

        def failed(failure: Failure) -> None:
            if settled in self._settling:
                self._settling.remove(settled)
            _log.failure("qmgr: cannot look for orphaned queue files", failure)

        self._claims.after_pending(listing).addCallback(take).addErrback(failed)

    def _release(self, queue_id: str) -> None:
        if self._claims is not None:
            self._claims.release(queue_id)

    # loading --------------------------------------------------------------

    def _take(self, queue_id: str, source: str) -> None:
        """Read a queue file's records on a worker thread, move it to
        active/ and schedule it; quarantine it when corrupt. The file is
        read where it is *before* the move (IQueueStore applies changes
        later, in order: a read of active/ right after the move could miss
        the file)."""
        # deferred/ is the master's alone: only incoming/ and active/ are claimed.
        claimed = self._claims is not None and source != "deferred"
        if claimed and self._claims is not None and not self._claims.claim(queue_id, source):
            return  # a live process owns it
        store = self._store

        def read() -> Envelope:
            envelope, _content = store.read_envelope(queue_id, source)
            return envelope

        self._load(queue_id, source, self._read(read))

    def _load(self, queue_id: str, source: str, reading: Deferred[Envelope] | Envelope) -> None:
        """Once ``reading`` has the envelope (or with the envelope itself,
        cleanup's: no Deferred to wait on): move the file to active/
        (unless it is there), and once the move is applied, activate it.
        The file is claimed (when claims are used) and counts against the
        limits from now on."""
        self._loading.add(queue_id)
        counted = [0]

        def give_up() -> None:
            self._loading.discard(queue_id)
            self._flushing.discard(queue_id)
            self._recipients -= counted[0]
            counted[0] = 0
            self._release(queue_id)

        def read(envelope: Envelope) -> Deferred[None]:
            counted[0] = len(envelope.recipients)
            self._recipients += counted[0]
            move = (
                succeed(True)
                if source == "active"
                else self._store.move(queue_id, source, "active")
            )
            return move.addCallback(lambda ok: moved(ok, envelope))

        def moved(ok: bool, envelope: Envelope) -> None:
            if not ok:  # the store logged why; the next scan tries again
                give_up()
                return
            if not self._running:
                give_up()  # stays in active/: the next start recovers it
                return
            try:
                content = self._store.reference(queue_id, "active")
            except KeyError:
                # The store forgot the file's layout (a very long backlog):
                # read its records again, from active/ now.
                give_up()
                self._take(queue_id, "active")
                return
            self._loading.discard(queue_id)
            self._activate(queue_id, envelope, content)

        def failed(failure: Failure) -> None:
            if queue_id not in self._loading:  # a bug after activation
                _log.failure("{queue_id}: cannot activate", failure, queue_id=queue_id)
                return
            error = failure.value
            if isinstance(error, QueueFileError):
                self._store.quarantine(queue_id, source, str(error))
            elif isinstance(error, FileNotFoundError):
                pass  # settled or moved by another process meanwhile
            elif isinstance(error, OSError):
                maillog("qmgr", f"{queue_id}: cannot read queue file: {error}", LogLevel.warn)
            else:
                _log.failure("{queue_id}: cannot load queue file", failure, queue_id=queue_id)
            give_up()

        if isinstance(reading, Envelope):
            try:
                loaded = read(reading)
            except Exception:
                failed(Failure())
                return
            loaded.addErrback(failed)
            return
        reading.addCallback(read).addErrback(failed)

    def _scan_deferred(self, force: bool = False) -> None:
        if not self._running:
            return
        # Messages a dead process left that no worker exit announced (its
        # master was restarted meanwhile, a stop abandoned them...).
        self.recover_orphans()
        now = self._clock.seconds()
        next_attempt = self._store.next_attempt
        for queue_id in self._store.list("deferred"):
            if self._known(queue_id):
                continue
            if not self._has_room():
                break  # the next scan (or a flush) takes the rest
            if not force:
                try:
                    if next_attempt(queue_id) > now:
                        continue
                except (KeyError, OSError):
                    continue
            elif self._defer_transports:
                self._flushing.add(queue_id)
            self._take(queue_id, "deferred")

    # scheduling -----------------------------------------------------------

    def _activate(self, queue_id: str, envelope: Envelope, content: IMessageContent) -> None:
        now = self._clock.seconds()
        message = _Message(queue_id, envelope, content, now)
        self._messages[queue_id] = message
        recipients = envelope.recipients
        log_active(queue_id, envelope.sender, content.size, len(recipients))
        flushing = queue_id in self._flushing
        self._flushing.discard(queue_id)
        groups: dict[tuple[str, str], list[DeliveryRecipient]] = {}
        for index, rcpt in enumerate(recipients):
            if rcpt.done:
                continue
            try:
                resolution = self._resolver.resolve(rcpt.address)
            except TableError as e:
                self._qmgr_defer(message, rcpt, index, "4.3.0", f"address resolver failure: {e}")
                continue
            transport = resolution.transport
            if transport not in self._agents:
                self._qmgr_defer(message, rcpt, index, "4.3.0", "mail transport unavailable")
                continue
            if transport in self._defer_transports and not flushing:
                # Postfix's qmgr: held until a flush (postqueue -f, sendmail -q).
                self._qmgr_defer(message, rcpt, index, "4.3.2", "deferred transport")
                continue
            key = (transport, resolution.nexthop)
            entry = DeliveryRecipient(index, resolution.recipient, rcpt.original or rcpt.address)
            group = groups.get(key)
            if group is None:
                groups[key] = [entry]
            else:
                group.append(entry)
        jobs: list[_Job] = []
        for (transport, nexthop), members in groups.items():
            limits = self.limits(transport)
            size = limits.recipient_limit if limits.recipient_limit > 0 else len(members)
            for start in range(0, len(members), size):
                chunk = members[start : start + size]
                destination = chunk[0].address.lower() if limits.per_recipient else nexthop
                jobs.append(_Job(message, transport, nexthop, destination, chunk))
        message.pending = len(jobs)
        if not jobs:
            self._attempt_over(message)
            return
        for job in jobs:
            reason = self._feedback.dead_reason(job.transport, job.destination)
            if reason is not None:
                self._suspend(job, reason)
            else:
                self._scheduler.add(job)

    def _suspend(self, job: _Job, reason: str) -> None:
        """Defer a job not started because its destination is dead (Postfix:
        "delivery temporarily suspended: <last reason>")."""
        message = job.message
        now = self._clock.seconds()
        arrival = message.envelope.arrival_time
        text = f"delivery temporarily suspended: {reason}"
        for member in job.recipients:
            rcpt = message.envelope.recipients[member.index]
            log_delivery(
                "qmgr",
                message.queue_id,
                rcpt.address,
                member.original,
                "none",
                now - arrival,
                (message.active_time - arrival, now - message.active_time, 0.0, 0.0),
                "4.4.1",
                "deferred",
                text,
            )
            self._record_defer(message, member.index, "4.4.1", text)
            message.delayed.append((rcpt, RecipientStatus(member.index, "4.4.1", text)))
        message.pending -= 1
        if message.pending == 0:
            if message.abandoned:
                self._drop(message)
            else:
                self._attempt_over(message)

    def _qmgr_defer(
        self, message: _Message, rcpt: Recipient, index: int, status: str, reason: str
    ) -> None:
        """Defer one recipient without a delivery agent (logged by qmgr, relay=none)."""
        now = self._clock.seconds()
        arrival = message.envelope.arrival_time
        log_delivery(
            "qmgr",
            message.queue_id,
            rcpt.address,
            rcpt.original,
            "none",
            now - arrival,
            (message.active_time - arrival, now - message.active_time, 0.0, 0.0),
            status,
            "deferred",
            reason,
        )
        self._record_defer(message, index, status, reason)
        message.delayed.append((rcpt, RecipientStatus(index, status, reason)))

    def _record_defer(self, message: _Message, index: int, status: str, reason: str) -> None:
        message.deferred = True
        self._store.record_defer(message.queue_id, index, status, reason)  # a failure is logged

    def _start_job(self, job: _Job) -> None:
        message = job.message
        job.handoff = self._clock.seconds()
        self._feedback.started(job.transport, job.destination)
        agent = self._agents[job.transport]
        request = DeliveryRequest(
            message.queue_id,
            message.envelope,
            message.content,
            job.transport,
            job.nexthop,
            job.recipients,
        )
        self._busy += 1
        try:
            d = agent.deliver(request)
        except Exception:
            d = Deferred()
            d.errback(Failure())
        d.addCallbacks(self._job_done, self._job_failed, callbackArgs=(job,), errbackArgs=(job,))

    def _job_failed(self, failure: Failure, job: _Job) -> None:
        _log.failure(
            "{queue_id}: delivery agent {transport} failed (a bug)",
            failure,
            queue_id=job.message.queue_id,
            transport=job.transport,
        )
        statuses = [
            RecipientStatus(r.index, "4.3.0", "unknown mail transport error", relay="none")
            for r in job.recipients
        ]
        self._job_done(statuses, job)

    def _job_done(self, statuses: list[RecipientStatus], job: _Job) -> None:
        message = job.message
        queue_id = message.queue_id
        envelope = message.envelope
        now = self._clock.seconds()
        arrival = envelope.arrival_time
        delays = (
            message.active_time - arrival,
            job.handoff - message.active_time,
            0.0,
            now - job.handoff,
        )
        by_index = {s.index: s for s in statuses}
        service = job.transport
        dead_reason = self._destination_feedback(job, by_index)
        for member in job.recipients:
            status = by_index.get(member.index)
            if status is None:
                status = RecipientStatus(
                    member.index, "4.3.0", "delivery agent returned no status", relay="none"
                )
            rcpt = envelope.recipients[member.index]
            outcome = status.outcome
            marked = outcome == "sent" and self._mark_sent(message, member.index)
            timings = status.timings
            log_delivery(
                service,
                queue_id,
                rcpt.address,
                member.original,
                status.relay,
                now - arrival,
                # The agent's own connection-setup and transmission times,
                # when it measured them (smtp, lmtp), as Postfix's c/d.
                (delays[0], delays[1], *timings) if timings else delays,
                status.status,
                outcome,
                # Postfix logs the agent's text ("host X said: ... (in reply
                # to RCPT TO command)"), which carries the remote reply.
                status.reason or status.diagnostic,
            )
            if outcome == "sent":
                if not marked:
                    continue  # stays queued: delivered again (never lost)
                rcpt.done = True
                if wants_success(rcpt):
                    message.succeeded.append((rcpt, status))
            elif outcome == "deferred":
                self._record_defer(message, member.index, status.status, status.reason)
                message.delayed.append((rcpt, status))
            else:
                message.bounced.append((rcpt, status))
        self._busy -= 1
        message.pending -= 1
        if dead_reason is not None:
            for waiting in self._scheduler.drain(job.transport, job.destination):
                self._suspend(waiting, dead_reason)
        if message.pending == 0:
            if message.abandoned:
                self._drop(message)
            else:
                self._attempt_over(message)
        self._scheduler.finished(job)
        self._check_stopped()

    def _mark_sent(self, message: _Message, index: int) -> bool:
        """Mark a delivered recipient done in the queue file now, before its
        ``status=sent`` line is logged (unless the agent already did, as the
        Maildir writer does on its thread): one byte written in place, not
        synced, like Postfix's deliver_completed(); a process crash after
        this never repeats the delivery."""
        content = message.content
        if index in content.marked:
            return True
        try:
            content.mark_done(index)
        except (OSError, IndexError) as e:
            maillog("qmgr", f"{message.queue_id}: cannot mark recipient done: {e}", LogLevel.warn)
            return False
        return True

    def _destination_feedback(
        self, job: _Job, by_index: Mapping[int, RecipientStatus]
    ) -> str | None:
        """Tell the concurrency scheduler how the delivery went; the reason
        when the destination just died.

        A destination failure is a job whose every recipient was deferred
        without reaching a server (relay ``none``: connection refused, a
        4xx greeting, a timeout) — Postfix's site-level deferral. A 4xx to
        one RCPT from a live server is a success for the scheduler."""
        first: str | None = None
        for member in job.recipients:
            status = by_index.get(member.index)
            if status is None:
                continue
            if status.outcome != "deferred" or status.relay not in ("", "none"):
                self._feedback.success(job.transport, job.destination)
                return None
            if first is None:
                first = status.reason
        reason = "delivery failed" if first is None else first
        if self._feedback.failure(job.transport, job.destination, reason):
            maillog(
                "qmgr",
                f"{job.destination}: destination {job.transport} is dead for"
                f" {int(self._feedback.params(job.transport).dead_time)}s: {reason}",
                LogLevel.warn,
            )
            return reason
        return None

    # the end of an attempt ------------------------------------------------

    def _attempt_over(self, message: _Message) -> None:
        """Every job of the message is over: bounce, expire, defer or remove.

        What that needs from disk - the defer log's last reasons for an
        expiring message, whether the delay warning went out already, the
        head of the queue file for a notice - is read in one job of the
        read runner (a worker thread), never on the reactor."""
        envelope = message.envelope
        now = self._clock.seconds()
        expiring = message.deferred and now - envelope.arrival_time >= queue_lifetime(
            self._config, envelope.sender
        )
        # An expiring message is bounced, not warned about (_expire ends
        # its deferral).
        may_warn = not expiring and self._may_warn(message, now)
        if not (expiring or may_warn or message.bounced or message.succeeded):
            self._finish_attempt(message, b"", now)
            return
        self._busy += 1
        limit = self._bounce_size_limit
        content = message.content
        queue_id = message.queue_id
        # A notice returns the message (or its headers, within
        # bounce_size_limit): read that much before the file is removed or
        # moved.
        notice_now = bool(message.bounced or message.succeeded)

        def read_state() -> tuple[dict[int, tuple[str, str]] | None, bool, bytes]:
            reasons = self._last_reasons(queue_id) if expiring else None
            warned = self._warned(queue_id) if may_warn else True
            needed = notice_now or expiring or not warned
            return reasons, warned, head(content, limit + 1) if needed else b""

        def read(state: tuple[dict[int, tuple[str, str]] | None, bool, bytes]) -> None:
            reasons, warned, data = state
            self._busy -= 1
            if reasons is not None:
                self._expire(message, reasons)
            self._finish_attempt(message, data, now, warned)

        def unreadable(failure: Failure) -> None:
            maillog(
                "qmgr",
                f"{queue_id}: cannot read queue file for a notice: {failure.getErrorMessage()}",
                LogLevel.warn,
            )
            self._busy -= 1
            if expiring:
                self._expire(message, {})
            # Unsure whether it went out: Postfix prefers no warning to a
            # duplicate.
            self._finish_attempt(message, b"", now, warned=True)

        self._read(read_state).addCallbacks(read, unreadable)

    def _may_warn(self, message: _Message, now: float) -> bool:
        """Whether a delay warning is due now, unless one went out already."""
        return bool(
            message.delayed
            and message.deferred
            and self._delay_warning > 0
            and now - message.envelope.arrival_time >= self._delay_warning
        )

    def _finish_attempt(
        self, message: _Message, content: bytes, now: float, warned: bool = True
    ) -> None:
        """Notices queued (``content``: what they may return; ``warned``:
        the delay warning went out already, or is not due), then settle."""
        envelope = message.envelope
        self._notify(message, content, now, warned)
        if not message.bounced:
            self._settle(message)
            return
        self._busy += 1
        try:
            d = self._bouncer.bounce(message.queue_id, envelope, content, list(message.bounced))
        except Exception:
            d = Deferred()
            d.errback(Failure())
        d.addCallbacks(
            self._bounced, self._bounce_failed, callbackArgs=(message,), errbackArgs=(message,)
        )

    def _notify(self, message: _Message, content: bytes, now: float, warned: bool) -> None:
        """Queue the success DSN and, once, the delay warning (not waited for:
        their failure is logged and never holds the message back)."""
        envelope = message.envelope
        queue_id = message.queue_id
        notices: list[Deferred[str | None]] = []
        if message.succeeded:
            notices.append(self._bouncer.success(queue_id, envelope, content, message.succeeded))
            message.succeeded = []
        delayed = [(r, s) for r, s in message.delayed if not r.done]
        message.delayed = []
        if (
            delayed
            and message.deferred
            and self._delay_warning > 0
            and now - envelope.arrival_time >= self._delay_warning
            and not warned
        ):
            self._store.record_delay_warning(queue_id, now)  # a failure is logged
            notices.append(self._bouncer.delay_warning(queue_id, envelope, content, delayed))
        for d in notices:
            self._busy += 1
            d.addErrback(
                lambda f: _log.failure(
                    "{queue_id}: cannot queue a notification", f, queue_id=queue_id
                )
            )
            d.addBoth(self._notice_done)

    def _notice_done(self, _result: object) -> None:
        self._busy -= 1
        self._check_stopped()

    def _warned(self, queue_id: str) -> bool:
        """(Read runner) whether the delay warning went out already."""
        try:
            return self._store.delay_warning_sent(queue_id)
        except OSError:
            return True  # unsure: Postfix prefers no warning to a duplicate

    def _last_reasons(self, queue_id: str) -> dict[int, tuple[str, str]]:
        """(Read runner) each deferred recipient's last reason, by index."""
        try:
            return dict(self._store.defer_reasons(queue_id))
        except OSError:
            return {}

    def _expire(self, message: _Message, reasons: Mapping[int, tuple[str, str]]) -> None:
        """Past its lifetime: every deferred recipient is returned with its
        last reason (``reasons``, read from the defer log)."""
        queue_id = message.queue_id
        log_expired(queue_id, message.envelope.sender)
        bouncing = {id(r) for r, _ in message.bounced}
        for index, rcpt in enumerate(message.envelope.recipients):
            if rcpt.done or id(rcpt) in bouncing:
                continue
            status, reason = reasons.get(index, ("4.4.7", "message expired"))
            message.bounced.append((rcpt, RecipientStatus(index, status, reason)))
        message.deferred = False

    def _bounced(self, _new_id: str | None, message: _Message) -> None:
        queue_id = message.queue_id
        for rcpt, status in message.bounced:
            # The DSN is queued: the mark may come later, in order with the
            # removal (a crash before it repeats the bounce, never loses it).
            self._store.mark_done(queue_id, "active", status.index)
            rcpt.done = True
        message.bounced = []
        self._busy -= 1
        self._settle(message)
        self._check_stopped()

    def _bounce_failed(self, failure: Failure, message: _Message) -> None:
        _log.failure(
            "{queue_id}: cannot queue a non-delivery notification",
            failure,
            queue_id=message.queue_id,
        )
        # Keep the recipients queued: they are tried again, and bounced again.
        for _rcpt, status in message.bounced:
            self._record_defer(message, status.index, status.status, status.reason)
        message.bounced = []
        message.deferred = True
        self._busy -= 1
        self._settle(message)
        self._check_stopped()

    def _settle(self, message: _Message) -> None:
        queue_id = message.queue_id
        for settled in self._settling:
            settled.add(queue_id)
        if any(not r.done for r in message.envelope.recipients):
            now = self._clock.seconds()
            delay = backoff_delay(
                now, message.envelope.arrival_time, self._minimal_backoff, self._maximal_backoff
            )
            # Applied in this order, later (IQueueStore); a failure is logged.
            self._store.move(queue_id, "active", "deferred")
            self._store.set_next_attempt(queue_id, now + delay)
        else:
            self._store.remove(queue_id, "active")
            log_removed(queue_id)
        self._drop(message)

    def _drop(self, message: _Message) -> None:
        """The message leaves the active queue (settled, or abandoned by
        stop): release its claim, free its room, refill from incoming/."""
        queue_id = message.queue_id
        if self._messages.pop(queue_id, None) is None:
            return
        self._release(queue_id)
        self._recipients -= len(message.envelope.recipients)
        if self._backlog and self._running and self._refill_call is None:
            # Once per reactor turn, however many messages left in it.
            self._refill_call = self._clock.callLater(0, self._refill_later)

    def _refill_later(self) -> None:
        self._refill_call = None
        if self._running and self._has_room():
            self._refill(("incoming",))

    def _check_stopped(self) -> None:
        if self._busy == 0 and self._stop_waiters:
            waiters, self._stop_waiters = self._stop_waiters, []
            for d in waiters:
                d.callback(None)

    # introspection (tests, mailq) -----------------------------------------

    def in_flight(self) -> list[str]:
        """Queue ids of the messages qmgr holds in memory now."""
        return list(self._messages)
