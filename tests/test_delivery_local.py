"""The local delivery agent: alias expansion, forwarding through cleanup,
files, commands (a real ``|cat > file`` on the reactor), :include:, loops."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.task import Clock
from zope.interface import implementer

from pymta.cleanup.interface import CleanupRejected, ICleanup
from pymta.config import Config
from pymta.delivery.command import CommandResult, command_status
from pymta.delivery.interface import DeliveryRecipient, DeliveryRequest, RecipientStatus
from pymta.delivery.local import LocalAgent
from pymta.delivery.local_forward import ForwardFile
from pymta.delivery.lookup import DictLookup
from pymta.privsep.interface import UnixUser
from pymta.privsep.memory import RecordingUserDelivery
from pymta.queue.model import Envelope, Recipient
from pymta.queue.reference import BytesContent

CONTENT = b"Subject: hello\n\nbody line\n"


@implementer(ICleanup)
class FakeCleanup:
    def __init__(self) -> None:
        self.submitted: list[tuple[Envelope, bytes]] = []
        self.reject: CleanupRejected | None = None

    def submit(self, envelope: Envelope, content: bytes) -> Deferred[str]:
        if self.reject is not None:
            return fail(self.reject)
        self.submitted.append((envelope, content))
        return succeed(f"NEWQID{len(self.submitted)}")


class NoProcesses:
    """A reactor that must not be asked to run anything."""

    def spawnProcess(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no command expected")


#: The Unix users the tests know (find_user is injected: the real passwd
#: of the test machine never decides a test).
BOB = UnixUser("bob", 1001, 1001, "/home/bob", "/bin/bash")
ROOT = UnixUser("root", 0, 0, "/root", "/bin/sh")
NOBODY = UnixUser("nobody", 65534, 65534, "/nonexistent", "/usr/sbin/nologin")


def make_agent(
    aliases: dict[str, str],
    extra: str = "",
    process_reactor: Any = None,
    users: dict[str, UnixUser] | None = None,
    forwards: dict[str, str] | None = None,
    transports: dict[str, Any] | None = None,
    allowed_uids: list[int] | None = None,
    read_file: Callable[[str], str] | None = None,
    threaded: bool = False,
) -> tuple[LocalAgent, FakeCleanup]:
    config = Config.from_text(
        "myhostname = mx.example.org\nmyorigin = example.org\nalias_maps = inline:{}\n"
        "recipient_delimiter = +\n" + extra
    )
    cleanup = FakeCleanup()
    clock = Clock()
    clock.advance(1_800_000_000)
    table = DictLookup(aliases)
    known = {"root": ROOT, "nobody": NOBODY} if users is None else users
    recorder = RecordingUserDelivery(process_reactor, process_reactor, allowed_uids=allowed_uids)

    def read_forward(paths: list[str], user: UnixUser) -> Deferred[ForwardFile]:
        for path in paths:
            if forwards is not None and path in forwards:
                return succeed(ForwardFile(path, forwards[path]))
        return succeed(ForwardFile(None, ""))

    agent = LocalAgent(
        config,
        cleanup,
        clock if process_reactor is None else process_reactor,
        cast(IReactorProcess, process_reactor or NoProcesses()),
        open_maps=lambda specs, cfg: table,
        users=recorder,
        find_user=known.get,
        transports=(transports or {}).get,
        read_forward=read_forward,
        read_file=read_file,
        # :include: files are read in a thread; the tests here wait for nothing.
        run_in_thread=None if threaded else lambda work: succeed(work()),
    )
    agent.recorder = recorder  # type: ignore[attr-defined]
    return agent, cleanup


def request(
    address: str, content: bytes = CONTENT, sender: str = "alice@example.org"
) -> DeliveryRequest:
    envelope = Envelope(sender, [Recipient(address, original=address)])
    return DeliveryRequest(
        "0123456789ABC000001",
        envelope,
        BytesContent(content),
        "local",
        "mx.example.org",
        [DeliveryRecipient(0, address, address)],
    )


def run(agent: LocalAgent, req: DeliveryRequest) -> RecipientStatus:
    result: list[list[RecipientStatus]] = []
    agent.deliver(req).addCallback(result.append)
    assert result, "delivery did not complete synchronously"
    return result[0][0]


def test_alias_to_addresses_resubmits_one_message() -> None:
    """An alias to addresses is forwarded as one new message with a
    Delivered-To header and the same sender."""
    agent, cleanup = make_agent({"staff": "bob@virt.example, carol"})
    status = run(agent, request("staff@mx.example.org"))
    assert (status.status, status.reason) == ("2.0.0", "forwarded as NEWQID1")
    [(envelope, content)] = cleanup.submitted
    assert envelope.sender == "alice@example.org"
    assert [r.address for r in envelope.recipients] == ["bob@virt.example", "carol"]
    assert [r.original for r in envelope.recipients] == ["staff@mx.example.org"] * 2
    assert content == b"Delivered-To: staff@mx.example.org\n" + CONTENT


def test_extension_falls_back_to_base_alias() -> None:
    """user+ext is looked up first, then user (aliases(5))."""
    agent, cleanup = make_agent({"staff": "bob@virt.example"})
    assert run(agent, request("staff+news@mx.example.org")).status == "2.0.0"
    assert cleanup.submitted[0][0].recipients[0].address == "bob@virt.example"


def test_owner_request_special_sets_sender() -> None:
    """With an owner-<alias> entry the forwarded copy's sender is owner-alias@myorigin."""
    agent, cleanup = make_agent({"list": "bob@virt.example", "owner-list": "carol"})
    run(agent, request("list@mx.example.org"))
    assert cleanup.submitted[0][0].sender == "owner-list@example.org"
    agent, cleanup = make_agent(
        {"list": "bob@virt.example", "owner-list": "carol"}, "owner_request_special = no\n"
    )
    run(agent, request("list@mx.example.org"))
    assert cleanup.submitted[0][0].sender == "alice@example.org"


