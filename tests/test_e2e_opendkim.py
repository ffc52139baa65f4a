"""End to end: Debian's OpenDKIM as pymta's milter, signing and verifying.

Each test starts its own ``opendkim -f`` with a configuration written in
the test's directory (KeyTable, SigningTable, InternalHosts 127.0.0.1, a
loopback inet socket, and TestPublicKeys: the public keys it verifies with
come from a file, so no DNS is asked), and a real pymta whose
``smtpd_milters`` names that socket. Mail sent from 127.0.0.1 (internal:
signed) and 127.0.0.2 (external: verified) with smtplib; the delivered
signature is checked with dkimpy, the key served from memory.
"""

from __future__ import annotations

import shutil
import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest

from pymta.mailauth import keys
from tests.harness import PymtaServer, wait_for_file

OPENDKIM = shutil.which("opendkim") or "/usr/sbin/opendkim"

pytestmark = pytest.mark.skipif(
    not Path(OPENDKIM).exists(), reason="opendkim is not installed (apt-get install opendkim)"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OpenDKIM:
    """opendkim in the foreground, configured in ``root``."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.port = _free_port()
        self.key = keys.generate_key("rsa", 2048)
        self.record = keys.record_value(self.key)
        keys.write_key(self.key, str(root / "sel.private"))
        self.outside = keys.generate_key("rsa", 2048)
        (root / "keytable").write_text(f"k example.test:sel:{root / 'sel.private'}\n")
        (root / "signingtable").write_text("example.test k\n")
        (root / "testkeys").write_text(
            f"sel._domainkey.example.test {self.record}\n"
            f"out._domainkey.bank.test {keys.record_value(self.outside)}\n"
        )
        (root / "opendkim.conf").write_text(
            f"""Syslog no
Background no
Mode sv
Socket inet:{self.port}@127.0.0.1
KeyTable file:{root / "keytable"}
SigningTable file:{root / "signingtable"}
InternalHosts 127.0.0.1
TestPublicKeys {root / "testkeys"}
RequireSafeKeys no
AuthservID mx.example.test
PidFile {root / "opendkim.pid"}
"""
        )
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> OpenDKIM:
        self.process = subprocess.Popen(
            [OPENDKIM, "-f", "-x", str(self.root / "opendkim.conf")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        # opendkim tells nobody when its socket is ready: poll with a deadline.
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                out = self.process.stdout.read() if self.process.stdout else b""
                raise RuntimeError(f"opendkim exited: {out!r}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def opendkim(tmp_path: Path) -> Iterator[OpenDKIM]:
    with OpenDKIM(tmp_path / "opendkim") as milter:
        yield milter


def start(tmp_path: Path, milter: OpenDKIM) -> PymtaServer:
    return PymtaServer(
        tmp_path / "pymta",
        main_cf_extra=f"smtpd_milters = inet:127.0.0.1:{milter.port}\n"
        "milter_default_action = tempfail\nmynetworks = 127.0.0.1/32\n",
    ).start()


def delivered(server: PymtaServer, count: int) -> list[bytes]:
    wait_for_file(server.maildir("bob") / "new", lambda: len(server.messages("bob")) >= count)
    return server.messages("bob")


def test_opendkim_signs_mail_from_internal_hosts(tmp_path: Path, opendkim: OpenDKIM) -> None:
    """Mail from 127.0.0.1 with From: @example.test comes out with
    OpenDKIM's DKIM-Signature (added through SMFIR_INSHEADER/ADDHEADER),
    which dkimpy verifies against the published key."""
    message = (
        b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n"
        b"Subject: signed by opendkim\r\nDate: Mon, 7 Dec 2026 12:00:00 +0000\r\n"
        b"Message-ID: <m1@example.test>\r\n\r\nhello over the milter\r\n"
    )
    with start(tmp_path, opendkim) as server:
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
            client.sendmail("alice@example.test", ["bob@example.test"], message)
        [stored] = delivered(server, 1)
    assert b"DKIM-Signature:" in stored
    assert b"d=example.test" in stored and b"s=sel" in stored
    record = opendkim.record.encode()

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"sel._domainkey.example.test."
        return record

    # Delivery prepends Return-Path and Delivered-To: not signed, harmless.
    assert dkim.verify(stored, dnsfunc=dns)


def test_opendkim_verifies_mail_from_outside(tmp_path: Path, opendkim: OpenDKIM) -> None:
    """Mail from 127.0.0.2 signed by bank.test: OpenDKIM adds
    Authentication-Results dkim=pass; a copy changed on the way, dkim=fail."""
    body = (
        b"From: Joe <joe@bank.test>\r\nTo: bob@example.test\r\nSubject: statement\r\n"
        b"Date: Mon, 7 Dec 2026 12:00:00 +0000\r\nMessage-ID: <m2@bank.test>\r\n\r\nbalance\r\n"
    )
    signature = dkim.sign(body, b"out", b"bank.test", opendkim.outside.private)
    signed = signature + body
    with start(tmp_path, opendkim) as server:
        for content in (signed, signed.replace(b"balance", b"changed")):
            with smtplib.SMTP(
                "127.0.0.1", server.smtp_port, timeout=30, source_address=("127.0.0.2", 0)
            ) as client:
                client.sendmail("joe@bank.test", ["bob@example.test"], content)
        first, second = sorted(delivered(server, 2), key=lambda m: b"changed" in m)
    assert b"Authentication-Results: mx.example.test;" in first
    assert b"dkim=pass" in first and b"header.d=bank.test" in first
    assert b"dkim=fail" in second
