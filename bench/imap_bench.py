#!/usr/bin/env python3
"""imap_bench - Dovecot and pymta side by side: a mixed IMAP workload.

SYNOPSIS
    python bench/imap_bench.py [--clients 10] [--sessions 20] [--messages 200]
        [--size 4096] [--repeat 3] [--only dovecot|pymta]
        [--pymta-processes 0] [--pymta-main-cf LINE] [--json]
        [--timeout 600] [--workdir /var/tmp] [--keep]

DESCRIPTION
    The scenario of issue 4 ("Speed and scale"), in one run, on loopback
    only, as root.  The mail, the users and the servers are those of
    pop3_bench.py (retrieval_corpus, dovecot_setup, retrieval_pymta):
    each user starts with --messages identical messages in new/ of its
    Maildir, both servers read the same passwd-file ({PLAIN}).

    Per repetition and server, --clients client processes start at the
    same instant; each, with Python's imaplib, runs --sessions sessions
    one after the other on its own mailbox.  One session is the mix of a
    mail client that opens, reads a little, files and leaves:

        LOGIN, SELECT INBOX,
        FETCH 1:* (UID FLAGS)                          (flag resync)
        UID FETCH <50 UIDs> (UID RFC822.SIZE FLAGS
            BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE MESSAGE-ID)])
        UID FETCH <uid> (BODY[])           x --bodies  (reading marks \\Seen)
        UID STORE <3 UIDs> +FLAGS (\\Flagged)
        UID STORE <uid> -FLAGS (\\Seen)
        UID SEARCH HEADER Message-ID <id>              (exactly one hit)
        UID SEARCH UNSEEN
        APPEND INBOX (\\Seen) <date> <a new message>
        UID STORE <uid> +FLAGS (\\Deleted), EXPUNGE      (exactly one gone)
        LOGOUT

    so the mailbox keeps its size from session to session.  Which UIDs
    are used is drawn from the UIDs the server listed, by a generator
    seeded with the client and session numbers: both servers get the
    same choices.  Every body fetched is compared with the message it
    came from (found by its Message-ID), every header fetch with the
    message's Subject, the SEARCH by Message-ID must find exactly the
    message, EXPUNGE must expunge exactly one.

    Counted operations are the commands above (17 with --bodies 5);
    a CAPABILITY that imaplib sends itself when the greeting carries none
    is work for the server but not counted.  The table gives, per server,
    operations/s, server CPU ms per operation (the server's process trees,
    reaped children included), peak resident memory of the server's tree,
    every repetition's rate, and the ratio pymta/dovecot of the median
    runs; --json every run's figures.  Repetition 0 is an unmeasured
    warm-up on its own users; repetitions alternate which server goes
    first.

    pymta runs with "pymta_processes = 0" unless --pymta-processes says
    otherwise: one reactor process per CPU sharing the listening socket,
    as an admin would run it on a multi-core machine (Dovecot, in its
    Debian configuration, runs one imap process per connection on every
    core).  Sessions of one user then land in any process; a folder's
    index carries the changes from one process to the other.
    --pymta-processes 1 measures a single reactor.

    pymta is measured only when this checkout's pymta builds an imapd
    listener (pymta.service.LISTENER_COMMANDS); until then the bench runs
    against Dovecot alone and says so.  --only dovecot does that on
    purpose.

REQUIREMENTS
    root; Debian's dovecot-imapd; pymta's twistd plugin in this checkout.

EXAMPLES
    python bench/imap_bench.py --only dovecot --sessions 5 --repeat 1
    python bench/imap_bench.py --json > imap.json
"""

from __future__ import annotations

import argparse
import imaplib
import json
import pwd
import random
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dovecot_setup import dovecot_missing
from retrieval_bench import (
    OPERATIONS,
    SERVERS,
    Mailboxes,
    RetrievalServer,
    add_common_arguments,
    as_json,
    progress,
    pymta_lines,
    render,
    scratch,
    server_makers,
    side_by_side,
)
from retrieval_corpus import BASE_TIME, BenchUser, Corpus, Message, make_users
from retrieval_pymta import has_imapd
from retrieval_run import (
    LISTEN_HOST,
    RunFigures,
    SessionResult,
    run_clients,
)

HEADER_FIELDS = "FROM TO SUBJECT DATE MESSAGE-ID"
_UID = re.compile(rb"UID (\d+)")
_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")


class CheckFailed(Exception):
    """A server's answer was wrong (the run is reported as failed)."""


