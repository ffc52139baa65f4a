#!/usr/bin/env python3
"""search_stall - do concurrent IMAP body SEARCHes stall everyone else?

SYNOPSIS
    python bench/attacks/search_stall.py [--messages 10000] [--size 51200]
        [--searchers 20] [--users 1] [--duration 20] [--interval 0.05]
        [--workdir DIR] [--keep]

DESCRIPTION
    Issue 11's attack: 20-30 clients send ``SEARCH BODY x`` on a folder of
    10,000 messages of 50 KB; while the searches ran in the reactor a new
    client's LOGIN waited 19 s and an SMTP EHLO 15 s.

    This script starts its own pymta (twistd, SMTP and IMAP on loopback,
    tests/harness.py), writes --messages Maildir files of --size bytes into
    the INBOX of --users users (before the start), opens the folder once
    (the index is built), then:

    1. measures the idle latencies of the probes below for a few seconds;
    2. starts --searchers clients, spread over the users, each logging in,
       selecting INBOX and sending ``SEARCH BODY`` a word in no message
       (every file is read to its end) again and again, for --duration
       seconds;
    3. meanwhile, every --interval seconds, probes with a new SMTP session
       (connect, banner, EHLO, QUIT: the time to the 221) and a new IMAP
       login (connect, greeting, LOGIN: the time to its OK), each from a
       fresh connection, one after the other; the probe's user has a
       folder as big, and its SELECT (read-only) is timed and reported
       too (not part of HELD: opening a big folder is work of its own).

    It prints the p50 and p99 of each probe idle and under load, the body
    searches completed, and one last line::

        search_stall HELD smtp_p99=3.1ms imap_login_p99=4.2ms ...

    HELD when both p99 under load are within 50 ms (the target).

    The probes measure what a new client waits for. The searching user's
    own commands wait for its scans (one at a time per user, by design).

REQUIREMENTS
    pymta's twistd plugin in this checkout; free disk for the folder
    (--messages x --size per user, and once more for the probe's user).

EXAMPLES
    python bench/attacks/search_stall.py
    python bench/attacks/search_stall.py --messages 2000 --searchers 30 --users 3
"""

from __future__ import annotations

import argparse
import imaplib
import os
import shutil
import smtplib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.harness import DEFAULT_MASTER_CF, IMAP_SERVICE, PymtaServer  # noqa: E402

TARGET_MS = 50.0
NEEDLE = "zqxjkvbnothere"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--size", type=int, default=50 * 1024)
    p.add_argument("--searchers", type=int, default=20)
    p.add_argument("--users", type=int, default=1)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--interval", type=float, default=0.05)
    p.add_argument("--idle", type=float, default=3.0, help="seconds of idle probes")
    p.add_argument("--workdir", default=None)
    p.add_argument("--keep", action="store_true")
    return p.parse_args(argv)


def user_names(count: int) -> list[str]:
    return [f"user{n}" for n in range(count)]


def write_folder(maildir: Path, messages: int, size: int) -> None:
    """Maildir files of ``size`` bytes (LF line ends, 72-column text), with
    their sizes in the names (",S=", ",W="), as a delivery writes them."""
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    line = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod te\n"
    now = int(time.time()) - messages
    for n in range(messages):
        head = (
            b"From: sender%d@example.org\nTo: someone@example.test\n"
            b"Subject: message %d\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\n" % (n, n)
        )
        body = line * max(1, (size - len(head)) // len(line))
        data = head + body
        vsize = len(data) + data.count(b"\n")
        name = f"{now + n}.M{n}P1.bench,S={len(data)},W={vsize}:2,S"
        path = maildir / "cur" / name
        path.write_bytes(data)
        os.utime(path, (now + n, now + n))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def smtp_probe(port: int) -> float:
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        smtp.ehlo("probe.example")
        smtp.quit()
    return (time.perf_counter() - start) * 1000


def imap_probe(port: int, user: str) -> tuple[float, float]:
    """(connect + greeting + LOGIN, then SELECT INBOX) in ms."""
    start = time.perf_counter()
    client = imaplib.IMAP4("127.0.0.1", port, timeout=60)
    client.login(f"{user}@example.test", "pw")
    logged_in = time.perf_counter()
    client.select("INBOX", readonly=True)
    selected = time.perf_counter()
    client.logout()
    return (logged_in - start) * 1000, (selected - logged_in) * 1000


class Prober(threading.Thread):
    """New SMTP sessions and IMAP logins, one after the other, every interval."""

    def __init__(self, smtp_port: int, imap_port: int, user: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.smtp_port, self.imap_port, self.user = smtp_port, imap_port, user
        self.interval = interval
        self.smtp: list[float] = []
        self.imap: list[float] = []
        self.select: list[float] = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                self.smtp.append(smtp_probe(self.smtp_port))
                login, select = imap_probe(self.imap_port, self.user)
                self.imap.append(login)
                self.select.append(select)
            except (OSError, imaplib.IMAP4.error, smtplib.SMTPException):
                self.errors += 1
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - began)))


