"""The ManageSieve protocol (RFC 5804) in memory: StringTransport, Clock,
a checker that knows one password, scripts on tmp_path."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from pymta.delivery.final import Mailbox
from pymta.managesieve.factory import ManageSieveFactory
from pymta.managesieve.protocol import SyntaxProblem, TooLarge, parse_command
from pymta.netmatch import NetworkList


class Checker:
    def requestAvatarId(self, creds: Any) -> Deferred[Any]:
        if creds.username == "alice@example.test" and creds.password == "pw":
            return succeed(b"alice@example.test")
        return fail(UnauthorizedLogin())


def session(tmp_path: Path, ip: str = "127.0.0.1") -> tuple[Any, StringTransport, Clock]:
    clock = Clock()
    home = tmp_path / "home"

    def homes(user: str) -> Mailbox | None:
        return Mailbox(user, str(home), str(home)) if user == "alice@example.test" else None

    factory = ManageSieveFactory(
        Checker(),
        homes,  # type: ignore[arg-type]
        clock,
        lambda work: maybeDeferred(work),
        plaintext_networks=NetworkList([], "test"),
        max_script_size=1000,
    )
    proto = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", ip, 5000))
    proto.makeConnection(transport)
    return proto, transport, clock


def say(proto: Any, transport: StringTransport, data: bytes) -> bytes:
    transport.clear()
    proto.dataReceived(data)
    return transport.value()


PLAIN = base64.b64encode(b"\0alice@example.test\0pw")


def test_parse_command() -> None:
    """Atoms, quoted strings with escapes, both literal forms; incomplete
    input waits; an oversized literal says where its octets start."""
    assert parse_command(b'PUTSCRIPT "a\\"b" {3+}\r\nabc\r\nrest', 100) == (
        ["PUTSCRIPT", b'a"b', b"abc"],
        len(b'PUTSCRIPT "a\\"b" {3+}\r\nabc\r\n'),
    )
    assert parse_command(b"CHECKSCRIPT {3}\r\nab", 100) is None
    assert parse_command(b"NOOP", 100) is None
    with pytest.raises(TooLarge) as caught:
        parse_command(b'PUTSCRIPT "x" {5000+}\r\n', 100)
    assert caught.value.size == 5000
    with pytest.raises(SyntaxProblem):
        parse_command(b'NOOP "a\r\n', 100)


def test_greeting_login_and_script_cycle(tmp_path: Path) -> None:
    """The greeting lists capabilities; AUTHENTICATE PLAIN with a
    continuation; PUTSCRIPT (checked), SETACTIVE, LISTSCRIPTS, GETSCRIPT."""
    proto, transport, _ = session(tmp_path)
    greeting = transport.value()
    assert b'"IMPLEMENTATION" "pymta"' in greeting and b'"SASL" "PLAIN"' in greeting
    assert greeting.endswith(b'OK "pymta ManageSieve ready."\r\n')
    assert say(proto, transport, b"LISTSCRIPTS\r\n").startswith(b"NO")
    assert say(proto, transport, b'AUTHENTICATE "PLAIN"\r\n') == b'""\r\n'
    assert say(proto, transport, b'"' + PLAIN + b'"\r\n') == b'OK "Logged in."\r\n'
    reply = say(proto, transport, b'PUTSCRIPT "s" {13+}\r\nif true {keep\r\n')
    assert reply.startswith(b"NO ") and b"line" in reply
    assert say(proto, transport, b'PUTSCRIPT "s" {5+}\r\nkeep;\r\n').startswith(b"OK")
    assert say(proto, transport, b'SETACTIVE "s"\r\n').startswith(b"OK")
    assert say(proto, transport, b"LISTSCRIPTS\r\n").startswith(b'"s" ACTIVE\r\nOK')
    assert say(proto, transport, b'GETSCRIPT "s"\r\n') == (
        b'{5}\r\nkeep;\r\nOK "Getscript completed."\r\n'
    )
    assert (tmp_path / "home" / ".dovecot.sieve").is_symlink()
    assert say(proto, transport, b'GETSCRIPT "nope"\r\n').startswith(b"NO (NONEXISTENT)")
    assert say(proto, transport, b'SETACTIVE ""\r\n').startswith(b"OK")
    assert not (tmp_path / "home" / ".dovecot.sieve").exists()
    assert say(proto, transport, b'HAVESPACE "s" 5000\r\n').startswith(b"NO (QUOTA/MAXSIZE)")
    assert say(proto, transport, b'PUTSCRIPT "../x" "keep;"\r\n').startswith(b"NO")
    assert say(proto, transport, b'NOOP "t1"\r\n') == b'OK (TAG "t1") "Done."\r\n'


def test_plaintext_needs_tls_off_loopback(tmp_path: Path) -> None:
    """A client outside the plaintext networks is offered no SASL
    mechanism and refused (ENCRYPT-NEEDED)."""
    proto, transport, _ = session(tmp_path, ip="192.0.2.7")
    assert b'"SASL" ""' in transport.value()
    reply = say(proto, transport, b'AUTHENTICATE "PLAIN" "' + PLAIN + b'"\r\n')
    assert reply.startswith(b"NO (ENCRYPT-NEEDED)")


def test_bad_input_and_idle_timeout(tmp_path: Path) -> None:
    """Unknown commands are NO; ten of them end the session (BYE); a silent
    client is disconnected after the timeout."""
    proto, transport, clock = session(tmp_path)
    replies = say(proto, transport, b"FROB\r\n" * 10)
    assert replies.count(b"NO ") == 9 and replies.endswith(b'BYE "Too many invalid commands."\r\n')
    proto, transport, clock = session(tmp_path)
    transport.clear()
    clock.advance(601)
    assert transport.value().startswith(b"BYE") and transport.disconnecting
