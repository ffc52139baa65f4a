"""pymta.metrics without sockets: the log-line → metric mapping, the session
counter on a StringTransport, the queue sizes, the /metrics resource on a
DummyRequest, and which build() wires a metrics service in."""

from __future__ import annotations

import collections
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import directlyProvides

from pymta.config import Config
from pymta.config.master_cf import parse_master_cf
from pymta.maillog import maillog
from pymta.metrics import MetricsService
from pymta.metrics.events import EventClassifier, Observation, reason_class
from pymta.metrics.families import MailMetrics
from pymta.metrics.queues import QueueCollector
from pymta.metrics.sessions import SessionCountingFactory
from tests.harness import DEFAULT_MAIN_CF, DEFAULT_MASTER_CF


def maillog_event(service: str, text: str) -> dict[str, Any]:
    return {"pymta_maillog": True, "service": service, "text": text}


def obs(metric: str, value: float = 1.0, **labels: str) -> Observation:
    return Observation(metric, tuple(labels.items()), value)


# -- the mapping -----------------------------------------------------------------

CASES: list[tuple[str, str, list[Observation]]] = [
    (
        "virtual",
        "4F2A9C0B1D: to=<alice@example.test>, relay=virtual, delay=0.12, "
        "delays=0.01/0/0/0.11, dsn=2.0.0, status=sent (delivered to maildir)",
        [
            obs("messages_delivered", transport="virtual"),
            obs("delivery_delay_seconds", 0.12, status="sent"),
        ],
    ),
    (
        "smtp",
        "4F2A9C0B1D: to=<bob@remote.test>, orig_to=<b@remote.test>, relay=mx.remote.test"
        "[192.0.2.1]:25, delay=125, delays=0.1/0/5/120, dsn=4.4.2, status=deferred "
        "(lost connection with mx.remote.test[192.0.2.1] while sending end of data)",
        [
            obs("messages_deferred", transport="smtp", reason="network"),
            obs("delivery_delay_seconds", 125.0, status="deferred"),
        ],
    ),
    (
        "virtual",
        "4F2A9C0B1D: to=<nobody@example.test>, relay=virtual, delay=0.01, "
        'delays=0/0/0/0.01, dsn=5.1.1, status=bounced (unknown user: "nobody@example.test")',
        [
            obs("messages_bounced", transport="virtual", reason="address"),
            obs("delivery_delay_seconds", 0.01, status="bounced"),
        ],
    ),
    (
        "qmgr",
        "4F2A9C0B1D: to=<a@b.test>, relay=none, delay=3, delays=3/0/0/0, dsn=4.4.1, "
        "status=deferred (delivery temporarily suspended: connection refused)",
        [
            obs("messages_deferred", transport="qmgr", reason="network"),
            obs("delivery_delay_seconds", 3.0, status="deferred"),
        ],
    ),
    (
        "qmgr",
        "4F2A9C0B1D: from=<a@b.test>, status=expired, returned to sender",
        [obs("messages_expired")],
    ),
    ("cleanup", "4F2A9C0B1D: message-id=<x@y>", [obs("messages_received", origin="local")]),
    (
        "smtpd",
        "NOQUEUE: reject: RCPT from unknown[192.0.2.7]: 554 5.7.1 <x@elsewhere.test>: "
        "Relay access denied; from=<a@b.test> to=<x@elsewhere.test> proto=ESMTP helo=<c>",
        [obs("messages_rejected", stage="rcpt", reason="policy")],
    ),
    (
        "smtpd",
        "NOQUEUE: reject: MAIL from unknown[::1]: 452 4.3.4 Message size exceeds fixed "
        "limit; proto=ESMTP helo=<c>",
        [obs("messages_rejected", stage="mail", reason="system")],
    ),
    (
        "smtpd",
        "Connection concurrency limit exceeded: 51 from unknown[192.0.2.7] for service smtpd",
        [obs("messages_rejected", stage="connect", reason="policy")],
    ),
    (
        "smtpd",
        "unknown[192.0.2.7]: SASL PLAIN authentication failed: authentication failure",
        [obs("auth_failures", protocol="smtp")],
    ),
    ("smtpd", "unknown[192.0.2.7]: SASL LOGIN authentication failed: temporary failure", []),
    (
        "relay",
        "Verified TLS connection established to mx.remote.test[192.0.2.1]:25: TLSv1.3",
        [obs("outbound_tls_sessions", transport="relay", trust="verified")],
    ),
    ("master", "process pymta/worker pid 4242 killed by signal 9", [obs("process_exited", 4242.0)]),
    ("master", "process pymta/worker pid 4243 exit status 1", [obs("process_exited", 4243.0)]),
    # Lines that count nothing.
    ("smtpd", "connect from unknown[192.0.2.7]", []),
    (
        "smtpd",
        "disconnect from unknown[192.0.2.7] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
        [],
    ),
    ("qmgr", "4F2A9C0B1D: from=<a@b.test>, size=300, nrcpt=1 (queue active)", []),
    ("qmgr", "4F2A9C0B1D: removed", []),
    # A recipient that imitates a status line does not make a second one.
    (
        "virtual",
        '4F2A9C0B1D: to=<"x, relay=y, delay=1, delays=1/0/0/0, dsn=5.0.0, status=bounced ("'
        "@example.test>, relay=virtual, delay=0.5, delays=0/0/0/0.5, dsn=2.0.0, "
        "status=sent (delivered to maildir)",
        [
            obs("messages_delivered", transport="virtual"),
            obs("delivery_delay_seconds", 0.5, status="sent"),
        ],
    ),
]


