"""End to end: the mail clients users submit with (msmtp, mutt) against a
real ``twistd pymta`` on loopback, over verified TLS.

The server runs a submission service (STARTTLS required,
``smtpd_tls_security_level = encrypt``) and a submissions service
(``smtpd_tls_wrappermode = yes``), both with ``smtpd_sasl_auth_enable =
yes`` and ``permit_sasl_authenticated, reject`` as etc/master.cf ships them,
with a certificate for localhost / 127.0.0.1 signed by a test CA
(tests.tls_ca). The clients trust that CA and nothing else (msmtp's
``tls_trust_file``, mutt's ``ssl_ca_certificates_file``), host names
checked. mutt also hands its message to pymta's sendmail command
(``sendmail=``, with MAIL_CONFIG naming the server's configuration), in
batch mode with no tty, as cron jobs and scripts run it (issue 13).

Each client runs under a timeout, so a hang fails the test.
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from tests.harness import DEFAULT_MASTER_CF, REPO, PymtaServer, wait_for_file
from tests.tls_ca import ServerCertificates, make_ca

MSMTP = shutil.which("msmtp")
MUTT = shutil.which("mutt")

CLIENT_TIMEOUT = 60

#: The submission services, on two spellings of 127.0.0.1 (the names the
#: test certificate carries) so that the harness tells their ports apart.
SUBMISSION = "127.0.0.1:0"
SUBMISSIONS = "[127.0.0.1]:0"

MASTER_CF = (
    DEFAULT_MASTER_CF.replace(
        "127.0.0.1:0 inet n - n - - smtpd\n",
        f"{SUBMISSION} inet n - n - - smtpd\n"
        "  -o syslog_name=pymta/submission\n"
        "  -o smtpd_tls_security_level=encrypt\n"
        "  -o smtpd_sasl_auth_enable=yes\n"
        "  -o smtpd_client_restrictions=permit_sasl_authenticated,reject\n"
        "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n"
        f"{SUBMISSIONS} inet n - n - - smtpd\n"
        "  -o syslog_name=pymta/submissions\n"
        "  -o smtpd_tls_wrappermode=yes\n"
        "  -o smtpd_sasl_auth_enable=yes\n"
        "  -o smtpd_client_restrictions=permit_sasl_authenticated,reject\n"
        "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n",
    )
    + "pickup unix n - n 60 1 pickup\n"
)


def _main_cf(certs: ServerCertificates) -> str:
    return (
        "smtpd_tls_security_level = may\n"
        f"smtpd_tls_cert_file = {certs.cert_file}\n"
        f"smtpd_tls_key_file = {certs.key_file}\n"
        # Short failure delays: the wrong-password tests wait for them.
        "pymta_auth_failure_delay = 200ms\npymta_auth_failure_max_delay = 400ms\n"
    )


@pytest.fixture
def certs(tmp_path: Path) -> ServerCertificates:
    return make_ca(tmp_path / "ca")


@pytest.fixture
def server(tmp_path: Path, certs: ServerCertificates) -> Iterator[PymtaServer]:
    with PymtaServer(tmp_path / "server", _main_cf(certs), master_cf=MASTER_CF) as instance:
        instance.start()
        yield instance
        instance.stop()


def _find(server: PymtaServer, user: str, subject: str) -> Message | None:
    for raw in server.messages(user):
        message = email.message_from_bytes(raw)
        if message["Subject"] == subject:
            return message
    return None


def wait_delivered(server: PymtaServer, user: str, subject: str) -> Message:
    """Wait (inotify on the Maildir's new/) for the message with that subject."""
    wait_for_file(server.maildir(user) / "new", lambda: _find(server, user, subject) is not None)
    message = _find(server, user, subject)
    assert message is not None
    return message


def run(
    command: list[str], home: Path, stdin: bytes, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a client with no tty (stdin a pipe) and HOME in the test's
    directory; a client that hangs fails the test after CLIENT_TIMEOUT."""
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    environment.update(env or {})
    try:
        result = subprocess.run(
            command,
            input=stdin.decode(),
            env=environment,
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT,
            cwd=home,
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{command} hung:\n{e.stdout!r}\n{e.stderr!r}") from None
    return result


# msmtp ---------------------------------------------------------------------------


def msmtp_config(
    tmp_path: Path, certs: ServerCertificates, port: int, implicit: bool, password: str
) -> Path:
    """An msmtprc as a user writes it: auth on, TLS verified against the CA."""
    config = tmp_path / "msmtprc"
    config.write_text(
        "defaults\n"
        "tls on\n"
        f"tls_trust_file {certs.ca_file}\n"
        f"tls_starttls {'off' if implicit else 'on'}\n"
        "logfile -\n"
        "\n"
        "account pymta\n"
        "host localhost\n"
        f"port {port}\n"
        "auth on\n"
        "user bob@example.test\n"
        f"password {password}\n"
        "from bob@example.test\n"
        "\n"
        "account default : pymta\n"
    )
    config.chmod(0o600)  # msmtp refuses a password in a file others may read
    return config


@pytest.mark.skipif(MSMTP is None, reason="msmtp is not installed (tools/install-test-deps)")
@pytest.mark.parametrize("implicit", [False, True], ids=["starttls-587", "implicit-465"])
def test_msmtp_submits_with_auth_over_verified_tls(
    tmp_path: Path, server: PymtaServer, certs: ServerCertificates, implicit: bool
) -> None:
    """msmtp with auth on and tls_trust_file the test CA, over STARTTLS
    (submission) or implicit TLS (submissions, tls_starttls off), exits 0;
    the message lands in alice's mailbox with ESMTPSA and the log names
    bob's login."""
    assert MSMTP is not None
    port = server.ports[SUBMISSIONS if implicit else SUBMISSION]
    config = msmtp_config(tmp_path, certs, port, implicit, "bob-pw")
    subject = f"msmtp {'465' if implicit else '587'}"
    body = f"From: bob@example.test\nTo: alice@example.test\nSubject: {subject}\n\nhi\n"
    result = run([MSMTP, "-C", str(config), "alice@example.test"], tmp_path, body.encode())
    assert result.returncode == 0, result.stdout + result.stderr
    message = wait_delivered(server, "alice", subject)
    assert "with ESMTPSA" in str(message["Received"])
    server.wait_for_log(r"sasl_method=\w+, sasl_username=bob@example\.test")


@pytest.mark.skipif(MSMTP is None, reason="msmtp is not installed (tools/install-test-deps)")
@pytest.mark.parametrize("implicit", [False, True], ids=["starttls-587", "implicit-465"])
def test_msmtp_wrong_password_is_refused_with_535(
    tmp_path: Path, server: PymtaServer, certs: ServerCertificates, implicit: bool
) -> None:
    """With a wrong password msmtp exits non-zero, its error names the
    server's 535, and nothing is delivered."""
    assert MSMTP is not None
    port = server.ports[SUBMISSIONS if implicit else SUBMISSION]
    config = msmtp_config(tmp_path, certs, port, implicit, "not-bobs-password")
    body = b"From: bob@example.test\nTo: alice@example.test\nSubject: refused\n\nno\n"
    result = run([MSMTP, "-C", str(config), "alice@example.test"], tmp_path, body)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "server message: 535 5.7.8" in result.stderr, result.stdout + result.stderr
    server.wait_for_log(r"SASL \w+ authentication failed")
    assert server.messages("alice") == []


@pytest.mark.skipif(MSMTP is None, reason="msmtp is not installed (tools/install-test-deps)")
def test_msmtp_refuses_a_server_the_ca_did_not_sign(
    tmp_path: Path, server: PymtaServer, certs: ServerCertificates
) -> None:
    """TLS is verified, not merely on: trusting another CA, msmtp refuses the
    server's certificate and sends nothing."""
    assert MSMTP is not None
    other = make_ca(tmp_path / "other-ca")
    config = msmtp_config(tmp_path, other, server.ports[SUBMISSIONS], True, "bob-pw")
    body = b"From: bob@example.test\nTo: alice@example.test\nSubject: untrusted\n\nno\n"
    result = run([MSMTP, "-C", str(config), "alice@example.test"], tmp_path, body)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "certificate" in (result.stdout + result.stderr).lower()
    assert server.messages("alice") == []
    assert certs.ca_file != other.ca_file


# mutt ----------------------------------------------------------------------------


def mutt_config(tmp_path: Path, lines: list[str]) -> Path:
    """A muttrc for batch sending: no mailboxes to open, nothing to ask."""
    config = tmp_path / "muttrc"
    config.write_text(
        "\n".join(
            [
                "set from = bob@example.test",
                "set realname = 'Bob'",
                "set use_from = yes",
                "set copy = no",  # no Fcc: batch mode has no folder to save to
                "set record = ''",
                f"set tmpdir = {tmp_path}",
                *lines,
            ]
        )
        + "\n"
    )
    return config


def mutt_send(
    tmp_path: Path, config: Path, subject: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """mutt -n -F muttrc -s SUBJECT alice@example.test < body, no tty."""
    assert MUTT is not None
    result = run(
        [MUTT, "-n", "-F", str(config), "-s", subject, "alice@example.test"],
        tmp_path,
        b"Sent by mutt in batch mode.\n",
        env,
    )
    assert "Error in" not in result.stderr, result.stderr  # a muttrc line mutt did not take
    return result


@pytest.mark.skipif(MUTT is None, reason="mutt is not installed (tools/install-test-deps)")
@pytest.mark.parametrize("implicit", [False, True], ids=["smtp-starttls", "smtps"])
def test_mutt_smtp_url_submits_over_verified_tls(
    tmp_path: Path, server: PymtaServer, certs: ServerCertificates, implicit: bool
) -> None:
    """mutt's own SMTP client (smtp_url smtp://user@localhost:PORT/ with
    ssl_starttls = yes, or smtps://), smtp_pass, and
    ssl_ca_certificates_file the test CA: the message is delivered to alice,
    submitted by bob's login."""
    port = server.ports[SUBMISSIONS if implicit else SUBMISSION]
    scheme = "smtps" if implicit else "smtp"
    config = mutt_config(
        tmp_path,
        [
            f"set smtp_url = '{scheme}://bob@example.test@localhost:{port}/'",
            "set smtp_pass = 'bob-pw'",
            "set ssl_starttls = yes",
            "set ssl_force_tls = yes",
            f"set ssl_ca_certificates_file = {certs.ca_file}",
            "set ssl_verify_host = yes",
        ],
    )
    subject = f"mutt {scheme}"
    result = mutt_send(tmp_path, config, subject)
    assert result.returncode == 0, result.stdout + result.stderr
    message = wait_delivered(server, "alice", subject)
    assert message["From"] == "Bob <bob@example.test>"
    assert "with ESMTPSA" in str(message["Received"])
    server.wait_for_log(r"sasl_username=bob@example\.test")


@pytest.mark.skipif(MUTT is None, reason="mutt is not installed (tools/install-test-deps)")
def test_mutt_smtp_url_with_a_wrong_password_fails(
    tmp_path: Path, server: PymtaServer, certs: ServerCertificates
) -> None:
    """mutt with a wrong smtp_pass exits non-zero in batch mode and nothing
    is delivered."""
    port = server.ports[SUBMISSIONS]
    config = mutt_config(
        tmp_path,
        [
            f"set smtp_url = 'smtps://bob@example.test@localhost:{port}/'",
            "set smtp_pass = 'wrong'",
            f"set ssl_ca_certificates_file = {certs.ca_file}",
        ],
    )
    result = mutt_send(tmp_path, config, "mutt wrong password")
    assert result.returncode != 0, result.stdout + result.stderr
    server.wait_for_log(r"SASL \w+ authentication failed")
    assert server.messages("alice") == []


@pytest.mark.skipif(MUTT is None, reason="mutt is not installed (tools/install-test-deps)")
def test_mutt_with_pymta_sendmail_delivers(tmp_path: Path, server: PymtaServer) -> None:
    """Issue 13: mutt's sendmail= pointing at pymta's sendmail command (the
    configuration found through MAIL_CONFIG, as Postfix's sendmail finds
    it), batch mode with no tty: mutt exits 0, the message goes through
    maildrop and pickup and lands in alice's mailbox with mutt's From and
    the local submitter's Received line."""
    maildrop = server.root / "spool" / "maildrop"
    wait_for_file(maildrop, maildrop.is_dir)  # pickup makes it as it starts
    config = mutt_config(tmp_path, [f"set sendmail = '{sys.executable} -m pymta.sendmail -oi'"])
    result = mutt_send(
        tmp_path,
        config,
        "mutt via sendmail",
        {"MAIL_CONFIG": str(server.config_dir), "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    message = wait_delivered(server, "alice", "mutt via sendmail")
    assert message["From"] == "Bob <bob@example.test>"
    assert f"(pymta, from userid {os.geteuid()})" in str(message["Received"])
    assert "Sent by mutt in batch mode." in str(message.get_payload())


@pytest.mark.skipif(MUTT is None, reason="mutt is not installed (tools/install-test-deps)")
def test_mutt_refuses_a_server_the_ca_did_not_sign(
    tmp_path: Path, server: PymtaServer, certs: ServerCertificates
) -> None:
    """TLS is verified, not merely on: mutt trusting another CA (and not the
    system's) sends nothing in batch mode and exits non-zero."""
    other = make_ca(tmp_path / "other-ca")
    config = mutt_config(
        tmp_path,
        [
            f"set smtp_url = 'smtps://bob@example.test@localhost:{server.ports[SUBMISSIONS]}/'",
            "set smtp_pass = 'bob-pw'",
            f"set ssl_ca_certificates_file = {other.ca_file}",
            f"set certificate_file = {tmp_path / 'mutt-certificates'}",
        ],
    )
    result = mutt_send(tmp_path, config, "mutt untrusted")
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Untrusted server certificate" in result.stderr, result.stderr
    assert server.messages("alice") == []
    assert certs.ca_file != other.ca_file
