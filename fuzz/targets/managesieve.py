"""ManageSieve: client bytes through a ManageSieve session (RFC 5804).

The input is what a client sends, cut into chunks as a network might
deliver them, fed to one session on a StringTransport from loopback (so
AUTHENTICATE PLAIN is offered without TLS) whose checker knows one user
and whose scripts live in a scratch directory; storage runs at once
instead of in the thread pool. Then time runs on so that the idle timer
fires, and the connection drops. Documented errors: none — the server
answers every input with OK/NO/BYE lines; an exception out of the
protocol, or one it catches and logs, is a finding. Checked besides: every
line the server sends ends in CRLF.
"""

from __future__ import annotations

import base64
import shutil
from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from fuzz.common import Finding, LoggedFailures, chunks, scratch_directory
from pymta.delivery.final import Mailbox
from pymta.managesieve.factory import ManageSieveFactory
from pymta.netmatch import NetworkList

EXPECTED: tuple[type[BaseException], ...] = ()

_PLAIN = base64.b64encode(b"\0alice@example.test\0pw")


class _Checker:
    def requestAvatarId(self, creds: Any) -> Deferred[Any]:
        if creds.username == "alice@example.test" and creds.password == "pw":
            return succeed(b"alice@example.test")
        return fail(UnauthorizedLogin())


def seeds() -> list[bytes]:
    """Sessions of the kinds tests/test_managesieve_protocol.py runs (first byte: chunking)."""
    login = b'AUTHENTICATE "PLAIN" "' + _PLAIN + b'"\r\n'
    sessions = [
        login + b'PUTSCRIPT "a" {25+}\r\nrequire "fileinto"; keep;\r\n'
        b'SETACTIVE "a"\r\nLISTSCRIPTS\r\nGETSCRIPT "a"\r\nLOGOUT\r\n',
        login + b'CHECKSCRIPT {9}\r\nbad sieve\r\nHAVESPACE "x" 100\r\n'
        b'RENAMESCRIPT "a" "b"\r\nDELETESCRIPT "b"\r\nNOOP "tag"\r\n',
        b'CAPABILITY\r\nSTARTTLS\r\nAUTHENTICATE "PLAIN"\r\n' + _PLAIN + b"\r\nUNAUTHENTICATE\r\n",
        b'AUTHENTICATE "PLAIN" "AAAA"\r\n{99999999}\r\n"unterminated\r\n',
    ]
    return [bytes([0]) + s for s in sessions] + [bytes([5]) + sessions[0]]


def one_input(data: bytes) -> None:
    home = scratch_directory("managesieve")
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(mode=0o700)
    clock = Clock()

    def homes(user: str) -> Mailbox | None:
        return Mailbox(user, str(home), str(home)) if user == "alice@example.test" else None

    factory = ManageSieveFactory(
        _Checker(),
        homes,  # type: ignore[arg-type]
        clock,
        lambda work: maybeDeferred(work),
        plaintext_networks=NetworkList([], "fuzz"),
        max_script_size=4096,
    )
    with LoggedFailures():
        proto = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5000))
        proto.makeConnection(transport)
        for chunk in chunks(data):
            if transport.disconnecting:
                break
            proto.dataReceived(chunk)
        for _ in range(4):
            clock.advance(3600)
        proto.connectionLost(None)
    out = transport.value()
    if out and not out.endswith(b"\r\n"):
        raise Finding(f"output does not end in CRLF: {out[-80:]!r}")
