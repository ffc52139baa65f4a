"""smtpd's pipelining rules and junk command limit, as Postfix's smtpd_proto()
enforces them: transcripts over StringTransport with a task.Clock."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import pytest

from pymta.smtpd.protocol import escape, pending_input
from pymta.smtpd.testing import LogCapture, SMTPHarness

SYNC = "554 5.5.0 Error: SMTP protocol synchronization"
CLIENT = "unknown[203.0.113.5]"
EHLO_REPLY = [
    "250-mx.example.com",
    "250-PIPELINING",
    "250-SIZE 10240000",
    "250-VRFY",
    "250-ENHANCEDSTATUSCODES",
    "250-8BITMIME",
    "250-DSN",
    "250 SMTPUTF8",
]


class ClientLines(list[str]):
    """The maillog lines about this module's test client only (a session of
    an earlier test on a real reactor may still log its disconnect)."""

    def append(self, line: str) -> None:
        if CLIENT in line:
            super().append(line)


@pytest.fixture
def maillog_lines() -> Iterator[list[str]]:
    with LogCapture() as capture:
        capture.maillog = ClientLines()
        yield capture.maillog


def strict(config_text: str = "", pregreet: bytes = b"") -> SMTPHarness:
    """A session with Postfix's default smtpd_forbid_unauth_pipelining = yes."""
    return SMTPHarness(config_text, pregreet=pregreet, forbid_pipelining=True)


def test_talking_before_the_greeting_is_refused(maillog_lines: list[str]) -> None:
    """A client whose input is already waiting when the session starts gets
    554 5.5.0 instead of the banner and is dropped; the log names CONNECT and
    shows the input escaped, as Postfix's smtpd does."""
    h = strict(pregreet=b"EHLO spam.example\r\nMAIL FROM:<a@b.example>\r\n")
    assert h.banner == [SYNC]
    assert h.closed
    h.protocol.connectionLost(None)
    # Only this session's lines: an earlier test's late disconnect may log too.
    assert [line for line in maillog_lines if CLIENT in line] == [
        f"smtpd: connect from {CLIENT}",
        f"smtpd: improper command pipelining after CONNECT from {CLIENT}: "
        "EHLO spam.example\\r\\nMAIL FROM:<a@b.example>\\r\\n",
        f"smtpd: disconnect from {CLIENT} commands=0",
    ]


def test_talking_first_is_only_logged_when_allowed(maillog_lines: list[str]) -> None:
    """With smtpd_forbid_unauth_pipelining = no the violation is logged and the
    session goes on with the banner."""
    h = SMTPHarness(pregreet=b"EHLO x\r\n")
    assert h.banner == ["220 mx.example.com ESMTP Postfix"]
    assert not h.closed
    assert any("improper command pipelining after CONNECT" in line for line in maillog_lines)


def test_no_pregreet_check_on_a_tls_wrapped_port() -> None:
    """On an implicit-TLS port the client speaks first (its TLS hello): that is
    not talking before the greeting."""
    from twisted.internet.interfaces import ISSLTransport
    from zope.interface import directlyProvides

    from pymta.smtpd.testing import TLSStringTransport

    h = strict()
    transport = TLSStringTransport()
    transport.socket.pending = b"\x16\x03\x01\x02\x00\x01"
    directlyProvides(transport, ISSLTransport)
    protocol = h.factory.buildProtocol(transport.getPeer())
    protocol.makeConnection(transport)
    assert transport.value().startswith(b"220 ")


def test_helo_and_a_whole_transaction_in_one_write_is_refused(
    maillog_lines: list[str],
) -> None:
    """HELO + MAIL + RCPT + DATA + body in one write: PIPELINING was never
    offered, so the input behind HELO is a violation: 554 5.5.0 before HELO
    runs, nothing reaches cleanup, and the first 100 bytes are logged."""
    h = strict()
    script = (
        "HELO spam.example\nMAIL FROM:<a@b.example>\nRCPT TO:<user@example.com>\n"
        "DATA\nSubject: spam\n\nbuy\n.\nQUIT\n"
    )
    assert h.send(script) == [SYNC]
    assert h.closed
    assert h.cleanup.received == []
    following = script.replace("\n", "\r\n").encode()[len("HELO spam.example\r\n") :]
    assert (
        f"smtpd: improper command pipelining after HELO from {CLIENT}: {escape(following[:100])}"
    ) in maillog_lines
    h.protocol.connectionLost(None)
    assert maillog_lines[-1] == f"smtpd: disconnect from {CLIENT} helo=0/1 commands=0/1"


