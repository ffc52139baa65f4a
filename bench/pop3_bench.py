#!/usr/bin/env python3
"""pop3_bench - Dovecot and pymta side by side: POP3 download by 10 clients.

SYNOPSIS
    python bench/pop3_bench.py [--clients 10] [--messages 200] [--size 4096]
        [--repeat 3] [--top-every 10] [--top-lines 10] [--dele-every 4]
        [--only dovecot|pymta] [--pymta-processes 0] [--pymta-main-cf LINE] [--json]
        [--timeout 600] [--workdir /var/tmp] [--keep]

DESCRIPTION
    The scenario of issue 3 ("Speed"), in one run, on loopback only, as
    root:

    1. generates --messages deterministic messages of about --size bytes
       (retrieval_corpus) and one Maildir holding them in new/, as an MDA
       leaves them; copies it for every user of every server (owner
       nobody), so that each session of each server starts from
       identical mail;
    2. starts a private Dovecot 2.3 (dovecot_setup: passwd-file,
       mail_location = maildir:~, Debian's default process model) and a
       private pymta (retrieval_pymta: twistd -n pymta with a pop3d
       listener and "pymta_processes = 0", one reactor process per CPU,
       unless --pymta-processes says otherwise), both reading the same
       passwd-file with {PLAIN} passwords;
    3. per repetition and server, forks --clients client processes that
       start at the same instant; each, with Python's poplib, logs in
       (USER/PASS) as its own user, sends STAT, LIST and UIDL, RETRs every
       message and compares it line by line with the file it came from
       (dot-unstuffing included), sends TOP n --top-lines for every
       --top-every'th message (checked against the headers and first
       lines), DELEs every --dele-every'th message and QUITs; afterwards
       the Maildir must hold exactly the messages not deleted;
    4. measures the time from the release of the clients until the last
       has QUIT, the CPU time of the server's process trees (the dovecot
       master with its login, auth and pop3 processes - reaped children
       included; twistd with any workers), the peak resident memory of
       each server's tree (sampled every 100 ms) and pymta's VmHWM;
    5. prints, for each server, messages/s, server CPU ms per message,
       peak memory, the client processes' own CPU (the same client code
       for both servers), every repetition's rate, and the ratio
       pymta/dovecot of the median runs - or with --json every run's
       figures.

    Repetition 0 of each server is an unmeasured warm-up (its own users).
    Repetitions alternate which server goes first.  Each repetition uses
    its own users (rREPcNN@bench.test), so a mailbox is always opened for
    the first time, as a POP3 client that downloads and deletes finds it.
    Both servers are always stopped at the end, also on error or ^C, and
    the temporary directory is removed unless --keep is given.

REQUIREMENTS
    root; Debian's dovecot-pop3d and dovecot-imapd; pymta's twistd plugin
    in this checkout.  Keep --workdir on a real disk.

EXAMPLES
    python bench/pop3_bench.py --repeat 1 --messages 50
    python bench/pop3_bench.py --json > pop3.json
"""

from __future__ import annotations

