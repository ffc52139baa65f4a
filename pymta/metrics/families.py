"""The metric families pymta exports, and how an observation changes them.

One :class:`MailMetrics` per reactor process holds every counter, gauge and
histogram that log events and sessions feed (the queue sizes are read at
scrape time by :mod:`pymta.metrics.queues`). Names follow the Prometheus
conventions: ``_total`` on counters (added by prometheus-client), base
units (seconds, bytes). Gauges say how they add up across reactor
processes (``multiprocess_mode``): open sessions, CPU and memory are sums
over the live processes.

Writes: with prometheus-client's multiprocess mode on, each value goes to
this process's files under ``PROMETHEUS_MULTIPROC_DIR`` (see
:mod:`pymta.metrics`). Logs nothing.
"""

from __future__ import annotations

import os
import resource
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pymta.metrics.events import Observation

#: Delivery delays span milliseconds (local mailboxes) to days (retries).
SYNC_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SYNC_SECONDS_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
DELAY_BUCKETS = (
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4 * 3600.0,
    86400.0,
    5 * 86400.0,
)


class MailMetrics:
    """Every metric a reactor process records, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.messages_received = Counter(
            "pymta_messages_received",
            "New queue files made by cleanup, by origin (smtp or local: bounces, submissions)",
            ["origin"],
            registry=r,
        )
        self.messages_delivered = Counter(
            "pymta_messages_delivered",
            "Recipients delivered (status=sent), by transport",
            ["transport"],
            registry=r,
        )
        self.messages_deferred = Counter(
            "pymta_messages_deferred",
            "Recipient delivery attempts deferred (status=deferred), by transport and reason",
            ["transport", "reason"],
            registry=r,
        )
        self.messages_bounced = Counter(
            "pymta_messages_bounced",
            "Recipients bounced (status=bounced), by transport and reason",
            ["transport", "reason"],
            registry=r,
        )
        self.messages_expired = Counter(
            "pymta_messages_expired",
            "Messages returned to sender after maximal_queue_lifetime",
            registry=r,
        )
        self.messages_rejected = Counter(
            "pymta_messages_rejected",
            "SMTP commands refused by smtpd restrictions and limits (NOQUEUE: reject), "
            "by stage and reason",
            ["stage", "reason"],
            registry=r,
        )
        self.delivery_delay_seconds = Histogram(
            "pymta_delivery_delay_seconds",
            "Time from arrival to the end of a delivery attempt (the delay= of status= lines)",
            ["status"],
            buckets=DELAY_BUCKETS,
            registry=r,
        )
        self.sessions_open = Gauge(
            "pymta_sessions_open",
            "Client sessions open now, by protocol",
            ["protocol"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.sessions = Counter(
            "pymta_sessions",
            "Client sessions ended, by protocol",
            ["protocol"],
            registry=r,
        )
        self.tls_sessions = Counter(
            "pymta_tls_sessions",
            "Client sessions that ended encrypted (STARTTLS, STLS or implicit TLS), by protocol",
            ["protocol"],
            registry=r,
        )
        self.outbound_tls_sessions = Counter(
            "pymta_outbound_tls_sessions",
            "SMTP client connections that started TLS, by transport and trust",
            ["transport", "trust"],
            registry=r,
        )
        self.logins = Counter(
            "pymta_logins",
            "Successful POP3 and IMAP logins, by protocol",
            ["protocol"],
            registry=r,
        )
        self.auth_failures = Counter(
            "pymta_auth_failures",
            "Failed authentication attempts, by protocol",
            ["protocol"],
            registry=r,
        )
        self.syncs = Counter(
            "pymta_syncs",
            "Group commits (one syncfs, or the fsyncs of one batch) made by each sync barrier",
            ["barrier"],
            registry=r,
        )
        self.sync_batch = Histogram(
            "pymta_sync_batch_size",
            "Pieces of durable work (queue files, mailbox writes) made durable by one sync",
            ["barrier"],
            buckets=SYNC_BATCH_BUCKETS,
            registry=r,
        )
        self.sync_seconds = Histogram(
            "pymta_sync_seconds",
            "Phases of each durable group-commit batch: wait (from the oldest"
            " caller until the batch began), work (its file work), sync; and the"
            " queue's intake log checkpoints (checkpoint)",
            ["barrier", "phase"],
            buckets=SYNC_SECONDS_BUCKETS,
            registry=r,
        )
        self.reactor_processes = Gauge(
            "pymta_reactor_processes",
            "Reactor processes running (the master and its workers)",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.cpu_seconds = Gauge(
            "pymta_cpu_seconds",
            "User and system CPU time used by the live reactor processes",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.resident_memory_bytes = Gauge(
            "pymta_resident_memory_bytes",
            "Resident memory of the live reactor processes",
            multiprocess_mode="livesum",
            registry=r,
        )
        self._families: dict[str, Any] = {
            "messages_received": self.messages_received,
            "messages_delivered": self.messages_delivered,
            "messages_deferred": self.messages_deferred,
            "messages_bounced": self.messages_bounced,
            "messages_expired": self.messages_expired,
            "messages_rejected": self.messages_rejected,
            "delivery_delay_seconds": self.delivery_delay_seconds,
            "outbound_tls_sessions": self.outbound_tls_sessions,
            "logins": self.logins,
            "auth_failures": self.auth_failures,
        }
        for protocol in ("smtp", "pop3", "imap"):
            # Present (at 0) from the start, so that rate() sees the first session.
            self.sessions_open.labels(protocol=protocol)
            self.sessions.labels(protocol=protocol)

    def apply(self, observation: Observation) -> None:
        """Change the family the observation names (KeyError for an unknown one)."""
        family = self._families[observation.metric]
        child = family.labels(**observation.label_map()) if observation.labels else family
        if isinstance(family, Histogram):
            child.observe(observation.value)
        else:
            child.inc(observation.value)

    def session_opened(self, protocol: str) -> bool:
        self.sessions_open.labels(protocol=protocol).inc()
        return True

    def session_closed(self, protocol: str, tls: bool) -> None:
        self.sessions_open.labels(protocol=protocol).dec()
        self.sessions.labels(protocol=protocol).inc()
        if tls:
            self.tls_sessions.labels(protocol=protocol).inc()

    def sample_process(self) -> None:
        """This process's CPU and memory, now (cheap: no disk, /proc is in memory)."""
        times = os.times()
        self.reactor_processes.set(1)
        self.cpu_seconds.set(times.user + times.system)
        self.resident_memory_bytes.set(resident_memory_bytes())


def resident_memory_bytes() -> int:
    """The resident set size of this process (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
