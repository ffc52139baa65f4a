"""anvil rate limits against a real twistd pymta with two reactor
processes: the connection count of one client is shared by both."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.harness import PymtaServer


def _banner(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), 30) as sock:
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


def test_connection_rate_limit_across_processes(tmp_path: Path) -> None:
    """pymta_processes = 2, smtpd_client_connection_rate_limit = 3, loopback
    not excepted: of 8 connections in a row exactly 3 are greeted, whichever
    process accepts them; the others get 421 4.7.0 and Postfix's warning."""
    settings = (
        "pymta_processes = 2\nsmtpd_client_connection_rate_limit = 3\n"
        "smtpd_client_event_limit_exceptions =\nanvil_rate_time_unit = 1h\n"
    )
    with PymtaServer(tmp_path, settings) as server:
        server.start()
        port = server.ports["127.0.0.1:0"]
        banners = [_banner(port) for _ in range(8)]
        assert sum(b.startswith(b"220 ") for b in banners) == 3, banners
        refused = [b for b in banners if not b.startswith(b"220 ")]
        assert all(
            b == b"421 4.7.0 mx.example.test Error: too many connections from 127.0.0.1\r\n"
            for b in refused
        ), refused
        server.wait_for_log(r"Connection rate limit exceeded: 8 from .*127\.0\.0\.1\]")
        server.stop()