def test_unknown_user() -> None:
    """Neither an alias nor a Unix user: 5.1.1 unknown user, nothing written."""
    agent, _ = make_agent({})
    status = run(agent, request("ghost@mx.example.org"))
    assert (status.status, status.reason) == ("5.1.1", 'unknown user: "ghost"')
    assert agent.recorder.calls == []  # type: ignore[attr-defined]


def test_alias_loop_is_cut_by_delivered_to() -> None:
    """A message that already went through this alias is a loop (5.4.6), not resubmitted."""
    agent, cleanup = make_agent({"a": "b", "b": "a"})
    status = run(agent, request("a@mx.example.org", b"Delivered-To: a@mx.example.org\n" + CONTENT))
    assert status.status == "5.4.6"
    assert cleanup.submitted == []


def test_cleanup_refusal_defers() -> None:
    """When cleanup refuses the forwarded copy with a 4xx the recipient is deferred."""
    agent, cleanup = make_agent({"staff": "bob@virt.example"})
    cleanup.reject = CleanupRejected(451, "4.3.0", "queue file write error")
    assert run(agent, request("staff@mx.example.org")).status == "4.3.0"


def test_file_delivery_and_restriction(tmp_path: Path) -> None:
    """/file aliases append mbox records when allow_mail_to_files has alias;
    otherwise they bounce with 5.7.1."""
    target = tmp_path / "archive"
    agent, _ = make_agent({"arch": str(target)})
    status = run(agent, request("arch@mx.example.org"))
    assert (status.status, status.reason) == ("2.0.0", f"delivered to file: {target}")
    assert target.read_bytes().startswith(b"From alice@example.org  ")
    assert b"Delivered-To: arch@mx.example.org\n" in target.read_bytes()
    agent, _ = make_agent({"arch": str(target)}, "allow_mail_to_files = forward\n")
    assert run(agent, request("arch@mx.example.org")).status == "5.7.1"


def test_maildir_file_alias(tmp_path: Path) -> None:
    """A /dir/ alias value is a Maildir."""
    agent, _ = make_agent({"md": f"{tmp_path}/md/"})
    assert run(agent, request("md@mx.example.org")).status == "2.0.0"
    assert len(list((tmp_path / "md" / "new").iterdir())) == 1