@pytest.mark.parametrize(("service", "text", "expected"), CASES)
def test_mail_log_lines_map_to_observations(
    service: str, text: str, expected: list[Observation]
) -> None:
    """Each Postfix-format mail log line makes exactly the observations the
    module documents (transport from the logging service, reason from the
    RFC 3463 subject of the DSN), and other lines make none."""
    assert EventClassifier().classify(maillog_event(service, text)) == expected


def test_received_over_smtp_is_told_by_the_client_line() -> None:
    """cleanup's message-id= line counts as received over SMTP when smtpd's
    client= line named the same queue id first, and as local otherwise (a
    bounce, a local submission); the remembered id is used once."""
    classifier = EventClassifier()
    assert classifier.classify(maillog_event("smtpd", "AAA111: client=unknown[192.0.2.7]")) == []
    assert classifier.classify(maillog_event("cleanup", "BBB222: message-id=<b@x>")) == [
        obs("messages_received", origin="local")
    ]
    assert classifier.classify(maillog_event("cleanup", "AAA111: message-id=<a@x>")) == [
        obs("messages_received", origin="smtp")
    ]
    assert classifier.classify(maillog_event("cleanup", "AAA111: message-id=<a@x>")) == [
        obs("messages_received", origin="local")
    ]


def test_pop3_and_imap_session_lines_count_logins_and_failed_attempts() -> None:
    """Dovecot-style lines: a Login counts a login; a session that ends
    before login after N failed attempts counts N auth failures; one that
    ends with no attempt, or that was logged out, counts nothing."""
    classifier = EventClassifier()

    def pop3(line: str) -> list[Observation]:
        return classifier.classify({"pymta_pop3": True, "service": "pop3-login", "line": line})

    def imap(line: str) -> list[Observation]:
        return classifier.classify({"pymta_imap": True, "service": "imap-login", "line": line})

    tail = "rip=127.0.0.1, lip=127.0.0.1, session=<abc>"
    assert pop3(f"pop3-login: Login: user=<a@b>, method=PLAIN, {tail}") == [
        obs("logins", protocol="pop3")
    ]
    assert imap(
        f"imap-login: Disconnected (auth failed, 3 attempts in 9 secs): user=<a@b>, {tail}"
    ) == [obs("auth_failures", 3.0, protocol="imap")]
    assert imap(f"imap-login: Disconnected (no auth attempts in 0 secs): {tail}") == []
    assert pop3("pop3(a@b)<1><abc>: Disconnected: Logged out top=0/0, retr=0/0") == []


