#!/usr/bin/env python3
"""imap_fetch_cpu - CPU of one IMAP FETCH over many messages, in process.

SYNOPSIS
    python bench/imap_fetch_cpu.py [--messages 200] [--size 4096]
        [--fetches 200] [--rounds 3] [--items "BODY.PEEK[HEADER]"]
        [--command "UID SEARCH UNSEEN"] [--changed 0]

DESCRIPTION
    The server's own cost of answering ``FETCH 1:N (items)``, without a
    network or a client: one pymta IMAP session (the real protocol,
    factory and Maildir store, in this process) over a StringTransport,
    on a folder of --messages messages of about --size bytes whose header
    cache is warm (one FETCH first). Each round times --fetches such
    FETCHes with the process's CPU clock (time.process_time) and prints
    the CPU per FETCH; the last line is the median of the rounds. The
    store runs as in production except that a Clock stands for the
    reactor, so its thread work (none here: every read is answered at
    once) would run in the caller.

    For the issue-10 figure: the CPU per FETCH of 200 messages' headers
    (BODY.PEEK[HEADER]), before and after a change to FETCH or the store.
    --command times another command the same way (SEARCH, STATUS...).
    --changed N: before each command (not timed), another writer of the
    store toggles \\Flagged on N messages, so the command's answer
    carries N untagged ``FETCH (FLAGS ..)`` updates (the selected view's
    updates, e.g. with --command NOOP).

OUTPUT
    One line per round, then
    ``median: N.NN ms CPU per FETCH 1:200 (BODY.PEEK[HEADER])``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run from a checkout: this checkout's pymta (the bench measures it).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from pymta.auth.checker import PasswdFileChecker
from pymta.auth.locate import MailboxLocator
from pymta.auth.passwdfile import PasswdFile
from pymta.auth.realm import MailRealm
from pymta.auth.throttle import LoginThrottle
from pymta.imap.factory import IMAPServerFactory
from pymta.imap.settings import IMAPSettings
from pymta.mailstore.interface import FlagMode
from pymta.mailstore.maildir import MaildirStore
from pymta.netmatch import NetworkList


def _at_once(work: Any) -> Deferred[Any]:
    return maybeDeferred(work)


def message(n: int, size: int) -> bytes:
    header = (
        b"From: Sender %d <sender%d@example.org>\n"
        b"To: alice@example.org\n"
        b"Subject: message number %d\n"
        b"Date: Mon, 7 Dec 2026 10:00:00 +0000\n"
        b"Message-ID: <%d@example.org>\n"
        b"MIME-Version: 1.0\n"
        b"Content-Type: text/plain; charset=us-ascii\n\n" % (n, n, n, n)
    )
    line = b"The quick brown fox jumps over the lazy dog, again and again.\n"
    return header + line * max(1, (size - len(header)) // len(line))


def session(root: Path, messages: int, size: int) -> tuple[Any, StringTransport, Any]:
    clock = Clock()
    passwd = root / "passwd"
    passwd.write_text(f"alice@example.org:{{PLAIN}}secret:::::: mail=maildir:{root}/alice\n")
    store = MaildirStore(clock, "host", fsync=False)
    inbox = store.open_user("alice@example.org", f"{root}/alice").folder("INBOX")
    for n in range(1, messages + 1):
        inbox.append(message(n, size), ["\\Seen"], 1_700_000_000.0 + n)
    checker = PasswdFileChecker(
        PasswdFile(str(passwd), clock),
        clock,
        throttle=LoginThrottle(clock, base=0.5, cap=4),
        run_in_thread=_at_once,
    )
    portal = Portal(MailRealm(store, MailboxLocator(checker.passwd)), [checker])
    factory = IMAPServerFactory(
        IMAPSettings(hostname="mail.example.org"), portal, None, clock, NetworkList([])
    )
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 143),
        peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
    )
    proto.makeConnection(transport)
    for line in (b"a LOGIN alice@example.org secret", b"b SELECT INBOX"):
        proto.dataReceived(line + b"\r\n")
        if b" OK " not in transport.value():
            raise SystemExit(f"setup failed: {transport.value()[-200:]!r}")
        transport.clear()
    return proto, transport, inbox


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="CPU of one IMAP FETCH over many messages.")
    p.add_argument("--messages", type=int, default=200)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--fetches", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--items", default="BODY.PEEK[HEADER]")
    p.add_argument("--command", help='another command to time instead (e.g. "UID SEARCH UNSEEN")')
    p.add_argument(
        "--changed", type=int, default=0, help="messages whose flags change before each command"
    )
    args = p.parse_args(argv)
    command = b"f FETCH 1:%d (%s)\r\n" % (args.messages, args.items.encode())
    label = f"FETCH 1:{args.messages} ({args.items})"
    if args.command:
        command = b"f " + args.command.encode() + b"\r\n"
        label = args.command
    with tempfile.TemporaryDirectory() as tmp:
        proto, transport, inbox = session(Path(tmp), args.messages, args.size)
        changed = list(range(1, min(args.changed, args.messages) + 1))
        flagged = False
        proto.dataReceived(command)  # warm: the header cache is filled
        if b"f OK " not in transport.value():
            raise SystemExit(f"command failed: {transport.value()[-200:]!r}")
        transport.clear()
        figures = []
        for round_ in range(1, args.rounds + 1):
            spent = 0.0
            for _ in range(args.fetches):
                if changed:
                    flagged = not flagged
                    mode = FlagMode.ADD if flagged else FlagMode.REMOVE
                    inbox.set_flags_many(changed, ["\\Flagged"], mode)
                start = time.process_time()
                proto.dataReceived(command)
                spent += time.process_time() - start
                if changed and transport.value().count(b" FETCH (") < len(changed):
                    raise SystemExit(f"updates missing: {transport.value()[-200:]!r}")
                transport.clear()
            per = spent / args.fetches * 1000
            figures.append(per)
            print(f"round {round_}: {per:.3f} ms CPU per command")
    print(f"median: {statistics.median(figures):.3f} ms CPU per {label}")


if __name__ == "__main__":
    main()
