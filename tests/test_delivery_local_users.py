"""The local delivery agent for Unix users (local(8)): mailboxes in the
spool or the home directory, .forward, mailbox_command, mailbox_transport,
fallback_transport, luser_relay, who each file or command runs as, and
the grounds each request carries for the root helper to check.

The agent's "become the user" step is the in-process RecordingUserDelivery
(it writes as the test's own user and records whom it would have become);
the real child process has its own tests (test_privsep_spawn.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from pymta.delivery.interface import DeliveryRequest, IDeliveryAgent, RecipientStatus
from pymta.delivery.local_forward import forward_paths, read_forward
from pymta.privsep.interface import Grounds, UnixUser
from pymta.privsep.memory import Call
from pymta.tables.unix import UnixTable
from tests.test_delivery_local import NOBODY, ROOT, make_agent, request, run


def bob(home: Path) -> UnixUser:
    return UnixUser("bob", 1001, 1001, str(home), "/bin/bash")


def users(home: Path) -> dict[str, UnixUser]:
    return {"bob": bob(home), "root": ROOT, "nobody": NOBODY}


def calls(agent: Any) -> list[Call]:
    return list(agent.recorder.calls)


def test_spool_mailbox_as_the_user(tmp_path: Path) -> None:
    """A Unix user without alias or .forward gets an mbox record in
    mail_spool_directory/USER, written as that user, with Return-Path and
    Delivered-To."""
    agent, _ = make_agent({}, f"mail_spool_directory = {tmp_path}/spool\n", users=users(tmp_path))
    (tmp_path / "spool").mkdir()
    status = run(agent, request("Bob+news@mx.example.org"))
    assert status.status == "2.0.0", status.reason
    assert calls(agent) == [Call("mbox", "bob", f"{tmp_path}/spool/bob")]
    data = (tmp_path / "spool" / "bob").read_bytes()
    assert data.startswith(b"From alice@example.org  ")
    assert b"Return-Path: <alice@example.org>\nDelivered-To: bob+news@mx.example.org\n" in data


def test_home_maildir(tmp_path: Path) -> None:
    """home_mailbox = Maildir/ delivers into ~/Maildir/new as the user."""
    agent, _ = make_agent({}, "home_mailbox = Maildir/\n", users=users(tmp_path))
    assert run(agent, request("bob@mx.example.org")).status == "2.0.0"
    assert calls(agent) == [Call("maildir", "bob", f"{tmp_path}/Maildir/")]
    [name] = os.listdir(tmp_path / "Maildir" / "new")
    assert ",S=" in name and ",W=" in name


def test_forward_to_address_file_command_and_self(tmp_path: Path) -> None:
    """A .forward with an address, a file, a command and \\user forwards one
    copy, writes the file and runs the command as the user, and delivers to
    the mailbox; the command sees HOME, USER, SHELL, EXTENSION, SENDER."""
    forward = f"carol@else.example\n/{tmp_path}/saved\n|procmail -t\n\\bob\n# comment\n"
    agent, cleanup = make_agent(
        {},
        f"mail_spool_directory = {tmp_path}\n",
        users=users(tmp_path),
        forwards={f"{tmp_path}/.forward": forward},
    )
    status = run(agent, request("bob@mx.example.org"))
    assert status.status == "2.0.0", status.reason
    assert [r.address for r in cleanup.submitted[0][0].recipients] == ["carol@else.example"]
    assert calls(agent) == [
        Call("mbox", "bob", f"/{tmp_path}/saved"),
        Call("command", "bob", "procmail -t"),
        Call("mbox", "bob", f"{tmp_path}/bob"),
    ]
    # What the root helper checks the targets against (it re-reads the .forward).
    assert agent.recorder.grounds == [  # type: ignore[attr-defined]
        Grounds("forward", "bob@mx.example.org"),
        Grounds("forward", "bob@mx.example.org"),
        Grounds("mailbox", "bob@mx.example.org"),
    ]
    env = agent.recorder.environments[0]  # type: ignore[attr-defined]
    assert (env["HOME"], env["USER"], env["SHELL"]) == (str(tmp_path), "bob", "/bin/bash")
    assert (env["SENDER"], env["RECIPIENT"], env["EXTENSION"]) == (
        "alice@example.org",
        "bob@mx.example.org",
        "",
    )


def test_forward_with_extension_is_preferred(tmp_path: Path) -> None:
    """forward_path's $home/.forward+EXT is used before $home/.forward."""
    agent, cleanup = make_agent(
        {},
        users=users(tmp_path),
        forwards={
            f"{tmp_path}/.forward+list": "lists@else.example",
            f"{tmp_path}/.forward": "carol@else.example",
        },
    )
    assert run(agent, request("bob+list@mx.example.org")).status == "2.0.0"
    assert cleanup.submitted[0][0].recipients[0].address == "lists@else.example"


