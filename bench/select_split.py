#!/usr/bin/env python3
"""select_split - where the first SELECT of a fresh big folder goes, in twistd.

SYNOPSIS
    python bench/select_split.py [--messages 100000] [--workdir DIR] [--runs 3]

DESCRIPTION
    Writes a fresh Maildir of --messages messages (bench/imap_sort_bench.py's
    folder), starts this checkout's pymta under twistd with
    bench/select_split_hook as ``sitecustomize`` (it times the SELECT's
    steps inside the server, on the reactor thread and in the store's
    threads), and SELECTs INBOX over imaplib. Prints, for each run, the
    client's time and each step's start and end (milliseconds after the
    client sent the command; CLOCK_MONOTONIC, shared by both processes)
    and its thread's CPU milliseconds: the command parsed on the reactor,
    the rescan submitted to the store's threads and run there (the
    listing parsed and ordered, the folder's lock and index, the index
    lines and their write with fsync), the summary back on the reactor,
    the answer queued and written to the socket.

REQUIREMENTS
    root (the Maildir belongs to --mailbox-user, as in imap_sort_bench).
"""

from __future__ import annotations

import argparse
import imaplib
import os
import pwd
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from imap_sort_bench import DOMAIN, PASSWORD, USER, write_maildir
from retrieval_pymta import PymtaRetrievalServer
from retrieval_run import LISTEN_HOST

HOOK = Path(__file__).resolve().parent / "select_split_hook"


def one_run(workdir: Path, count: int, uid: int, gid: int) -> None:
    home = workdir / "pymta" / "mail" / DOMAIN / "sorter"
    write_maildir(home, count, uid, gid)
    log = workdir / "split.log"
    os.environ["SELECT_SPLIT_LOG"] = str(log)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HOOK), os.environ.get("PYTHONPATH", "")) if p
    )
    passwd = f"{USER}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{home}::\n"
    server = PymtaRetrievalServer(workdir, passwd, imap=True)
    server.start()
    try:
        client = imaplib.IMAP4(LISTEN_HOST, server.imap_port)
        client.login(USER, PASSWORD)
        log.write_text("")  # the login's steps are not the SELECT's
        sent = time.monotonic()
        typ, data = client.select("INBOX")
        received = time.monotonic()
        assert typ == "OK" and data == [str(count).encode()], (typ, data)
        time.sleep(0.5)  # the steps after the answer, for the log (not timed)
        client.logout()
    finally:
        server.stop()
    print(f"client: SELECT answered after {1000 * (received - sent):.0f} ms")
    for line in log.read_text().splitlines():
        name, thread, start, end, cpu = line.split()
        if float(start) > received:
            continue  # after the answer (the dates read, the records made)
        print(
            f"  {name:<20} {thread[:12]:<12} {1000 * (float(start) - sent):7.1f}"
            f" .. {1000 * (float(end) - sent):7.1f} ms, CPU {1000 * float(cpu):6.1f} ms"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--workdir", default="/var/tmp")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mailbox-user", default="mail")
    args = ap.parse_args()
    owner = pwd.getpwnam(args.mailbox_user)
    for _ in range(args.runs):
        workdir = Path(tempfile.mkdtemp(prefix="select-split-", dir=args.workdir))
        os.chmod(workdir, 0o755)
        try:
            one_run(workdir, args.messages, owner.pw_uid, owner.pw_gid)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
