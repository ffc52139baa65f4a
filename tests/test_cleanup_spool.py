"""Tests of cleanup's message writer and the queue's content spool
(pymta.cleanup.writer, pymta.queue.spool): a large message is written to
disk as it arrives, never held whole, and queued with the same bytes as
a message submitted whole; a dropped message leaves nothing behind."""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from pymta.cleanup import Cleanup, CleanupRejected
from pymta.cleanup.cleanup import WHOLE_READS
from pymta.cleanup.writer import SPOOL_THRESHOLD, MessageWriter
from pymta.config import Config
from pymta.queue.memory import MemoryQueueStore
from pymta.queue.model import Envelope, Recipient
from pymta.queue.spool import BLOCK, HIGH_WATER, FileSpool, SpooledContent
from pymta.queue.store import FileQueueStore
from pymta.rewrite import Resolver
from pymta.sync import ImmediateSyncBarrier

NOW = 1700000000.0
MAIN_CF = """
myhostname = mx.example.org
mydomain = example.org
mydestination = $myhostname, localhost
virtual_mailbox_domains = virtual.example
virtual_mailbox_maps = inline:{ bob@virtual.example=b/ }
alias_maps =
"""
HEADER = b"Subject: large\nFrom: a@client.example\n\n"
LINE = b"x" * 76 + b"\n"


def envelope() -> Envelope:
    return Envelope(
        "a@client.example",
        [Recipient("bob@virtual.example", "bob@virtual.example")],
        attributes={"client_address": "192.0.2.1", "client_name": "client.example"},
    )


class Harness:
    """A Cleanup over a FileQueueStore in tmp_path (syncs are immediate)."""

    def __init__(self, tmp_path: Path, extra: str = "", store: Any = None) -> None:
        self.config = Config.from_text(MAIN_CF + extra.format(dir=tmp_path))
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = store or FileQueueStore(
            str(tmp_path / "queue"), ImmediateSyncBarrier(), self.clock, pid=1
        )
        self.cleanup = Cleanup(
            self.config, self.store, Resolver(self.config), clock=self.clock, tz=datetime.UTC
        )
        self.incoming = tmp_path / "queue" / "incoming"
        #: (type of content, bytes held in memory) of every enqueue.
        self.enqueued: list[tuple[type, int]] = []
        real = self.store.enqueue

        def spy(env: Envelope, content: Any, *args: Any, **kwargs: Any) -> Deferred[str]:
            held = len(content.head) if isinstance(content, SpooledContent) else len(content)
            self.enqueued.append((type(content), held))
            result: Deferred[str] = real(env, content, *args, **kwargs)
            return result

        self.store.enqueue = spy

    def result(self, d: Deferred[str]) -> str | Failure:
        box: list[str | Failure] = []
        d.addBoth(box.append)
        assert len(box) == 1
        return box[0]