def test_forward_commands_of_root_run_as_default_privs(tmp_path: Path) -> None:
    """root's .forward commands run as default_privs (nobody), never as root;
    root's mailbox is written as root."""
    agent, _ = make_agent(
        {},
        f"mail_spool_directory = {tmp_path}\n",
        forwards={"/root/.forward": "|logger mail, \\root"},
    )
    assert run(agent, request("root@mx.example.org")).status == "2.0.0"
    assert calls(agent) == [
        Call("command", "nobody", "logger mail"),
        Call("mbox", "root", f"{tmp_path}/root"),
    ]


def test_alias_commands_never_run_as_root() -> None:
    """Alias commands run as default_privs when the alias table has no
    owner file (or root owns it); default_privs = root refuses (4.3.5)."""
    agent, _ = make_agent({"prog": "|/bin/true"})
    assert run(agent, request("prog@mx.example.org")).status == "2.0.0"
    assert calls(agent) == [Call("command", "nobody", "/bin/true")]
    agent, _ = make_agent({"prog": "|/bin/true"}, "default_privs = root\n")
    status = run(agent, request("prog@mx.example.org"))
    assert status.status == "4.3.5"
    assert "refusing to run as root" in status.reason
    assert calls(agent) == []


def test_mailbox_command_runs_as_the_user(tmp_path: Path) -> None:
    """mailbox_command replaces the mailbox, expanded with local(8)'s names,
    run as the user."""
    agent, _ = make_agent(
        {}, "mailbox_command = /usr/bin/procmail -a $extension\n", users=users(tmp_path)
    )
    assert run(agent, request("bob+x@mx.example.org")).status == "2.0.0"
    assert calls(agent) == [Call("command", "bob", "/usr/bin/procmail -a x")]
    assert agent.recorder.grounds == [  # type: ignore[attr-defined]
        Grounds("mailbox_command", "bob+x@mx.example.org")
    ]


@implementer(IDeliveryAgent)
class FakeAgent:
    name = "lmtp"

    def __init__(self) -> None:
        self.requests: list[DeliveryRequest] = []

    def deliver(self, request: DeliveryRequest) -> Deferred[list[RecipientStatus]]:
        self.requests.append(request)
        return succeed(
            [RecipientStatus(r.index, "2.0.0", "delivered via lmtp") for r in request.recipients]
        )


def test_mailbox_transport_and_fallback_transport(tmp_path: Path) -> None:
    """mailbox_transport hands Unix users' mail to another master.cf
    transport with its nexthop; fallback_transport takes unknown users;
    a transport that does not exist defers."""
    lmtp = FakeAgent()
    agent, _ = make_agent(
        {},
        "mailbox_transport = lmtp:unix:private/dovecot-lmtp\nfallback_transport = lmtp\n",
        users=users(tmp_path),
        transports={"lmtp": lmtp},
    )
    assert run(agent, request("bob@mx.example.org")).reason == "delivered via lmtp"
    assert (lmtp.requests[0].transport, lmtp.requests[0].nexthop) == (
        "lmtp",
        "unix:private/dovecot-lmtp",
    )
    assert run(agent, request("ghost@mx.example.org")).status == "2.0.0"
    assert lmtp.requests[1].recipients[0].address == "ghost@mx.example.org"
    assert calls(agent) == []
    agent, _ = make_agent({}, "fallback_transport = nowhere\n")
    assert run(agent, request("ghost@mx.example.org")).status == "4.3.5"


