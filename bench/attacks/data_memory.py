#!/usr/bin/env python3
"""data_memory - do many large messages at once grow the server's memory?

SYNOPSIS
    python bench/attacks/data_memory.py [--connections 20] [--size 10485760]
        [--limit 50] [--timeout 300] [--workdir /var/tmp]

DESCRIPTION
    The large-DATA case: --connections clients send one message of --size
    bytes each, all at the same time.  The replay starts its own pymta on
    loopback (pymta.testing.process, this checkout; no delivery transport in
    master.cf, so the messages stay queued and only smtpd and cleanup
    work), sends one small message to warm it up (and waits until the queue
    manager deferred it), takes the resident
    memory of its process tree (VmRSS of twistd and its children) as the
    baseline, then starts the clients together.  Each client writes its
    message in 64 KiB pieces from one prepared buffer (the client's own
    memory does not matter here), and checks for the server's 250.  A
    thread samples the server's memory every 50 ms.  One line:

        smtp-data-memory HELD +12.3 MB (limit 50 MB) 20 x 10485760 bytes ...

    HELD when every message was accepted and the peak stayed under --limit
    MB above the baseline, NOT HELD otherwise.  Network traffic: loopback
    only.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent))

from fetch_memory import Sampler, rss_bytes  # noqa: E402

from pymta.testing.process import DEFAULT_MASTER_CF, PymtaProcess  # noqa: E402

HOST = "127.0.0.1"
EXTRA = "message_size_limit = 0\nqueue_run_delay = 3600s\n"


def message(size: int) -> bytes:
    """A message of about size bytes with CRLF lines, dot-safe, for DATA."""
    header = b"From: load@client.test\r\nTo: bob@example.test\r\nSubject: large\r\n\r\n"
    line = b"x" * 76 + b"\r\n"
    body = line * max(1, (size - len(header)) // len(line))
    return header + body + b".\r\n"


class Sender(threading.Thread):
    """One SMTP session that sends data once `go` is set; ok when 250."""

    def __init__(self, port: int, data: bytes, go: threading.Event, timeout: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.data = data
        self.go = go
        self.timeout = timeout
        self.ok = False
        self.error = ""

    def _expect(self, sock: socket.socket, code: bytes) -> None:
        reply = b""
        while not (reply.endswith(b"\r\n") and reply.split(b"\r\n")[-2][3:4] == b" "):
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("server closed")
            reply += chunk
        if not reply.split(b"\r\n")[-2].startswith(code):
            raise ConnectionError(reply.decode(errors="replace").strip())

    def run(self) -> None:
        try:
            with socket.create_connection((HOST, self.port), timeout=self.timeout) as sock:
                self._expect(sock, b"220")
                sock.sendall(b"EHLO client.test\r\n")
                self._expect(sock, b"250")
                sock.sendall(b"MAIL FROM:<load@client.test>\r\n")
                self._expect(sock, b"250")
                sock.sendall(b"RCPT TO:<bob@example.test>\r\n")
                self._expect(sock, b"250")
                self.go.wait()
                sock.sendall(b"DATA\r\n")
                self._expect(sock, b"354")
                view = memoryview(self.data)
                for start in range(0, len(view), 65536):
                    sock.sendall(view[start : start + 65536])
                self._expect(sock, b"250")
                sock.sendall(b"QUIT\r\n")
                self.ok = True
        except (OSError, ConnectionError) as e:
            self.error = str(e)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--size", type=int, default=10 * 1024 * 1024)
    parser.add_argument("--limit", type=float, default=50.0, help="MB of growth allowed")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--workdir", default=None, help="temp dir parent")
    args = parser.parse_args()
    master = "".join(
        line + "\n" for line in DEFAULT_MASTER_CF.splitlines() if "virtual" not in line
    )
    data = message(args.size)
    with tempfile.TemporaryDirectory(prefix="data-memory-", dir=args.workdir) as tmp:
        server = PymtaProcess(Path(tmp), main_cf_extra=EXTRA, master_cf=master)
        with server:
            server.start()
            assert server.process is not None
            roots = [server.process.pid]
            warm = Sender(server.smtp_port, message(4096), threading.Event(), args.timeout)
            warm.go.set()
            warm.run()
            if not warm.ok:
                print(f"smtp-data-memory NOT HELD warm-up message failed: {warm.error}")
                return 1
            # The warm-up message has been through the queue manager (deferred:
            # no transport) before the baseline is taken.
            server.wait_for_log(r"status=deferred", timeout=args.timeout)
            baseline = rss_bytes(roots)
            go = threading.Event()
            senders = [
                Sender(server.smtp_port, data, go, args.timeout) for _ in range(args.connections)
            ]
            for sender in senders:
                sender.start()
            sampler = Sampler(roots)
            sampler.start()
            started = time.monotonic()
            go.set()
            for sender in senders:
                sender.join(args.timeout)
            elapsed = time.monotonic() - started
            peak = sampler.stop()
            server.stop()
    accepted = sum(sender.ok for sender in senders)
    growth = (peak - baseline) / 1e6
    held = accepted == args.connections and growth < args.limit
    errors = {sender.error for sender in senders if sender.error}
    print(
        f"smtp-data-memory {'HELD' if held else 'NOT HELD'} +{growth:.1f} MB"
        f" (limit {args.limit:.0f} MB) {args.connections} x {len(data)} bytes,"
        f" {accepted} accepted in {elapsed:.1f} s, baseline {baseline / 1e6:.1f} MB"
        + (f"; errors: {'; '.join(sorted(errors))[:200]}" if errors else "")
    )
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