@dataclass(frozen=True)
class ImapPlan:
    """What one session does (see the module docstring)."""

    sessions: int = 20
    header_range: int = 50
    bodies: int = 5
    flagged: int = 3

    def operations(self) -> int:
        """Commands counted per session (LOGIN .. LOGOUT, see imap_session)."""
        return 12 + self.bodies


def _ok(answer: tuple[str, list[Any]], what: str) -> list[Any]:
    typ, data = answer
    if typ != "OK":
        raise CheckFailed(f"{what}: {typ} {data!r}")
    return data


def _fetch_items(data: list[Any]) -> list[tuple[bytes, bytes | None]]:
    """imaplib FETCH data -> [(response line, literal or None)]."""
    items: list[tuple[bytes, bytes | None]] = []
    for part in data:
        if isinstance(part, tuple):
            items.append((part[0], part[1]))
        elif isinstance(part, bytes) and part not in (b")",) and _UID.search(part):
            items.append((part, None))
    return items


def _message_id(content: bytes) -> str | None:
    for line in content.split(b"\r\n"):
        if not line:
            return None
        if line[:11].lower() == b"message-id:":
            return line[11:].strip().strip(b"<>").decode("ascii", "replace")
    return None


def imap_session(
    host: str,
    port: int,
    user: BenchUser,
    known: dict[str, Message],
    appends: Corpus,
    plan: ImapPlan,
    session_no: int,
    result: SessionResult,
) -> None:
    """One session of the mix; raises CheckFailed on a wrong answer."""
    rng = random.Random(user.client * 100_003 + session_no)
    imap = imaplib.IMAP4(host, port, timeout=120)
    ops = 0
    try:
        _ok(imap.login(user.name, user.password), "LOGIN")
        _ok(imap.select("INBOX"), "SELECT")
        listing = _ok(imap.fetch("1:*", "(UID FLAGS)"), "FETCH 1:*")
        ops += 3
        uids = sorted(int(hit.group(1)) for line in listing if (hit := _UID.search(line)))
        if len(uids) < plan.header_range:
            raise CheckFailed(f"{user.name}: {len(uids)} messages listed")
        start = rng.randrange(0, len(uids) - plan.header_range + 1)
        chosen = uids[start : start + plan.header_range]
        data = _ok(
            imap.uid(
                "FETCH",
                f"{chosen[0]}:{chosen[-1]}",
                f"(UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS ({HEADER_FIELDS})])",
            ),
            "UID FETCH headers",
        )
        ops += 1
        headers = [lit for _line, lit in _fetch_items(data) if lit is not None]
        if len(headers) != len(chosen):
            raise CheckFailed(f"{user.name}: {len(headers)} headers for {len(chosen)} UIDs")
        for h in headers:
            mid = _message_id(h)
            m = known.get(mid or "")
            if m is None or f"Subject: {m.subject}\r\n".encode() not in h:
                raise CheckFailed(f"{user.name}: header fetch of {mid} wrong")
        picked = rng.sample(uids, plan.bodies)
        last_id = ""
        for uid in picked:
            items = _fetch_items(_ok(imap.uid("FETCH", str(uid), "(BODY[])"), "FETCH BODY[]"))
            ops += 1
            body = items[0][1] if items else None
            mid = _message_id(body or b"")
            m = known.get(mid or "")
            if body is None or m is None or body != m.crlf():
                raise CheckFailed(f"{user.name}: BODY[] of UID {uid} does not match")
            result.messages += 1
            result.bytes += len(body)
            last_id = m.message_id
        flag_set = ",".join(str(u) for u in rng.sample(uids, plan.flagged))
        _ok(imap.uid("STORE", flag_set, "+FLAGS", r"(\Flagged)"), "STORE +Flagged")
        _ok(imap.uid("STORE", str(picked[0]), "-FLAGS", r"(\Seen)"), "STORE -Seen")
        found = _ok(imap.uid("SEARCH", "HEADER", "Message-ID", f"<{last_id}>"), "SEARCH")
        ops += 3
        if len(found[0].split()) != 1 or int(found[0].split()[0]) != picked[-1]:
            raise CheckFailed(f"{user.name}: SEARCH Message-ID {last_id} found {found!r}")
        _ok(imap.uid("SEARCH", "UNSEEN"), "SEARCH UNSEEN")
        new = appends.messages[session_no % len(appends.messages)]
        _ok(
            imap.append("INBOX", r"(\Seen)", imaplib.Time2Internaldate(BASE_TIME), new.crlf()),
            "APPEND",
        )
        victim = rng.choice([u for u in uids if u not in picked])
        _ok(imap.uid("STORE", str(victim), "+FLAGS", r"(\Deleted)"), "STORE +Deleted")
        gone = _ok(imap.expunge(), "EXPUNGE")
        ops += 4
        if len([g for g in gone if g]) != 1:
            raise CheckFailed(f"{user.name}: EXPUNGE answered {gone!r}")
        typ, _ = imap.logout()
        ops += 1
        if typ != "BYE":
            raise CheckFailed(f"{user.name}: LOGOUT answered {typ}")
    except BaseException:
        imap.shutdown()
        raise
    finally:
        result.operations += ops


