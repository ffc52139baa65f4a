"""The content's way from the queue file into a Maildir without Python
reading it: the line count the queue file carries (pymta.queue.record's
``content_lines``), the kernel copy with its block fallback
(pymta.queue.reference.copy_content) and the Maildir delivery that uses
both (pymta.mailstore.save.write_delivery)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from pymta.mailstore.deliver import MaildirDelivery
from pymta.mailstore.names import filename_sizes, split_filename
from pymta.mailstore.save import write_delivery
from pymta.queue import record, reference
from pymta.queue.interface import QueueFileError
from pymta.queue.memory import MemoryQueueStore
from pymta.queue.model import Envelope, Recipient
from pymta.queue.reference import BytesContent, QueueFileContent, copy_content, read_all
from pymta.queue.store import COUNT_LIMIT, FileQueueStore
from pymta.sync import ImmediateSyncBarrier

CONTENT = b"Subject: copy\n\n" + b"".join(b"line %d\n" % i for i in range(20000))
PREFIX = b"Return-Path: <s@example.org>\nDelivered-To: r@example.com\n"


def _store(tmp_path: Path) -> FileQueueStore:
    return FileQueueStore(str(tmp_path / "queue"), ImmediateSyncBarrier(), Clock())


def _enqueue(
    store: FileQueueStore | MemoryQueueStore, content: bytes = CONTENT, **kwargs: Any
) -> str:
    envelope = Envelope("s@example.org", [Recipient("r@example.com", "r@example.com")])
    ids: list[str] = []
    store.enqueue(envelope, content, **kwargs).addCallback(ids.append)
    return ids[0]


def _fired(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert len(out) == 1, "the delivery did not finish"
    return out[0]


def _old_file(tmp_path: Path, store: FileQueueStore) -> str:
    """A queue file as an earlier pymta wrote it: no content_lines record."""
    qid = store.new_queue_id()
    envelope = Envelope("s@example.org", [Recipient("r@example.com", "r@example.com")], 1.0)
    buffers, _ = record.encode(envelope, CONTENT)
    Path(store.path(qid, "active")).write_bytes(b"".join(buffers))
    return qid


# -- the line count in the queue file ------------------------------------------


def test_queue_file_carries_the_line_count_outside_the_envelope(tmp_path: Path) -> None:
    """The store writes the content's LF count as a content_lines record
    (counted when the caller gives none); reading gives it back on the
    reference, never as an envelope attribute."""
    store = _store(tmp_path)
    qid = _enqueue(store)
    data = Path(store.path(qid, "incoming")).read_bytes()
    assert b"\nAcontent_lines=%d\n" % CONTENT.count(b"\n") in data
    assert store.reference(qid, "incoming").lines == CONTENT.count(b"\n")
    envelope, content = store.read_envelope(qid, "incoming")
    assert content.lines == CONTENT.count(b"\n")
    assert record.LINES not in envelope.attributes


def test_the_callers_count_is_what_the_file_carries(tmp_path: Path) -> None:
    """A count given to enqueue (cleanup's, from the DATA reader) is written
    as given: the store does not count again."""
    store = _store(tmp_path)
    qid = _enqueue(store, lines=7)
    _, content = store.read_envelope(qid, "incoming")
    assert content.lines == 7


def test_a_stale_count_in_the_attributes_is_never_written() -> None:
    """An envelope that carries content_lines among its attributes (copied
    from another message) does not describe this content: encode drops it
    and writes only the count it is given."""
    envelope = Envelope("s@example.org", [Recipient("r@example.com")], 1.0, {record.LINES: "99"})
    header, _ = record.encode_header(envelope, 10)
    assert b"content_lines" not in header
    header, _ = record.encode_header(envelope, 10, 3)
    assert header.count(b"content_lines") == 1 and b"Acontent_lines=3\n" in header


def test_large_content_without_a_count_is_not_counted_on_the_reactor(tmp_path: Path) -> None:
    """Content past COUNT_LIMIT given without its count (a large pickup
    message) is not counted by enqueue (that would hold the reactor):
    its file carries no count, and delivery counts it."""
    store = _store(tmp_path)
    big = b"x" * 99 + b"\n"
    qid = _enqueue(store, big * (COUNT_LIMIT // 100 + 1))
    assert b"content_lines" not in Path(store.path(qid, "incoming")).read_bytes()[:200]
    assert store.reference(qid, "incoming").lines is None


def test_an_old_queue_file_without_the_count_reads_as_unknown(tmp_path: Path) -> None:
    """A file without the record (an earlier pymta's) reads with lines None."""
    store = _store(tmp_path)
    qid = _old_file(tmp_path, store)
    _, content = store.read_envelope(qid, "active")
    assert content.lines is None


@pytest.mark.parametrize("value", [b"x", b"-1", b"\xc2\xb2", b"1" * 13, b"999999"])
def test_a_bad_count_is_a_damaged_queue_file(value: bytes) -> None:
    """A count that is not a number, or more than the content's length,
    makes the file corrupt, as any other bad record does."""
    envelope = Envelope("s@example.org", [Recipient("r@example.com")], 1.0)
    buffers, _ = record.encode(envelope, b"a\nb\n")
    data = b"".join(buffers).replace(b"N1\n", b"Acontent_lines=" + value + b"\nN1\n")
    with pytest.raises(QueueFileError):
        record.decode(data)


def test_memory_store_keeps_the_count_on_its_reference() -> None:
    """The memory store counts as the file store does and hands the count
    to its references."""
    clock = Clock()
    store = MemoryQueueStore(clock)
    qid = _enqueue(store)
    assert store.reference(qid, "incoming").lines == CONTENT.count(b"\n")


# -- the copy ------------------------------------------------------------------


@contextlib.contextmanager
def _target(tmp_path: Path) -> Iterator[int]:
    """A new file ``target`` open for writing, closed after."""
    fd = os.open(tmp_path / "target", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        yield fd
    finally:
        os.close(fd)


def _queued(tmp_path: Path) -> QueueFileContent:
    store = _store(tmp_path)
    _, content = store.read_envelope(_enqueue(store), "incoming")
    assert isinstance(content, QueueFileContent)
    return content


def test_queue_file_content_is_copied_in_the_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a queue file, the content goes by copy_file_range from its
    offset, after what the target already holds, and no reader of the
    queue file is opened: Python never sees the bytes."""
    content = _queued(tmp_path)
    calls: list[tuple[int, int | None]] = []
    real = os.copy_file_range

    def counted(src: int, dst: int, count: int, offset_src: int | None = None) -> int:
        calls.append((count, offset_src))
        return real(src, dst, count, offset_src)

    monkeypatch.setattr(os, "copy_file_range", counted)
    monkeypatch.setattr(QueueFileContent, "open", None)  # any read would fail
    with _target(tmp_path) as fd:
        os.write(fd, PREFIX)
        assert copy_content(content, fd) == len(CONTENT)
    assert (tmp_path / "target").read_bytes() == PREFIX + CONTENT
    assert calls[0] == (len(CONTENT), content.offset)


@pytest.mark.parametrize("code", [errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS])
def test_a_refused_kernel_copy_falls_back_to_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """Where the kernel refuses the copy (another file system, an old
    kernel, a file system without it), the content is copied in blocks:
    the same bytes."""
    content = _queued(tmp_path)

    def refused(*args: Any) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "copy_file_range", refused)
    with _target(tmp_path) as fd:
        os.write(fd, PREFIX)
        assert copy_content(content, fd) == len(CONTENT)
    assert (tmp_path / "target").read_bytes() == PREFIX + CONTENT


def test_a_copy_to_another_file_system_falls_back_for_real(tmp_path: Path) -> None:
    """Without any stand-in: a Maildir on another file system than the
    queue (here /dev/shm, a tmpfs) gets the same bytes, the kernel having
    refused the copy between the two."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system at /dev/shm")
    content = _queued(tmp_path)
    target = Path(tempfile.mkdtemp(dir=shm)) / "msg"
    try:
        assert write_delivery(str(target), PREFIX, content) == (
            len(PREFIX + CONTENT),
            (PREFIX + CONTENT).count(b"\n"),
        )
        assert target.read_bytes() == PREFIX + CONTENT
    finally:
        shutil.rmtree(target.parent, ignore_errors=True)


def test_a_kernel_copy_refused_half_way_goes_on_in_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refusal after the kernel copied part (short copies happen) goes on
    in blocks from where the kernel stopped: nothing twice, nothing missed."""
    content = _queued(tmp_path)
    real = os.copy_file_range
    calls: list[int] = []

    def once_then_refused(src: int, dst: int, count: int, offset_src: int | None = None) -> int:
        calls.append(count)
        if len(calls) > 1:
            raise OSError(errno.EXDEV, "cross-device")
        return real(src, dst, 1000, offset_src)

    monkeypatch.setattr(os, "copy_file_range", once_then_refused)
    with _target(tmp_path) as fd:
        assert copy_content(content, fd) == len(CONTENT)
    assert (tmp_path / "target").read_bytes() == CONTENT
    assert calls == [len(CONTENT), len(CONTENT) - 1000]


def test_a_failing_disk_is_an_error_not_a_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error that is not a refusal (EIO, ENOSPC) is the caller's: the
    delivery defers rather than copying some other way."""
    content = _queued(tmp_path)

    def failing(*args: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "copy_file_range", failing)
    with _target(tmp_path) as fd:
        with pytest.raises(OSError) as caught:
            copy_content(content, fd)
    assert caught.value.errno == errno.ENOSPC


def test_a_truncated_queue_file_is_an_error_never_a_short_copy(tmp_path: Path) -> None:
    """The kernel copy of a queue file shorter than its records say (a
    damaged disk) raises, as reading it does."""
    content = _queued(tmp_path)
    with open(content.path, "r+b") as f:
        f.truncate(content.offset + 100)
    with _target(tmp_path) as fd:
        with pytest.raises(OSError, match="truncated"):
            copy_content(content, fd)


def test_content_in_memory_is_written_in_blocks(tmp_path: Path) -> None:
    """Content that is no queue file (LMTP's, the memory store's) is
    written from its reader."""
    with _target(tmp_path) as fd:
        assert copy_content(BytesContent(CONTENT), fd) == len(CONTENT)
    assert (tmp_path / "target").read_bytes() == CONTENT


# -- the Maildir delivery ------------------------------------------------------


def _deliver(tmp_path: Path, content: reference.IMessageContent) -> Path:
    delivery = MaildirDelivery(ImmediateSyncBarrier(), Clock(), "host")
    return Path(_fired(delivery.deliver(str(tmp_path / "maildir"), PREFIX, content)))


def test_delivery_copies_the_content_with_the_carried_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery from a queue file that carries its count names the file
    with ,S= and ,W= from it (W= counting each LF as CRLF) and writes the
    delivery headers and the content, without reading the content."""
    content = _queued(tmp_path)
    monkeypatch.setattr(QueueFileContent, "open", None)
    path = _deliver(tmp_path, content)
    assert path.read_bytes() == PREFIX + CONTENT
    total = len(PREFIX + CONTENT)
    sizes = filename_sizes(split_filename(path.name)[0])
    assert sizes == (total, total + (PREFIX + CONTENT).count(b"\n"))


def test_delivery_of_an_old_queue_file_counts_as_it_copies(tmp_path: Path) -> None:
    """A queue file without the count (an earlier pymta's) is delivered
    just the same: read in blocks and counted, to the same name sizes."""
    store = _store(tmp_path)
    qid = _old_file(tmp_path, store)
    _, content = store.read_envelope(qid, "active")
    assert content.lines is None
    path = _deliver(tmp_path, content)
    assert path.read_bytes() == PREFIX + CONTENT
    total = len(PREFIX + CONTENT)
    sizes = filename_sizes(split_filename(path.name)[0])
    assert sizes == (total, total + (PREFIX + CONTENT).count(b"\n"))


def test_a_failed_copy_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """write_delivery removes its file when the copy fails (a full disk
    keeps no half message in tmp/)."""
    content = _queued(tmp_path)

    def failing(*args: Any) -> int:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "copy_file_range", failing)
    target = tmp_path / "msg"
    with pytest.raises(OSError):
        write_delivery(str(target), PREFIX, content)
    assert not target.exists()
    assert read_all(content) == CONTENT  # the queue file is untouched