class Searcher(threading.Thread):
    """LOGIN, SELECT, then SEARCH BODY again and again until told to stop."""

    def __init__(self, port: int, user: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.user, self.stop = port, user, stop
        self.done: list[float] = []
        self.errors = 0

    def run(self) -> None:
        try:
            client = imaplib.IMAP4("127.0.0.1", self.port, timeout=600)
            client.login(f"{self.user}@example.test", "pw")
            client.select("INBOX")
            while not self.stop.is_set():
                start = time.perf_counter()
                typ, data = client.search(None, "BODY", NEEDLE)
                if typ == "OK" and data == [b""]:
                    self.done.append(time.perf_counter() - start)
                else:
                    self.errors += 1
        except (OSError, imaplib.IMAP4.error):
            if not self.stop.is_set():
                self.errors += 1


def figures(name: str, values: list[float]) -> str:
    return (
        f"{name}: n={len(values)} p50={percentile(values, 0.5):.1f}ms "
        f"p99={percentile(values, 0.99):.1f}ms max={max(values, default=float('nan')):.1f}ms"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="search_stall.", dir=args.workdir))
    users = user_names(args.users)
    vmailbox = "".join(f"{u}@example.test example.test/{u}/\n" for u in users)
    passwd = "".join(f"{u}@example.test:{{PLAIN}}pw::::::\n" for u in users)
    # The probe logs in as a user of its own, who has the same big folder
    # (its SELECT is timed too) but sends no SEARCH.
    vmailbox += "probe@example.test example.test/probe/\n"
    passwd += "probe@example.test:{PLAIN}pw::::::\n"
    try:
        built = time.monotonic()
        for u in [*users, "probe"]:
            write_folder(root / "mail" / "example.test" / u, args.messages, args.size)
        print(
            f"folders: {args.users} x {args.messages} messages of {args.size} bytes, "
            f"written in {time.monotonic() - built:.1f}s",
            file=sys.stderr,
        )
        server = PymtaServer(
            root,
            master_cf=DEFAULT_MASTER_CF + IMAP_SERVICE,
            vmailbox=vmailbox,
            passwd=passwd,
        )
        with server:
            server.start()
            for u in [*users, "probe"]:  # build the index once, as a first login would
                opened = time.monotonic()
                client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=600)
                client.login(f"{u}@example.test", "pw")
                client.select("INBOX")
                client.logout()
                print(f"{u}: first SELECT {time.monotonic() - opened:.1f}s", file=sys.stderr)

            idle = Prober(server.smtp_port, server.imap_port, "probe", args.interval)
            idle.start()
            time.sleep(args.idle)  # a bench: measuring for a fixed time is the point
            idle.stop.set()
            idle.join()

            stop = threading.Event()
            searchers = [
                Searcher(server.imap_port, users[i % len(users)], stop)
                for i in range(args.searchers)
            ]
            for s in searchers:
                s.start()
            loaded = Prober(server.smtp_port, server.imap_port, "probe", args.interval)
            loaded.start()
            time.sleep(args.duration)
            loaded.stop.set()
            loaded.join()
            stop.set()
            server.stop()
            for s in searchers:
                s.join(5)
        searches = [t for s in searchers for t in s.done]
        print(figures("idle smtp session", idle.smtp), file=sys.stderr)
        print(figures("idle imap login", idle.imap), file=sys.stderr)
        print(figures("loaded smtp session", loaded.smtp), file=sys.stderr)
        print(figures("loaded imap login", loaded.imap), file=sys.stderr)
        print(figures("idle imap select (after login)", idle.select), file=sys.stderr)
        print(figures("loaded imap select (after login)", loaded.select), file=sys.stderr)
        mb = args.messages * args.size / 1e6
        mean = statistics.mean(searches) if searches else float("nan")
        print(
            f"body searches completed: {len(searches)} in {args.duration:.0f}s "
            f"({mb:.0f} MB each, mean {mean:.2f}s from SEARCH to OK), "
            f"searcher errors {sum(s.errors for s in searchers)}, "
            f"probe errors {loaded.errors}",
            file=sys.stderr,
        )
        smtp99 = percentile(loaded.smtp, 0.99)
        imap99 = percentile(loaded.imap, 0.99)
        held = smtp99 <= TARGET_MS and imap99 <= TARGET_MS and loaded.errors == 0
        print(
            f"search_stall {'HELD' if held else 'NOT HELD'} "
            f"smtp_p99={smtp99:.1f}ms imap_login_p99={imap99:.1f}ms "
            f"(p50 {percentile(loaded.smtp, 0.5):.1f}/{percentile(loaded.imap, 0.5):.1f}ms; "
            f"idle p99 {percentile(idle.smtp, 0.99):.1f}/{percentile(idle.imap, 0.99):.1f}ms) "
            f"under {args.searchers} body SEARCHes of {args.users} user(s) x "
            f"{args.messages} x {args.size // 1024} KB, {len(searches)} completed"
        )
        return 0 if held else 1
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
