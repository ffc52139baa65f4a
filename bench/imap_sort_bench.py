#!/usr/bin/env python3
"""imap_sort_bench - SORT and THREAD on a big folder: pymta against Dovecot.

SYNOPSIS
    python bench/imap_sort_bench.py [--messages 100000] [--workdir /var/tmp]
        [--only pymta|dovecot] [--select-only] [--pause SECONDS] [--keep]

DESCRIPTION
    One user's INBOX of --messages messages (threads of 1 to 8 messages
    linked by References and "Re:" subjects, 97 senders, dates spread over
    days) is written straight into Maildir cur/ twice, once for each server
    (each builds its own index on first use). Over Python's imaplib, on
    loopback, it times on each server, one command after the other:

        SELECT INBOX                      (the index built; not compared)
        SORT (ARRIVAL) first, again       index data only
        SORT (SUBJECT) first, again       header fields read, then again
        SORT (REVERSE DATE), (FROM), (SIZE), (TO), (CC), (DISPLAYFROM),
        (DISPLAYTO), each first and again
        THREAD REFERENCES first, again
        THREAD ORDEREDSUBJECT first, again

    "first" is the first time a criterion is asked (the server may have
    kept what an earlier command read: pymta keeps every header key of a
    message from one read, so only the first header criterion reads
    headers; Dovecot reads the fields each criterion needs when first
    asked); "again" is the same command at once. --pause waits that many
    seconds after the SELECT before the first SORT (as a client that
    fetches its first screen in between). With --select-only, only
    the first SELECT (each server's index built from a fresh Maildir).

    and, for pymta, the slowest NOOP answered to another session of the
    same user while each command ran (how long its reactor was held).
    Both servers' answers to each command must be identical (the bench
    fails otherwise). Prints seconds for each server and the ratio
    Dovecot / pymta (above 1: pymta is faster).

REQUIREMENTS
    root (Dovecot runs as root: bench/dovecot_setup.py), Debian's
    dovecot-imapd; this checkout's twistd plugin; about 1 GB of disk in
    --workdir for 100,000 messages twice. The Maildirs belong to
    --mailbox-user (default "mail"; Dovecot refuses root's mail).

EXAMPLE
    python bench/imap_sort_bench.py --messages 100000
"""

from __future__ import annotations

import argparse
import imaplib
import os
import pwd
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dovecot_setup import DovecotServer, dovecot_missing
from retrieval_corpus import DOMAIN
from retrieval_pymta import PymtaRetrievalServer
from retrieval_run import LISTEN_HOST

USER = f"sorter@{DOMAIN}"
PASSWORD = "bench-pw"

#: (label, command): each criterion and algorithm asked a first time
#: (cold for it), then again at once (warm).
CRITERIA = [
    "ARRIVAL",
    "SUBJECT",
    "REVERSE DATE",
    "FROM",
    "SIZE",
    "TO",
    "CC",
    "DISPLAYFROM",
    "DISPLAYTO",
]
COMMANDS = [
    (f"SORT ({criterion}) {when}", ("SORT", f"({criterion})", "UTF-8", "ALL"))
    for criterion in CRITERIA
    for when in ("first", "again")
] + [
    (f"THREAD {algorithm} {when}", ("THREAD", algorithm, "UTF-8", "ALL"))
    for algorithm in ("REFERENCES", "ORDEREDSUBJECT")
    for when in ("first", "again")
]


def message(i: int) -> bytes:
    """Message i: thread i // 8 of up to 8 messages (sizes vary by thread)."""
    thread, pos = divmod(i, 8)
    length = 1 + thread % 8
    if pos >= length:
        pos = 0  # a new thread starting inside this block of 8
        thread = thread * 8 + i % 8 + 1_000_000
    refs = " ".join(f"<{thread}.{p}@bench.test>" for p in range(pos))
    day, second = divmod(i * 37 % 2_000_000, 86400)
    subject = ("Re: " if pos else "") + f"topic {thread % 20011} of the day"
    lines = [
        f"From: Sender {i % 97} <sender{i % 97}@client.test>",
        f"To: {USER}",
        f"Subject: {subject}",
        f"Date: {1 + day % 28:02d} Nov 2026 {second // 3600:02d}:{second // 60 % 60:02d}:"
        f"{second % 60:02d} +0000",
        f"Message-ID: <{thread}.{pos}@bench.test>",
    ]
    if refs:
        lines.append(f"References: {refs}")
    return ("\n".join(lines) + f"\n\nBody of message {i}.\n").encode()


def write_maildir(path: Path, count: int, uid: int, gid: int) -> None:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    start = 1_790_000_000
    for i in range(1, count + 1):
        data = message(i)
        vsize = len(data) + data.count(b"\n")
        name = f"{start + i}.M{i}P1.bench,S={len(data)},W={vsize}:2,S"
        with open(path / "cur" / name, "wb") as f:
            f.write(data)
    for parent in (path, *path.parents[:3]):
        os.chown(parent, uid, gid)
    for sub in ("cur", "new", "tmp"):
        os.chown(path / sub, uid, gid)
        for name in os.listdir(path / sub):
            os.chown(path / sub / name, uid, gid)


