"""smtpd_tls_wrappermode = yes (smtps/submissions, RFC 8314): TLS from the
first byte with real clients, and never a clear-text answer."""

from __future__ import annotations

import smtplib
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.harness import DEFAULT_MASTER_CF, PymtaServer

SMTPS_SERVICE = "127.0.0.2:0 inet n - n - - smtpd\n  -o smtpd_tls_wrappermode=yes\n"


def _tls_settings(tmp_path: Path) -> str:
    return (
        f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {tmp_path / 'cert.pem'}\n"
        f"smtpd_tls_key_file = {tmp_path / 'key.pem'}\npymta_tls_create_self_signed = yes\n"
    )


def _verifying_context(tmp_path: Path) -> ssl.SSLContext:
    """Trusts exactly the server's self-signed certificate (hostname aside:
    the certificate names myhostname)."""
    context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    context.check_hostname = False
    return context


def test_smtps_with_smtplib_delivers_and_offers_no_starttls(tmp_path: Path) -> None:
    """smtplib.SMTP_SSL verifies the certificate, sees no STARTTLS in EHLO,
    and its message is delivered with ESMTPS in the Received header."""
    master = DEFAULT_MASTER_CF + SMTPS_SERVICE
    with PymtaServer(tmp_path, _tls_settings(tmp_path), master_cf=master) as server:
        server.start()
        port = server.ports["127.0.0.2:0"]
        context = _verifying_context(tmp_path)
        with smtplib.SMTP_SSL("127.0.0.2", port, context=context, timeout=30) as client:
            code, _ = client.ehlo("client.test")
            assert code == 250
            assert not client.has_extn("starttls")
            client.sendmail(
                "sender@client.test", ["alice@example.test"], b"Subject: implicit\r\n\r\nhi\r\n"
            )
        server.wait_for_log(r"status=sent")
        (message,) = server.messages("alice")
        assert b"with ESMTPS" in message
        assert b"Subject: implicit" in message
        server.stop()


def test_smtps_never_answers_in_clear_text(tmp_path: Path) -> None:
    """A clear-text client on the wrapper-mode port gets no 220 banner: the
    server waits for a TLS hello, and a clear-text EHLO ends the connection
    with a TLS alert or EOF, never an SMTP reply."""
    master = DEFAULT_MASTER_CF + SMTPS_SERVICE
    with PymtaServer(tmp_path, _tls_settings(tmp_path), master_cf=master) as server:
        server.start()
        with socket.create_connection(("127.0.0.2", server.ports["127.0.0.2:0"]), 30) as sock:
            sock.sendall(b"EHLO client.test\r\n")
            received = b""
            while chunk := sock.recv(4096):
                received += chunk
        assert not received.startswith(b"220"), received
        assert b"ESMTP" not in received
        server.stop()


@pytest.mark.skipif(
    subprocess.run(["which", "swaks"], capture_output=True).returncode != 0,
    reason="swaks is installed by tools/install-test-deps",
)
def test_swaks_over_implicit_tls(tmp_path: Path) -> None:
    """swaks --tlsc (TLS on connect) delivers through the smtps port."""
    master = DEFAULT_MASTER_CF + SMTPS_SERVICE
    with PymtaServer(tmp_path, _tls_settings(tmp_path), master_cf=master) as server:
        server.start()
        result = subprocess.run(
            [
                "swaks",
                "--server",
                f"127.0.0.2:{server.ports['127.0.0.2:0']}",
                "--tlsc",
                "--to",
                "bob@example.test",
                "--from",
                "you@client.test",
                "--header",
                "Subject: swaks-smtps",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "TLS started" in result.stdout
        server.wait_for_log(r"status=sent")
        (message,) = server.messages("bob")
        assert b"Subject: swaks-smtps" in message
        server.stop()


def test_wrapper_mode_without_a_certificate_stops_the_start(tmp_path: Path) -> None:
    """smtpd_tls_wrappermode = yes with no certificate is a start error, not
    a clear-text port."""
    master = DEFAULT_MASTER_CF + SMTPS_SERVICE
    with PymtaServer(tmp_path, master_cf=master) as server:
        with pytest.raises(RuntimeError, match="smtpd_tls_wrappermode = yes needs"):
            server.start()