def test_luser_relay(tmp_path: Path) -> None:
    """Unknown local users go to luser_relay ($local expanded)."""
    agent, cleanup = make_agent({}, "luser_relay = catchall+$local@example.org\n")
    assert run(agent, request("ghost@mx.example.org")).status == "2.0.0"
    assert cleanup.submitted[0][0].recipients[0].address == "catchall+ghost@example.org"


def test_users_pymta_cannot_become_are_deferred(tmp_path: Path) -> None:
    """Not running as root, mail for another Unix user is deferred (4.3.0),
    never written as the wrong user."""
    agent, _ = make_agent({}, users=users(tmp_path), allowed_uids=[0])
    status = run(agent, request("bob@mx.example.org"))
    assert status.status == "4.3.0"
    assert "does not run as root" in status.reason
    assert calls(agent) == []


def test_forward_paths_expansion() -> None:
    """forward_path's default expands per recipient; without an extension
    the first item collapses into the second."""
    template = "$home/.forward${recipient_delimiter}${extension}, $home/.forward"
    user = UnixUser("bob", 1001, 1001, "/home/bob", "/bin/sh")
    assert forward_paths(template, user, "bob+x", "x", "d.example", "+") == [
        "/home/bob/.forward+x",
        "/home/bob/.forward",
    ]
    assert forward_paths(template, user, "bob", "", "d.example", "+") == [
        "/home/bob/.forward+",
        "/home/bob/.forward",
    ]
    template = "$home/.forward${extension?$recipient_delimiter$extension}"
    assert forward_paths(template, user, "bob", "", "d.example", "+") == ["/home/bob/.forward"]


def test_read_forward_checks_owner_mode_and_links(tmp_path: Path) -> None:
    """A .forward owned by another user, writable by group, or a symlink is
    ignored with a warning; a good one is read."""
    user = UnixUser("me", os.getuid(), os.getgid(), str(tmp_path), "/bin/sh")
    good = tmp_path / "good"
    good.write_text("me@example.org\n")
    good.chmod(0o644)
    writable = tmp_path / "writable"
    writable.write_text("x\n")
    writable.chmod(0o664)
    link = tmp_path / "link"
    link.symlink_to(good)
    found = read_forward([str(tmp_path / "missing"), str(writable), str(link), str(good)], user)
    assert (found.path, found.text) == (str(good), "me@example.org\n")
    assert found.warnings[0] == f"file {writable} is group or world writable; ignored"
    assert found.warnings[1].startswith(f"cannot open {link}")
    other = UnixUser("other", os.getuid() + 1, os.getgid(), str(tmp_path), "/bin/sh")
    found = read_forward([str(good)], other)
    assert found.path is None
    assert "bad owner" in found.warnings[0]


def test_unix_passwd_table() -> None:
    """unix:passwd.byname answers a user's passwd line and None for others."""
    table = UnixTable("unix:passwd.byname", "passwd.byname")
    line = table.lookup("ROOT")
    assert line is not None and line.startswith("root:*:0:0:")
    assert table.lookup("no-such-user-here") is None
    assert table.lookup("root@example.org") is None


def test_not_root_says_so_once_at_start(tmp_path: Path) -> None:
    """An agent that cannot become other users logs one line at start naming
    the limit, and none per delivery."""
    from twisted.logger import LogEvent, formatEvent, globalLogPublisher

    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        agent, _ = make_agent({}, users=users(tmp_path), allowed_uids=[0])
        run(agent, request("bob@mx.example.org"))
        run(agent, request("bob@mx.example.org"))
    finally:
        globalLogPublisher.removeObserver(events.append)
    said = [formatEvent(e) for e in events if "not root" in formatEvent(e)]
    assert len(said) == 1
    assert "local delivery is limited to that user" in said[0]