def client_sessions(
    host: str,
    port: int,
    user: BenchUser,
    known: dict[str, Message],
    appends: Corpus,
    plan: ImapPlan,
    client: int,
) -> SessionResult:
    """All sessions of one client; the first failure ends them."""
    result = SessionResult(client=client)
    for s in range(plan.sessions):
        try:
            imap_session(host, port, user, known, appends, plan, s, result)
        except (CheckFailed, imaplib.IMAP4.error, OSError) as e:
            result.errors.append(f"{user.name} session {s}: {e}")
            break
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description="Dovecot and pymta side by side: mixed IMAP.")
    add_common_arguments(p)
    p.add_argument("--sessions", type=int, default=20, help="sessions per client and run")
    p.add_argument("--bodies", type=int, default=5, help="BODY[] fetches per session")
    return p.parse_args(argv)


def title(args: argparse.Namespace) -> str:
    """The scenario, first line of the table."""
    return (
        f"IMAP: {args.clients} clients x {args.sessions} sessions on {args.messages}-message "
        f"mailboxes (~{args.size} B); median of {args.repeat}"
    )


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 when a run had errors."""
    args = parse_args(argv)
    pymta_main_cf = pymta_lines(args)
    names = [args.only] if args.only else list(SERVERS)
    if "pymta" in names and not has_imapd():
        progress("imap_bench: this checkout's pymta has no imapd yet: measuring Dovecot only")
        names.remove("pymta")
        if not names:
            return 2
    if "dovecot" in names and (why := dovecot_missing()):
        print(f"imap_bench: {why}", file=sys.stderr)
        return 2
    owner = pwd.getpwnam(args.mailbox_user)
    uid, gid = owner.pw_uid, owner.pw_gid
    signal.signal(signal.SIGTERM, _on_signal)
    plan = ImapPlan(sessions=args.sessions, bodies=args.bodies)
    with scratch("imap_bench", args.workdir, args.keep) as workdir:
        progress(f"imap_bench: generating mail in {workdir}")
        corpus = Corpus.generate(args.messages, args.size, args.seed)
        appends = Corpus.generate(max(1, args.sessions), args.size, args.seed + 1, prefix="a")
        known = {**corpus.by_message_id(), **appends.by_message_id()}
        pristine = workdir / "pristine"
        corpus.write_maildir(pristine)
        users = make_users(args.clients, args.repeat)
        makers = server_makers(workdir, users, uid, gid, pymta_main_cf, imap=True)
        results, hwm = side_by_side(
            "imap_bench",
            "IMAP",
            OPERATIONS,
            [makers[name] for name in names],
            Mailboxes(users, pristine, uid, gid),
            args.repeat,
            lambda server, rep: run_rep(server, rep, users, known, appends, plan, args.timeout),
        )
    if args.json:
        print(json.dumps(as_json("imap", results, OPERATIONS, vars(args), hwm), indent=2))
    else:
        print(render(title(args), results, OPERATIONS, pymta_main_cf, hwm))
    return 1 if any(r.errors for r in results) else 0


def run_rep(
    server: RetrievalServer,
    rep: int,
    users: list[BenchUser],
    known: dict[str, Message],
    appends: Corpus,
    plan: ImapPlan,
    timeout: float,
) -> RunFigures:
    """One measured (or warm-up) run of every client against server."""
    mine = sorted((u for u in users if u.rep == rep), key=lambda u: u.client)

    def session(client: int) -> SessionResult:
        return client_sessions(
            LISTEN_HOST, server.imap_port, mine[client], known, appends, plan, client
        )

    figures = run_clients(server.name, rep, session, len(mine), server.root_pids(), timeout)
    expected = len(mine) * plan.sessions * plan.operations()
    if not figures.errors and figures.operations != expected:
        figures.errors.append(f"{figures.operations} operations counted, {expected} planned")
    return figures


if __name__ == "__main__":
    sys.exit(main())
