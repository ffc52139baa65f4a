"""Queued content by reference (pymta.queue.reference) and the records-only
read of a queue file (record.decode_envelope), against both stores."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from pymta.delivery.headers import header_block, header_of
from pymta.queue import record
from pymta.queue.interface import QueueFileError
from pymta.queue.memory import MemoryQueueStore
from pymta.queue.model import Envelope, Recipient
from pymta.queue.reference import (
    BLOCK_SIZE,
    HEADER_CACHE_SIZE,
    IMessageContent,
    blocks,
    head,
    known_header,
    read_all,
)
from pymta.queue.store import FileQueueStore
from pymta.sync import ImmediateSyncBarrier
from tests.test_queue_store import _bad_files

Store = FileQueueStore | MemoryQueueStore

CONTENT = b"Subject: big\n\n" + b"0123456789abcdef\n" * 10000  # > 2 blocks


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    clock = Clock()
    clock.advance(1700000000)
    if request.param == "file":
        yield FileQueueStore(str(tmp_path / "queue"), ImmediateSyncBarrier(), clock)
    else:
        yield MemoryQueueStore(clock)


def _enqueue(store: Store, recipients: int = 3, content: bytes = CONTENT) -> str:
    envelope = Envelope(
        "s@example.org", [Recipient(f"r{i}@example.com", f"R{i}") for i in range(recipients)]
    )
    ids: list[str] = []
    store.enqueue(envelope, content).addCallback(ids.append)
    return ids[0]


def test_read_envelope_matches_read_and_references_the_content(store: Store) -> None:
    """read_envelope gives read's envelope and a reference whose reader
    returns exactly the content, in blocks of at most BLOCK_SIZE."""
    qid = _enqueue(store)
    envelope, content = store.read_envelope(qid, "incoming")
    assert verifyObject(IMessageContent, content)
    assert envelope == store.read(qid, "incoming")[0]
    assert (content.queue, content.queue_id, content.size) == ("incoming", qid, len(CONTENT))
    parts = list(blocks(content))
    assert len(parts) > 2 and all(len(p) <= BLOCK_SIZE for p in parts)
    assert b"".join(parts) == CONTENT
    assert head(content, 20) == CONTENT[:20]


def test_reference_without_io_after_enqueue(store: Store) -> None:
    """reference() needs no read for a file the store just wrote."""
    qid = _enqueue(store)
    store.move(qid, "incoming", "active")
    assert read_all(store.reference(qid, "active")) == CONTENT


def test_mark_done_through_the_reference(store: Store) -> None:
    """mark_done writes the recipient's flag at once: a re-read shows it
    done, the others pending; ``marked`` lists it."""
    qid = _enqueue(store)
    content = store.reference(qid, "incoming")
    content.mark_done(1)
    assert content.marked == {1}
    envelope, _ = store.read(qid, "incoming")
    assert [r.done for r in envelope.recipients] == [False, True, False]


def test_file_reference_reads_by_position_from_the_queue_file(tmp_path: Path) -> None:
    """The file store's reference names the queue file and the content's
    offset; a damaged (shorter) file is an OSError, never a short message."""
    store = FileQueueStore(str(tmp_path / "queue"), ImmediateSyncBarrier(), Clock())
    qid = _enqueue(store)
    _, content = store.read_envelope(qid, "incoming")
    data = Path(store.path(qid, "incoming")).read_bytes()
    assert data[content.offset : content.offset + content.size] == CONTENT
    Path(store.path(qid, "incoming")).write_bytes(data[: content.offset + 100])
    with pytest.raises(OSError):
        read_all(content)


def test_records_of_many_recipients_span_several_reads(tmp_path: Path) -> None:
    """A header larger than one read (3,000 recipients) is read whole."""
    store = FileQueueStore(str(tmp_path / "queue"), ImmediateSyncBarrier(), Clock())
    qid = _enqueue(store, recipients=3000, content=b"x\n")
    envelope, content = store.read_envelope(qid, "incoming")
    assert content.offset > record.HEADER_BLOCK
    assert len(envelope.recipients) == 3000 and read_all(content) == b"x\n"


@pytest.mark.parametrize("kind", sorted(_bad_files()))
def test_read_envelope_rejects_what_read_rejects(tmp_path: Path, kind: str) -> None:
    """Every kind of damage that read refuses, read_envelope refuses too,
    without reading the content."""
    store = FileQueueStore(str(tmp_path / "queue"), ImmediateSyncBarrier(), Clock())
    qid = store.new_queue_id()
    Path(store.path(qid, "active")).write_bytes(_bad_files()[kind])
    with pytest.raises(QueueFileError, match=f"active/{qid}"):
        store.read_envelope(qid, "active")


# The header section kept with the reference (known_header, header_of) ----


@pytest.mark.parametrize(
    "content",
    [
        b"Subject: a\nTo: b\n\nbody\n\nmore\n",
        b"\nbody only\n",
        b"Subject: no body\n",
        b"",
        b"X-Long: " + b"x" * (HEADER_CACHE_SIZE - 10) + b"\n\nbody\n",
        b"X-Long: " + b"x" * HEADER_CACHE_SIZE + b"\n\nbody\n",
        b"X-Long: " + b"x" * (2 * HEADER_CACHE_SIZE) + b"\n",
        CONTENT,
    ],
    ids=[
        "normal",
        "no-header",
        "no-body",
        "empty",
        "near-limit",
        "over-limit",
        "all-header",
        "big",
    ],
)
def test_known_header_is_what_reading_the_file_gives(tmp_path: Path, content: bytes) -> None:
    """known_header answers header_block's result or None (too long to keep),
    and header_of gives the same header whether the store kept it (no file
    opened: the queue file is gone) or it is read from the file."""
    for start in (content, content[: HEADER_CACHE_SIZE + 2]):
        known = known_header(start, len(content))
        assert known is None or known == header_block(content)
    store = FileQueueStore(str(tmp_path / "queue"), ImmediateSyncBarrier(), Clock())
    qid = _enqueue(store, content=content)
    store.move(qid, "incoming", "active")
    reference = store.reference(qid, "active")
    short = len(header_block(content)) <= HEADER_CACHE_SIZE
    assert reference.header == (header_block(content) if short else None)
    assert header_of(reference) == header_block(content)
    _, reread = store.read_envelope(qid, "active")
    assert reread.header == reference.header
    if short:
        os.unlink(store.path(qid, "active"))
        assert header_of(reference) == header_block(content)


def test_reference_hands_the_kept_header_over_once(tmp_path: Path) -> None:
    """The store forgets a kept header once reference() handed it over (its
    memory then goes with the message); a second reference reads the file."""
    store = FileQueueStore(str(tmp_path / "queue"), ImmediateSyncBarrier(), Clock())
    qid = _enqueue(store)
    store.move(qid, "incoming", "active")
    assert store.reference(qid, "active").header == b"Subject: big\n"
    again = store.reference(qid, "active")
    assert again.header is None
    assert header_of(again) == b"Subject: big\n"
