"""End to end: mail sent with smtplib is read back over POP3 by clients
nobody here wrote (poplib, curl, fetchmail), from a real ``twistd pymta``."""

from __future__ import annotations

import poplib
import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import DEFAULT_MASTER_CF, POP3_SERVICE, PymtaServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PymtaServer]:
    with PymtaServer(tmp_path, master_cf=DEFAULT_MASTER_CF + POP3_SERVICE) as instance:
        instance.start()
        yield instance
        instance.stop()


def _deliver(server: PymtaServer, body: bytes, to: str = "alice@example.test") -> None:
    """Send one message with smtplib and wait until it is delivered."""
    before = len(_sent(server))
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
        client.sendmail("sender@client.test", [to], body)
    server.wait_for_log(r"status=sent", count=before + 1)


def _sent(server: PymtaServer) -> list[str]:
    return [line for line in server.log().splitlines() if "status=sent" in line]


def _login(
    server: PymtaServer, user: str = "alice@example.test", pw: str = "alice-pw"
) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", server.pop3_port, timeout=30)
    client.user(user)
    client.pass_(pw)
    return client


def test_poplib_reads_what_smtp_delivered_byte_for_byte(server: PymtaServer) -> None:
    """RETR returns the delivered Maildir file exactly (CRLF on the wire)."""
    body = b"Subject: pop me\r\n\r\nline one\r\n.leading dot\r\nlast\r\n"
    _deliver(server, body)
    [stored] = server.messages("alice")
    client = _login(server)
    count, size = client.stat()
    assert count == 1
    _, lines, _ = client.retr(1)
    client.quit()
    received = b"\r\n".join(lines) + b"\r\n"
    assert received == stored.replace(b"\n", b"\r\n")
    assert size == len(received)
    assert b".leading dot" in received  # dot-stuffing undone by the client


def test_uidl_is_stable_across_sessions_and_restarts(server: PymtaServer) -> None:
    """The same message keeps the same UIDL in a new session and after a restart."""
    _deliver(server, b"Subject: one\r\n\r\n1\r\n")
    _deliver(server, b"Subject: two\r\n\r\n2\r\n")
    client = _login(server)
    first = client.uidl()[1]
    client.quit()
    client = _login(server)
    again = client.uidl()[1]
    client.quit()
    server.stop()
    server.start()
    client = _login(server)
    after_restart = client.uidl()[1]
    client.quit()
    assert len(first) == 2
    assert first == again == after_restart


def test_dele_then_quit_removes(server: PymtaServer) -> None:
    """DELE followed by a clean QUIT removes the message for good."""
    _deliver(server, b"Subject: delete me\r\n\r\nx\r\n")
    client = _login(server)
    client.dele(1)
    client.quit()
    client = _login(server)
    assert client.stat()[0] == 0
    client.quit()
    assert server.messages("alice") == []


def test_dele_then_dropped_connection_keeps_the_message(server: PymtaServer) -> None:
    """DELE without QUIT (the connection drops) deletes nothing (RFC 1939 UPDATE state)."""
    _deliver(server, b"Subject: keep me\r\n\r\nx\r\n")
    client = _login(server)
    client.dele(1)
    client.close()  # drops the connection without QUIT
    # Wait until the server has seen the connection go (it then unlocks the mailbox).
    server.wait_for_log(r"pop3\(alice@example\.test\).*Disconnected")
    client = _login(server)
    assert client.stat()[0] == 1
    client.quit()


def test_wrong_password_is_refused(server: PymtaServer) -> None:
    """A bad password gets -ERR [AUTH]."""
    client = poplib.POP3("127.0.0.1", server.pop3_port, timeout=30)
    client.user("alice@example.test")
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        client.pass_("wrong")
    client.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_lists_and_retrieves(server: PymtaServer) -> None:
    """curl's POP3 client lists the mailbox and downloads a message."""
    _deliver(server, b"Subject: via curl\r\n\r\ncurl body\r\n")
    url = f"pop3://127.0.0.1:{server.pop3_port}/"
    listing = subprocess.run(
        ["curl", "-sS", "--user", "alice@example.test:alice-pw", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert listing.split()[0] == "1"
    message = subprocess.run(
        ["curl", "-sS", "--user", "alice@example.test:alice-pw", url + "1"],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    assert b"Subject: via curl" in message
    assert b"curl body" in message


@pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail not installed")
def test_fetchmail_downloads_and_deletes(server: PymtaServer, tmp_path: Path) -> None:
    """fetchmail fetches every message over POP3 (handing each to an MDA) and
    deletes them on the server afterwards."""
    for n in range(3):
        _deliver(server, f"Subject: fetch {n}\r\n\r\nbody {n}\r\n".encode())
    out = tmp_path / "fetched"
    out.mkdir()
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll 127.0.0.1 protocol pop3 port {server.pop3_port} uidl\n"
        f"  user 'alice@example.test' password 'alice-pw' sslproto '' no sslcertck\n"
        f"  mda \"sh -c 'cat > {out}/$$'\"\n"
    )
    rc.chmod(0o600)
    result = subprocess.run(
        ["fetchmail", "-f", str(rc), "--nodetach", "--nosyslog", "-i", str(tmp_path / "ids")],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    fetched = sorted(p.read_bytes() for p in out.iterdir())
    assert len(fetched) == 3
    assert all(b"Subject: fetch" in m for m in fetched)
    assert server.messages("alice") == []