def test_reason_class_follows_rfc_3463_subjects() -> None:
    """The subject digit names the class; anything unknown is 'other'."""
    assert [reason_class(d) for d in ("5.1.1", "4.2.2", "4.3.0", "4.4.1", "5.5.2")] == [
        "address",
        "mailbox",
        "system",
        "network",
        "protocol",
    ]
    assert [reason_class(d) for d in ("5.6.0", "5.7.1", "4.0.0", "4.9.9", "junk")] == [
        "content",
        "policy",
        "other",
        "other",
        "other",
    ]


def test_observations_change_the_named_families() -> None:
    """apply() increments counters by the observation's value and feeds
    histograms; the exported names carry _total and the labels."""
    registry = CollectorRegistry()
    metrics = MailMetrics(registry)
    metrics.apply(obs("messages_delivered", transport="virtual"))
    metrics.apply(obs("messages_delivered", transport="virtual"))
    metrics.apply(obs("auth_failures", 3.0, protocol="imap"))
    metrics.apply(obs("delivery_delay_seconds", 0.12, status="sent"))
    metrics.apply(obs("messages_expired"))
    value = registry.get_sample_value
    assert value("pymta_messages_delivered_total", {"transport": "virtual"}) == 2.0
    assert value("pymta_auth_failures_total", {"protocol": "imap"}) == 3.0
    assert value("pymta_delivery_delay_seconds_bucket", {"status": "sent", "le": "0.1"}) == 0.0
    assert value("pymta_delivery_delay_seconds_bucket", {"status": "sent", "le": "0.5"}) == 1.0
    assert value("pymta_delivery_delay_seconds_sum", {"status": "sent"}) == 0.12
    assert value("pymta_messages_expired_total") == 1.0
    with pytest.raises(KeyError):
        metrics.apply(obs("no_such_family"))


# -- sessions ----------------------------------------------------------------------


class Recorder(Protocol):
    def __init__(self) -> None:
        self.events: list[str] = []

    def connectionMade(self) -> None:
        self.events.append("made")

    def connectionLost(self, reason: Any = None) -> None:
        self.events.append("lost")


def test_sessions_are_counted_around_the_protocol() -> None:
    """The wrapped factory builds the part's own protocol on the real
    transport; opening and closing a session move the open gauge and count
    the session once, and a session that ended encrypted counts as TLS."""
    registry = CollectorRegistry()
    metrics = MailMetrics(registry)
    factory = SessionCountingFactory(Factory.forProtocol(Recorder), "pop3", metrics)
    value = registry.get_sample_value

    first = factory.buildProtocol(None)  # type: ignore[arg-type]
    second = factory.buildProtocol(None)  # type: ignore[arg-type]
    assert isinstance(first, Recorder) and isinstance(second, Recorder)
    plain, encrypted = StringTransport(), StringTransport()
    first.makeConnection(plain)
    second.makeConnection(encrypted)
    assert first.transport is plain  # no wrapper between protocol and socket
    assert value("pymta_sessions_open", {"protocol": "pop3"}) == 2.0
    directlyProvides(encrypted, ISSLTransport)  # what Twisted's startTLS does
    first.connectionLost(None)
    second.connectionLost(None)
    assert first.events == ["made", "lost"] and second.events == ["made", "lost"]
    assert value("pymta_sessions_open", {"protocol": "pop3"}) == 0.0
    assert value("pymta_sessions_total", {"protocol": "pop3"}) == 2.0
    assert value("pymta_tls_sessions_total", {"protocol": "pop3"}) == 1.0


