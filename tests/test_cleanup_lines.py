"""The queued message's line count as cleanup derives it (pymta.cleanup.cleanup):
from the count smtpd's DATA reader made, counting only the headers cleanup
changed, so that the queue file carries it and delivery copies the content
without a pass over it; exact whatever cleanup changed."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from pymta.cleanup import Cleanup
from pymta.config import Config
from pymta.queue.model import Envelope, Recipient
from pymta.queue.reference import read_all
from pymta.queue.store import FileQueueStore
from pymta.rewrite import Resolver
from pymta.smtpd.testing import SMTPHarness
from pymta.sync import ImmediateSyncBarrier
from tests.test_cleanup_spool import MAIN_CF, NOW

MESSAGE = b"Subject: lines\nFrom: a@client.example\n\n" + b"body line\n" * 500


class Harness:
    def __init__(self, tmp_path: Path, extra: str = "", **tables: str) -> None:
        for name, text in tables.items():
            (tmp_path / name).write_text(text)
        config = Config.from_text(MAIN_CF + extra.format(dir=tmp_path))
        clock = Clock()
        clock.advance(NOW)
        self.store = FileQueueStore(str(tmp_path / "queue"), ImmediateSyncBarrier(), clock)
        self.cleanup = Cleanup(config, self.store, Resolver(config), clock=clock, tz=datetime.UTC)

    def queue(self, content: bytes, lines: int | None, address: str = "192.0.2.1") -> bytes:
        """Write content through smtpd's writer with the given count;
        returns the queued message, after checking the count the queue
        file carries."""
        envelope = Envelope(
            "a@client.example",
            [Recipient("bob@virtual.example", "bob@virtual.example")],
            attributes={"client_address": address, "client_name": "client.example"},
        )
        writer = self.cleanup.open_message()
        writer.write(content)
        ids: list[object] = []
        writer.finish(envelope, lines).addBoth(ids.append)
        [qid] = ids
        assert isinstance(qid, str), qid
        _, reference = self.store.read_envelope(qid, "incoming")
        queued = read_all(reference)
        self.lines = reference.lines
        return queued


def test_the_readers_count_is_carried_without_counting_the_body(tmp_path: Path) -> None:
    """Given the content's count, the queued message's count is derived
    from it: exact for the right count, and off by exactly as much for a
    wrong one (so the body was not counted again)."""
    h = Harness(tmp_path)
    queued = h.queue(MESSAGE, MESSAGE.count(b"\n"))
    assert queued.startswith(b"Received: ") and h.lines == queued.count(b"\n")
    queued = h.queue(MESSAGE, MESSAGE.count(b"\n") + 1000)
    assert h.lines == queued.count(b"\n") + 1000


def test_without_a_count_the_store_counts(tmp_path: Path) -> None:
    """Content whose count nobody gave (pickup, bounces, forwarding) is
    counted by the queue store: the file carries the exact count."""
    h = Harness(tmp_path)
    queued = h.queue(MESSAGE, None)
    assert h.lines == queued.count(b"\n")


def test_rewritten_and_cut_headers_keep_the_count_exact(tmp_path: Path) -> None:
    """Header address rewriting (a local client's From: in standard form)
    and header_size_limit change the header block: the count stays exact."""
    h = Harness(tmp_path, "header_size_limit = 100\n")
    content = b"From: a\nX-Long: " + b"word " * 30 + b"\n\tmore\n\tand more\n\n" + b"b\n" * 50
    queued = h.queue(content, content.count(b"\n"), address="127.0.0.1")
    assert b"From: a@" in queued and len(queued) < len(content) + 300
    assert h.lines == queued.count(b"\n")


def test_body_checks_changes_are_counted(tmp_path: Path) -> None:
    """body_checks may change the body (IGNORE deletes a line): a count
    derived from the reader's would be wrong, so the changed message is
    counted instead."""
    h = Harness(
        tmp_path,
        "body_checks = regexp:{dir}/body_checks\n",
        body_checks="/^drop me$/ IGNORE\n",
    )
    content = b"X-Filler: header\n" * 10 + MESSAGE + b"drop me\n" * 2 + b"kept\n"
    queued = h.queue(content, content.count(b"\n"))
    assert b"drop me" not in queued and queued.endswith(b"body line\nkept\n")
    assert h.lines == queued.count(b"\n")


@pytest.mark.parametrize("wrong", [0, 1000])
def test_a_spooled_message_carries_the_count(tmp_path: Path, wrong: int) -> None:
    """A message past the spool threshold (queued from its rewritten header
    block and the spool, copied in the kernel) gets its count the same way:
    the spooled part as the reader counted it."""
    h = Harness(tmp_path)
    h.cleanup.spool_threshold = 4096
    content = MESSAGE * 10
    queued = h.queue(content, content.count(b"\n") + wrong)
    assert h.lines == queued.count(b"\n") + wrong


def test_smtpd_hands_the_readers_count_to_cleanup() -> None:
    """smtpd gives cleanup the LF count its DATA reader made, whatever
    way the content was cut into reads."""
    h = SMTPHarness()
    h.send("EHLO client.example\nMAIL FROM:<s@sender.example>\nRCPT TO:<user@example.com>\nDATA\n")
    body = b"Subject: x\r\n\r\none\r\n..two\r\nthree\r\n.\r\n"
    h.send(body[:13])
    h.send(body[13:])
    [(_, content)] = h.cleanup.received
    assert content == b"Subject: x\n\none\n.two\nthree\n"
    assert h.cleanup.lines == [5]
