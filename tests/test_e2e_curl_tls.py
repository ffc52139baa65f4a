"""End to end: curl reads delivered mail over POP3S and IMAPS (implicit TLS,
``pop3d_tls_wrappermode`` / ``imapd_tls_wrappermode``) from a real
``twistd pymta`` on loopback.

The server's certificate names localhost / 127.0.0.1 and is signed by a test
CA (tests.tls_ca); curl trusts that CA only (``--cacert``), host name
checked, as a user runs it. A message sent with smtplib is listed and
fetched byte for byte; a wrong password makes curl fail with its login-denied
error (exit 67) and the server log the failure.
"""

from __future__ import annotations

import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import DEFAULT_MASTER_CF, PymtaServer
from tests.tls_ca import ServerCertificates, make_ca

CURL = shutil.which("curl")

pytestmark = pytest.mark.skipif(CURL is None, reason="curl is not installed")

#: curl's exit status for a refused login (CURLE_LOGIN_DENIED).
CURLE_LOGIN_DENIED = 67

#: The implicit-TLS listeners, on spellings of loopback the certificate
#: names (distinct service names keep their ports apart in the harness).
POP3S = "[127.0.0.1]:0"
IMAPS = "[localhost]:0"

MASTER_CF = (
    DEFAULT_MASTER_CF
    + f"{POP3S} inet n - n - - pop3d\n  -o pop3d_tls_wrappermode=yes\n"
    + f"{IMAPS} inet n - n - - imapd\n  -o imapd_tls_wrappermode=yes\n"
)

BODY = b"Subject: read by curl\r\nMessage-ID: <curl@client.test>\r\n\r\nover TLS\r\n"


def _main_cf(certs: ServerCertificates) -> str:
    lines = ["pymta_auth_failure_delay = 200ms", "pymta_auth_failure_max_delay = 400ms"]
    for prefix in ("pop3d", "imapd"):
        lines += [
            f"{prefix}_tls_security_level = may",
            f"{prefix}_tls_cert_file = {certs.cert_file}",
            f"{prefix}_tls_key_file = {certs.key_file}",
        ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def certs(tmp_path: Path) -> ServerCertificates:
    return make_ca(tmp_path / "ca")


@pytest.fixture
def server(tmp_path: Path, certs: ServerCertificates) -> Iterator[PymtaServer]:
    """A server with one message delivered to alice."""
    with PymtaServer(tmp_path / "server", _main_cf(certs), master_cf=MASTER_CF) as instance:
        instance.start()
        with smtplib.SMTP("127.0.0.1", instance.smtp_port, timeout=30) as client:
            client.sendmail("sender@client.test", ["alice@example.test"], BODY)
        instance.wait_for_log(r"to=<alice@example\.test>.*status=sent")
        yield instance
        instance.stop()


def curl(
    certs: ServerCertificates, url: str, password: str = "alice-pw"
) -> subprocess.CompletedProcess[bytes]:
    """curl --cacert CA --user alice:PASSWORD URL (a hang fails the test)."""
    assert CURL is not None
    return subprocess.run(
        [
            CURL,
            "-sS",
            "--max-time",
            "60",
            "--cacert",
            str(certs.ca_file),
            "--user",
            f"alice@example.test:{password}",
            url,
        ],
        capture_output=True,
        timeout=90,
    )


def test_curl_pop3s_lists_and_fetches(server: PymtaServer, certs: ServerCertificates) -> None:
    """pop3s://127.0.0.1:PORT/ lists one message (LIST) of the stored size,
    and pop3s://.../1 fetches it (RETR) exactly as stored, CRLF on the wire."""
    url = f"pop3s://127.0.0.1:{server.ports[POP3S]}/"
    (stored,) = server.messages("alice")
    listing = curl(certs, url)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.split() == [b"1", str(len(stored.replace(b"\n", b"\r\n"))).encode()]
    fetched = curl(certs, url + "1")
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout == stored.replace(b"\n", b"\r\n")
    server.wait_for_log(r"pop3-login: Login: user=<alice@example.test>.*, TLS")


def test_curl_imaps_lists_and_fetches(server: PymtaServer, certs: ServerCertificates) -> None:
    """imaps://localhost:PORT/ lists INBOX (LIST), /INBOX?ALL finds message
    1 (SEARCH), and /INBOX/;MAILINDEX=1 fetches it as stored."""
    base = f"imaps://localhost:{server.ports[IMAPS]}/"
    (stored,) = server.messages("alice")
    folders = curl(certs, base)
    assert folders.returncode == 0, folders.stderr
    assert b"INBOX" in folders.stdout
    search = curl(certs, base + "INBOX?ALL")
    assert search.returncode == 0, search.stderr
    assert search.stdout.split() == [b"*", b"SEARCH", b"1"]
    fetched = curl(certs, base + "INBOX/;MAILINDEX=1")
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout.replace(b"\r\n", b"\n") == stored
    server.wait_for_log(r"imap-login: Login: user=<alice@example.test>.*, TLS")


@pytest.mark.parametrize("scheme", ["pop3s", "imaps"])
def test_curl_wrong_password_fails(
    server: PymtaServer, certs: ServerCertificates, scheme: str
) -> None:
    """With a wrong password curl exits with its login-denied status (67),
    prints nothing of the mailbox, and the server logs the failed login."""
    port = server.ports[POP3S if scheme == "pop3s" else IMAPS]
    host = "127.0.0.1" if scheme == "pop3s" else "localhost"
    result = curl(certs, f"{scheme}://{host}:{port}/", password="not-alices")
    assert result.returncode == CURLE_LOGIN_DENIED, result.stderr
    assert result.stdout == b""
    server.wait_for_log(rf"{scheme[:4]}-login: .*auth failed")


def test_curl_refuses_a_certificate_the_ca_did_not_sign(
    server: PymtaServer, tmp_path: Path
) -> None:
    """The TLS is verified, not merely on: trusting another CA, curl refuses
    the server (exit 60, peer certificate) before any login."""
    other = make_ca(tmp_path / "other-ca")
    result = curl(other, f"pop3s://127.0.0.1:{server.ports[POP3S]}/")
    assert result.returncode == 60, result.stderr
    assert result.stdout == b""
