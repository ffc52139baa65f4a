"""POP3 over a real loopback socket, driven by Python's poplib, on a Maildir store."""

from __future__ import annotations

import poplib
import ssl
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.interfaces import IListeningPort, IReactorTCP

from pymta.config.config import Config
from pymta.mailstore.maildir import MaildirStore
from pymta.pop3.service import make_pop3_factory
from pymta.tls import ServerTLS, ensure_self_signed

MESSAGES = [
    b"From: a@example.org\nTo: u@example.org\nSubject: one\n\nHello\n.dot line\n",
    b"From: b@example.org\nTo: u@example.org\nSubject: two\n\n" + b"x" * 70 + b"\n" * 3,
]


class Server:
    def __init__(self, tmp_path: Path, tls: bool) -> None:
        maildir = tmp_path / "Maildir"
        (tmp_path / "passwd").write_text(
            f"u@example.org:{{PLAIN}}pw:::::: mail=maildir:{maildir}\n"
        )
        text = f"pymta_passdb = passwd-file:{tmp_path}/passwd\nmyhostname = localhost\n"
        if tls:
            cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
            ensure_self_signed(cert, key, "localhost")
            text += f"pop3d_tls_security_level = may\npop3d_tls_cert_file = {cert}\n"
            text += f"pop3d_tls_key_file = {key}\n"
        self.config = Config.from_text(text, config_directory=str(tmp_path))
        store = MaildirStore(reactor, "testhost", fsync=False)
        inbox = store.open_user("u@example.org", str(maildir)).folder("INBOX")
        for message in MESSAGES:
            inbox.append(message)
        factory = make_pop3_factory(self.config, reactor, store=store)
        assert isinstance(factory.tls, ServerTLS)
        tcp: IReactorTCP = reactor
        self.port: IListeningPort = tcp.listenTCP(0, factory, interface="127.0.0.1")
        self.number: int = self.port.getHost().port  # type: ignore[attr-defined]


@pytest.fixture
def server(tmp_path: Path) -> Generator[Server, None, None]:
    s = Server(tmp_path, tls=True)
    yield s
    pytest_twisted.blockon(s.port.stopListening())


def session(port: int, starttls: bool, delete: bool) -> dict[str, Any]:
    client = poplib.POP3("127.0.0.1", port, timeout=30)
    result: dict[str, Any] = {"welcome": client.getwelcome(), "capa": client.capa()}
    if starttls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        client.stls(context)
    client.user("u@example.org")
    client.pass_("pw")
    result["stat"] = client.stat()
    result["uidl"] = client.uidl()[1]
    result["messages"] = [b"\n".join(client.retr(n)[1]) + b"\n" for n in (1, 2)]
    result["top"] = client.top(2, 0)[1]
    if delete:
        client.dele(1)
        client.quit()
    else:
        client.dele(2)
        client.sock.close()  # dropped: no QUIT, so no UPDATE state
    return result


@pytest_twisted.inlineCallbacks
def test_poplib_session_stls_retr_uidl_dele(server: Server) -> Generator[Any, Any, None]:
    """poplib: STLS, login, exact RETR, TOP, stable UIDL; DELE+QUIT removes, a drop does not."""
    first = yield threads.deferToThread(session, server.number, True, False)
    assert first["welcome"].startswith(b"+OK")
    assert "STLS" in first["capa"] and "UIDL" in first["capa"]
    assert first["messages"] == MESSAGES
    assert first["top"] == [b"From: b@example.org", b"To: u@example.org", b"Subject: two", b""]
    assert first["stat"][0] == 2
    # the second session sees both again (the drop did not delete), deletes 1 with QUIT
    second = yield threads.deferToThread(session, server.number, True, True)
    assert second["uidl"] == first["uidl"]
    third = yield threads.deferToThread(session_count, server.number)
    assert third["stat"][0] == 1
    assert third["uidl"] == [first["uidl"][1].replace(b"2 ", b"1 ", 1)]


def session_count(port: int) -> dict[str, Any]:
    client = poplib.POP3("127.0.0.1", port, timeout=30)
    client.user("u@example.org")
    client.pass_("pw")
    result = {"stat": client.stat(), "uidl": client.uidl()[1]}
    client.quit()
    return result


@pytest_twisted.inlineCallbacks
def test_poplib_bad_password(server: Server) -> Generator[Any, Any, None]:
    """poplib sees -ERR [AUTH] for a wrong password (after the failure delay)."""

    def bad() -> str:
        client = poplib.POP3("127.0.0.1", server.number, timeout=30)
        client.user("u@example.org")
        try:
            client.pass_("wrong")
        except poplib.error_proto as e:
            return str(e.args[0], "ascii")
        finally:
            client.sock.close()
        return "no error"

    reply = yield threads.deferToThread(bad)
    assert reply.startswith("-ERR [AUTH]")