def test_include_file(tmp_path: Path) -> None:
    """:include: files list more alias values; a missing one defers."""
    members = tmp_path / "members"
    members.write_text("# the team\nbob@virt.example\ncarol@virt.example\n")
    agent, cleanup = make_agent({"team": f":include:{members}"})
    assert run(agent, request("team@mx.example.org")).status == "2.0.0"
    assert [r.address for r in cleanup.submitted[0][0].recipients] == [
        "bob@virt.example",
        "carol@virt.example",
    ]
    agent, _ = make_agent({"team": f":include:{tmp_path}/missing"})
    assert run(agent, request("team@mx.example.org")).status == "4.3.0"


@pytest_twisted.inlineCallbacks
def test_include_file_is_read_off_the_reactor(tmp_path: Path) -> Any:
    """:include: files are read in a thread, never on the reactor thread
    (the disk may be slow; the reactor must not wait on it)."""
    members = tmp_path / "members"
    members.write_text("bob@virt.example\n")
    readers: list[bool] = []

    def read_file(path: str) -> str:
        readers.append(threading.current_thread() is threading.main_thread())
        return Path(path).read_text()

    agent, cleanup = make_agent({"team": f":include:{members}"}, read_file=read_file, threaded=True)
    [status] = yield agent.deliver(request("team@mx.example.org"))
    assert status.status == "2.0.0", status.reason
    assert readers == [False]
    assert [r.address for r in cleanup.submitted[0][0].recipients] == ["bob@virt.example"]


def test_command_restricted() -> None:
    """|command aliases bounce with 5.7.1 when allow_mail_to_commands lacks alias."""
    agent, _ = make_agent({"prog": "|/bin/true"}, "allow_mail_to_commands = forward\n")
    assert run(agent, request("prog@mx.example.org")).status == "5.7.1"


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (CommandResult(0, None, b""), "2.0.0"),
        (CommandResult(75, None, b"try later"), "4.3.0"),
        (CommandResult(67, None, b""), "5.1.1"),
        (CommandResult(1, None, b"boom"), "5.3.0"),
        (CommandResult(None, 9, b""), "4.3.0"),
        (CommandResult(None, 9, b"", timed_out=True), "4.3.0"),
    ],
)
def test_command_exit_status_mapping(result: CommandResult, status: str) -> None:
    """Exit codes map as Postfix's sys_exits: 0 sent, EX_TEMPFAIL deferred,
    EX_NOUSER 5.1.1, other codes bounced, signals and time limits deferred."""
    assert command_status("cmd", result)[0] == status


def test_command_output_is_the_diagnostic() -> None:
    """A failing command's output is quoted in the reason, on one line."""
    _code, reason = command_status("filter", CommandResult(1, None, b"no\nway\n"))
    assert reason == 'Command died with status 1: "filter". Command output: no way'


@pytest_twisted.inlineCallbacks
def test_real_command_gets_message_and_environment(tmp_path: Path) -> Any:
    """|cat > file runs through /bin/sh on the real reactor: the message (with
    From_, Return-Path and Delivered-To) arrives on stdin and SENDER/RECIPIENT
    are in the environment."""
    out = tmp_path / "out"
    env_out = tmp_path / "env"
    agent, _ = make_agent(
        {"prog": f'"|cat > {out}; echo $SENDER $RECIPIENT $EXTENSION > {env_out}"'},
        process_reactor=reactor,
    )
    [status] = yield agent.deliver(request("prog+x@mx.example.org"))
    assert status.status == "2.0.0", status.reason
    data = out.read_bytes()
    assert data.startswith(b"From alice@example.org  ")
    assert data.endswith(
        b"Return-Path: <alice@example.org>\nDelivered-To: prog+x@mx.example.org\n" + CONTENT
    )
    assert env_out.read_text() == "alice@example.org prog+x@mx.example.org x\n"


@pytest_twisted.inlineCallbacks
def test_real_command_failure_bounces_with_output() -> Any:
    """A command that exits 1 bounces with its output; exit 75 defers."""
    agent, _ = make_agent(
        {"bad": '"|echo nope; exit 1"', "later": '"|exit 75"'}, process_reactor=reactor
    )
    [status] = yield agent.deliver(request("bad@mx.example.org"))
    assert status.status == "5.3.0"
    assert "Command output: nope" in status.reason
    [status] = yield agent.deliver(request("later@mx.example.org"))
    assert status.status == "4.3.0"
