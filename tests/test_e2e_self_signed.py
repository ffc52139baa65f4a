"""The embedded default's self-signed certificate is accepted by verifying
clients on loopback: curl --cacert and Python's ssl, by name and by address."""

from __future__ import annotations

import smtplib
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import PymtaServer

TLS = """\
smtpd_tls_security_level = may
smtpd_tls_cert_file = $data_directory/smtpd-cert.pem
smtpd_tls_key_file = $data_directory/smtpd-key.pem
pymta_tls_create_self_signed = yes
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PymtaServer]:
    with PymtaServer(tmp_path_factory.mktemp("selfsigned"), main_cf_extra=TLS) as instance:
        instance.start()
        yield instance


def _cert(server: PymtaServer) -> Path:
    return server.root / "lib" / "smtpd-cert.pem"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_python_ssl_verifies_the_certificate(server: PymtaServer, host: str) -> None:
    """smtplib's STARTTLS with certificate and host name verification
    (ssl.create_default_context with the certificate as its only CA) succeeds
    for 127.0.0.1 and for localhost, and the message is accepted."""
    context = ssl.create_default_context(cafile=str(_cert(server)))
    with smtplib.SMTP(host, server.smtp_port) as client:
        client.starttls(context=context)
        client.sendmail("x@client.test", ["alice@example.test"], b"Subject: v\r\n\r\nverified\r\n")


def test_python_ssl_refuses_a_name_the_certificate_does_not_carry(server: PymtaServer) -> None:
    """The same verification for a name not in the certificate fails: the
    test above proves the names, not a lax client."""
    context = ssl.create_default_context(cafile=str(_cert(server)))
    client = smtplib.SMTP("127.0.0.1", server.smtp_port)
    try:
        client._host = "other.example"  # the name STARTTLS verifies
        with pytest.raises(ssl.SSLCertVerificationError):
            client.starttls(context=context)
    finally:
        client.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_curl_cacert_accepts_the_certificate(
    server: PymtaServer, host: str, tmp_path: Path
) -> None:
    """curl --ssl-reqd --cacert CERT smtp://HOST:PORT delivers a message over
    verified STARTTLS, by address and by name."""
    message = tmp_path / "message"
    message.write_bytes(b"Subject: curl\r\n\r\nover verified TLS\r\n")
    result = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--ssl-reqd",
            "--cacert",
            str(_cert(server)),
            "--mail-from",
            "x@client.test",
            "--mail-rcpt",
            "bob@example.test",
            "--upload-file",
            str(message),
            f"smtp://{host}:{server.smtp_port}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
