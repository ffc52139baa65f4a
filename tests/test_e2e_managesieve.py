"""ManageSieve end to end: a real twistd pymta with a managesieved listener,
sievelib's ManageSieve client over STARTTLS (verifying pymta's self-signed
certificate), and the uploaded script then filtering real mail."""

from __future__ import annotations

import os
import smtplib
import socket
from pathlib import Path

import pytest
from sievelib.managesieve import Client

from tests.harness import DEFAULT_MASTER_CF, PymtaServer

SIEVE_SERVICE = "127.0.0.3:0 inet n - n - - managesieved\n"
TLS_MAIN_CF = """\
imapd_tls_security_level = may
imapd_tls_cert_file = $data_directory/imapd-cert.pem
imapd_tls_key_file = $data_directory/imapd-key.pem
pymta_tls_create_self_signed = yes
"""
SCRIPT = (
    'require ["fileinto", "mailbox"];\n'
    'if header :contains "subject" "[dev]" {\n  fileinto :create "Dev";\n}\n'
)


def passwd(root: Path) -> str:
    return f"alice@example.test:{{PLAIN}}alice-pw::::{root}/mail/example.test/alice::\n"


def server_for(root: Path, extra: str = "") -> PymtaServer:
    return PymtaServer(
        root,
        master_cf=DEFAULT_MASTER_CF + SIEVE_SERVICE,
        main_cf_extra=TLS_MAIN_CF + extra,
        passwd=passwd(root),
    )


def test_sievelib_round_trip_over_starttls_then_filtering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sievelib connects with STARTTLS (certificate verified) and AUTH
    PLAIN, checks, uploads, lists, activates, reads back, renames and
    deletes scripts; a syntax error is refused with its line; the active
    script files the next matching message into Dev, where Pigeonhole
    would put it (~/sieve/NAME.sieve, ~/.dovecot.sieve)."""
    with server_for(tmp_path) as server:
        server.start()
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "lib" / "imapd-cert.pem"))
        client = Client("127.0.0.3", server.ports["127.0.0.3:0"], srvhostname="localhost")
        assert client.connect("alice@example.test", "alice-pw", starttls=True, authmech="PLAIN")
        assert "fileinto" in client.get_sieve_capabilities()
        assert client.havespace("main", len(SCRIPT))
        assert client.checkscript(SCRIPT)
        assert not client.checkscript("if true {\n keep;\n")
        assert b"line" in client.errmsg
        assert not client.putscript("broken", "frobnicate;")
        assert client.putscript("main", SCRIPT)
        assert client.putscript("other", "keep;\n")
        assert client.setactive("main")
        active, others = client.listscripts()
        assert active == "main" and others == ["other"]
        # sievelib joins the script's lines with "\n", dropping the last one's end.
        assert client.getscript("main") == SCRIPT.rstrip("\n")
        assert client.renamescript("other", "spare")
        assert not client.deletescript("main")  # active: refused
        assert client.errcode == b"ACTIVE"
        assert client.deletescript("spare")
        assert client.listscripts() == ("main", [])
        client.logout()

        home = tmp_path / "mail" / "example.test" / "alice"
        assert os.readlink(home / ".dovecot.sieve") == "sieve/main.sieve"
        assert (home / "sieve" / "main.sieve").read_text() == SCRIPT

        with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
            smtp.sendmail(
                "bob@example.test",
                ["alice@example.test"],
                b"Subject: [dev] release\r\n\r\nshipping\r\n",
            )
        server.wait_for_log(r"to=<alice@example.test>.*status=sent \(delivered by Sieve: Dev\)")
        assert len(list((home / ".Dev" / "new").iterdir())) == 1


def test_failed_logins_and_oversized_script(tmp_path: Path) -> None:
    """The capability lists STARTTLS; a bad password is NO; three failures
    end the session with BYE; a script over the size limit is refused with
    QUOTA/MAXSIZE before its octets are kept."""
    # No failure delays: the test counts failures, the delays have their own tests.
    with server_for(tmp_path, "pymta_auth_failure_delay = 0s\n") as server:
        server.start()
        port = server.ports["127.0.0.3:0"]
        with socket.create_connection(("127.0.0.3", port)) as sock:
            f = sock.makefile("rb")
            greeting = b""
            while not greeting.endswith(b'OK "pymta ManageSieve ready."\r\n'):
                greeting += f.readline()
            assert b'"STARTTLS"' in greeting and b'"SASL" "PLAIN"' in greeting
            for _ in range(3):
                sock.sendall(b'AUTHENTICATE "PLAIN" "AGFsaWNlQGV4YW1wbGUudGVzdAB3cm9uZw=="\r\n')
                reply = f.readline()
            assert reply.startswith(b"BYE")
        with socket.create_connection(("127.0.0.3", port)) as sock:
            f = sock.makefile("rb")
            while not f.readline().startswith(b"OK"):
                pass
            sock.sendall(b'AUTHENTICATE "PLAIN" "AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1wdw=="\r\n')
            assert f.readline().startswith(b"OK")
            big = 2 * 1024 * 1024
            sock.sendall(b'PUTSCRIPT "big" {%d+}\r\n' % big + b"#" * big + b"\r\nNOOP\r\n")
            assert f.readline().startswith(b"NO (QUOTA/MAXSIZE)")
            assert f.readline().startswith(b"OK")