def test_an_implicit_tls_session_counts_as_tls() -> None:
    """When the listener's factory builds a TLS protocol (wrapper mode), the
    session ended encrypted although its TCP transport never started TLS;
    it is counted once although that protocol runs connectionMade twice
    and may repeat connectionLost."""
    registry = CollectorRegistry()
    factory = SessionCountingFactory(Factory.forProtocol(Recorder), "imap", MailMetrics(registry))
    protocol = factory.buildProtocol(None)  # type: ignore[arg-type]
    assert protocol is not None
    # As twisted.protocols.tls.TLSMemoryBIOProtocol, which a wrapper-mode
    # listener (imapd_tls_wrappermode) builds: the protocol is the TLS transport.
    directlyProvides(protocol, ISSLTransport)
    protocol.makeConnection(StringTransport())
    protocol.connectionMade()  # as TLSMemoryBIOProtocol.makeConnection does, twice
    assert registry.get_sample_value("pymta_sessions_open", {"protocol": "imap"}) == 1.0
    protocol.connectionLost(None)  # type: ignore[arg-type]
    protocol.connectionLost(None)  # type: ignore[arg-type]  # the TLS layer may repeat it
    assert registry.get_sample_value("pymta_sessions_open", {"protocol": "imap"}) == 0.0
    assert registry.get_sample_value("pymta_sessions_total", {"protocol": "imap"}) == 1.0
    assert registry.get_sample_value("pymta_tls_sessions_total", {"protocol": "imap"}) == 1.0


def test_the_counting_factory_stands_for_the_part_factory() -> None:
    """Attributes read or set on the wrapper are the part's factory's (what
    a listener's owner sees is the part's state); a factory that refuses a
    connection (buildProtocol returns None) counts nothing."""
    registry = CollectorRegistry()
    inner = Factory.forProtocol(Recorder)
    wrapper = SessionCountingFactory(inner, "imap", MailMetrics(registry))
    wrapper.timeout = 30
    assert inner.timeout == 30  # type: ignore[attr-defined]
    assert wrapper.protocol is Recorder
    inner.buildProtocol = lambda addr: None  # type: ignore[method-assign]
    assert wrapper.buildProtocol(None) is None  # type: ignore[arg-type]
    assert registry.get_sample_value("pymta_sessions_open", {"protocol": "imap"}) == 0.0


# -- queue sizes ---------------------------------------------------------------------


def test_queue_sizes_count_queue_files_only(tmp_path: Path) -> None:
    """Each queue directory counts the names that are queue ids, and
    incoming only the files marked ready (not one being written: mode 0600,
    nor an older pymta's ID.tmp); a missing directory is empty; maildrop is
    reported only when it exists."""
    for queue, names in {
        "incoming": ["4F2A9C0B1D", "4F2A9C0B1E.tmp", "4F2A9C0B1C"],
        "deferred": ["4F2A9C0B1F", "4F2A9C0B20", "4F2A9C0B21"],
        "hold": [],
    }.items():
        (tmp_path / queue).mkdir()
        for name in names:
            (tmp_path / queue / name).write_bytes(b"")
            (tmp_path / queue / name).chmod(0o700)
    (tmp_path / "incoming" / "4F2A9C0B1C").chmod(0o600)  # still being written
    registry = CollectorRegistry()
    registry.register(QueueCollector(str(tmp_path)))
    sizes = {
        queue: registry.get_sample_value("pymta_queue_messages", {"queue": queue})
        for queue in ("incoming", "active", "deferred", "hold", "corrupt", "maildrop")
    }
    assert sizes == {
        "incoming": 1.0,
        "active": 0.0,
        "deferred": 3.0,
        "hold": 0.0,
        "corrupt": 0.0,
        "maildrop": None,
    }
    (tmp_path / "maildrop").mkdir()
    (tmp_path / "maildrop" / "anything").write_bytes(b"")
    assert registry.get_sample_value("pymta_queue_messages", {"queue": "maildrop"}) == 1.0


# -- the service and its resource -----------------------------------------------------


