"""Agents read the queued message in blocks, never whole: Maildir and mbox
copies of messages over one block, ``>From`` quoting across a block end,
a command's stdin fed block by block, and the Maildir writer's done mark
right after its rename, before the delivery is reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from pymta.delivery import mbox
from pymta.delivery.smtp_content import WireEncoder, survey, to_wire
from pymta.mailstore.deliver import MaildirDelivery
from pymta.queue.reference import BLOCK_SIZE, BytesContent
from pymta.sync import ImmediateSyncBarrier
from tests.test_delivery_local import make_agent as make_local_agent
from tests.test_delivery_local import request as local_request
from tests.test_delivery_virtual import make_agent, request


def _big(size: int = 3 * BLOCK_SIZE + 123) -> bytes:
    line = b"a line of the message body, long enough to matter\n"
    return b"Subject: big\n\n" + line * (size // len(line))


def _fired(d: Deferred[Any]) -> list[Any]:
    out: list[Any] = []
    d.addBoth(out.append)
    return out


def test_maildir_copy_of_a_message_over_several_blocks(tmp_path: Path) -> None:
    """The Maildir file holds the headers and every byte of the message;
    its name carries the sizes counted during the copy (S= and W=)."""
    content = _big()
    agent = make_agent(tmp_path, {"u@v.example": "v.example/u/"})
    [status] = _fired(agent.deliver(request("u@v.example", content=content)))[0]
    assert status.status == "2.0.0", status.reason
    (path,) = (tmp_path / "vmail/v.example/u/new").iterdir()
    data = path.read_bytes()
    assert data.endswith(content) and data.startswith(b"Return-Path: <")
    lines = data.count(b"\n")
    assert path.name.endswith(f",S={len(data)},W={len(data) + lines}")


def test_maildir_mark_runs_after_the_rename_before_the_report(tmp_path: Path) -> None:
    """The writer's mark (the queue file's done byte) runs once the file is
    in new/, and before the Deferred fires."""
    writer = MaildirDelivery(ImmediateSyncBarrier(), Clock(), "host", pid=1)
    maildir = str(tmp_path / "box")
    seen: list[tuple[int, list[Any]]] = []
    result: list[Any] = []

    def mark() -> None:
        seen.append((len(list((tmp_path / "box/new").iterdir())), list(result)))

    d = writer.deliver(maildir, b"X-Head: 1\n", BytesContent(_big()), mark)
    d.addCallback(result.append)
    assert seen == [(1, [])]
    assert result and Path(result[0]).parent.name == "new"


def test_maildir_mark_failure_leaves_the_mark_to_the_caller(tmp_path: Path) -> None:
    """A mark that fails (OSError) does not fail the delivery."""
    writer = MaildirDelivery(ImmediateSyncBarrier(), Clock(), "host", pid=1)

    def mark() -> None:
        raise OSError("queue file gone")

    out = _fired(writer.deliver(str(tmp_path / "box"), b"", BytesContent(b"x\n"), mark))
    assert isinstance(out[0], str)


def test_mbox_quotes_from_lines_across_block_ends(tmp_path: Path) -> None:
    """A ``From `` line that starts right at a block boundary is quoted, and
    the mbox record equals the one built from the whole message."""
    head = b"Subject: q\n\n"
    filler = b"x" * (BLOCK_SIZE - len(head) - 1) + b"\n"
    content = head + filler + b"From the boundary\n" + b"From " * 3 + b"\nend"
    path = tmp_path / "mbox"
    out = _fired(
        mbox.append(str(path), "s@x", b"H: 1\n", BytesContent(content), ImmediateSyncBarrier(), 0.0)
    )
    assert out == [None]
    assert path.read_bytes() == mbox.mbox_record("s@x", 0.0, b"H: 1\n", content)
    assert b"\n>From the boundary\n" in path.read_bytes()


def test_mbox_limit_leaves_nothing_behind(tmp_path: Path) -> None:
    """Over the size limit the append errbacks MailboxLimit and the file
    keeps its old size."""
    path = tmp_path / "mbox"
    path.write_bytes(b"old\n")
    out = _fired(
        mbox.append(
            str(path), "s", b"", BytesContent(_big()), ImmediateSyncBarrier(), 0.0, size_limit=1000
        )
    )
    assert out[0].check(mbox.MailboxLimit)
    assert path.read_bytes() == b"old\n"


def test_wire_encoder_equals_to_wire_for_any_split() -> None:
    """Fed in pieces that cut lines, CRs and dots anywhere, the encoder
    gives to_wire's bytes; survey counts the same size."""
    content = b".lead\r\nx\n..y\r\n\n.\nFrom \xe9\nlast"
    for cut in range(1, len(content)):
        encoder = WireEncoder()
        wire = encoder.feed(content[:cut]) + encoder.feed(content[cut:]) + encoder.end()
        assert wire == to_wire(content)
    assert survey([content[:5], content[5:]]) == (len(to_wire(content)) - 3, True)


@pytest_twisted.inlineCallbacks
def test_command_gets_a_large_message_on_stdin(tmp_path: Path) -> Any:
    """|cat > file receives a message of several blocks whole, after the
    From_ line and delivery headers."""
    out = tmp_path / "out"
    content = _big(5 * BLOCK_SIZE)
    agent, _ = make_local_agent({"prog": f'"|cat > {out}"'}, process_reactor=reactor)
    [status] = yield agent.deliver(local_request("prog@mx.example.org", content=content))
    assert status.status == "2.0.0", status.reason
    data = out.read_bytes()
    assert data.startswith(b"From alice@example.org  ") and data.endswith(content)


@pytest_twisted.inlineCallbacks
def test_command_that_reads_nothing_still_ends(tmp_path: Path) -> Any:
    """A command that exits without reading its stdin ends the feed; its
    exit status decides."""
    agent, _ = make_local_agent({"prog": '"|exit 0"'}, process_reactor=reactor)
    [status] = yield agent.deliver(
        local_request("prog@mx.example.org", content=_big(8 * BLOCK_SIZE))
    )
    assert status.status == "2.0.0", status.reason