import argparse
import json
import poplib
import pwd
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dovecot_setup import dovecot_missing
from retrieval_bench import (
    MESSAGES,
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
from retrieval_corpus import (
    BenchUser,
    Corpus,
    Message,
    count_messages,
    make_users,
)
from retrieval_run import (
    LISTEN_HOST,
    RunFigures,
    SessionResult,
    run_clients,
)


@dataclass(frozen=True)
class Pop3Plan:
    """What each client does in its session."""

    top_every: int = 10
    top_lines: int = 10
    dele_every: int = 4

    def deleted(self, count: int) -> int:
        """How many of count messages a session deletes."""
        return count // self.dele_every if self.dele_every else 0


def pop3_session(
    host: str, port: int, user: BenchUser, corpus: Corpus, plan: Pop3Plan, client: int
) -> SessionResult:
    """One client's session (see the module docstring); every reply checked."""
    result = SessionResult(client=client)
    errors = result.errors
    messages: tuple[Message, ...] = corpus.messages
    pop = poplib.POP3(host, port, timeout=120)
    try:
        pop.user(user.name)
        pop.pass_(user.password)
        count, _size = pop.stat()
        listing = pop.list()[1]
        uidls = pop.uidl()[1]
        result.operations += 5
        if count != len(messages) or len(listing) != count:
            errors.append(f"{user.name}: STAT/LIST {count}/{len(listing)} != {len(messages)}")
        if len({line.split()[1] for line in uidls}) != count:
            errors.append(f"{user.name}: UIDL not unique")
        # The server's order is its own (Maildir has none): find each
        # message by its Message-ID in what was retrieved.
        by_id = corpus.by_message_id()
        seen: dict[int, Message] = {}
        for n in range(1, count + 1):
            _resp, lines, octets = pop.retr(n)
            result.operations += 1
            expected = _identify(lines, by_id)
            if expected is None or lines != expected.lines():
                errors.append(f"{user.name}: RETR {n} does not match its file")
                continue
            seen[n] = expected
            result.messages += 1
            result.bytes += octets
        if len(set(m.message_id for m in seen.values())) != len(seen):
            errors.append(f"{user.name}: a message was served twice")
        for n in range(plan.top_every, count + 1, plan.top_every or count + 1):
            lines = pop.top(n, plan.top_lines)[1]
            result.operations += 1
            if n in seen and lines != seen[n].top(plan.top_lines):
                errors.append(f"{user.name}: TOP {n} {plan.top_lines} wrong")
        for n in range(plan.dele_every, count + 1, plan.dele_every or count + 1):
            pop.dele(n)
            result.operations += 1
        reply = pop.quit()
        result.operations += 1
        if not reply.startswith(b"+OK"):
            errors.append(f"{user.name}: QUIT answered {reply!r}")
    except poplib.error_proto as e:
        errors.append(f"{user.name}: {e}")
        pop.close()
    return result


def _identify(lines: list[bytes], by_id: dict[str, Message]) -> Message | None:
    """The corpus message whose Message-ID header these lines carry."""
    for line in lines:
        if not line:
            return None  # end of the header
        if line[:11].lower() == b"message-id:":
            return by_id.get(line[11:].strip().strip(b"<>").decode("ascii", "replace"))
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description="Dovecot and pymta side by side: POP3 download.")
    add_common_arguments(p)
    p.add_argument("--top-every", type=int, default=10, help="TOP every Nth message")
    p.add_argument("--top-lines", type=int, default=10, help="body lines per TOP")
    p.add_argument("--dele-every", type=int, default=4, help="DELE every Nth message")
    return p.parse_args(argv)


def run_rep(
    server: RetrievalServer,
    rep: int,
    users: list[BenchUser],
    corpus: Corpus,
    plan: Pop3Plan,
    timeout: float,
) -> RunFigures:
    """One measured (or warm-up) run of every client against server."""
    mine = sorted((u for u in users if u.rep == rep), key=lambda u: u.client)

    def session(client: int) -> SessionResult:
        return pop3_session(LISTEN_HOST, server.pop3_port, mine[client], corpus, plan, client)

    figures = run_clients(server.name, rep, session, len(mine), server.root_pids(), timeout)
    left = len(corpus.messages) - plan.deleted(len(corpus.messages))
    for u in mine:
        found = count_messages(server.mail_root / u.maildir)
        if found != left:
            figures.errors.append(f"{u.name}: {found} messages left after QUIT, expected {left}")
    return figures


def title(args: argparse.Namespace, corpus: Corpus) -> str:
    """The scenario, first line of the table."""
    avg = corpus.total_bytes() / max(1, len(corpus.messages))
    return (
        f"POP3: {args.clients} clients x {args.messages} messages (~{avg:.0f} B), "
        f"RETR all, TOP every {args.top_every}th, DELE every {args.dele_every}th; "
        f"median of {args.repeat}"
    )


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 when a run had errors."""
    args = parse_args(argv)
    pymta_main_cf = pymta_lines(args)
    names = [args.only] if args.only else list(SERVERS)
    if "dovecot" in names and (why := dovecot_missing()):
        print(f"pop3_bench: {why}", file=sys.stderr)
        return 2
    owner = pwd.getpwnam(args.mailbox_user)
    uid, gid = owner.pw_uid, owner.pw_gid
    signal.signal(signal.SIGTERM, _on_signal)
    with scratch("pop3_bench", args.workdir, args.keep) as workdir:
        progress(f"pop3_bench: generating mail in {workdir}")
        corpus = Corpus.generate(args.messages, args.size, args.seed)
        pristine = workdir / "pristine"
        corpus.write_maildir(pristine)
        users = make_users(args.clients, args.repeat)
        plan = Pop3Plan(args.top_every, args.top_lines, args.dele_every)
        makers = server_makers(workdir, users, uid, gid, pymta_main_cf)
        results, hwm = side_by_side(
            "pop3_bench",
            "POP3",
            MESSAGES,
            [makers[name] for name in names],
            Mailboxes(users, pristine, uid, gid),
            args.repeat,
            lambda server, rep: run_rep(server, rep, users, corpus, plan, args.timeout),
        )
    if args.json:
        print(json.dumps(as_json("pop3", results, MESSAGES, vars(args), hwm), indent=2))
    else:
        print(render(title(args, corpus), results, MESSAGES, pymta_main_cf, hwm))
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