def test_after_helo_every_command_must_wait_for_its_reply() -> None:
    """After HELO (no PIPELINING offered) even MAIL + RCPT in one write is refused."""
    h = strict()
    assert h.send("HELO old.example\n") == ["250 mx.example.com"]
    assert h.send("MAIL FROM:<a@b.example>\nRCPT TO:<user@example.com>\n") == [SYNC]
    assert h.closed


def test_ehlo_followed_by_more_input_is_refused() -> None:
    """EHLO must end its group (RFC 2920 section 3.1): EHLO + MAIL in one write
    is refused."""
    h = strict()
    assert h.send("EHLO c.example\nMAIL FROM:<a@b.example>\n") == [SYNC]
    assert h.closed


def test_data_followed_by_content_is_refused() -> None:
    """After EHLO, MAIL + RCPT + DATA may go in one write, but the content may
    not follow DATA before the 354."""
    h = strict()
    assert h.send("EHLO c.example\n") == EHLO_REPLY
    replies = h.send("MAIL FROM:<a@b.example>\nRCPT TO:<user@example.com>\nDATA\nSubject: x\n")
    assert replies == ["250 2.1.0 Ok", "250 2.1.5 Ok", SYNC]
    assert h.closed
    assert h.cleanup.received == []


@pytest.mark.parametrize("first", ["NOOP", "VRFY user@example.com"])
def test_noop_and_vrfy_end_a_group(first: str) -> None:
    """NOOP and VRFY followed by more input are violations too."""
    h = strict()
    h.send("EHLO c.example\n")
    assert h.send(f"{first}\nNOOP\n") == [SYNC]


def test_conforming_pipelining_client_is_served() -> None:
    """RFC 2920's own example: after EHLO's reply, MAIL + RCPT... + DATA in one
    write, the content after 354, then the end of data with the next
    transaction's MAIL, RCPT, RSET and QUIT behind it; every reply in order."""
    h = strict()
    h.converse(
        """
        C: EHLO c.example
        S: 250-mx.example.com
        S: 250-PIPELINING
        S: 250-SIZE 10240000
        S: 250-VRFY
        S: 250-ENHANCEDSTATUSCODES
        S: 250-8BITMIME
        S: 250-DSN
        S: 250 SMTPUTF8
        C: RSET
        C: MAIL FROM:<a@b.example>
        C: RCPT TO:<user@example.com>
        C: RCPT TO:<nobody@example.com>
        C: DATA
        S: 250 2.0.0 Ok
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 550 5.1.1 <nobody@example.com>: Recipient address rejected: *
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: hi
        C:
        C: body
        C: .
        C: MAIL FROM:<c@b.example>
        C: RCPT TO:<user@example.com>
        C: RSET
        C: QUIT
        S: 250 2.0.0 Ok: queued as QID1
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 250 2.0.0 Ok
        S: 221 2.0.0 Bye
        """
    )
    assert [c for _, c in h.cleanup.received] == [b"Subject: hi\n\nbody\n"]


def test_violation_is_only_logged_when_allowed(maillog_lines: list[str]) -> None:
    """smtpd_forbid_unauth_pipelining = no: the first violation is logged (once
    per session, as Postfix flags it) and every command runs."""
    h = SMTPHarness("smtpd_forbid_unauth_pipelining = no\n")
    assert h.codes("HELO c.example\nNOOP\nNOOP\nQUIT\n") == ["250", "250", "250", "221"]
    improper = [line for line in maillog_lines if "improper command pipelining" in line]
    assert improper == [
        f"smtpd: improper command pipelining after HELO from {CLIENT}: "
        "NOOP\\r\\nNOOP\\r\\nQUIT\\r\\n"
    ]


