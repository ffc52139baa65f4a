"""Submission as the embedded default ships it (etc/master.cf's port 2587
and 2465 services, moved to kernel-chosen ports): real clients log in over
STARTTLS and over implicit TLS, relay once logged in, and cannot without."""

from __future__ import annotations

import smtplib
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.harness import DEFAULT_MASTER_CF, PymtaServer

REPO = Path(__file__).resolve().parent.parent

#: The ports of the shipped services, and the loopback address each test
#: listener takes instead (a distinct address, so each gets its own key).
SHIPPED = {"127.0.0.1:2587": "127.0.0.3:0", "127.0.0.1:2465": "127.0.0.4:0"}


def _shipped_submission_services() -> str:
    """etc/master.cf's submission and submissions lines, verbatim but for
    their listen addresses."""
    lines = (REPO / "etc" / "master.cf").read_text().splitlines()
    out: list[str] = []
    taking = False
    for line in lines:
        if line and not line[0].isspace():
            taking = line.split()[0] in SHIPPED
            if taking:
                line = line.replace(line.split()[0], SHIPPED[line.split()[0]], 1)
        if taking:
            out.append(line)
    assert len([x for x in out if not x[0].isspace()]) == 2, out
    return "\n".join(out) + "\n"


def _settings(tmp_path: Path) -> str:
    return (
        f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {tmp_path / 'cert.pem'}\n"
        f"smtpd_tls_key_file = {tmp_path / 'key.pem'}\npymta_tls_create_self_signed = yes\n"
        "pymta_auth_failure_delay = 200ms\npymta_auth_failure_max_delay = 400ms\n"
    )


def _context(tmp_path: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    context.check_hostname = False
    return context


@pytest.fixture
def server(tmp_path: Path) -> PymtaServer:
    master = DEFAULT_MASTER_CF + _shipped_submission_services()
    with PymtaServer(tmp_path, _settings(tmp_path), master_cf=master) as server:
        server.start()
        yield server  # type: ignore[misc]
        server.stop()


def test_smtplib_login_over_starttls_relays(server: PymtaServer, tmp_path: Path) -> None:
    """smtplib: STARTTLS (verified), login(), then mail to a local user and to
    another domain are both accepted; the log names the login."""
    port = server.ports["127.0.0.3:0"]
    with smtplib.SMTP("127.0.0.3", port, timeout=30) as client:
        client.ehlo("client.test")
        assert not client.has_extn("auth")  # no AUTH before TLS
        client.starttls(context=_context(tmp_path))
        client.ehlo("client.test")
        assert "PLAIN" in client.esmtp_features["auth"]
        client.login("alice@example.test", "alice-pw")
        refused = client.sendmail(
            "alice@example.test",
            ["bob@example.test", "friend@elsewhere.example"],
            b"Subject: submitted\r\n\r\nhello\r\n",
        )
        assert refused == {}
    server.wait_for_log(r"sasl_method=PLAIN, sasl_username=alice@example\.test")
    server.wait_for_log(r"to=<bob@example\.test>.*status=sent")
    (message,) = server.messages("bob")
    assert b"with ESMTPSA" in message


def test_without_login_nothing_is_accepted(server: PymtaServer, tmp_path: Path) -> None:
    """Without AUTH the submission port refuses even local recipients
    (permit_sasl_authenticated, reject), after TLS as before it."""
    port = server.ports["127.0.0.3:0"]
    with smtplib.SMTP("127.0.0.3", port, timeout=30) as client:
        client.starttls(context=_context(tmp_path))
        client.ehlo("client.test")
        client.mail("alice@example.test")
        code, text = client.rcpt("bob@example.test")
        assert code == 554, text


def test_wrong_password_is_535_after_the_delay(server: PymtaServer, tmp_path: Path) -> None:
    """A wrong password fails with 535 5.7.8 and Postfix's warning line."""
    port = server.ports["127.0.0.3:0"]
    with smtplib.SMTP("127.0.0.3", port, timeout=30) as client:
        client.starttls(context=_context(tmp_path))
        client.ehlo("client.test")
        with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
            client.login("alice@example.test", "not-her-password")
        assert caught.value.smtp_code == 535
    server.wait_for_log(r"SASL (PLAIN|LOGIN) authentication failed: authentication failure")


def test_swaks_auth_over_implicit_tls(server: PymtaServer) -> None:
    """swaks --tlsc --auth PLAIN on the submissions port delivers."""
    port = server.ports["127.0.0.4:0"]
    result = subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.4:{port}",
            "--tlsc",
            "--auth",
            "PLAIN",
            "--auth-user",
            "bob@example.test",
            "--auth-password",
            "bob-pw",
            "--from",
            "bob@example.test",
            "--to",
            "alice@example.test",
            "--header",
            "Subject: via-465",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "235 2.7.0 Authentication successful" in result.stdout
    server.wait_for_log(r"to=<alice@example\.test>.*status=sent")
    (message,) = server.messages("alice")
    assert b"Subject: via-465" in message