class NoopProbe:
    """Another session sending NOOP after NOOP: its slowest answer."""

    def __init__(self, port: int) -> None:
        self.client = imaplib.IMAP4(LISTEN_HOST, port, timeout=600)
        self.client.login(USER, PASSWORD)
        self.done = threading.Event()
        self.slowest = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            t0 = time.perf_counter()
            self.client.noop()
            self.slowest = max(self.slowest, time.perf_counter() - t0)

    def stop(self) -> float:
        self.done.set()
        self.thread.join()
        self.client.logout()
        return self.slowest


def run(
    port: int, count: int, probe: bool, select_only: bool = False, pause: float = 0.0
) -> tuple[dict[str, float], dict[str, bytes]]:
    imaplib.Commands.setdefault("SORT", ("SELECTED",))
    imaplib.Commands.setdefault("THREAD", ("SELECTED",))
    client = imaplib.IMAP4(LISTEN_HOST, port, timeout=3600)
    client._mesg = lambda *a: None  # type: ignore[attr-defined]
    client.login(USER, PASSWORD)
    times: dict[str, float] = {}
    answers: dict[str, bytes] = {}
    t0 = time.perf_counter()
    typ, data = client.select("INBOX")
    times["SELECT INBOX (index built)"] = time.perf_counter() - t0
    assert typ == "OK" and data == [str(count).encode()], (typ, data)
    if pause and not select_only:
        time.sleep(pause)  # a client's think time, not a wait for the server
    for label, command in [] if select_only else COMMANDS:
        noop = NoopProbe(port) if probe else None
        t0 = time.perf_counter()
        typ, data = client._simple_command(*command)
        name = command[0]
        typ, data = client._untagged_response(typ, data, name)
        times[label] = time.perf_counter() - t0
        if noop is not None:
            times[f"  slowest NOOP meanwhile ({label})"] = noop.stop()
        assert typ == "OK", (label, typ, data)
        answers[label] = data[0] or b""
    client.logout()
    return times, answers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--workdir", default="/var/tmp")
    ap.add_argument("--only", choices=("pymta", "dovecot"))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--select-only", action="store_true", help="time only the first SELECT")
    ap.add_argument("--pause", type=float, default=0.0, help="seconds between SELECT and SORT")
    ap.add_argument("--mailbox-user", default="mail", help="owner of the Maildirs (not root)")
    args = ap.parse_args()
    if args.only != "pymta":
        missing = dovecot_missing()
        if missing:
            print(f"dovecot: {missing}")
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="imap-sort-", dir=args.workdir))
    os.chmod(workdir, 0o755)
    owner = pwd.getpwnam(args.mailbox_user)
    uid, gid = owner.pw_uid, owner.pw_gid
    results: dict[str, tuple[dict[str, float], dict[str, bytes]]] = {}
    try:
        if args.only != "dovecot":
            home = workdir / "pymta" / "mail" / DOMAIN / "sorter"
            t0 = time.perf_counter()
            write_maildir(home, args.messages, uid, gid)
            print(f"pymta: wrote {args.messages} messages in {time.perf_counter() - t0:.1f} s")
            passwd = f"{USER}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{home}::\n"
            pymta = PymtaRetrievalServer(workdir, passwd, imap=True)
            pymta.start()
            try:
                assert pymta.imap_port is not None
                results["pymta"] = run(
                    pymta.imap_port,
                    args.messages,
                    probe=True,
                    select_only=args.select_only,
                    pause=args.pause,
                )
            finally:
                pymta.stop()
        if args.only != "pymta":
            home = workdir / "dovecot-mail" / "sorter"
            write_maildir(home, args.messages, uid, gid)
            passwd = f"{USER}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{home}::\n"
            dovecot = DovecotServer(workdir, passwd, uid, gid, mail_root=workdir / "dovecot-mail")
            dovecot.start()
            try:
                results["dovecot"] = run(
                    dovecot.imap_port,
                    args.messages,
                    probe=False,
                    select_only=args.select_only,
                    pause=args.pause,
                )
            finally:
                dovecot.stop()
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"\n{args.messages}-message folder, seconds (imaplib, loopback):")
    print(f"  {'':<48} {'pymta':>9} {'dovecot':>9} {'dovecot/pymta':>14}")
    labels = list(next(iter(results.values()))[0])
    for label in labels:
        row = [results[s][0].get(label) for s in ("pymta", "dovecot") if s in results]
        cells = " ".join(f"{v:9.3f}" if v is not None else f"{'-':>9}" for v in row)
        ratio = ""
        if len(row) == 2 and row[0] and row[1]:
            ratio = f"{row[1] / row[0]:14.2f}"
        print(f"  {label:<48} {cells} {ratio}")
    if len(results) == 2:
        differ = [
            label
            for label, _ in ([] if args.select_only else COMMANDS)
            if results["pymta"][1][label] != results["dovecot"][1][label]
        ]
        if differ:
            print(f"  answers DIFFER: {', '.join(differ)}")
            return 1
        print("  answers identical on both servers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
