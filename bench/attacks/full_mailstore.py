#!/usr/bin/env python3
"""full_mailstore - users read their mail from a mail store that is full,
then read-only.

SYNOPSIS
    python bench/attacks/full_mailstore.py [--fs-kb 2048] [--messages 4]
        [--timeout 60]

DESCRIPTION
    As root, on loopback only: mounts a tmpfs of --fs-kb kilobytes on a
    fresh temporary directory and starts pymta (tests/harness.py, twistd
    -n, with POP3 and IMAP listeners) with its virtual_mailbox_base there.
    smtplib delivers --messages messages to alice; imaplib SELECTs INBOX
    once before the last one, so that one is delivered but not numbered.

    Case "full": a filler file takes every free byte of the tmpfs. imaplib
    logs in, SELECTs INBOX, FETCHes every message and APPENDs one; poplib
    logs in and RETRs every message.

    Case "read-only": the server is stopped, the filler removed, the tmpfs
    remounted read-only and the server started again; imaplib and poplib
    do the same.

    Before pymta handled this, SELECT answered "NO [SERVERBUG]" and POP3
    PASS "-ERR [SYS/TEMP] Internal error" in both cases (ENOSPC in the
    index write, EROFS on the index lock).

    Prints one line: the case name, HELD or NOT HELD, and per case the
    SELECT answer, the messages FETCHed and RETRieved out of those
    delivered, and the APPEND answer. HELD: every message readable over
    both protocols in both cases, SELECT OK ([READ-ONLY] when read-only),
    APPEND refused with [OVERQUOTA] (full) and [NOPERM] (read-only), and
    no [SERVERBUG] anywhere.

    The server is stopped, the tmpfs unmounted and the temporary directory
    removed at the end, also on error or ^C.

REQUIREMENTS
    root (mount -t tmpfs); pymta's twistd plugin in this checkout.

EXAMPLE
    python bench/attacks/full_mailstore.py
"""

from __future__ import annotations

import argparse
import imaplib
import os
import poplib
import re
import smtplib
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.harness import (  # noqa: E402
    DEFAULT_MASTER_CF,
    IMAP_SERVICE,
    POP3_SERVICE,
    PymtaServer,
)

USER, PASSWORD = "alice@example.test", "alice-pw"


def _message(n: int) -> bytes:
    return (
        f"From: sender@client.test\r\nTo: {USER}\r\nSubject: message {n}\r\n\r\n"
        f"body of message {n}\r\n"
    ).encode()


def _body(n: int) -> bytes:
    return f"body of message {n}".encode()


def _deliver(server: PymtaServer, n: int, timeout: float) -> None:
    sent = server.log().count("status=sent")
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=timeout) as client:
        client.sendmail("sender@client.test", [USER], _message(n))
    server.wait_for_log(r"status=sent", count=sent + 1, timeout=timeout)


