"""An IMAP session on a StringTransport, over a mailbox that holds hostile mail.

The session is the tests' (tests/test_imap_harness.py: an in-memory store,
a passwd-file, a task.Clock), logged in and with INBOX selected; INBOX
holds a nested multipart message, a plain one, and the message of issue 18
(a boundary of one 8-bit byte). The input is what the client sends next,
cut into chunks as a network might deliver it; then time runs on and the
connection drops. Seeds are the commands a mail client syncs a folder with.

Documented errors: none. imapd answers BAD or NO to anything it does not
accept; an exception out of the protocol, a failure it logs (through the
global log or the factory's logger), or a ``NO [SERVERBUG]`` answer is a
finding.
"""

from __future__ import annotations

from fuzz.common import Finding, LoggedFailures, chunks, scratch_directory
from pymta.auth.schemes import DEFAULT_SCHEME, make_hash
from tests.test_imap_harness import World

EXPECTED: tuple[type[BaseException], ...] = ()

_MESSAGES = (
    b'From: Alice <alice@example.org>\nTo: bob@example.org, "Carol C" <carol@example.org>\n'
    b"Subject: nested\nDate: Tue, 14 Nov 2023 10:00:00 +0000\nMIME-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="outer"\n\npreamble\n--outer\n'
    b"Content-Type: text/plain; charset=utf-8\n\nplain body\n--outer\n"
    b"Content-Type: message/rfc822\n\nFrom: x@example.org\nSubject: inner\n\ninner body\n"
    b"--outer\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
    b"AAECAw==\n--outer--\n",
    b"From: A <a@example.org>\nTo: b@example.org\nSubject: =?utf-8?q?caf=C3=A9?=\n"
    b"Date: Mon, 1 Jan 2024 10:00:00 +0000\nMessage-ID: <m1@example.org>\n\nbody text\n",
    b"From: x@example.org\nSubject: hostile\nContent-Type: multipart/x; boundary=\xff\n\n"
    b"--\xff\nContent-Type: text/plain\n\nhidden\n--\xff--\n",
)


def seeds() -> list[bytes]:
    """What clients send after SELECT (tests/test_imap_*.py; first byte: chunk size)."""
    sessions = [
        b"f1 FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)\r\n"
        b"f2 UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE)] BODY.PEEK[1.MIME])\r\n"
        b"f3 FETCH 1 (BODY[2] BINARY.PEEK[3] BINARY.SIZE[3] BODY.PEEK[2.HEADER]<0.20>)\r\n",
        b'q1 SEARCH CHARSET UTF-8 OR FROM "alice" SUBJECT {5+}\r\ncaf\xc3\xa9\r\n'
        b"q2 UID SEARCH RETURN (MIN MAX COUNT) SENTSINCE 1-Jan-2024 BODY hidden\r\n"
        b"q3 SEARCH HEADER X-Tag red NOT DELETED LARGER 10 TEXT inner\r\n",
        b"s1 STORE 1:2 +FLAGS (\\Seen $Junk)\r\ns2 UID STORE 3 FLAGS.SILENT (\\Deleted)\r\n"
        b"c1 COPY 1 Trash\r\nm1 UID MOVE 2 Archive\r\ne1 EXPUNGE\r\nn1 NOOP\r\n",
        b'l1 LIST "" "*"\r\nl2 STATUS INBOX (MESSAGES UIDNEXT UNSEEN SIZE)\r\n'
        b"a1 APPEND INBOX (\\Seen) {21}\r\nSubject: x\r\n\r\nhello\r\n\r\n"
        b"i1 IDLE\r\nDONE\r\nu1 UNSELECT\r\nz1 LOGOUT\r\n",
        b"x1 ENABLE QRESYNC IMAP4rev2\r\nx2 SELECT INBOX (QRESYNC (1 1))\r\n"
        b"x3 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\nx4 ESEARCH\r\n",
    ]
    return [bytes([0]) + s for s in sessions]


def one_input(data: bytes) -> None:
    with LoggedFailures():
        world = World(scratch_directory("imap"))
        # An unknown user's password is checked against a dummy argon2 hash
        # (the same cost as a known user's: invariant 8), in a worker thread
        # in the server; the harness runs it inline, where a second of
        # hashing per input would be all the fuzzer did. A clear-text dummy
        # keeps the protocol's path and drops the cost.
        world.checker._dummies[DEFAULT_SCHEME] = make_hash("dummy", "PLAIN")
        inbox = world.mailbox().folder("INBOX")
        for message in _MESSAGES:
            inbox.append(message, internal_date=1_700_000_000.0)
        session = world.connect()
        session.login()
        session.select()
        out = []
        for chunk in chunks(data):
            if session.transport.disconnecting:
                break
            session.proto.dataReceived(chunk)
            out.append(session.read())
            world.clock.advance(1)
        for _ in range(4):
            world.clock.advance(900)
        out.append(session.read())
        session.drop()
    for event in world.events:
        if event.get("log_failure") is not None:
            raise Finding(f"logged failure: {event['log_failure'].getTraceback()}")
    answer = b"".join(out)
    if b"[SERVERBUG]" in answer:
        raise Finding(f"SERVERBUG answer: {answer[:2000]!r}")
