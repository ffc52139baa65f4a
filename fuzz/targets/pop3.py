"""The POP3 protocol: what a client sends, through a POP3 session on a StringTransport.

The session is the tests' (tests/test_pop3_harness.py: an in-memory store
with two messages in alice's INBOX, a passwd-file with alice and bob, a
task.Clock); the input is cut into chunks as a network might deliver it,
then time runs on (login delays, the idle timeout) and the connection
drops. Seeds log in, so the fuzzer starts from the TRANSACTION state.

Documented errors: none. The server answers ``-ERR`` to anything it does
not accept; an exception out of the protocol, or one it catches and logs,
(through the global log or the factory's logger) is a finding.
"""

from __future__ import annotations

from fuzz.common import Finding, LoggedFailures, chunks, scratch_directory
from pymta.auth.schemes import DEFAULT_SCHEME, make_hash
from tests.test_pop3_harness import World

EXPECTED: tuple[type[BaseException], ...] = ()


_MESSAGES = (
    b"From: a@example.org\nSubject: one\n\nHello\n.leading dot\n..two dots\nend\n",
    b"From: b@example.org\nSubject: two\n\nline1\nline2\nline3\n",
)


def seeds() -> list[bytes]:
    """Sessions after tests/test_pop3_protocol.py (first byte: chunk size)."""
    login = b"USER alice@example.org\r\nPASS secret\r\n"
    sessions = [
        b"CAPA\r\n" + login + b"STAT\r\nLIST\r\nLIST 2\r\nUIDL\r\nUIDL 1\r\nTOP 2 0\r\n"
        b"RETR 1\r\nDELE 1\r\nRSET\r\nDELE 2\r\nQUIT\r\n",
        login + b"LIST 1\r2\r\nTOP 2 99\r\nTOP 2 -1\r\nNOOP\r\nRETR 3\r\nQUIT\r\n",
        b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAHNlY3JldA==\r\nSTAT\r\nQUIT\r\n",
        b"AUTH PLAIN\r\nAGFsaWNlQGV4YW1wbGUub3JnAHdyb25n\r\nUSER bob@example.org\r\nPASS x\r\n",
        b"APOP alice@example.org 0123456789abcdef0123456789abcdef\r\nSTLS\r\nQUIT\r\n",
    ]
    return [bytes([0]) + s for s in sessions]


def one_input(data: bytes) -> None:
    with LoggedFailures():
        world = World(scratch_directory("pop3"))
        # An unknown user's password is checked against a dummy argon2 hash
        # (the same cost as a known user's: invariant 8), in a worker thread
        # in the server; the harness runs it inline, where a second of
        # hashing per input would be all the fuzzer did. A clear-text dummy
        # keeps the protocol's path and drops the cost.
        world.checker._dummies[DEFAULT_SCHEME] = make_hash("dummy", "PLAIN")
        inbox = world.inbox()
        for message in _MESSAGES:
            inbox.append(message)
        session = world.connect()
        for chunk in chunks(data):
            if session.transport.disconnecting:
                break
            session.proto.dataReceived(chunk)
            world.clock.advance(5)
        for _ in range(4):
            world.clock.advance(600)
        session.drop()
    for event in world.events:  # the factory's own logger
        if event.get("log_failure") is not None:
            raise Finding(f"logged failure: {event['log_failure'].getTraceback()}")
