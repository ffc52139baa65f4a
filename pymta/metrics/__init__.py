"""metrics: one OpenMetrics/Prometheus endpoint for the whole mail system.

Postfix has no metrics of its own (admins analyse its log); pymta's are
read from the same log. The master.cf service (pymta-only command
``metrics``, off unless a line names it)::

    127.0.0.1:9154  inet  n  -  n  -  -  metrics

serves ``GET /metrics`` over twisted.web (:mod:`pymta.metrics.web`). It
listens where its line says; a line with a port only listens on 127.0.0.1,
not on ``inet_interfaces``: metrics name users' traffic, so exposing them
beyond the host is the admin's explicit choice (an address, or ``*:9154``
for every interface).

Where the figures come from (no counter is added inside another part):

- messages received, delivered, deferred, bounced, expired and rejected,
  delivery delays, logins, auth failures, outbound TLS: the mail log events
  every part already emits (:mod:`pymta.metrics.events`; a twisted.logger
  observer on :data:`pymta.maillog.publisher` and on the global publisher
  for pop3d/imapd's session lines);
- sessions open and ended per protocol, and how many ended encrypted: a
  counting wrapper around each listener's factory
  (:mod:`pymta.metrics.sessions`), applied by :func:`pymta.service.build`;
- queue sizes: the queue directories, counted at scrape time in a thread
  (:mod:`pymta.metrics.queues`);
- the batch sizes of group commit (``pymta_sync_batch_size{barrier}``, a
  histogram of the durable pieces of work each sync covered, sampled from
  the barriers' ``batch_sizes``), and the time each batch's phases took
  (``pymta_sync_seconds{barrier,phase}``: ``wait`` from the oldest
  caller until the batch began on its thread, ``work``, ``sync``; from
  the barriers' ``timings``);
- syncs of the group-commit barriers (``pymta_syncs_total{barrier}``:
  ``queue`` and ``mailbox``; their ``syncs`` attribute, sampled): the
  messages received divided by the queue's syncs is the mean queue-sync
  batch. A histogram of batch sizes would need a hook inside
  :mod:`pymta.sync`; there is none;
- CPU and memory: ``pymta_cpu_seconds`` / ``pymta_resident_memory_bytes``
  summed over the live reactor processes, and prometheus-client's process
  collector (``process_*``) for the process that serves the endpoint.

Several reactor processes (``pymta_processes`` > 1, :mod:`pymta.master`):
each process counts its own events and sessions, in prometheus-client's
multiprocess mode: every process writes its values to memory-mapped files
of its own in ``$data_directory/metrics`` (``PROMETHEUS_MULTIPROC_DIR``,
set by each process before it creates a metric), and the master, the only
process that listens on the metrics port, adds the files of every process
up at each scrape (counters and histograms summed over all processes that
ever ran since the start, open sessions and CPU/memory over the live ones:
when the master logs a worker's death, that worker's live gauges are
dropped). The master empties the directory when it starts. A worker's
CPU, memory and sync figures are sampled every :data:`SAMPLE_INTERVAL`
seconds (the serving process samples its own at each scrape); everything
else is written as it happens. With one process, values stay in memory.

Untrusted input: HTTP requests (:mod:`pymta.metrics.web`) and the text of
log lines, which quotes the network (:mod:`pymta.metrics.events`). Writes:
``$data_directory/metrics/*.db`` with several processes. Logs: a failed
collection (with its traceback).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application import service
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, Logger, globalLogPublisher
from zope.interface import implementer

from pymta.config import Config
from pymta.config.master_cf import MasterService
from pymta.sync import ISyncBarrier

log = Logger(namespace="pymta.metrics")

#: Seconds between two samples of a process's CPU time and memory.
SAMPLE_INTERVAL = 5.0

#: Subdirectory of data_directory for the multiprocess files.
MULTIPROCESS_SUBDIRECTORY = "metrics"


def listen_interface(service: MasterService) -> str:
    """Where a metrics line listens: its host; 127.0.0.1 for a port alone
    (never ``inet_interfaces``); every interface for ``*:port``, as Postfix
    reads ``*``."""
    host, _ = service.listen_address()
    if host:
        return host
    return "" if service.name.startswith("*:") else "127.0.0.1"


def prepare_multiprocess(directory: str, *, empty: bool) -> None:
    """Make this process record into ``directory`` (prometheus-client's
    multiprocess mode); ``empty`` removes the files of an earlier run."""
    os.makedirs(directory, exist_ok=True)
    if empty:
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.unlink(os.path.join(directory, name))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from prometheus_client import values

    # prometheus-client picks its value class from the environment when it
    # is first imported; pymta imports it only after this, but an embedding
    # application may have done so earlier.
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()


class MetricsService(service.Service):
    """Records this reactor process's metrics while running; the master's
    also answers scrapes (:meth:`site`).

    ``multiprocess``: several reactor processes share the figures (see the
    module doc); ``serving``: this process listens (the master).
    """

    name = "metrics"

    def __init__(self, config: Config, reactor: Any, *, multiprocess: bool, serving: bool) -> None:
        self._reactor = reactor
        self._queue_directory = config.get("queue_directory")
        self._directory = (
            os.path.join(config.get("data_directory"), MULTIPROCESS_SUBDIRECTORY)
            if multiprocess
            else None
        )
        self._serving = serving
        self.metrics: Any = None  # MailMetrics, made at start (after privileges drop)
        self._registry: Any = None
        self._classifier: Any = None
        self._sampler: LoopingCall | None = None
        self._observing = False
        self._observers: tuple[ILogObserver, ...] = ()
        self._barriers: dict[str, ISyncBarrier] = {}
        self._syncs_seen: dict[str, int] = {}
        self._batches_seen: dict[str, dict[int, int]] = {}
        self._sample_lock = threading.Lock()

    # -- life cycle -------------------------------------------------------------

    def startService(self) -> None:
        # Files of the multiprocess mode are made here, not at build: twistd
        # has dropped privileges by now, so the workers can write beside them.
        if self._directory is not None:
            prepare_multiprocess(self._directory, empty=self._serving)
        from prometheus_client import CollectorRegistry

        from pymta.maillog import publisher
        from pymta.metrics.events import EventClassifier
        from pymta.metrics.families import MailMetrics

        if self.metrics is None:
            self._registry = CollectorRegistry()
            self.metrics = MailMetrics(self._registry)
            self._classifier = EventClassifier()
        self._observers = (_Observer(self.observe), _Observer(self.observe_sessions))
        publisher.addObserver(self._observers[0])
        globalLogPublisher.addObserver(self._observers[1])
        self._observing = True
        self._sampler = LoopingCall(self.sample)
        self._sampler.clock = self._reactor
        self._sampler.start(SAMPLE_INTERVAL, now=True)
        super().startService()

    def stopService(self) -> None:
        super().stopService()
        if self._sampler is not None and self._sampler.running:
            self._sampler.stop()
        self._sampler = None
        if self._observing:
            from pymta.maillog import publisher

            publisher.removeObserver(self._observers[0])
            globalLogPublisher.removeObserver(self._observers[1])
            self._observing = False

    # -- recording ----------------------------------------------------------------

    def observe(self, event: dict[str, Any]) -> None:
        """A twisted.logger observer of the mail log events."""
        if not event.get("pymta_maillog"):
            return
        self._apply(event)

    def observe_sessions(self, event: dict[str, Any]) -> None:
        """A twisted.logger observer of pop3d/imapd's session lines (global log)."""
        if event.get("pymta_pop3") or event.get("pymta_imap"):
            self._apply(event)

    def _apply(self, event: dict[str, Any]) -> None:
        for observation in self._classifier.classify(event):
            if observation.metric == "process_exited":
                if self._directory is not None and self._serving:
                    from prometheus_client import multiprocess

                    multiprocess.mark_process_dead(int(observation.value), self._directory)
                continue
            self.metrics.apply(observation)

    def watch_syncs(self, barriers: Mapping[str, ISyncBarrier]) -> None:
        """Count the syncs of these group-commit barriers (pymta.sync),
        by name: their ``syncs`` attribute, read at each sample."""
        self._barriers.update(barriers)

    def sample(self) -> None:
        """This process's CPU, memory and syncs since the last sample (on the
        timer, and at a scrape in the serving process: either thread)."""
        if self.metrics is None:
            return
        with self._sample_lock:
            self.metrics.sample_process()
            for name, barrier in self._barriers.items():
                syncs = int(barrier.syncs)
                new = syncs - self._syncs_seen.get(name, 0)
                self._syncs_seen[name] = syncs
                self.metrics.syncs.labels(barrier=name).inc(max(new, 0))
                self._sample_batches(name, barrier)
                self._sample_timings(name, barrier)

    def _sample_batches(self, name: str, barrier: ISyncBarrier) -> None:
        """Observe the batch sizes this barrier synced since the last sample."""
        sizes = barrier.batch_sizes
        seen = self._batches_seen.setdefault(name, {})
        histogram = self.metrics.sync_batch.labels(barrier=name)
        for size, count in list(sizes.items()):  # one C-level copy: thread-safe
            for _ in range(count - seen.get(size, 0)):
                histogram.observe(size)
            seen[size] = count

    def _sample_timings(self, name: str, barrier: ISyncBarrier) -> None:
        """Observe the phase durations this barrier's batches appended
        since the last sample (a deque: its thread appends, we take)."""
        timings = barrier.timings
        histograms: dict[str, Any] = {}
        while True:
            try:
                phase, seconds = timings.popleft()
            except IndexError:
                return
            histogram = histograms.get(phase)
            if histogram is None:
                histogram = histograms[phase] = self.metrics.sync_seconds.labels(
                    barrier=name, phase=phase
                )
            histogram.observe(seconds)

    def count_sessions(self, factory: Any, command: str) -> Any:
        """``factory`` of a master.cf ``command`` listener, with its sessions counted."""
        from pymta.metrics.sessions import PROTOCOLS, SessionCountingFactory

        return SessionCountingFactory(factory, PROTOCOLS[command], _LateMetrics(self))

    # -- serving ------------------------------------------------------------------

    def registry(self) -> Any:
        """What a scrape exposes (called in a thread)."""
        from prometheus_client import CollectorRegistry, ProcessCollector
        from prometheus_client.multiprocess import MultiProcessCollector

        from pymta.metrics.queues import QueueCollector

        self.sample()  # this process's figures, fresh
        registry = CollectorRegistry()
        if self._directory is not None:
            MultiProcessCollector(registry, path=self._directory)
        elif self._registry is not None:
            registry.register(_Forward(self._registry))
        registry.register(QueueCollector(self._queue_directory))
        ProcessCollector(registry=registry)
        return registry

    def site(self) -> Any:
        """The twisted.web Site that serves ``/metrics``."""
        from pymta.metrics.web import metrics_site

        return metrics_site(self.registry, self._reactor)


@implementer(ILogObserver)
class _Observer:
    """A twisted.logger observer calling one method."""

    def __init__(self, call: Callable[[dict[str, Any]], None]) -> None:
        self._call = call

    def __call__(self, event: dict[str, Any]) -> None:
        self._call(event)


class _LateMetrics:
    """The service's MailMetrics, looked up when a session starts or ends
    (the listeners are built before the service starts and makes them)."""

    def __init__(self, owner: MetricsService) -> None:
        self._owner = owner

    def session_opened(self, protocol: str) -> bool:
        if self._owner.metrics is None:
            return False
        return bool(self._owner.metrics.session_opened(protocol))

    def session_closed(self, protocol: str, tls: bool) -> None:
        if self._owner.metrics is not None:
            self._owner.metrics.session_closed(protocol, tls)


class _Forward:
    """A collector that yields what another registry collects."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    def collect(self) -> Any:
        return self._registry.collect()
