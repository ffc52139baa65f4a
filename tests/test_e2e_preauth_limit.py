"""End to end: a real ``twistd pymta`` caps the connections one address holds
open before login (imapd_max_login_ip_connections,
pop3d_max_login_ip_connections), as a slowloris client would hold them;
imaplib and poplib see the refusal, and a closed connection frees its place."""

from __future__ import annotations

import imaplib
import poplib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import DEFAULT_MASTER_CF, IMAP_SERVICE, POP3_SERVICE, PymtaServer

LIMIT = 3


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PymtaServer]:
    with PymtaServer(
        tmp_path,
        main_cf_extra=(
            f"imapd_max_login_ip_connections = {LIMIT}\npop3d_max_login_ip_connections = {LIMIT}\n"
        ),
        master_cf=DEFAULT_MASTER_CF + POP3_SERVICE + IMAP_SERVICE,
    ) as instance:
        instance.start()
        yield instance
        instance.stop()


def _greeted(port: int, greeting: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    assert sock.recv(4096).startswith(greeting)
    return sock


def test_imap_connections_before_login_are_capped(server: PymtaServer) -> None:
    """With LIMIT connections from 127.0.0.1 idle before login, imaplib's next
    connection gets * BYE and EOF; once one of them closes (its disconnect
    logged), imaplib connects and logs in."""
    held = [_greeted(server.imap_port, b"* OK") for _ in range(LIMIT)]
    with pytest.raises(imaplib.IMAP4.error, match="Too many connections"):
        imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
    held.pop().close()
    server.wait_for_log(r"imap-login: Disconnected \(no auth attempts", count=1)
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
    assert client.login("alice@example.test", "alice-pw")[0] == "OK"
    # logged in, it no longer counts: another connection before login is greeted
    held.append(_greeted(server.imap_port, b"* OK"))
    client.logout()
    for sock in held:
        sock.close()


def test_pop3_connections_before_login_are_capped(server: PymtaServer) -> None:
    """With LIMIT connections from 127.0.0.1 idle before login, poplib's next
    connection gets -ERR [SYS/TEMP] as its greeting."""
    held = [_greeted(server.pop3_port, b"+OK") for _ in range(LIMIT)]
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\] Too many connections"):
        poplib.POP3("127.0.0.1", server.pop3_port, timeout=30)
    for sock in held:
        sock.close()
