#!/usr/bin/env python3
"""slowloris - one address holds many connections open before login.

SYNOPSIS
    python bench/attacks/slowloris.py [--protocol imap|pop3] [--connections 1000]
        [--hold 20] [--processes 1]

DESCRIPTION
    On loopback only: starts pymta (tests/harness.py, twistd -n) with a
    pop3d and an imapd listener, its default limits and --processes
    reactor processes, then opens --connections connections from
    127.0.0.1, reads each greeting, and keeps every connection that was
    greeted alive for --hold seconds by sending one byte of an unfinished
    command every 5 seconds (which resets the server's idle timer), as a
    slowloris client does. Before imapd_max_login_ip_connections /
    pop3d_max_login_ip_connections, all 1,000 of them were held.

    Meanwhile a client from another loopback address (127.0.0.2) logs in,
    to show that other clients are still served.

    Prints one line: the case, HELD or NOT HELD, and the figures: the
    connections greeted, refused (BYE / -ERR instead of a greeting), still
    open after --hold, and whether the other client logged in. HELD: at
    most 20 (the default limit) times --processes were held open, every
    other was refused, and the other client logged in.

    The server is stopped and its temporary directory removed at the end,
    also on error or ^C.

EXAMPLE
    python bench/attacks/slowloris.py --protocol pop3
"""

from __future__ import annotations

import argparse
import resource
import select
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.harness import DEFAULT_MASTER_CF, IMAP_SERVICE, POP3_SERVICE, PymtaServer  # noqa: E402

DEFAULT_LIMIT = 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Hold many connections open before login.")
    p.add_argument("--protocol", choices=("imap", "pop3"), default="imap")
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--hold", type=float, default=20.0)
    p.add_argument("--processes", type=int, default=1)
    return p.parse_args(argv)


def read_line(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def still_open(sock: socket.socket) -> bool:
    """True while the server has not closed the connection."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return True
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except OSError:
        return False


def other_client_logs_in(protocol: str, port: int) -> bool:
    """A login from 127.0.0.2 (another client address)."""
    with socket.create_connection(
        ("127.0.0.1", port), timeout=10, source_address=("127.0.0.2", 0)
    ) as s:
        if not read_line(s).startswith(b"+OK" if protocol == "pop3" else b"* OK"):
            return False
        if protocol == "pop3":
            s.sendall(b"USER alice@example.test\r\nPASS alice-pw\r\n")
            read_line(s)
            return read_line(s).startswith(b"+OK")
        s.sendall(b"a LOGIN alice@example.test alice-pw\r\n")
        while True:
            line = read_line(s)
            if not line or line.startswith(b"a "):
                return line.startswith(b"a OK")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 2 * args.connections + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    greeting = b"+OK" if args.protocol == "pop3" else b"* OK"
    held: list[socket.socket] = []
    refused = errors = 0
    with tempfile.TemporaryDirectory(prefix="slowloris.") as tmp:
        server = PymtaServer(
            Path(tmp),
            main_cf_extra=f"pymta_processes = {args.processes}\n",
            master_cf=DEFAULT_MASTER_CF + POP3_SERVICE + IMAP_SERVICE,
        )
        with server:
            server.start()
            if args.processes > 1:
                server.wait_for_log(r"worker 1 running")
            port = server.pop3_port if args.protocol == "pop3" else server.imap_port
            try:
                for _ in range(args.connections):
                    try:
                        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                        first = read_line(sock)
                    except OSError:
                        errors += 1
                        continue
                    if first.startswith(greeting):
                        held.append(sock)
                    else:
                        refused += 1
                        sock.close()
                greeted = len(held)
                other_ok = other_client_logs_in(args.protocol, port)
                deadline = time.monotonic() + args.hold
                while time.monotonic() < deadline:
                    for sock in held:
                        try:
                            sock.sendall(b"a")  # an unfinished command line
                        except OSError:
                            pass
                    time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
                open_after = sum(still_open(s) for s in held)
            finally:
                for sock in held:
                    sock.close()
                server.stop()
    limit = DEFAULT_LIMIT * args.processes
    ok = open_after <= limit and greeted + refused == args.connections and other_ok
    print(
        f"slowloris {args.protocol} x{args.connections} ({args.processes} processes): "
        f"{'HELD' if ok else 'NOT HELD'} {greeted} greeted, {refused} refused, "
        f"{errors} failed to connect, {open_after} still open after {args.hold:.0f} s "
        f"(limit {limit}), other client logged in: {'yes' if other_ok else 'no'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
