#!/usr/bin/env python3
"""imap_latency_bench - Dovecot and pymta side by side: one client's wait per command.

SYNOPSIS
    python bench/imap_latency_bench.py [--count 200] [--messages 200]
        [--size 4096] [--pymta-processes 1] [--json] [--workdir /var/tmp]
        [--keep]

DESCRIPTION
    Throughput benches (imap_bench.py) hide a stall that costs a lone
    client dearly: a command that waits on a timer, not on work.  Here one
    Python imaplib client, alone on loopback, logs in, selects INBOX and
    times --count commands of each kind, one after the other:

        NOOP
        UID STORE <uid> +FLAGS (\\Flagged) / -FLAGS (\\Flagged), alternately
        UID FETCH <uid> (BODY.PEEK[])
        APPEND INBOX (\\Seen) <a --size message>   (literal, then CRLF:
                                                  imaplib's two writes)

    against a private Dovecot 2.3 and a private pymta (the servers, users
    and mailboxes of imap_bench.py: --messages messages in INBOX), and
    prints per server and command the median and 90th-percentile wall
    time in ms, and the ratio pymta/dovecot of the medians.  The servers
    run one after the other; each is stopped before the next starts.

    A command that takes tens of ms where the other server takes one or
    two is waiting on something other than the CPU (a delayed ACK held
    pymta's APPEND for 40 ms until imapd acknowledged partial commands at
    once).

REQUIREMENTS
    root; Debian's dovecot-imapd; pymta's twistd plugin in this checkout.

EXAMPLES
    python bench/imap_latency_bench.py --count 50
    python bench/imap_latency_bench.py --json > latency.json
"""

from __future__ import annotations

import argparse
import imaplib
import json
import pwd
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dovecot_setup import dovecot_missing
from retrieval_bench import RetrievalServer, populate, progress, scratch, server_makers
from retrieval_corpus import BenchUser, Corpus, make_users
from retrieval_run import LISTEN_HOST

COMMANDS = ("NOOP", "UID STORE", "UID FETCH BODY.PEEK[]", "APPEND")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description="Dovecot and pymta: one IMAP client's latency.")
    p.add_argument("--count", type=int, default=200, help="commands of each kind")
    p.add_argument("--messages", type=int, default=200, help="messages in INBOX")
    p.add_argument("--size", type=int, default=4096, help="approximate message bytes")
    p.add_argument("--pymta-processes", type=int, default=1, help="pymta_processes (0: per CPU)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"), help="temp dir parent")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--mailbox-user", default="nobody", help="owner of the Maildirs")
    args = p.parse_args(argv)
    if args.count < 1:
        p.error("--count must be at least 1")
    return args


def _timed(count: int, command: Callable[[int], object]) -> list[float]:
    times = []
    for i in range(count):
        start = time.perf_counter()
        command(i)
        times.append(time.perf_counter() - start)
    return times


def measure(port: int, user: BenchUser, message: bytes, count: int) -> dict[str, list[float]]:
    """Wall seconds of every command of every kind, for one client."""
    imap = imaplib.IMAP4(LISTEN_HOST, port, timeout=60)
    try:
        imap.login(user.name, user.password)
        imap.select("INBOX")
        typ, data = imap.uid("SEARCH", "ALL")
        uids = data[0].split() if typ == "OK" and data[0] else []
        if not uids:
            raise SystemExit(f"{user.name}: INBOX is empty")

        def store(i: int) -> object:
            change = "+FLAGS" if i % 2 == 0 else "-FLAGS"
            return imap.uid("STORE", uids[i % len(uids)], change, "(\\Flagged)")

        def fetch(i: int) -> object:
            return imap.uid("FETCH", uids[i % len(uids)], "(BODY.PEEK[])")

        def append(i: int) -> object:
            return imap.append("INBOX", "(\\Seen)", None, message)

        return {
            "NOOP": _timed(count, lambda i: imap.noop()),
            "UID STORE": _timed(count, store),
            "UID FETCH BODY.PEEK[]": _timed(count, fetch),
            "APPEND": _timed(count, append),
        }
    finally:
        imap.logout()


def _ms(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def render(results: dict[str, dict[str, list[float]]]) -> str:
    """Median and 90th percentile per server and command, and the ratio."""
    out = [f"{'command':<22} {'server':<8} {'median ms':>10} {'p90 ms':>8}"]
    for command in COMMANDS:
        for server, times in results.items():
            out.append(
                f"{command:<22} {server:<8} {_ms(times[command], 0.5):>10.2f} "
                f"{_ms(times[command], 0.9):>8.2f}"
            )
        if {"dovecot", "pymta"} <= results.keys():
            ratio = statistics.median(results["pymta"][command]) / max(
                1e-9, statistics.median(results["dovecot"][command])
            )
            out.append(f"{command:<22} {'ratio':<8} {ratio:>10.2f}  pymta/dovecot, lower is faster")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark."""
    args = parse_args(argv)
    if why := dovecot_missing():
        print(f"imap_latency_bench: {why}", file=sys.stderr)
        return 2
    owner = pwd.getpwnam(args.mailbox_user)
    uid, gid = owner.pw_uid, owner.pw_gid
    corpus = Corpus.generate(max(1, args.messages), args.size, 1)
    message = Corpus.generate(1, args.size, 2, prefix="a").messages[0].content
    results: dict[str, dict[str, list[float]]] = {}
    with scratch("imap_latency_bench", args.workdir, args.keep) as workdir:
        pristine = workdir / "pristine"
        corpus.write_maildir(pristine)
        users = make_users(1, 0)
        makers = server_makers(
            workdir, users, uid, gid, [f"pymta_processes = {args.pymta_processes}"], imap=True
        )
        for name in ("dovecot", "pymta"):
            server: RetrievalServer = makers[name]()
            try:
                server.mail_root.mkdir(parents=True, exist_ok=True)
                populate(server, users, pristine, uid, gid)
                server.start()
                port = server.imap_port
                progress(f"imap_latency_bench: {name} IMAP on {LISTEN_HOST}:{port}")
                results[name] = measure(port, users[0], message, args.count)
            finally:
                server.stop()
    if args.json:
        print(json.dumps({"settings": {**vars(args), "workdir": str(args.workdir)}, **results}))
    else:
        print(f"IMAP latency: one imaplib client, {args.count} commands of each kind")
        print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
