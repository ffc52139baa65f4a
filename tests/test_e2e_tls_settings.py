"""TLS settings against a real twistd pymta and real clients (openssl
s_client, swaks): protocol limits, and a renewed certificate served to new
connections without a restart."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness import PymtaServer
from tests.test_tls_settings import write_chain

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="openssl is installed by tools/install-test-deps"
)


def _s_client(port: int, *options: str) -> subprocess.CompletedProcess[str]:
    """openssl s_client with STARTTLS on the SMTP port; QUIT after the
    handshake so it ends on its own."""
    return subprocess.run(
        [
            "openssl",
            "s_client",
            "-starttls",
            "smtp",
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            "localhost",
            *options,
        ],
        input="QUIT\r\n",
        capture_output=True,
        text=True,
        timeout=60,
    )


def _settings(chain: Path, extra: str = "") -> str:
    return f"smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {chain}\n{extra}"


def test_tls12_client_refused_when_protocols_say_tls13(tmp_path: Path) -> None:
    """smtpd_tls_protocols = >=TLSv1.3: openssl s_client -tls1_2 fails its
    handshake after STARTTLS, -tls1_3 completes it."""
    chain = tmp_path / "chain.pem"
    write_chain(chain, "localhost")
    extra = "smtpd_tls_protocols = >=TLSv1.3\n"
    with PymtaServer(tmp_path / "site", _settings(chain, extra)) as server:
        server.start()
        port = server.ports["127.0.0.1:0"]
        old = _s_client(port, "-tls1_2")
        assert old.returncode != 0, old.stdout
        assert "Cipher is (NONE)" in old.stdout, old.stdout
        new = _s_client(port, "-tls1_3")
        assert new.returncode == 0, new.stderr
        assert "New, TLSv1.3, Cipher is TLS_" in new.stdout, new.stdout
        server.stop()


def test_excluded_cipher_refused_over_the_wire(tmp_path: Path) -> None:
    """smtpd_tls_exclude_ciphers = AES128: a TLS 1.2 client offering only
    an AES128 suite is refused; one also offering AES256 gets AES256."""
    chain = tmp_path / "chain.pem"
    write_chain(chain, "localhost")
    extra = "smtpd_tls_exclude_ciphers = AES128\n"
    with PymtaServer(tmp_path / "site", _settings(chain, extra)) as server:
        server.start()
        port = server.ports["127.0.0.1:0"]
        only = _s_client(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
        assert only.returncode != 0, only.stdout
        assert "Cipher is (NONE)" in only.stdout, only.stdout
        both = _s_client(
            port,
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384",
        )
        assert both.returncode == 0, both.stderr
        assert "Cipher is ECDHE-ECDSA-AES256-GCM-SHA384" in both.stdout, both.stdout
        server.stop()


def test_renewed_certificate_served_without_restart(tmp_path: Path) -> None:
    """A certificate renewal (new file renamed over the old one, as certbot
    and acme clients do) is served to the next connection; pymta is not
    restarted or signalled and logs the reload."""
    chain = tmp_path / "chain.pem"
    write_chain(chain, "localhost")
    with PymtaServer(tmp_path / "site", _settings(chain)) as server:
        server.start()
        port = server.ports["127.0.0.1:0"]
        first = _s_client(port)
        assert "CN = localhost" in first.stdout, first.stdout
        renewed = tmp_path / "renewed.pem"
        write_chain(renewed, "renewed.localhost")
        renewed.replace(chain)
        # Files are looked at on new connections, at most once a second:
        # poll with a deadline (no event tells a client the check happened).
        deadline = time.monotonic() + 30
        while True:
            again = _s_client(port)
            if "CN = renewed.localhost" in again.stdout:
                break
            if time.monotonic() > deadline:
                raise AssertionError("the renewed certificate was never served")
        server.wait_for_log(r"reloaded TLS certificates from")
        server.stop()


@pytest.mark.skipif(
    shutil.which("swaks") is None, reason="swaks is installed by tools/install-test-deps"
)
def test_swaks_delivers_over_tls13_only(tmp_path: Path) -> None:
    """swaks with STARTTLS delivers through a server limited to TLS 1.3 and
    the Received header records TLSv1.3."""
    chain = tmp_path / "chain.pem"
    write_chain(chain, "localhost")
    extra = "smtpd_tls_protocols = TLSv1.3\n"
    with PymtaServer(tmp_path / "site", _settings(chain, extra)) as server:
        server.start()
        port = server.ports["127.0.0.1:0"]
        result = subprocess.run(
            [
                "swaks",
                "--server",
                f"127.0.0.1:{port}",
                "--tls",
                "--from",
                "sender@client.test",
                "--to",
                "alice@example.test",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        server.wait_for_log(r"status=sent")
        (message,) = server.messages("alice")
        assert b"TLSv1.3" in message
        server.stop()


def test_smtp_client_mandatory_protocols(tmp_path: Path) -> None:
    """smtp_tls_security_level = encrypt with smtp_tls_mandatory_protocols =
    >=TLSv1.3: a next hop that speaks at most TLS 1.2 gets no mail (deferred,
    4.7.x or a handshake failure), one that speaks TLS 1.3 gets it over
    TLSv1.3."""
    import ssl

    from tests.test_e2e_relay import MASTER_CF, Collector, aiosmtpd, relay_main_cf, submit

    chain = tmp_path / "peer.pem"
    write_chain(chain, "127.0.0.1")
    settings = {"smtp_tls_security_level": "encrypt", "smtp_tls_mandatory_protocols": ">=TLSv1.3"}
    for max_version, delivered in ((ssl.TLSVersion.TLSv1_2, False), (ssl.TLSVersion.TLSv1_3, True)):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.maximum_version = max_version
        context.load_cert_chain(str(chain))
        handler = Collector()
        with aiosmtpd(handler, tls_context=context) as port:
            main_cf = relay_main_cf(relayhost=f"[127.0.0.1]:{port}", **settings)
            site = tmp_path / f"relay-{delivered}"
            with PymtaServer(site, main_cf_extra=main_cf, master_cf=MASTER_CF) as relay:
                relay.start()
                qid = submit(relay.smtp_port, ["ann@remote.test"])
                if delivered:
                    relay.wait_for_log(r"TLS connection established to .*: TLSv1\.3 with cipher")
                    relay.wait_for_log(rf"{qid}: to=<ann@remote.test>.*status=sent")
                else:
                    relay.wait_for_log(rf"{qid}: to=<ann@remote.test>.*status=deferred")
                relay.stop()
        assert len(handler.messages) == (1 if delivered else 0)


def test_imapd_and_pop3d_take_their_own_protocols(tmp_path: Path) -> None:
    """imapd_tls_protocols = >=TLSv1.3 refuses an openssl s_client -tls1_2
    after IMAP STARTTLS while pop3d (smtpd's default list) still takes TLS
    1.2 after STLS."""
    from tests.harness import DEFAULT_MASTER_CF, IMAP_SERVICE, POP3_SERVICE

    chain = tmp_path / "chain.pem"
    write_chain(chain, "localhost")
    extra = "imapd_tls_protocols = >=TLSv1.3\n"
    master = DEFAULT_MASTER_CF + IMAP_SERVICE + POP3_SERVICE
    with PymtaServer(tmp_path / "site", _settings(chain, extra), master_cf=master) as server:
        server.start()

        def s_client(protocol: str, port: int) -> subprocess.CompletedProcess[str]:
            address = f"127.0.0.1:{port}"
            return subprocess.run(
                ["openssl", "s_client", "-starttls", protocol, "-connect", address, "-tls1_2"],
                input="",
                capture_output=True,
                text=True,
                timeout=60,
            )

        imap = s_client("imap", server.imap_port)
        assert "Cipher is (NONE)" in imap.stdout, imap.stdout
        pop3 = s_client("pop3", server.pop3_port)
        assert "New, TLSv1.2, Cipher is ECDHE-" in pop3.stdout, pop3.stdout
        server.stop()