def _fill(path: Path) -> Path:
    """One filler file that takes every byte the file system still has."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (65536, 4096, 512, 1):
            try:
                while os.write(fd, b"\0" * chunk):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def _read_both(server: PymtaServer, count: int, timeout: float) -> dict[str, str]:
    """SELECT, FETCH all and APPEND over IMAP; login and RETR all over POP3."""
    out: dict[str, str] = {"fetch": f"0/{count}", "append": "not tried"}
    imap = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=timeout)
    imap.login(USER, PASSWORD)
    try:
        try:
            typ, data = imap.select("INBOX")
            code = "[READ-WRITE]"
        except imaplib.IMAP4.readonly:  # imaplib's word for OK [READ-ONLY]
            typ, data, code = "OK", imap.untagged_responses.get("EXISTS", [b"?"]), "[READ-ONLY]"
            # Go on reading, as imaplib does after select(readonly=True).
            imap.untagged_responses.pop("READ-ONLY", None)
            imap.state = "SELECTED"
        if typ != "OK":
            out["select"] = f"{typ} {data[-1].decode(errors='replace') if data else ''}"
            return _pop3(server, count, timeout, out)
        out["select"] = f"{typ} {code} {data[-1].decode() if data and data[-1] else ''} EXISTS"
        typ, data = imap.fetch("1:*", "(BODY.PEEK[])")
        bodies = [d[1] for d in data if isinstance(d, tuple)]
        found = sum(1 for n in range(1, count + 1) if any(_body(n) in b for b in bodies))
        out["fetch"] = f"{found}/{count}"
        try:
            typ, data = imap.append("INBOX", "", None, _message(99))
            out["append"] = f"{typ} {data[0].decode() if data and data[0] else ''}"
        except imaplib.IMAP4.error as e:
            out["append"] = f"NO {e}"
    finally:
        imap.logout()
    return _pop3(server, count, timeout, out)


def _pop3(server: PymtaServer, count: int, timeout: float, out: dict[str, str]) -> dict[str, str]:
    pop = poplib.POP3("127.0.0.1", server.pop3_port, timeout=timeout)
    try:
        pop.user(USER)
        pop.pass_(PASSWORD)
        listed = len(pop.list()[1])
        retrieved = 0
        for i in range(1, listed + 1):
            text = b"\r\n".join(pop.retr(i)[1])
            retrieved += any(_body(n) in text for n in range(1, count + 1))
        out["retr"] = f"{retrieved}/{count}"
        pop.quit()
    except poplib.error_proto as e:
        out["retr"] = f"0/{count} ({e.args[0].decode(errors='replace')})"
    return out


def run(fs_kb: int, messages: int, timeout: float) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix="pymta-full-store-") as tmp:
        root = Path(tmp)
        store = root / "store"
        store.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={fs_kb}k", "tmpfs", str(store)], check=True
        )
        try:
            return _attack(root, store, messages, timeout)
        finally:
            subprocess.run(["umount", str(store)], check=False)


def _attack(root: Path, store: Path, messages: int, timeout: float) -> tuple[bool, str]:
    master = DEFAULT_MASTER_CF + POP3_SERVICE + IMAP_SERVICE
    server = PymtaServer(
        root / "pymta", master_cf=master, main_cf_extra=f"virtual_mailbox_base = {store}\n"
    )
    results: dict[str, dict[str, str]] = {}
    with server:
        server.start(timeout=timeout)
        for n in range(1, messages):
            _deliver(server, n, timeout)
        imap = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=timeout)
        imap.login(USER, PASSWORD)
        imap.select("INBOX")  # numbers what is there
        imap.logout()
        _deliver(server, messages, timeout)  # delivered, not numbered yet
        filler = _fill(store)
        results["full"] = _read_both(server, messages, timeout)
        server.stop()
        filler.unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(store)], check=True)
        try:
            server.start(timeout=timeout)
            results["read-only"] = _read_both(server, messages, timeout)
            server.stop()
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(store)], check=False)
    log = server.log()
    full, ro = results["full"], results["read-only"]
    held = (
        full["select"].startswith("OK [READ-WRITE]")
        and ro["select"].startswith("OK [READ-ONLY]")
        and all(r["fetch"] == r["retr"] == f"{messages}/{messages}" for r in results.values())
        and "[OVERQUOTA]" in full["append"]
        and "[NOPERM]" in ro["append"]
        and "SERVERBUG" not in log
        and not re.search(r"Internal error", log)
    )
    figure = "; ".join(
        f"{case}: SELECT {r['select']}, FETCH {r['fetch']}, POP3 RETR {r['retr']}, "
        f"APPEND {r['append']}"
        for case, r in results.items()
    )
    return held, figure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fs-kb", type=int, default=2048)
    parser.add_argument("--messages", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("full_mailstore: needs root (mount -t tmpfs)", file=sys.stderr)
        return 2
    held, figure = run(args.fs_kb, args.messages, args.timeout)
    print(f"full_mailstore: {'HELD' if held else 'NOT HELD'}: {figure}")
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
