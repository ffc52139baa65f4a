"""End to end: a real ``twistd pymta`` relaying to real SMTP servers on loopback.

The peers are servers nobody here wrote — a second pymta, aiosmtpd (in a
thread of this process), Postfix's smtp-sink — and a twisted.names DNS
server (tests/test_dns_names.py run as a subprocess) answering for a test
zone whose two MX hosts are 127.0.0.2 and 127.0.0.3. Mail is submitted
with smtplib from 127.0.0.1 (mynetworks); the relaying pymta routes it with
``relayhost`` or, for MX tests, by DNS (``smtp_tcp_port`` points the MX
connections at the test port). Every wait is on a log line or a file.
"""

from __future__ import annotations

import email
import json
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller, UnixSocketController
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import AuthResult, LoginPassword

from pymta.tls import ensure_self_signed
from tests.harness import DEFAULT_MASTER_CF, PymtaServer, wait_for_file

REPO = Path(__file__).resolve().parents[1]
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"

#: the relaying pymta: no local domains of its own but example.test for bounces
MASTER_CF = DEFAULT_MASTER_CF + "smtp unix - - n - - smtp\nrelay unix - - n - - smtp\n"


def relay_main_cf(**params: str) -> str:
    base = {
        "minimal_backoff_time": "1s",
        "maximal_backoff_time": "2s",
        "queue_run_delay": "1s",
        "smtp_helo_name": "relay.example.test",
    }
    base.update(params)
    return "".join(f"{k} = {v}\n" for k, v in base.items())


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def submit(
    port: int, rcpts: list[str], sender: str = "alice@example.test", subject: str = "relay"
) -> str:
    """Send one message with smtplib; return the queue id from the 250 reply."""
    body = (
        f"From: <{sender}>\r\nTo: <{rcpts[0]}>\r\nSubject: {subject}\r\n\r\n.dot line\r\nhello\r\n"
    )
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        client.mail(sender)
        for r in rcpts:
            code, text = client.rcpt(r)
            assert code == 250, (r, code, text)
        code, text = client.data(body.encode())
        assert code == 250, text
        return text.decode().rsplit(" ", 1)[-1]


# --- aiosmtpd ------------------------------------------------------------------


class Collector:
    """An aiosmtpd handler that keeps what it accepts and refuses chosen recipients."""

    def __init__(self, refuse: set[str] | None = None) -> None:
        self.refuse = refuse or set()
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.tls: list[bool] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        self.tls.append(session.ssl is not None)
        return "250 2.0.0 Ok: queued as AIO1"


@contextmanager
def aiosmtpd(handler: Collector, **kwargs: Any) -> Iterator[int]:
    """aiosmtpd in a thread of this process on a free loopback port."""
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "peer-cert.pem", tmp_path / "peer-key.pem"
    ensure_self_signed(cert, key, "127.0.0.1")
    return cert, key


def _tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context


