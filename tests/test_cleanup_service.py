"""Tests of cleanup(8): headers (golden outputs), hop count, envelope rewriting
(canonical maps, virtual alias expansion with loops and limits), queueing."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from pymta.cleanup import Cleanup, CleanupRejected, ICleanup
from pymta.cleanup.headers import format_date, limit_header_size, scan_headers
from pymta.config import Config
from pymta.queue.memory import MemoryQueueStore
from pymta.queue.model import Envelope, Recipient
from pymta.rewrite import Resolver

NOW = 1700000000.0  # Tue, 14 Nov 2023 22:13:20 UTC
DATE = "Tue, 14 Nov 2023 22:13:20 +0000 (UTC)"

MAIN_CF = """
myhostname = mx.example.org
mydomain = example.org
mydestination = $myhostname, localhost
virtual_mailbox_domains = virtual.example
virtual_mailbox_maps = inline:{ bob@virtual.example=b/ }
recipient_delimiter = +
alias_maps =
"""


class Harness:
    def __init__(self, extra: str = "") -> None:
        self.config = Config.from_text(MAIN_CF + extra)
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = MemoryQueueStore(self.clock)
        self.queued: list[tuple[str, Envelope]] = []
        self.cleanup = Cleanup(
            self.config,
            self.store,
            Resolver(self.config),
            clock=self.clock,
            on_queued=lambda q, e: self.queued.append((q, e)),
            tz=datetime.UTC,
        )

    def hold_enqueue(self) -> list[Deferred[str]]:
        """Make the store's writes wait: each enqueue's Deferred is appended
        to the returned list, for the test to fire (the message is stored)."""
        held: list[Deferred[str]] = []
        real = self.store.enqueue

        def slow_enqueue(
            envelope: Envelope,
            content: bytes,
            queue_id: str | None = None,
            lines: int | None = None,
        ) -> Deferred[str]:
            real(envelope, content, queue_id, lines=lines)
            d: Deferred[str] = Deferred()
            held.append(d)
            return d

        self.store.enqueue = slow_enqueue  # type: ignore[method-assign]
        return held

    def submit(self, envelope: Envelope, content: bytes) -> str | Failure:
        results: list[str | Failure] = []
        self.cleanup.submit(envelope, content).addBoth(results.append)
        assert len(results) == 1
        return results[0]

    def submit_ok(self, envelope: Envelope, content: bytes) -> tuple[str, Envelope, bytes]:
        qid = self.submit(envelope, content)
        assert isinstance(qid, str), qid
        assert self.queued[-1][0] == qid
        stored_envelope, stored = self.store.read(qid, "incoming")
        # The queue manager hears the envelope written, never the content.
        assert stored_envelope == self.queued[-1][1]
        return qid, stored_envelope, stored

    def rejected(self, envelope: Envelope, content: bytes) -> CleanupRejected:
        result = self.submit(envelope, content)
        assert isinstance(result, Failure)
        assert isinstance(result.value, CleanupRejected)
        return result.value


def _smtp_envelope(*rcpts: str, sender: str = "alice@client.example", **attrs: str) -> Envelope:
    attributes = {
        "client_name": "mail.client.example",
        "client_address": "192.0.2.7",
        "helo_name": "helo.client.example",
        "protocol": "ESMTP",
    }
    attributes.update(attrs)
    return Envelope(sender, [Recipient(r) for r in rcpts], 0.0, attributes)


def test_cleanup_provides_interface() -> None:
    """Cleanup implements ICleanup."""
    assert verifyObject(ICleanup, Harness().cleanup)


def test_golden_headers_one_recipient() -> None:
    """Received (with 'for'), Message-ID and Date are added in Postfix's layout;
    From is not added for mail from a remote client."""
    h = Harness()
    content = b"Subject: hello\nTo: bob@virtual.example\n\nbody\n"
    qid, _, stored = h.submit_ok(_smtp_envelope("bob@virtual.example"), content)
    expected = (
        "Received: from helo.client.example (mail.client.example [192.0.2.7])\n"
        f"\tby mx.example.org (pymta) with ESMTP id {qid}\n"
        f"\tfor <bob@virtual.example>; {DATE}\n"
        "Subject: hello\n"
        "To: bob@virtual.example\n"
        f"Message-ID: <{qid}@mx.example.org>\n"
        f"Date: {DATE}\n"
        "\n"
        "body\n"
    ).encode()
    assert stored == expected


def test_golden_headers_tls_two_recipients_ipv6() -> None:
    """With TLS the 'using' line appears; with two recipients there is no
    'for'; an IPv6 client is written [IPv6:...]; existing Message-ID and Date
    are kept."""
    h = Harness()
    envelope = _smtp_envelope(
        "bob@virtual.example",
        "bob+x@virtual.example",
        client_address="2001:db8::7",
        protocol="ESMTPS",
        tls="TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
    )
    content = b"Message-ID: <abc@client>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\nx\n"
    qid, _, stored = h.submit_ok(envelope, content)
    expected = (
        "Received: from helo.client.example (mail.client.example [IPv6:2001:db8::7])\n"
        "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\n"
        f"\tby mx.example.org (pymta) with ESMTPS id {qid}; {DATE}\n"
    ).encode() + content
    assert stored == expected


def test_golden_local_submission() -> None:
    """Local mail (no client address) gets 'Received: by', and From: is added
    when missing (MAILER-DAEMON for the null sender)."""
    h = Harness()
    envelope = Envelope("", [Recipient("root")], 0.0, {"uid": "0", "protocol": "local"})
    qid, stored_env, stored = h.submit_ok(envelope, b"Subject: s\n\nhi\n")
    expected = (
        "Received: by mx.example.org (pymta, from userid 0)\n"
        f"\tid {qid}\n"
        f"\tfor <root>; {DATE}\n"
        "Subject: s\n"
        f"Message-ID: <{qid}@mx.example.org>\n"
        f"Date: {DATE}\n"
        "From: MAILER-DAEMON\n"
        "\n"
        "hi\n"
    ).encode()
    assert stored == expected
    assert stored_env.recipients[0].address == "root@mx.example.org"
    assert stored_env.recipients[0].original == "root"


@pytest.mark.parametrize(
    ("content", "expected_tail"),
    [
        (b"just a body line\n", b"Message-ID: <QID@mx.example.org>\nDate: D\n\njust a body line\n"),
        (
            b"\nbody after blank\n",
            b"Message-ID: <QID@mx.example.org>\nDate: D\n\nbody after blank\n",
        ),
        (
            b"Subject: only headers\n",
            b"Subject: only headers\nMessage-ID: <QID@mx.example.org>\nDate: D\n\n",
        ),
        (
            b"Subject: no newline",
            b"Subject: no newline\nMessage-ID: <QID@mx.example.org>\nDate: D\n\n",
        ),
        (b"", b"Message-ID: <QID@mx.example.org>\nDate: D\n\n"),
    ],
)
def test_header_block_edges(content: bytes, expected_tail: bytes) -> None:
    """Messages without headers, without body or without a final newline get
    well-formed header blocks."""
    h = Harness()
    qid, _, stored = h.submit_ok(_smtp_envelope("a@b.example", "c@d.example"), content)
    tail = stored.split(b"\n", 2)[2]
    assert tail == expected_tail.replace(b"QID", qid.encode()).replace(
        b"D\n", DATE.encode() + b"\n"
    )


def test_hopcount_limit() -> None:
    """With hopcount_limit Received headers (ours included) the message is
    rejected 554 5.4.0 and not queued; one fewer is accepted."""
    h = Harness("hopcount_limit = 5\n")
    too_many = b"Received: x\n" * 4 + b"Subject: loop\n\n"
    err = h.rejected(_smtp_envelope("bob@virtual.example"), too_many)
    assert (err.code, err.status, err.text) == (554, "5.4.0", "Error: too many hops")
    assert h.store.list("incoming") == []
    assert h.queued == []
    h.submit_ok(_smtp_envelope("bob@virtual.example"), b"received: x\n" * 3 + b"\n")


def test_header_size_limit_cuts_a_long_header_at_a_line_boundary() -> None:
    """A header folded over 100,000 continuation lines keeps only what fits in
    header_size_limit, cut at its last line inside the limit (Postfix's "nice
    cut"); the headers after it and the body are kept, nothing moves into
    the body."""
    h = Harness("header_size_limit = 1000\n")
    long_header = b"X-Spam: start" + b"\n\tcontinued" * 100_000
    content = b"Subject: s\n" + long_header + b"\nTo: bob@virtual.example\n\nbody\n"
    _, _, stored = h.submit_ok(_smtp_envelope("bob@virtual.example"), content)
    kept = b"X-Spam: start" + b"\n\tcontinued" * 89  # 13 + 89 * 11 = 992 bytes
    assert b"Subject: s\n" + kept + b"\nTo: bob@virtual.example\nMessage-ID: " in stored
    assert stored.count(b"continued") == 89
    assert stored.endswith(b"\n\nbody\n")


def test_header_size_limit_unkind_cut_and_default() -> None:
    """One physical line past the limit is cut at exactly header_size_limit
    bytes (Postfix's "unkind cut", when a line boundary would keep under
    90 %); many short headers are all kept, as Postfix keeps them; the
    default limit is 102400."""
    line = b"X-Long: " + b"a" * 500
    cut = limit_header_size(line + b"\nX-Next: 1\n\n" + b"b" * 600 + b"\n", 100)
    assert cut == line[:100] + b"\nX-Next: 1\n\n" + b"b" * 600 + b"\n"
    many = b"".join(b"X-H%d: v\n" % i for i in range(100_000)) + b"\nbody\n"
    assert limit_header_size(many, 100) is many
    h = Harness()
    huge = b"X-Big: " + b"\n\t" + b"z" * 2000 + b"\n\t" + b"y" * 200_000 + b"\n\nbody\n"
    _, _, stored = h.submit_ok(_smtp_envelope("bob@virtual.example"), huge)
    assert b"z" * 2000 + b"\n\t" + b"y" * (102400 - 7 - 2 - 2000 - 2) + b"\nMessage-ID" in stored


def test_message_id_logged(caplog: pytest.LogCaptureFixture) -> None:
    """cleanup logs 'QID: message-id=<...>' once queued (existing or added id)."""
    from twisted.logger import globalLogPublisher

    events: list[dict[str, object]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        h = Harness()
        qid, _, _ = h.submit_ok(_smtp_envelope("x@y.example"), b"Message-ID: <m1@c>\n\nb\n")
    finally:
        globalLogPublisher.removeObserver(events.append)
    texts = [e.get("text") for e in events if e.get("pymta_maillog")]
    assert f"{qid}: message-id=<m1@c>" in texts


def test_scan_headers_counts_only_header_block() -> None:
    """Received lines in the body do not count as hops."""
    scan = scan_headers(b"Received: a\nRECEIVED: b\n\nReceived: not a header\n")
    assert scan.received == 2
    assert scan.message_id is None
    assert scan_headers(b"X: 1\nMessage-Id:  <id@x> \n\n").message_id == "<id@x>"


def test_format_date_zone() -> None:
    """Date carries the numeric zone and the zone name as a comment."""
    tz = datetime.timezone(datetime.timedelta(hours=1), "CET")
    assert format_date(NOW, tz) == "Tue, 14 Nov 2023 23:13:20 +0100 (CET)"


# -- envelope rewriting ----------------------------------------------------


def test_append_at_myorigin_and_canonical_maps() -> None:
    """Bare names get @myorigin; sender_canonical_maps applies before
    canonical_maps; recipient_canonical_maps before canonical_maps; original kept."""
    h = Harness(
        "sender_canonical_maps = inline:{ alice@mx.example.org=alice.s@example.org }\n"
        "canonical_maps = inline:{ alice.s@example.org=Alice.Smith@example.org,"
        " rob@example.org=bob@virtual.example }\n"
        "recipient_canonical_maps = inline:{ robert@mx.example.org=rob@example.org }\n"
    )
    _, env, _ = h.submit_ok(_smtp_envelope("robert", sender="alice"), b"\n")
    assert env.sender == "Alice.Smith@example.org"
    assert [(r.address, r.original) for r in env.recipients] == [("bob@virtual.example", "robert")]


def test_canonical_extension_propagation() -> None:
    """An unmatched extension is carried over by canonical maps (propagate_unmatched_extensions)."""
    h = Harness("canonical_maps = inline:{ joe@example.org=joseph@virtual.example }\n")
    _, env, _ = h.submit_ok(_smtp_envelope("joe+news@example.org"), b"\n")
    assert env.recipients[0].address == "joseph+news@virtual.example"


def test_virtual_alias_expansion_recursive_and_deduplicated() -> None:
    """Aliases expand recursively, in order; duplicates are kept once with the
    first original; the DSN parameters follow."""
    h = Harness(
        "virtual_alias_maps = inline:{ {team@virtual.example=ann@virtual.example"
        ",leads@virtual.example}, {leads@virtual.example=bob@virtual.example"
        ",ann@virtual.example} }\n"
    )
    envelope = _smtp_envelope("team@virtual.example", "bob@virtual.example")
    envelope.recipients[0].notify = "FAILURE"
    _, env, _ = h.submit_ok(envelope, b"\n")
    assert [(r.address, r.original, r.notify) for r in env.recipients] == [
        ("ann@virtual.example", "team@virtual.example", "FAILURE"),
        ("bob@virtual.example", "team@virtual.example", "FAILURE"),
    ]


def test_virtual_alias_self_mapping_is_kept() -> None:
    """An address that maps to itself (plus others) is kept, not expanded again."""
    h = Harness(
        "virtual_alias_maps = inline:{ {ann@virtual.example=ann@virtual.example,"
        "copy@virtual.example} }\n"
    )
    _, env, _ = h.submit_ok(_smtp_envelope("ann@virtual.example"), b"\n")
    assert [r.address for r in env.recipients] == ["ann@virtual.example", "copy@virtual.example"]


def test_virtual_alias_loop_is_kept_not_spun() -> None:
    """a -> b, b -> a: the address met again in its own chain is kept."""
    h = Harness(
        "virtual_alias_maps = inline:{ a@virtual.example=b@virtual.example,"
        " b@virtual.example=a@virtual.example }\n"
    )
    _, env, _ = h.submit_ok(_smtp_envelope("a@virtual.example"), b"\n")
    assert [r.address for r in env.recipients] == ["a@virtual.example"]


def test_virtual_alias_recursion_limit_defers() -> None:
    """Nesting deeper than virtual_alias_recursion_limit defers the message (451 4.3.0)."""
    chain = ",".join(f" l{i}@virtual.example=l{i + 1}@virtual.example" for i in range(5))
    h = Harness(f"virtual_alias_maps = inline:{{{chain} }}\nvirtual_alias_recursion_limit = 3\n")
    err = h.rejected(_smtp_envelope("l0@virtual.example"), b"\n")
    assert (err.code, err.status) == (451, "4.3.0")
    assert "nesting" in err.text
    ok = Harness(f"virtual_alias_maps = inline:{{{chain} }}\nvirtual_alias_recursion_limit = 5\n")
    _, env, _ = ok.submit_ok(_smtp_envelope("l0@virtual.example"), b"\n")
    assert [r.address for r in env.recipients] == ["l5@virtual.example"]


def test_virtual_alias_expansion_limit_defers() -> None:
    """More addresses than virtual_alias_expansion_limit defers the message."""
    targets = ",".join(f"u{i}@virtual.example" for i in range(10))
    h = Harness(
        f"virtual_alias_maps = inline:{{ {{all@virtual.example={targets}}} }}\n"
        "virtual_alias_expansion_limit = 5\n"
    )
    err = h.rejected(_smtp_envelope("all@virtual.example"), b"\n")
    assert (err.code, err.status) == (451, "4.3.0")
    assert "expansion size" in err.text
    ok = Harness(f"virtual_alias_maps = inline:{{ {{all@virtual.example={targets}}} }}\n")
    _, env, _ = ok.submit_ok(_smtp_envelope("all@virtual.example"), b"\n")
    assert len(env.recipients) == 10


def test_table_failure_is_temporary() -> None:
    """A failed lookup is 451 4.3.0 Temporary lookup failure, and nothing is queued."""
    h = Harness("virtual_alias_maps = fail:broken\n")
    err = h.rejected(_smtp_envelope("x@virtual.example"), b"\n")
    assert (err.code, err.status, err.text) == (451, "4.3.0", "Temporary lookup failure")
    assert h.store.list("incoming") == []


def test_write_error_is_451_and_not_notified(tmp_path: Path) -> None:
    """When the store cannot make the message durable the client gets 451 and
    the queue manager is not told."""
    h = Harness()

    def failing_enqueue(
        envelope: Envelope, content: bytes, queue_id: str | None = None, lines: int | None = None
    ) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        d.errback(OSError(28, "No space left on device"))
        return d

    h.store.enqueue = failing_enqueue  # type: ignore[method-assign]
    err = h.rejected(_smtp_envelope("x@y.example"), b"\n")
    assert (err.code, err.status) == (451, "4.3.0")
    assert h.queued == []


def test_on_queued_after_durable() -> None:
    """on_queued is called only after the store's Deferred fires."""
    h = Harness()
    held = h.hold_enqueue()
    results: list[object] = []
    h.cleanup.submit(_smtp_envelope("x@y.example"), b"\n").addBoth(results.append)
    assert results == [] and h.queued == []
    qid = h.store.list("incoming")[0]
    held[0].callback(qid)
    assert results == [qid]
    assert h.queued[0][0] == qid


def test_submitter_hears_before_queue_manager() -> None:
    """The submitter's callback (smtpd's 250) runs before on_queued (the
    scheduling of the delivery), and the queue manager still hears."""
    h = Harness()
    held = h.hold_enqueue()
    order: list[str] = []
    h.cleanup._on_queued = lambda q, e: order.append("qmgr")
    d = h.cleanup.submit(_smtp_envelope("x@y.example"), b"\n")
    d.addCallback(lambda qid: order.append("submitter"))
    held[0].callback(h.store.list("incoming")[0])
    assert order == ["submitter", "qmgr"]


def test_on_queued_failure_still_acknowledges() -> None:
    """A failing queue manager notification does not turn the durable
    message into an error: the submitter gets the queue id."""
    h = Harness()

    def broken(q: str, e: Envelope) -> None:
        raise RuntimeError("qmgr gone")

    h.cleanup._on_queued = broken
    result = h.submit(_smtp_envelope("x@y.example"), b"\n")
    assert isinstance(result, str) and h.store.list("incoming") == [result]


def test_full_name_with_undecodable_bytes_is_queued() -> None:
    """A sendmail -F name with bytes that are not UTF-8 (kept as surrogate
    escapes) gives a From: with U+FFFD, encoded, instead of failing the
    message (found by fuzzing maildrop files)."""
    h = Harness()
    envelope = Envelope(
        "ann@example.org",
        [Recipient("bob@virtual.example")],
        attributes={"protocol": "pickup", "uid": "1000", "full_name": "J\udcb7an"},
    )
    _, _, stored = h.submit_ok(envelope, b"Subject: s\n\nhi\n")
    from_line = next(line for line in stored.split(b"\n") if line.startswith(b"From:"))
    assert from_line == b"From: =?utf-8?b?Su+/vWFu?= <ann@example.org>"


@pytest.mark.parametrize(
    "full_name, sender, expected",
    [
        ("Jo Doe", "jo@example.org", "From: Jo Doe <jo@example.org>"),
        ("Doe, Jo", "jo@example.org", 'From: "Doe, Jo" <jo@example.org>'),
        ("J\u00f6ran", "j\u00f6@example.org", "From: =?utf-8?b?SsO2cmFu?= <j\u00f6@example.org>"),
    ],
)
def test_full_name_from_header(full_name: str, sender: str, expected: str) -> None:
    """sendmail -F: the display name is quoted when it has specials and
    RFC 2047-encoded when it is not ASCII; an SMTPUTF8 sender is written as
    is (email.utils.formataddr refused it: found by fuzzing)."""
    h = Harness()
    envelope = Envelope(
        sender,
        [Recipient("bob@virtual.example")],
        attributes={"protocol": "pickup", "full_name": full_name},
    )
    _, _, stored = h.submit_ok(envelope, b"Subject: s\n\nhi\n")
    from_line = next(line for line in stored.split(b"\n") if line.startswith(b"From:"))
    assert from_line.decode() == expected