class SynchronousPool:
    """A thread pool that runs the work at once (deterministic tests)."""

    def callInThreadWithCallback(
        self, on_result: Callable[[bool, Any], None], f: Callable[..., Any], *a: Any, **kw: Any
    ) -> None:
        try:
            result = f(*a, **kw)
        except Exception:
            from twisted.python.failure import Failure

            on_result(False, Failure())
        else:
            on_result(True, result)


class FakeReactor:
    """callFromThread runs at once; timers are a task.Clock's."""

    def __init__(self) -> None:
        from twisted.internet.task import Clock

        self.clock = Clock()
        self.pool = SynchronousPool()

    def getThreadPool(self) -> SynchronousPool:
        return self.pool

    def callFromThread(self, f: Callable[..., Any], *a: Any, **kw: Any) -> None:
        f(*a, **kw)

    def callLater(self, delay: float, f: Callable[..., Any], *a: Any, **kw: Any) -> Any:
        return self.clock.callLater(delay, f, *a, **kw)

    def seconds(self) -> float:
        return self.clock.seconds()

    def addSystemEventTrigger(self, *args: Any) -> None:
        pass  # build() asks for shutdown hooks; nothing runs here


def make_config(root: Path) -> Config:
    return Config.from_text(DEFAULT_MAIN_CF.format(root=root))


def content_type(request: DummyRequest) -> bytes:
    return (request.responseHeaders.getRawHeaders(b"content-type") or [b""])[0]


def render(site: Any, path: bytes, accept: str = "") -> DummyRequest:
    request = DummyRequest(path.strip(b"/").split(b"/"))
    request.path = path  # type: ignore[attr-defined]
    if accept:
        request.requestHeaders.setRawHeaders(b"accept", [accept])
    resource = site.getResourceFor(request)
    result = resource.render(request)
    if isinstance(result, bytes):
        request.write(result)
        request.finish()
    return request


def test_service_counts_mail_log_events_while_running(tmp_path: Path) -> None:
    """A started MetricsService counts the events parts log through
    pymta.maillog; a stopped one no longer listens; /metrics shows the
    counters, the queue sizes and the process figures."""
    reactor = FakeReactor()
    service = MetricsService(make_config(tmp_path), reactor, multiprocess=False, serving=True)
    service.startService()
    line = (
        "AB12CD34EF: to=<alice@example.test>, relay=virtual, delay=0.2, "
        "delays=0/0/0/0.2, dsn=2.0.0, status=sent (delivered to maildir)"
    )
    try:
        maillog("virtual", line)
    finally:
        service.stopService()
    maillog("virtual", line)  # not counted: the service stopped
    request = render(service.site(), b"/metrics")
    assert request.finished
    text = b"".join(request.written).decode()
    assert 'pymta_messages_delivered_total{transport="virtual"} 1.0' in text
    assert 'pymta_queue_messages{queue="deferred"} 0.0' in text
    assert "pymta_reactor_processes 1.0" in text
    assert "process_cpu_seconds_total" in text
    assert content_type(request).startswith(b"text/plain")


def test_resource_speaks_openmetrics_when_asked_and_404s_elsewhere(tmp_path: Path) -> None:
    """Accept: application/openmetrics-text gets the OpenMetrics format (with
    its # EOF); / names the endpoint; another path is 404."""
    service = MetricsService(make_config(tmp_path), FakeReactor(), multiprocess=False, serving=True)
    service.startService()
    service.stopService()
    site = service.site()
    request = render(site, b"/metrics", "application/openmetrics-text; version=1.0.0")
    assert content_type(request).startswith(b"application/openmetrics-text")
    assert b"".join(request.written).endswith(b"# EOF\n")
    assert b"/metrics" in b"".join(render(site, b"/").written)
    assert render(site, b"/other").responseCode == 404


def _build(root: Path, master_cf: str) -> Any:
    from pymta.service import build

    (root / "etc").mkdir(parents=True, exist_ok=True)
    config = make_config(root).with_overrides({"config_directory": str(root / "etc")})
    return build(config, parse_master_cf(master_cf), FakeReactor())


