"""The virtual delivery agent, Maildir writer and mbox appender on tmp_path."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from pymta.config import Config
from pymta.delivery import mbox
from pymta.delivery.interface import DeliveryRecipient, DeliveryRequest, RecipientStatus
from pymta.delivery.lookup import DictLookup, Lookup
from pymta.delivery.virtual import VirtualAgent, mailbox_path
from pymta.mailstore.names import MaildirNames, sized_name
from pymta.queue.model import Envelope, Recipient
from pymta.queue.reference import BytesContent
from pymta.sync import ImmediateSyncBarrier
from pymta.tables.interface import TableError
from tests.barriers import ManualBarrier

CONTENT = b"Subject: hi\n\nFrom the start\nline two\n"


class FailingTable:
    def lookup(self, key: str) -> str | None:
        raise TableError("hash:/etc/postfix/vmailbox: cannot open")


def make_agent(
    tmp_path: Path,
    table: dict[str, str] | Lookup,
    barrier: object | None = None,
    extra: str = "",
) -> VirtualAgent:
    config = Config.from_text(
        f"myhostname = mx.example.org\nvirtual_mailbox_base = {tmp_path}/vmail\n"
        "virtual_mailbox_maps = inline:{}\nrecipient_delimiter = +\n" + extra
    )
    lookup: Lookup = DictLookup(table) if isinstance(table, dict) else table
    clock = Clock()
    clock.advance(1_800_000_000.25)
    return VirtualAgent(
        config,
        barrier or ImmediateSyncBarrier(),  # type: ignore[arg-type]
        clock,
        open_maps=lambda specs, cfg: lookup,
    )


def request(*addresses: str, content: bytes = CONTENT) -> DeliveryRequest:
    envelope = Envelope("alice@example.org", [Recipient(a, original=a) for a in addresses])
    return DeliveryRequest(
        "0123456789ABC000001",
        envelope,
        BytesContent(content),
        "virtual",
        "virt.example",
        [DeliveryRecipient(i, a, a) for i, a in enumerate(addresses)],
    )


def run(agent: VirtualAgent, req: DeliveryRequest) -> list[RecipientStatus]:
    result: list[list[RecipientStatus]] = []
    agent.deliver(req).addCallback(result.append)
    assert result, "delivery did not complete"
    return result[0]


def test_maildir_delivery_layout_and_headers(tmp_path: Path) -> None:
    """A trailing-slash map value is a Maildir: cur/new/tmp are created 0700
    and the message lands in new/ with Return-Path and Delivered-To."""
    agent = make_agent(tmp_path, {"bob@virt.example": "virt.example/bob/"})
    [status] = run(agent, request("bob@virt.example"))
    assert (status.status, status.reason, status.relay) == (
        "2.0.0",
        "delivered to maildir",
        "virtual",
    )
    maildir = tmp_path / "vmail" / "virt.example" / "bob"
    for sub in ("cur", "new", "tmp"):
        assert (maildir / sub).is_dir()
        assert (maildir / sub).stat().st_mode & 0o777 == 0o700
    [name] = os.listdir(maildir / "new")
    assert os.listdir(maildir / "tmp") == []
    data = (maildir / "new" / name).read_bytes()
    assert data == b"Return-Path: <alice@example.org>\nDelivered-To: bob@virt.example\n" + CONTENT
    assert name.startswith("1800000000.M250000P")
    assert name.endswith(f",S={len(data)},W={len(data) + data.count(10)}")


def test_maildir_success_only_after_sync_and_rename(tmp_path: Path) -> None:
    """Success is reported only after the tmp file was synced (group commit
    barrier) and renamed into new/; the rename needs no sync of its own."""
    barrier = ManualBarrier()
    agent = make_agent(tmp_path, {"bob@virt.example": "bob/"}, barrier)
    result: list[list[RecipientStatus]] = []
    agent.deliver(request("bob@virt.example")).addCallback(result.append)
    maildir = tmp_path / "vmail" / "bob"
    [(files, dirs, _)] = barrier.waiting
    assert files[0].startswith(str(maildir / "tmp")) and dirs == (str(maildir / "tmp"),)
    assert os.listdir(maildir / "new") == [] and len(os.listdir(maildir / "tmp")) == 1
    assert result == []
    barrier.release()
    assert len(os.listdir(maildir / "new")) == 1 and os.listdir(maildir / "tmp") == []
    assert barrier.waiting == []
    assert result[0][0].status == "2.0.0"


def test_maildir_sync_failure_defers_and_cleans_tmp(tmp_path: Path) -> None:
    """A failed sync is a deferral (never success) and leaves no file in tmp/."""
    barrier = ManualBarrier()
    agent = make_agent(tmp_path, {"bob@virt.example": "bob/"}, barrier)
    result: list[list[RecipientStatus]] = []
    agent.deliver(request("bob@virt.example")).addCallback(result.append)
    barrier.waiting[0][2].errback(OSError(28, "No space left on device"))
    assert result[0][0].status == "4.3.0"
    assert os.listdir(tmp_path / "vmail" / "bob" / "tmp") == []


def test_extension_and_catchall_lookup_order(tmp_path: Path) -> None:
    """user+ext@domain falls back to user@domain, then to @domain."""
    agent = make_agent(tmp_path, {"bob@virt.example": "bob/", "@virt.example": "catchall/"})
    statuses = run(agent, request("bob+lists@virt.example", "zed@virt.example"))
    assert [s.status for s in statuses] == ["2.0.0", "2.0.0"]
    assert len(os.listdir(tmp_path / "vmail" / "bob" / "new")) == 1
    assert len(os.listdir(tmp_path / "vmail" / "catchall" / "new")) == 1


def test_unknown_user_bounces(tmp_path: Path) -> None:
    """A recipient not in virtual_mailbox_maps gets 5.1.1 unknown user."""
    agent = make_agent(tmp_path, {})
    [status] = run(agent, request("nobody@virt.example"))
    assert (status.status, status.reason) == ("5.1.1", 'unknown user: "nobody@virt.example"')


def test_lookup_failure_defers(tmp_path: Path) -> None:
    """A table that fails defers (4.3.0), it never bounces."""
    agent = make_agent(tmp_path, FailingTable())
    [status] = run(agent, request("bob@virt.example"))
    assert status.status == "4.3.0"


def test_delivered_to_loop_bounces(tmp_path: Path) -> None:
    """A Delivered-To header naming the recipient is a mail loop: 5.4.6."""
    agent = make_agent(tmp_path, {"bob@virt.example": "bob/"})
    content = b"Delivered-To: Bob@Virt.Example\nSubject: x\n\nbody\n"
    [status] = run(agent, request("bob@virt.example", content=content))
    assert (status.status, status.reason) == ("5.4.6", "mail forwarding loop for bob@virt.example")


def test_path_escape_is_a_configuration_error(tmp_path: Path) -> None:
    """A map value with .. components is deferred as 4.3.5, nothing written outside the base."""
    agent = make_agent(tmp_path, {"bob@virt.example": "../../etc/evil/"})
    [status] = run(agent, request("bob@virt.example"))
    assert status.status == "4.3.5"
    assert not (tmp_path / "etc").exists()
    assert mailbox_path("/base", "/abs/") == "/base/abs/"
    assert mailbox_path("/base", "a/../../b") is None
    assert mailbox_path("", "a/") is None


def test_mbox_delivery_quotes_from_lines(tmp_path: Path) -> None:
    """A value without trailing slash is an mbox: From_ separator, >From quoting,
    a blank line after each message, and lock files removed afterwards."""
    agent = make_agent(tmp_path, {"bob@virt.example": "bob.mbox"})
    assert run(agent, request("bob@virt.example"))[0].reason == "delivered to mailbox"
    assert run(agent, request("bob@virt.example"))[0].status == "2.0.0"
    data = (tmp_path / "vmail" / "bob.mbox").read_bytes()
    record = (
        b"From alice@example.org  Fri Jan 15 08:00:00 2027\n"
        b"Return-Path: <alice@example.org>\nDelivered-To: bob@virt.example\n"
        b"Subject: hi\n\n>From the start\nline two\n\n"
    )
    assert data == record * 2
    assert not (tmp_path / "vmail" / "bob.mbox.lock").exists()


def test_mbox_dotlock_busy_defers(tmp_path: Path) -> None:
    """A fresh dotlock held by another writer defers with 4.2.0 mailbox busy."""
    agent = make_agent(tmp_path, {"bob@virt.example": "bob.mbox"})
    (tmp_path / "vmail").mkdir()
    lock = tmp_path / "vmail" / "bob.mbox.lock"
    lock.write_text("")
    os.utime(lock, (1_800_000_000, 1_800_000_000))
    [status] = run(agent, request("bob@virt.example"))
    assert (status.status, status.reason) == ("4.2.0", "cannot update mailbox: mailbox busy")
    assert (
        not (tmp_path / "vmail" / "bob.mbox").exists()
        or (tmp_path / "vmail" / "bob.mbox").read_bytes() == b""
    )


def test_mbox_stale_dotlock_is_broken(tmp_path: Path) -> None:
    """A dotlock older than the stale lock time is removed and delivery proceeds."""
    agent = make_agent(tmp_path, {"bob@virt.example": "bob.mbox"})
    (tmp_path / "vmail").mkdir()
    lock = tmp_path / "vmail" / "bob.mbox.lock"
    lock.write_text("")
    os.utime(lock, (1_800_000_000 - 1000, 1_800_000_000 - 1000))
    assert run(agent, request("bob@virt.example"))[0].status == "2.0.0"


def test_mbox_fcntl_lock_held_by_other_process_defers(tmp_path: Path) -> None:
    """An fcntl lock held by another process makes the delivery defer (no waiting)."""
    agent = make_agent(tmp_path, {"bob@virt.example": "bob.mbox"})
    (tmp_path / "vmail").mkdir()
    path = tmp_path / "vmail" / "bob.mbox"
    path.write_bytes(b"")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import fcntl, sys
                f = open({str(path)!r}, "r+")
                fcntl.lockf(f, fcntl.LOCK_EX)
                print("locked", flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        [status] = run(agent, request("bob@virt.example"))
        assert status.status == "4.2.0"
        assert path.read_bytes() == b""
        assert not (tmp_path / "vmail" / "bob.mbox.lock").exists()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait()
    assert run(agent, request("bob@virt.example"))[0].status == "2.0.0"


def test_mbox_size_limit(tmp_path: Path) -> None:
    """An append that would exceed virtual_mailbox_limit bounces (5.2.2) and writes nothing."""
    agent = make_agent(
        tmp_path, {"bob@virt.example": "bob.mbox"}, extra="virtual_mailbox_limit = 100\n"
    )
    [status] = run(agent, request("bob@virt.example", content=b"Subject: x\n\n" + b"y" * 200))
    assert status.status == "5.2.2"
    assert (tmp_path / "vmail" / "bob.mbox").read_bytes() == b""


def test_quote_from_and_record() -> None:
    """>From quoting applies to every line starting with 'From ', including the first."""
    assert mbox.quote_from(b"From a\nx\nFrom b\nFromage\n") == b">From a\nx\n>From b\nFromage\n"


@pytest.mark.parametrize("hostname", ["host/with:odd"])
def test_maildir_unique_names_escape_hostname(tmp_path: Path, hostname: str) -> None:
    """Maildir names are unique per delivery and escape / and : in the host name."""
    clock = Clock()
    names = MaildirNames(clock, hostname, pid=42, numbers=itertools.count(1))
    a, b = sized_name(names.base_name(), 10), sized_name(names.base_name(), 10)
    assert a != b
    assert a == "0.M0P42Q1.host\\057with\\072odd,S=10"
