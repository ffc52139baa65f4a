#!/usr/bin/env python3
"""full_queue - a client sends a large message to a server whose queue
file system is nearly full.

SYNOPSIS
    python bench/attacks/full_queue.py [--fs-mb 40] [--free-mb 8]
        [--message-mb 4] [--timeout 60]

DESCRIPTION
    As root, on loopback only: mounts a tmpfs of --fs-mb megabytes on a
    fresh temporary directory, starts pymta (tests/harness.py, twistd -n)
    with its queue_directory there and the default message_size_limit
    (10240000), fills the file system with one filler file until
    --free-mb remain, and has smtplib send a --message-mb message.

    Before pymta checked queue_minfree, MAIL FROM was accepted, the client
    sent the whole message, and the end of DATA was answered "451 4.3.0
    queue file write error". Postfix (and pymta now) answers MAIL FROM
    "452 4.3.1 Insufficient system storage" while the free space is under
    1.5 x message_size_limit, so the client sends no content at all.

    Then the filler is removed and the script measures how long until MAIL
    FROM is accepted again (the statvfs reading is at most a second old)
    and the message is queued.

    Prints one line: the case, HELD or NOT HELD, and the figures: the
    reply to MAIL FROM, the content bytes the client had sent before the
    refusal, and the seconds until mail was accepted again after space was
    freed. HELD: MAIL FROM was refused with 452 4.3.1 within 5 s of the
    fill, and the message was queued within 5 s after the space came back.

    The server is stopped, the tmpfs unmounted and the temporary
    directory removed at the end, also on error or ^C.

REQUIREMENTS
    root (mount -t tmpfs); pymta's twistd plugin in this checkout.

EXAMPLE
    python bench/attacks/full_queue.py
"""

from __future__ import annotations

import argparse
import os
import smtplib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.harness import PymtaServer  # noqa: E402

MB = 1_000_000


def _free(path: Path) -> int:
    vfs = os.statvfs(path)
    return vfs.f_bavail * vfs.f_frsize


def _fill(path: Path, leave: int) -> Path:
    """One filler file that leaves about ``leave`` bytes free."""
    filler = path / "filler"
    with open(filler, "wb") as f:
        chunk = b"\0" * (1 << 20)
        while _free(path) > leave + len(chunk):
            f.write(chunk)
            f.flush()
        rest = _free(path) - leave
        if rest > 0:
            f.write(b"\0" * rest)
    return filler


def _message(size: int) -> bytes:
    line = b"x" * 76 + b"\r\n"
    body = line * (size // len(line) + 1)
    return b"From: a@client.test\r\nTo: alice@example.test\r\nSubject: big\r\n\r\n" + body


def run(fs_mb: int, free_mb: int, message_mb: int, timeout: float) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix="pymta-full-queue-") as tmp:
        root = Path(tmp)
        spool = root / "fs"
        spool.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={fs_mb}m", "tmpfs", str(spool)], check=True
        )
        try:
            return _attack(root, spool, free_mb, message_mb, timeout)
        finally:
            subprocess.run(["umount", str(spool)], check=False)


def _attack(
    root: Path, spool: Path, free_mb: int, message_mb: int, timeout: float
) -> tuple[bool, str]:
    server = PymtaServer(root / "pymta", main_cf_extra=f"queue_directory = {spool}/queue\n")
    message = _message(message_mb * MB)
    with server:
        server.start(timeout=timeout)
        filler = _fill(spool, free_mb * MB)
        filled = time.monotonic()
        client = smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=timeout)
        client.ehlo("client.test")
        # The server's reading is at most about a second old: a client that
        # comes back finds MAIL FROM refused within that time.
        while True:
            code, text = client.mail("a@client.test")
            if code != 250 or time.monotonic() - filled > 5:
                break
            client.rset()
            time.sleep(0.1)  # a client's retry pace, not a wait for the server
        noticed = time.monotonic() - filled
        refused = code == 452 and text.startswith(b"4.3.1")
        sent = 0
        if code == 250:
            client.rcpt("alice@example.test")
            sent = len(message)
            try:
                code, text = client.data(message)
            except smtplib.SMTPException as e:
                text = str(e).encode()
        first = f"{code} {text.decode(errors='replace')}"
        client.rset()
        filler.unlink()
        freed = time.monotonic()
        recovered = -1.0
        deadline = freed + timeout
        while time.monotonic() < deadline:
            code, _ = client.mail("a@client.test")
            if code == 250:
                client.rcpt("alice@example.test")
                code, _ = client.data(message)
                if code == 250:
                    recovered = time.monotonic() - freed
                    break
            client.rset()
            time.sleep(0.1)  # a client's retry pace, not a wait for the server
        client.quit()
        server.stop()
    held = refused and 0 <= recovered <= 5
    figure = (
        f"MAIL FROM answered {first!r} {noticed:.2f} s after the queue file system was "
        f"left {free_mb} MB free; {sent} content bytes sent before the answer; "
        f"queued again {recovered:.2f} s after space was freed"
    )
    return held, figure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fs-mb", type=int, default=40)
    parser.add_argument("--free-mb", type=int, default=8)
    parser.add_argument("--message-mb", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    held, figure = run(args.fs_mb, args.free_mb, args.message_mb, args.timeout)
    print(f"full_queue: {'HELD' if held else 'NOT HELD'}: {figure}")
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