def test_build_wires_metrics_only_when_master_cf_names_it(tmp_path: Path) -> None:
    """Without a metrics line no metrics service, listener or session
    wrapper exists (off by default); with one, the service is built, the
    SMTP listener's factory counts sessions, and a line with a port only
    listens on 127.0.0.1, not on inet_interfaces."""
    plain = _build(tmp_path / "a", DEFAULT_MASTER_CF)
    assert plain.metrics is None
    assert plain.getServiceNamed("127.0.0.1:0@127.0.0.1:0")
    assert not any((s.name or "") == "metrics" for s in plain)
    smtp = plain.getServiceNamed("127.0.0.1:0@127.0.0.1:0")
    assert not isinstance(smtp.args[1], SessionCountingFactory)

    wired = _build(tmp_path / "b", DEFAULT_MASTER_CF + "9154 inet n - n - - metrics\n")
    assert isinstance(wired.metrics, MetricsService)
    listener = wired.getServiceNamed("9154@127.0.0.1:9154")
    assert listener.kwargs["interface"] == "127.0.0.1"
    smtp = wired.getServiceNamed("127.0.0.1:0@127.0.0.1:0")
    assert isinstance(smtp.args[1], SessionCountingFactory)
    assert "9154@127.0.0.1:9154" not in {s.name for s in wired.ports.values()}


def test_metrics_listen_where_the_line_says_and_on_loopback_by_default() -> None:
    """A port alone is 127.0.0.1; an address is that address; ``*:port``
    is every interface (Postfix's ``*``)."""
    from pymta.metrics import listen_interface

    lines = "9154 inet n - n - - metrics\n[::1]:9155 inet n - n - - metrics\n"
    lines += "192.0.2.1:9156 inet n - n - - metrics\n*:9157 inet n - n - - metrics\n"
    assert [listen_interface(s) for s in parse_master_cf(lines)] == [
        "127.0.0.1",
        "::1",
        "192.0.2.1",
        "",
    ]


def test_multiprocess_directory_is_emptied_by_the_master_only(tmp_path: Path) -> None:
    """prepare_multiprocess makes the directory, and removes an earlier run's
    files only when asked (the master); a worker keeps them."""
    from pymta.metrics import prepare_multiprocess

    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_1.db").write_bytes(b"")
    saved = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    from prometheus_client import values

    saved_class = values.ValueClass
    try:
        prepare_multiprocess(str(directory), empty=False)
        assert (directory / "counter_1.db").exists()
        prepare_multiprocess(str(directory), empty=True)
        assert not (directory / "counter_1.db").exists()
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(directory)
        assert getattr(values.ValueClass, "_multiprocess", False)
    finally:
        values.ValueClass = saved_class
        if saved is None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = saved


class FakeBarrier:
    def __init__(self) -> None:
        self.syncs = 0
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.timings: collections.deque[tuple[str, float]] = collections.deque()


def test_syncs_of_the_barriers_are_counted_by_difference(tmp_path: Path) -> None:
    """Each sample adds what a barrier's ``syncs`` grew by since the last
    sample, under the barrier's name."""
    service = MetricsService(make_config(tmp_path), FakeReactor(), multiprocess=False, serving=True)
    queue, mailbox = FakeBarrier(), FakeBarrier()
    service.watch_syncs({"queue": queue, "mailbox": mailbox})
    service.startService()
    try:
        queue.syncs = 3
        service.sample()
        queue.syncs, mailbox.syncs = 5, 1
        service.sample()
        service.sample()
    finally:
        service.stopService()
    registry = service.registry()
    assert registry.get_sample_value("pymta_syncs_total", {"barrier": "queue"}) == 5.0
    assert registry.get_sample_value("pymta_syncs_total", {"barrier": "mailbox"}) == 1.0


