#!/usr/bin/env python3
"""pregreet_flood - bots that talk before the banner, against postscreen.

SYNOPSIS
    python bench/attacks/pregreet_flood.py [--connections 2000] [--threads 16]

DESCRIPTION
    On loopback only: starts pymta (tests/harness.py, twistd -n) with
    Postfix's postscreen lines in master.cf ("postscreen" on the SMTP
    port, "smtpd pass ... smtpd"), "postscreen_access_list =" (the bots
    are on loopback, which permit_mynetworks would allowlist),
    "postscreen_greet_action = drop" and a 1 s greet wait. Then
    --threads bots open --connections connections in all, each from one
    of 200 addresses of 127.0.2.0/24, write "EHLO bot.example" at once
    (before the banner, as spam bots do) and read until the server hangs
    up. Meanwhile a good client (smtplib, from 127.0.0.1) waits for the
    banner as RFC 5321 asks, and delivers a message.

    Prints one line: the case, HELD or NOT HELD, and the figures: bot
    connections per second, how many got postscreen's 521, how many
    reached smtpd (its "connect from" line), the good client's session
    time and whether its message was delivered. HELD: every bot got the
    521, none reached smtpd, and the good message was delivered.

    The server is stopped and its temporary directory removed at the end,
    also on error or ^C.
"""

from __future__ import annotations

import argparse
import re
import smtplib
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.harness import DEFAULT_MASTER_CF, PymtaServer  # noqa: E402

MASTER_CF = (
    "127.0.0.1:0 inet n - n - 1 postscreen\n"
    "smtpd pass - - n - - smtpd\n" + DEFAULT_MASTER_CF.split("\n", 1)[1]
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Bots that talk before the banner.")
    p.add_argument("--connections", type=int, default=2000)
    p.add_argument("--threads", type=int, default=16)
    return p.parse_args(argv)


def bot(port: int, index: int, count: int, results: list[int]) -> None:
    dropped = other = 0
    for n in range(count):
        source = f"127.0.2.{(index * 7 + n) % 200 + 1}"
        try:
            with socket.create_connection(
                ("127.0.0.1", port), timeout=30, source_address=(source, 0)
            ) as sock:
                sock.sendall(b"EHLO bot.example\r\n")
                answer = b""
                while data := sock.recv(512):
                    answer += data
        except OSError:
            other += 1
            continue
        if b"521 5.5.1 Protocol error" in answer and b"250" not in answer:
            dropped += 1
        else:
            other += 1
    results[0] += dropped
    results[1] += other


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = [0, 0]
    with tempfile.TemporaryDirectory(prefix="pregreet.") as tmp:
        server = PymtaServer(
            Path(tmp),
            main_cf_extra=(
                "postscreen_access_list =\n"
                "postscreen_greet_action = drop\n"
                "postscreen_greet_wait = 1s\n"
            ),
            master_cf=MASTER_CF,
        )
        with server:
            server.start()
            port = server.smtp_port
            share = args.connections // args.threads
            bots = [
                threading.Thread(target=bot, args=(port, i, share, results))
                for i in range(args.threads)
            ]
            began = time.monotonic()
            for t in bots:
                t.start()
            good_began = time.monotonic()
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
                client.sendmail(
                    "s@example.org", ["alice@example.test"], b"Subject: good\r\n\r\nhello\r\n"
                )
            good_seconds = time.monotonic() - good_began
            for t in bots:
                t.join()
            elapsed = time.monotonic() - began
            try:
                server.wait_for_log(r"to=<alice@example\.test>, relay=virtual, .*status=sent")
                delivered = True
            except TimeoutError:
                delivered = False
            reached = len(re.findall(r"smtpd: connect from unknown\[127\.0\.2\.", server.log()))
            server.stop()
    total = share * args.threads
    held = results[0] == total and reached == 0 and delivered
    print(
        f"pregreet_flood     {'HELD' if held else 'NOT HELD':9} "
        f"{total / elapsed:.0f} bot connections/s, {results[0]}/{total} got 521, "
        f"{reached} reached smtpd; good client {good_seconds:.2f} s, "
        f"{'delivered' if delivered else 'NOT delivered'}",
        flush=True,
    )
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