class SmtpSink:
    """Postfix's smtp-sink on 127.0.0.1:port, dumping each message to a file;
    ``soft_reject`` makes it answer 4xx to the given commands (its -r)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        # smtp-sink writes as nobody: pytest's own temporary tree is 0700.
        self.directory = Path(tempfile.mkdtemp(prefix="pymta-sink-"))
        self.directory.chmod(0o777)
        self.port = port
        self.host = host
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, soft_reject: str = "") -> SmtpSink:
        args = [SMTP_SINK, "-u", "nobody", "-d", f"{self.directory}/msg."]
        if soft_reject:
            args += ["-r", soft_reject]
        # No readiness signal: a delivery attempt before smtp-sink listens is
        # refused and retried by the next queue run (queue_run_delay = 1s).
        self.process = subprocess.Popen([*args, f"{self.host}:{self.port}", "50"])
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def messages(self) -> list[bytes]:
        """The messages received (a transaction without DATA leaves an empty dump)."""
        dumps = (p.read_bytes() for p in sorted(self.directory.glob("msg.*")))
        return [d for d in dumps if d]


def _relay(tmp_path: Path, name: str, **params: str) -> PymtaServer:
    return PymtaServer(tmp_path / name, main_cf_extra=relay_main_cf(**params), master_cf=MASTER_CF)


def test_one_of_three_recipients_refused(tmp_path: Path) -> None:
    """aiosmtpd refuses one of three recipients: two are delivered in one
    transaction, the third bounces and the DSN to the sender lists exactly it."""
    handler = Collector(refuse={"bob@remote.test"})
    with aiosmtpd(handler) as port:
        with _relay(tmp_path, "a", relayhost=f"[127.0.0.1]:{port}") as relay:
            relay.start()
            qid = submit(
                relay.smtp_port,
                ["ann@remote.test", "bob@remote.test", "cat@remote.test"],
            )
            relay.wait_for_log(rf"{qid}: removed")
            relay.wait_for_log(r"to=<alice@example\.test>, relay=virtual, .*status=sent")
            inbox = relay.maildir("alice") / "new"
            relay.stop()
        sent = relay.log()
        assert f"{qid}: to=<ann@remote.test>, relay=127.0.0.1[127.0.0.1]:{port}" in sent
        assert "status=bounced" in sent and "User unknown" in sent
    assert len(handler.messages) == 1
    sender, rcpts, content = handler.messages[0]
    assert (sender, rcpts) == ("alice@example.test", ["ann@remote.test", "cat@remote.test"])
    assert b"\r\n.dot line\r\n" in content or b"\n.dot line\n" in content
    (dsn_file,) = list(inbox.iterdir())
    dsn = email.message_from_bytes(dsn_file.read_bytes())
    reports = [p for p in dsn.walk() if p.get_content_type() == "message/delivery-status"]
    text = dsn_file.read_text()
    assert reports
    assert "Final-Recipient: rfc822; bob@remote.test" in text
    assert (
        "ann@remote.test" not in text.split("message/delivery-status")[1].split("message/rfc822")[0]
    )
    assert (
        "cat@remote.test" not in text.split("message/delivery-status")[1].split("message/rfc822")[0]
    )


def test_relay_to_a_second_pymta(tmp_path: Path) -> None:
    """pymta relays (relayhost) to another pymta, which delivers to its Maildir."""
    with PymtaServer(tmp_path / "b") as peer:
        peer.start()
        with _relay(
            tmp_path,
            "a",
            relayhost=f"[127.0.0.1]:{peer.smtp_port}",
            virtual_mailbox_domains="",
            virtual_alias_maps="",
            myhostname="relay.example.test",
        ) as relay:
            relay.start()
            qid = submit(relay.smtp_port, ["alice@example.test"], sender="x@client.test")
            relay.wait_for_log(
                rf"{qid}: to=<alice@example.test>, relay=127\.0\.0\.1\[.*status=sent"
            )
            relay.wait_for_log(rf"{qid}: removed")
        inbox = peer.maildir("alice") / "new"
        wait_for_file(inbox, lambda: len(list(inbox.iterdir())) == 1)
        message = email.message_from_bytes(next(inbox.iterdir()).read_bytes())
        assert message["Subject"] == "relay"
        assert any("relay.example.test" in h for h in message.get_all("Received", []))
        peer.stop()


def test_4xx_then_accepted(tmp_path: Path) -> None:
    """smtp-sink answers 4xx to RCPT: the mail is deferred; once the sink
    accepts, the next queue run delivers it exactly once."""
    port = free_port()
    sink = SmtpSink(port).start(soft_reject="RCPT")
    try:
        with _relay(tmp_path, "a", relayhost=f"[127.0.0.1]:{port}") as relay:
            relay.start()
            qid = submit(relay.smtp_port, ["ann@remote.test"])
            relay.wait_for_log(rf"{qid}: to=<ann@remote.test>.*status=deferred \(.*4\.3\.0")
            sink.stop()
            sink.start()
            relay.wait_for_log(rf"{qid}: to=<ann@remote.test>.*status=sent")
            relay.wait_for_log(rf"{qid}: removed")
            relay.stop()
        assert len(sink.messages()) == 1
    finally:
        sink.close()


def test_restart_with_deferred_mail(tmp_path: Path) -> None:
    """Mail deferred before a restart is delivered after it: nothing lost, nothing sent twice."""
    port = free_port()
    sink = SmtpSink(port).start(soft_reject="MAIL")
    try:
        relay = _relay(tmp_path, "a", relayhost=f"[127.0.0.1]:{port}")
        with relay:
            relay.start()
            qids = [submit(relay.smtp_port, [f"u{i}@remote.test"]) for i in range(3)]
            for qid in qids:
                relay.wait_for_log(rf"{qid}: to=.*status=deferred \(host .* said: 450 4\.3\.0")
            relay.stop()
            sink.stop()
            sink.start()
            relay.start()
            for qid in qids:
                relay.wait_for_log(rf"{qid}: to=.*status=sent")
                relay.wait_for_log(rf"{qid}: removed")
            relay.stop()
        bodies = sink.messages()
        assert len(bodies) == 3
        assert sorted(b.count(b"u") > 0 for b in bodies) == [True] * 3
        assert not any((relay.root / "spool" / "deferred").rglob("*[0-9A-F]"))
    finally:
        sink.close()


def _dns_server(tmp_path: Path, zone: dict[str, Any]) -> tuple[subprocess.Popen[str], int]:
    path = tmp_path / "zone.json"
    path.write_text(json.dumps(zone))
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.test_dns_names", str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, int(process.stdout.readline())


def test_hanging_mx_times_out_and_next_mx_delivers(tmp_path: Path) -> None:
    """DNS gives two MX hosts; the preferred one (127.0.0.2) accepts the
    connection but never greets: after smtp_helo_timeout the next MX
    (127.0.0.3, smtp-sink) gets the mail."""
    port = free_port("127.0.0.3")
    hang = socket.socket()
    hang.bind(("127.0.0.2", port))
    hang.listen(5)
    sink = SmtpSink(port, host="127.0.0.3").start()
    zone = {
        "relay.test": [["MX", "10 mx1.relay.test", 60], ["MX", "20 mx2.relay.test", 60]],
        "mx1.relay.test": [["A", "127.0.0.2", 60]],
        "mx2.relay.test": [["A", "127.0.0.3", 60]],
    }
    dns_process, dns_port = _dns_server(tmp_path, zone)
    try:
        with _relay(
            tmp_path,
            "a",
            pymta_dns_servers=f"127.0.0.1:{dns_port}",
            smtp_tcp_port=str(port),
            smtp_helo_timeout="2s",
        ) as relay:
            relay.start()
            qid = submit(relay.smtp_port, ["ann@relay.test"])
            relay.wait_for_log(
                rf"{qid}: conversation with mx1\.relay\.test\[127\.0\.0\.2\]:{port} timed out"
                " while receiving the initial server greeting"
            )
            relay.wait_for_log(
                rf"{qid}: to=<ann@relay.test>, "
                rf"relay=mx2\.relay\.test\[127\.0\.0\.3\]:{port},.*status=sent"
            )
            relay.stop()
        assert len(sink.messages()) == 1
    finally:
        sink.close()
        hang.close()
        dns_process.terminate()
        dns_process.wait(10)


def test_starttls_may_delivers_over_tls(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    """Under smtp_tls_security_level = may, a peer with a self-signed
    certificate gets the mail over TLS, and the TLS line is logged."""
    handler = Collector()
    with aiosmtpd(handler, tls_context=_tls_context(*certificate)) as port:
        with _relay(tmp_path, "a", relayhost=f"[127.0.0.1]:{port}") as relay:
            relay.start()
            qid = submit(relay.smtp_port, ["ann@remote.test"])
            relay.wait_for_log(
                rf"Untrusted TLS connection established to "
                rf"127\.0\.0\.1\[127\.0\.0\.1\]:{port}: TLSv1\.[23] with cipher"
            )
            relay.wait_for_log(rf"{qid}: to=<ann@remote.test>.*status=sent")
            relay.stop()
    assert handler.tls == [True]


def test_starttls_verify_defers_untrusted_certificate(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    """Under verify, a self-signed certificate nobody trusts defers the mail (4.7.5);
    the same certificate given as smtp_tls_CAfile is verified and the mail goes."""
    handler = Collector()
    with aiosmtpd(handler, tls_context=_tls_context(*certificate)) as port:
        with _relay(
            tmp_path, "a", relayhost=f"[127.0.0.1]:{port}", smtp_tls_security_level="verify"
        ) as relay:
            relay.start()
            qid = submit(relay.smtp_port, ["ann@remote.test"])
            relay.wait_for_log(rf"{qid}: to=<ann@remote.test>.*dsn=4\.7\.5, status=deferred")
            relay.stop()
        assert handler.messages == []
        with _relay(
            tmp_path,
            "b",
            relayhost=f"[127.0.0.1]:{port}",
            smtp_tls_security_level="verify",
            smtp_tls_CAfile=str(certificate[0]),
        ) as relay:
            relay.start()
            qid = submit(relay.smtp_port, ["ann@remote.test"])
            relay.wait_for_log(r"Verified TLS connection established to 127\.0\.0\.1")
            relay.wait_for_log(rf"{qid}: to=<ann@remote.test>.*status=sent")
            relay.stop()
    assert handler.tls == [True]


def test_relayhost_with_auth(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    """A relayhost that requires AUTH (aiosmtpd with an authenticator) gets
    the login from smtp_sasl_password_maps, over STARTTLS."""
    logins: list[tuple[str, bytes, bytes]] = []

    def authenticator(
        server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        logins.append((mechanism, data.login, data.password))
        return AuthResult(success=data.login == b"relayuser" and data.password == b"s3cret")

    handler = Collector()
    context = _tls_context(*certificate)
    with aiosmtpd(
        handler, tls_context=context, auth_required=True, authenticator=authenticator
    ) as port:
        relay = _relay(
            tmp_path,
            "a",
            relayhost=f"[127.0.0.1]:{port}",
            smtp_sasl_auth_enable="yes",
            smtp_sasl_password_maps="texthash:$config_directory/sasl_passwd",
            smtp_sasl_tls_security_options="noanonymous",
        )
        (relay.config_dir / "sasl_passwd").write_text(f"[127.0.0.1]:{port} relayuser:s3cret\n")
        with relay:
            relay.start()
            qid = submit(relay.smtp_port, ["ann@remote.test"])
            relay.wait_for_log(rf"{qid}: to=<ann@remote.test>.*status=sent")
            relay.stop()
    assert logins == [("PLAIN", b"relayuser", b"s3cret")]
    assert len(handler.messages) == 1


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_large_message_arrives_intact(
    tmp_path: Path, certificate: tuple[Path, Path], tls: bool
) -> None:
    """A 1.5 MB message (written in chunks as the transport drains, over TLS
    and over plain TCP) arrives byte for byte, dot-stuffing undone by the peer."""
    handler = Collector()
    line = "." + "x" * 75 + "\r\n"
    body = line * 20000
    message = f"From: <alice@example.test>\r\nSubject: big\r\n\r\n{body}".encode()
    context = _tls_context(*certificate) if tls else None
    with aiosmtpd(handler, tls_context=context) as port:
        with _relay(tmp_path, "a", relayhost=f"[127.0.0.1]:{port}") as relay:
            relay.start()
            with smtplib.SMTP("127.0.0.1", relay.smtp_port, timeout=30) as client:
                client.sendmail("alice@example.test", ["ann@remote.test"], message)
            relay.wait_for_log(r"to=<ann@remote.test>.*status=sent")
            relay.stop()
    (_sender, _rcpts, content) = handler.messages[0]
    assert handler.tls == [tls]
    received = content.replace(b"\r\n", b"\n")
    assert received.endswith(body.replace("\r\n", "\n").encode())


class _LMTPController(UnixSocketController):
    def factory(self) -> Any:
        return LMTP(self.handler, **self.SMTP_kwargs)


def test_lmtp_over_a_unix_socket(tmp_path: Path) -> None:
    """transport_maps-style routing to the lmtp service: pymta delivers over a
    UNIX-domain socket to aiosmtpd's LMTP server (LHLO, per-recipient reply)."""
    handler = Collector()
    path = tmp_path / "lmtp.sock"
    controller = _LMTPController(handler, unix_socket=str(path))
    controller.start()
    try:
        with PymtaServer(
            tmp_path / "a",
            main_cf_extra=relay_main_cf(default_transport="lmtp", relayhost=f"unix:{path}"),
            master_cf=MASTER_CF + "lmtp unix - - n - - lmtp\n",
        ) as relay:
            relay.start()
            qid = submit(relay.smtp_port, ["ann@remote.test"])
            relay.wait_for_log(
                rf"lmtp: {qid}: to=<ann@remote.test>, "
                rf"relay=mx\.example\.test\[{re.escape(str(path))}\].*status=sent"
            )
            relay.stop()
    finally:
        controller.stop()
    assert [m[1] for m in handler.messages] == [["ann@remote.test"]]