def test_sync_batch_sizes_become_a_histogram(tmp_path: Path) -> None:
    """The sizes of the batches a barrier synced since the last sample are
    observed once each: 3 syncs of 1 and 1 of 20 make 4 observations, 23 in
    all, one of them above 16."""
    service = MetricsService(make_config(tmp_path), FakeReactor(), multiprocess=False, serving=True)
    queue = FakeBarrier()
    service.watch_syncs({"queue": queue})
    service.startService()
    try:
        queue.batch_sizes[1] += 2
        service.sample()
        queue.batch_sizes[1] += 1
        queue.batch_sizes[20] += 1
        service.sample()
        service.sample()
    finally:
        service.stopService()
    registry = service.registry()
    labels = {"barrier": "queue"}
    assert registry.get_sample_value("pymta_sync_batch_size_count", labels) == 4.0
    assert registry.get_sample_value("pymta_sync_batch_size_sum", labels) == 23.0
    assert (
        registry.get_sample_value("pymta_sync_batch_size_bucket", {**labels, "le": "16.0"}) == 3.0
    )


def test_sync_phase_timings_become_a_histogram_per_phase(tmp_path: Path) -> None:
    """The (phase, seconds) a barrier's batches appended are observed once
    each, by phase, and taken out of the barrier's deque."""
    service = MetricsService(make_config(tmp_path), FakeReactor(), multiprocess=False, serving=True)
    queue = FakeBarrier()
    service.watch_syncs({"queue": queue})
    service.startService()
    try:
        queue.timings.extend([("wait", 0.002), ("work", 0.0003), ("sync", 0.0004)])
        service.sample()
        queue.timings.append(("sync", 0.02))
        service.sample()
        service.sample()
    finally:
        service.stopService()
    registry = service.registry()
    sync = {"barrier": "queue", "phase": "sync"}
    assert registry.get_sample_value("pymta_sync_seconds_count", sync) == 2.0
    assert registry.get_sample_value("pymta_sync_seconds_bucket", {**sync, "le": "0.0005"}) == 1.0
    wait = {"barrier": "queue", "phase": "wait"}
    assert registry.get_sample_value("pymta_sync_seconds_sum", wait) == pytest.approx(0.002)
    assert not queue.timings


def test_grafana_dashboard_and_readme_name_only_exported_metrics(tmp_path: Path) -> None:
    """Every pymta_* name in etc/grafana-dashboard.json and in the README's
    metrics table is one the endpoint exports (a renamed metric breaks this)."""
    import json
    import re

    from tests.harness import REPO

    service = MetricsService(make_config(tmp_path), FakeReactor(), multiprocess=False, serving=True)
    service.startService()
    service.stopService()
    registry = service.registry()
    exported: set[str] = set()
    for family in registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        exported |= {family.name + suffix for suffix in ["", *suffixes.get(family.type, [])]}
    dashboard = json.loads((REPO / "etc" / "grafana-dashboard.json").read_text())
    expressions = " ".join(
        target["expr"] for panel in dashboard["panels"] for target in panel["targets"]
    )
    section = (REPO / "README.md").read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    readme = "\n".join(line for line in section.splitlines() if line.startswith("| `"))
    used = set(re.findall(r"pymta_[a-z_]+", expressions + readme))
    assert used and used <= exported, used - exported


def test_a_metrics_line_that_is_not_inet_stops_the_start() -> None:
    """``metrics`` only makes sense as a listener: check_master (pymta check
    and the start) refuses another service type, naming file and line, and
    accepts the inet line silently."""
    from pymta.config import ConfigError
    from pymta.config.master_cf import check_master
    from pymta.service import BUILT_PARTS

    assert (
        check_master(parse_master_cf("127.0.0.1:9154 inet n - n - - metrics\n"), BUILT_PARTS) == []
    )
    with pytest.raises(ConfigError, match="inet service") as caught:
        check_master(parse_master_cf("metrics unix - - n - - metrics\n"), BUILT_PARTS)
    assert "master.cf" in str(caught.value) and "line 1" in str(caught.value)