def test_large_message_is_spooled_in_blocks_and_never_held_whole(tmp_path: Path) -> None:
    """A 4 MiB message written in 64 KiB pieces: past the threshold each
    piece goes to incoming/QID.spool (on disk after at most one BLOCK more),
    the writer keeps no more than the threshold in memory, and enqueue gets
    the rewritten header block and the spool, not the message as bytes."""
    h = Harness(tmp_path)
    writer = h.cleanup.open_message()
    assert isinstance(writer, MessageWriter)
    body = LINE * (4 * 1024 * 1024 // len(LINE))
    content = HEADER + body
    for start in range(0, len(content), 65536):
        assert writer.write(content[start : start + 65536]) is None  # the disk keeps up
        spool = writer.spool
        if writer.size > SPOOL_THRESHOLD:
            assert isinstance(spool, FileSpool)
            on_disk = os.path.getsize(spool.path) if os.path.exists(spool.path) else 0
            assert writer.size - SPOOL_THRESHOLD - on_disk < BLOCK
    qid = h.result(writer.finish(envelope()))
    assert isinstance(qid, str), qid
    [(kind, held)] = h.enqueued
    assert kind is SpooledContent
    assert held < SPOOL_THRESHOLD + 1024
    # The spool became part of the queue file: incoming/ holds only that.
    assert os.listdir(h.incoming) == [qid]
    _, stored = h.store.read(qid, "incoming")
    assert stored.endswith(body)
    assert stored.startswith(b"Received: from client.example (client.example [192.0.2.1])\n")
    assert f"Message-ID: <{qid}@mx.example.org>\n".encode() in stored


def test_spooled_message_is_queued_as_the_whole_message_would_be(tmp_path: Path) -> None:
    """The queue file of a spooled message equals that of the same message
    submitted whole (queue ids aside), for messages with a header block,
    without one, and starting with the blank line."""
    for name, content in (
        ("headers", HEADER + LINE * 10000),
        ("bodyonly", LINE * 10000),
        ("blank", b"\n" + LINE * 10000),
    ):
        spooled = Harness(tmp_path / name)
        spooled.cleanup.spool_threshold = 4096
        writer = spooled.cleanup.open_message()
        for start in range(0, len(content), 1000):
            writer.write(content[start : start + 1000])
        qid = spooled.result(writer.finish(envelope()))
        assert isinstance(qid, str), qid
        assert spooled.enqueued[0][0] is SpooledContent
        whole = Harness(tmp_path / name, store=MemoryQueueStore())
        whole.clock = spooled.clock
        other = whole.result(whole.cleanup.submit(envelope(), content))
        assert isinstance(other, str)
        assert spooled.store.read(qid, "incoming")[1] == whole.store.read(other, "incoming")[
            1
        ].replace(other.encode(), qid.encode()), name


def test_header_block_longer_than_the_threshold_is_read_back(tmp_path: Path) -> None:
    """A header block that does not end within the threshold is read back
    from the spool and rewritten whole: its late Message-ID is seen (none
    added) and the spool is gone."""
    h = Harness(tmp_path)
    h.cleanup.spool_threshold = 1024
    content = b"".join(b"X-Filler-%d: %s\n" % (n, b"y" * 60) for n in range(100))
    content += b"Message-ID: <late@client.example>\n\n" + LINE * 100
    writer = h.cleanup.open_message()
    writer.write(content)
    qid = h.result(writer.finish(envelope()))
    assert isinstance(qid, str), qid
    assert h.enqueued == [(bytes, h.enqueued[0][1])]
    _, stored = h.store.read(qid, "incoming")
    assert stored.count(b"Message-ID:") == 1
    assert os.listdir(h.incoming) == [qid]


def test_header_checks_still_apply_to_a_spooled_message(tmp_path: Path) -> None:
    """header_checks see a spooled message (read back whole): a REJECT is
    the client's 5xx, nothing is queued and the spool is deleted."""
    (tmp_path / "hc").write_text("/^Subject: large/ REJECT no large mail\n")
    h = Harness(tmp_path, "header_checks = regexp:{dir}/hc\n")
    writer = h.cleanup.open_message()
    writer.write(HEADER + LINE * 20000)
    failure = h.result(writer.finish(envelope()))
    assert isinstance(failure, Failure)
    assert isinstance(failure.value, CleanupRejected)
    assert failure.value.code == 550
    assert os.listdir(h.incoming) == []


def test_abort_leaves_nothing_behind(tmp_path: Path) -> None:
    """A message dropped in the middle (client gone, too big) deletes its spool."""
    h = Harness(tmp_path)
    writer = h.cleanup.open_message()
    writer.write(HEADER + LINE * 20000)
    assert len(os.listdir(h.incoming)) == 1
    writer.abort()
    assert os.listdir(h.incoming) == []
    assert h.enqueued == []


def test_rejected_spooled_message_deletes_its_spool(tmp_path: Path) -> None:
    """A spooled message cleanup refuses (no recipient left) leaves no spool."""
    h = Harness(tmp_path)
    writer = h.cleanup.open_message()
    writer.write(HEADER + LINE * 20000)
    failure = h.result(writer.finish(Envelope("a@client.example", [])))
    assert isinstance(failure, Failure)
    assert os.listdir(h.incoming) == []


def test_stale_spools_are_removed_at_start(tmp_path: Path) -> None:
    """A spool left by a crash is removed with the half-written queue files."""
    h = Harness(tmp_path)
    writer = h.cleanup.open_message()
    writer.write(HEADER + LINE * 20000)
    spool = writer.spool
    assert isinstance(spool, FileSpool)
    removed = h.store.remove_stale_temporaries(older_than=NOW * 2)
    assert removed == [os.path.basename(spool.path)]
    assert os.listdir(h.incoming) == []


class HeldBarrier:
    """A sync barrier whose work waits until the test releases it."""

    def __init__(self) -> None:
        self.held: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def run(self, work: Callable[[], Any], durable: bool = True, **_: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.held.append((work, d))
        return d

    def release(self) -> None:
        held, self.held = self.held, []
        for work, d in held:
            d.callback(work())


def test_spool_asks_the_writer_to_wait_for_a_slow_disk(tmp_path: Path) -> None:
    """While more than HIGH_WATER bytes wait for the disk, write() returns a
    Deferred (smtpd stops reading), which fires once the disk caught up."""
    barrier = HeldBarrier()
    spool = FileSpool(str(tmp_path / "Q.spool"), "Q", barrier)  # type: ignore[arg-type]
    waits = [spool.write(b"z" * 65536) for _ in range(HIGH_WATER // 65536 + 8)]
    wait = next(w for w in waits if w is not None)
    fired: list[object] = []
    wait.addCallback(fired.append)
    assert fired == []
    barrier.release()
    assert fired == [None]
    closed: list[object] = []
    spool.close().addBoth(closed.append)
    barrier.release()
    assert closed == [None]
    assert os.path.getsize(spool.path) == spool.size


def test_spooled_messages_read_back_at_most_whole_reads_at_a_time(tmp_path: Path) -> None:
    """Spooled messages that the checks must read whole are read back at
    most WHOLE_READS at a time: the next one is read only once an earlier
    one is queued, so their memory is bounded, not one message per client."""
    (tmp_path / "hc").write_text("/^Subject: never/ REJECT\n")
    store = MemoryQueueStore()
    h = Harness(tmp_path, "header_checks = regexp:{dir}/hc\n", store=store)
    h.cleanup.spool_threshold = 1024
    held: list[Deferred[str]] = []
    real = store.enqueue

    def slow_enqueue(env: Envelope, content: Any, *args: Any, **kwargs: Any) -> Deferred[str]:
        real(env, content, *args, **kwargs)
        d: Deferred[str] = Deferred()
        held.append(d)
        return d

    store.enqueue = slow_enqueue  # type: ignore[method-assign]
    reads: list[str] = []
    results: list[object] = []
    for n in range(WHOLE_READS + 2):
        writer = h.cleanup.open_message()
        writer.write(HEADER + LINE * 100)
        spool = writer.spool
        assert spool is not None
        real_read = spool.read

        def read(real_read: Any = real_read, name: str = str(n)) -> Deferred[bytes]:
            reads.append(name)
            result: Deferred[bytes] = real_read()
            return result

        spool.read = read  # type: ignore[method-assign]
        writer.finish(envelope()).addBoth(results.append)
    assert len(reads) == WHOLE_READS and len(held) == WHOLE_READS
    fired = 0
    while fired < len(held):
        held[fired].callback("done")
        fired += 1
        # One queued, one more read: never more than WHOLE_READS in memory.
        assert len(reads) == min(WHOLE_READS + fired, WHOLE_READS + 2)
    assert len(results) == WHOLE_READS + 2