def test_escape_follows_postfix() -> None:
    """Logged input: printable ASCII as is, backslash doubled, C escapes, octal."""
    assert escape(b"A b\\\r\n\t\x00\x7f\xc3\xa9") == "A b\\\\\\r\\n\\t\\000\\177\\303\\251"


def test_junk_commands_one_at_a_time_end_in_421(maillog_lines: list[str]) -> None:
    """300 NOOPs sent one at a time, smtpd_junk_command_limit = 100 and the
    default error limits: from the 102nd junk command each one is an error
    (Postfix's "junk_cmds++ > limit"); past the soft limit (10) each reply
    waits smtpd_error_sleep_time; at the hard limit (20), the 121st NOOP is
    answered and followed by 421 and the end of the session."""
    h = strict()
    answered = 0
    for _ in range(300):
        replies = h.send("NOOP\n")
        h.clock.advance(1)
        replies += h.take()
        answered += replies.count("250 2.0.0 Ok")
        if h.closed:
            break
    assert answered == 121
    assert replies[-1] == "421 4.7.0 mx.example.com Error: too many errors"
    assert h.closed
    assert f"smtpd: too many errors after NOOP from {CLIENT}" in maillog_lines


def test_junk_burst_is_cut_off_and_the_rest_never_read() -> None:
    """200,000 NOOPs in one write (pipelining tolerated, no error sleep): the
    session ends with 421 after the 121st and nothing more is answered."""
    h = SMTPHarness("smtpd_forbid_unauth_pipelining = no\nsmtpd_error_sleep_time = 0\n")
    replies = h.send("NOOP\n" * 200_000)
    assert replies.count("250 2.0.0 Ok") == 121
    assert replies[-1] == "421 4.7.0 mx.example.com Error: too many errors"
    assert h.closed


def test_helo_ehlo_rset_vrfy_count_as_junk_but_help_does_not() -> None:
    """Postfix's limited commands are HELO, EHLO, RSET, NOOP, VRFY (and ETRN);
    HELP is not one."""
    config = (
        "smtpd_junk_command_limit = 0\nsmtpd_hard_error_limit = 4\nsmtpd_error_sleep_time = 0\n"
    )
    h = strict(config)
    for command in ("HELP", "HELP", "HELP", "HELO c.example", "EHLO c.example", "RSET"):
        h.send(command + "\n")
    assert not h.closed
    assert h.codes("VRFY user@example.com\n") == ["252"]
    assert not h.closed
    assert h.codes("NOOP\n") == ["250", "421"]
    assert h.closed


def test_accepted_message_resets_the_junk_count() -> None:
    """ "The junk command count is reset after mail is delivered": a message
    accepted with 250 gives the client its junk allowance back."""
    h = strict("smtpd_junk_command_limit = 5\nsmtpd_hard_error_limit = 1\n")
    h.send("EHLO c.example\n")  # junk 1
    for _ in range(5):
        assert h.codes("NOOP\n") == ["250"]
    h.send("MAIL FROM:<a@b.example>\nRCPT TO:<user@example.com>\nDATA\n")
    assert h.codes("x\n.\n") == ["250"]
    for _ in range(6):
        assert h.codes("NOOP\n") == ["250"]
    assert h.codes("NOOP\n") == ["250", "421"]


def test_pending_input_peeks_at_a_real_socket_without_consuming() -> None:
    """pending_input on a real socket: b"" while the client has sent nothing
    (no peek, no exception), the bytes waiting once it has, and those bytes
    are still there for the session to read."""
    ours, theirs = socket.socketpair()
    try:
        ours.setblocking(False)
        transport = _SocketTransport(ours)
        assert pending_input(transport) == b""
        theirs.sendall(b"EHLO early\r\n")
        deadline = time.monotonic() + 5
        while not select.select([ours], [], [], 0.1)[0]:
            assert time.monotonic() < deadline
        assert pending_input(transport) == b"EHLO early\r\n"
        assert ours.recv(100) == b"EHLO early\r\n"
    finally:
        ours.close()
        theirs.close()


class _SocketTransport:
    def __init__(self, handle: socket.socket) -> None:
        self._handle = handle

    def getHandle(self) -> socket.socket:
        return self._handle
