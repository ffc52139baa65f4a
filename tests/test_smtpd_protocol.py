"""smtpd protocol: transcripts over StringTransport with a task.Clock."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from pymta.cleanup.interface import CleanupRejected
from pymta.cleanup.writer import BufferedMessageWriter
from pymta.smtpd.testing import FakeCleanup, LogCapture, SMTPHarness

EHLO = "EHLO client.example\n"
TXN = "MAIL FROM:<s@sender.example>\nRCPT TO:<user@example.com>\nDATA\n"


@pytest.fixture
def maillog_lines() -> Iterator[list[str]]:
    with LogCapture() as capture:
        yield capture.maillog


def test_banner_and_ehlo_advertise_extensions() -> None:
    """The greeting is 220 smtpd_banner; EHLO lists PIPELINING, SIZE, 8BITMIME,
    ENHANCEDSTATUSCODES, DSN, SMTPUTF8 and VRFY, but not STARTTLS without TLS."""
    h = SMTPHarness()
    assert h.banner == ["220 mx.example.com ESMTP Postfix"]
    h.converse(
        """
        C: EHLO client.example
        S: 250-mx.example.com
        S: 250-PIPELINING
        S: 250-SIZE 10240000
        S: 250-VRFY
        S: 250-ENHANCEDSTATUSCODES
        S: 250-8BITMIME
        S: 250-DSN
        S: 250 SMTPUTF8
        """
    )


def test_full_transaction_hands_envelope_and_content_to_cleanup() -> None:
    """A transaction gives cleanup the envelope (sender, recipients, client
    attributes) and LF content; 250 carries the queue id."""
    h = SMTPHarness(config_text="mynetworks = 203.0.113.0/24\n")
    h.converse(
        """
        C: EHLO client.example
        S: 250-mx.example.com
        S: 250-PIPELINING
        S: 250-SIZE 10240000
        S: 250-VRFY
        S: 250-ENHANCEDSTATUSCODES
        S: 250-8BITMIME
        S: 250-DSN
        S: 250 SMTPUTF8
        C: MAIL FROM:<s@sender.example> BODY=8BITMIME SIZE=100
        S: 250 2.1.0 Ok
        C: RCPT TO:<user@example.com>
        S: 250 2.1.5 Ok
        C: RCPT TO:<elsewhere@remote.example>
        S: 250 2.1.5 Ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: hi
        C:
        C: ..leading dot
        C: body
        C: .
        S: 250 2.0.0 Ok: queued as QID1
        C: QUIT
        S: 221 2.0.0 Bye
        """
    )
    assert h.closed
    [(envelope, content)] = h.cleanup.received
    assert envelope.sender == "s@sender.example"
    assert [r.address for r in envelope.recipients] == [
        "user@example.com",
        "elsewhere@remote.example",
    ]
    assert [r.original for r in envelope.recipients] == [
        "user@example.com",
        "elsewhere@remote.example",
    ]
    assert content == b"Subject: hi\n\n.leading dot\nbody\n"
    assert envelope.attributes == {
        "client_name": "unknown",
        "client_address": "203.0.113.5",
        "client_port": "4242",
        "helo_name": "client.example",
        "protocol": "ESMTP",
        "body": "8BITMIME",
    }
    assert envelope.arrival_time == h.clock.seconds()


def test_helo_gives_smtp_protocol_and_null_sender() -> None:
    """HELO means protocol SMTP; the null sender <> is accepted at MAIL."""
    h = SMTPHarness()
    assert h.send("HELO old.example\n") == ["250 mx.example.com"]
    assert h.send("MAIL FROM:<>\nRCPT TO:<user@example.com>\nDATA\n") == [
        "250 2.1.0 Ok",
        "250 2.1.5 Ok",
        "354 End data with <CR><LF>.<CR><LF>",
    ]
    assert h.send("x\n.\n") == ["250 2.0.0 Ok: queued as QID1"]
    envelope, _ = h.cleanup.received[0]
    assert envelope.sender == ""
    assert envelope.attributes["protocol"] == "SMTP"


def test_empty_message() -> None:
    """A "." right after DATA ends an empty message."""
    h = SMTPHarness()
    h.send(EHLO)
    h.send(TXN)
    assert h.send(".\n") == ["250 2.0.0 Ok: queued as QID1"]
    assert h.cleanup.received[0][1] == b""


def test_pipelined_transaction_replies_in_order_when_cleanup_is_slow() -> None:
    """The whole session in one write: the replies come in order, nothing after
    the end of data is answered before cleanup's Deferred fires, and the
    rest goes out in one write."""
    cleanup = FakeCleanup(hold=True)
    h = SMTPHarness(cleanup=cleanup)
    data = (
        "EHLO c.example\nMAIL FROM:<a@b.example>\nRCPT TO:<user@example.com>\nDATA\n"
        "hello\n.\nMAIL FROM:<x@b.example>\nRCPT TO:<nobody@example.com>\nQUIT\n"
    )
    replies = h.send(data)
    assert len(replies) == 11
    assert replies[-3:] == ["250 2.1.0 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>"]
    assert not h.closed
    cleanup.pending[0].callback("ABCDEF")
    assert h.take() == [
        "250 2.0.0 Ok: queued as ABCDEF",
        "250 2.1.0 Ok",
        "550 5.1.1 <nobody@example.com>: Recipient address rejected: "
        "User unknown in local recipient table",
        "221 2.0.0 Bye",
    ]
    assert h.closed


def test_input_while_waiting_for_cleanup_is_not_parsed() -> None:
    """Commands arriving while cleanup works are answered only after its reply."""
    cleanup = FakeCleanup(hold=True)
    h = SMTPHarness(cleanup=cleanup)
    h.send(EHLO + TXN)
    assert h.send("body\n.\n") == []
    assert h.send("NOOP\n") == []
    cleanup.pending[0].callback("Q1")
    assert h.take() == ["250 2.0.0 Ok: queued as Q1", "250 2.0.0 Ok"]


def test_cleanup_rejection_and_failure() -> None:
    """CleanupRejected's code is relayed; any other failure is 451 4.3.0."""
    h = SMTPHarness(cleanup=FakeCleanup(reject=CleanupRejected(554, "5.4.6", "too many hops")))
    h.send(EHLO + TXN)
    assert h.send("x\n.\n") == ["554 5.4.6 too many hops"]
    h2 = SMTPHarness(cleanup=FakeCleanup(error=OSError("disk full")))
    h2.send(EHLO + TXN)
    assert h2.send("x\n.\n") == ["451 4.3.0 Error: queue file write error"]


def test_data_split_across_writes_including_the_terminator() -> None:
    """Content arrives in pieces, even one byte at a time across CRLF.CRLF."""
    h = SMTPHarness()
    h.send(EHLO + TXN)
    body = b"line one\r\n..two\r\nthree\r\n.\r\nNOOP\r\n"
    replies: list[str] = []
    for i in range(len(body)):
        replies += h.send(body[i : i + 1])
    assert replies == ["250 2.0.0 Ok: queued as QID1", "250 2.0.0 Ok"]
    assert h.cleanup.received[0][1] == b"line one\n.two\nthree\n"


def test_content_without_its_end_is_acknowledged_at_once() -> None:
    """A read of message content that does not end it, with nothing to
    answer, takes the socket out of delayed-ACK mode (TCP_QUICKACK): a
    client that writes the final "." on its own (swaks with a large body)
    is not held 40 ms by Nagle. Commands and the end of data, answered
    at once, need no extra ACK."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    ours, _ = listener.accept()
    listener.close()
    try:
        h = SMTPHarness()
        h.transport.getHandle = lambda: ours  # type: ignore[method-assign]

        def quickack() -> bool:
            return bool(ours.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK))

        ours.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
        h.send(EHLO + TXN)
        assert not quickack()
        assert h.send(b"a long body\r\n" * 100) == []
        assert quickack()
        ours.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
        assert h.send(b".\r\n") == ["250 2.0.0 Ok: queued as QID1"]
        assert not quickack()
    finally:
        ours.close()
        client.close()


@pytest.mark.parametrize(
    "fake_end",
    [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r", b"\r.\r\n"],
)
def test_smuggling_sequences_never_end_data(fake_end: bytes) -> None:
    """Only CR LF . CR LF ends data: a smuggled second message stays body."""
    h = SMTPHarness()
    h.send(EHLO + TXN)
    smuggled = (
        b"Subject: first" + fake_end + b"MAIL FROM:<evil@x.example>\r\n"
        b"RCPT TO:<user@example.com>\r\nDATA\r\nSubject: smuggled\r\n"
    )
    assert h.send(smuggled) == []
    assert h.send(b"\r\n.\r\n") == ["250 2.0.0 Ok: queued as QID1"]
    assert len(h.cleanup.received) == 1
    content = h.cleanup.received[0][1]
    assert b"MAIL FROM:<evil@x.example>" in content
    assert b"Subject: smuggled" in content


def test_bare_lf_normalized_by_default() -> None:
    """smtpd_forbid_bare_newline=normalize: bare LF ends lines in commands and
    content (and dot-unstuffing applies after it); bare CR is data."""
    h = SMTPHarness()
    assert h.send(b"EHLO c.example\n")[-1] == "250 SMTPUTF8"
    h.send(b"MAIL FROM:<a@b.example>\nRCPT TO:<user@example.com>\nDATA\n")
    assert h.send(b"a\nb\r\n..c\n..d\rx\r\n.\r\n") == ["250 2.0.0 Ok: queued as QID1"]
    assert h.cleanup.received[0][1] == b"a\nb\n.c\n.d\rx\n"


def test_bare_lf_rejected_when_configured() -> None:
    """smtpd_forbid_bare_newline=reject: 550 5.5.2 for a command or content
    with a bare LF, and the message is not queued."""
    h = SMTPHarness(config_text="smtpd_forbid_bare_newline = reject\n")
    assert h.send(b"EHLO c.example\n") == ["550 5.5.2 Error: bare <LF> received"]
    h.send(EHLO)
    h.send(TXN)
    assert h.send(b"a\nb\r\n.\r\n") == ["550 5.5.2 Error: bare <LF> received"]
    assert h.cleanup.received == []
    # The session continues with a new transaction.
    assert h.send("MAIL FROM:<a@b.example>\n") == ["250 2.1.0 Ok"]


def test_bare_lf_reject_exempts_exclusions() -> None:
    """Clients in smtpd_forbid_bare_newline_exclusions ($mynetworks) are normalized."""
    h = SMTPHarness(config_text="smtpd_forbid_bare_newline = reject\n", peer="127.0.0.1")
    assert h.send(b"EHLO c.example\n")[-1] == "250 SMTPUTF8"


def test_declared_size_too_big() -> None:
    """SIZE= over message_size_limit is refused at MAIL with 552 5.3.4."""
    h = SMTPHarness(config_text="message_size_limit = 1000\n")
    h.send(EHLO)
    assert h.send("MAIL FROM:<a@b.example> SIZE=1001\n") == [
        "552 5.3.4 Message size exceeds fixed limit"
    ]
    assert h.send("MAIL FROM:<a@b.example> SIZE=1000\n") == ["250 2.1.0 Ok"]


def test_real_size_too_big_is_refused_after_reading_to_end() -> None:
    """Content over message_size_limit gets 552 5.3.4 at the end of data, the
    session stays in sync, and nothing is kept or queued: the message is
    dropped (its writer aborted) as soon as it passes the limit, and what
    follows is never written."""
    h = SMTPHarness(config_text="message_size_limit = 1000\n")
    h.send(EHLO + TXN)
    for _ in range(14):
        assert h.send(b"x" * 78 + b"\r\n") == []
    writer = h.cleanup.writers[-1]
    assert writer.aborted and writer.size <= 1000
    for _ in range(36):
        assert h.send(b"x" * 78 + b"\r\n") == []
    assert writer.size <= 1000
    assert h.send(b".\r\nNOOP\r\n") == ["552 5.3.4 Error: message file too big", "250 2.0.0 Ok"]
    assert h.cleanup.received == []


def test_message_at_the_size_limit_is_accepted() -> None:
    """A message of exactly message_size_limit bytes (LF form) is accepted."""
    h = SMTPHarness(config_text="message_size_limit = 100\n")
    h.send(EHLO + TXN)
    assert h.send(b"y" * 99 + b"\r\n.\r\n") == ["250 2.0.0 Ok: queued as QID1"]
    assert len(h.cleanup.received[0][1]) == 100


def test_line_too_long_is_answered_at_its_end_without_buffering() -> None:
    """A command line over line_length_limit gets 500 5.5.2 once its end
    arrives; the bytes are not buffered meanwhile."""
    h = SMTPHarness(config_text="line_length_limit = 600\n")
    for _ in range(20):
        assert h.send(b"A" * 1000) == []
        assert len(h.protocol._buf) <= 1000
    assert h.send(b"AAAA\r\nNOOP\r\n") == ["500 5.5.2 Error: line too long", "250 2.0.0 Ok"]


def test_unknown_command_and_hard_error_limit() -> None:
    """Unknown commands get 502 5.5.2; at smtpd_hard_error_limit the server
    says 421 4.7.0 and disconnects."""
    h = SMTPHarness(config_text="smtpd_hard_error_limit = 3\n")
    assert h.send("FOO\nBAR\n") == [
        "502 5.5.2 Error: command not recognized",
        "502 5.5.2 Error: command not recognized",
    ]
    assert not h.closed
    assert h.send("BAZ\nNOOP\n") == [
        "502 5.5.2 Error: command not recognized",
        "421 4.7.0 mx.example.com Error: too many errors",
    ]
    assert h.closed


def test_junk_commands_count_as_errors_past_the_limit() -> None:
    """NOOP/RSET/VRFY beyond smtpd_junk_command_limit count toward the error limit."""
    h = SMTPHarness(config_text="smtpd_junk_command_limit = 2\nsmtpd_hard_error_limit = 2\n")
    assert h.codes("NOOP\nNOOP\nNOOP\n") == ["250", "250", "250"]
    assert h.codes("NOOP\nFOO\n") == ["250", "502", "421"]


def test_recipient_limit() -> None:
    """Past smtpd_recipient_limit, RCPT gets 452 4.5.3."""
    h = SMTPHarness(config_text="smtpd_recipient_limit = 2\n")
    h.send(EHLO + "MAIL FROM:<a@b.example>\n")
    assert h.send("RCPT TO:<user@example.com>\n" * 3) == [
        "250 2.1.5 Ok",
        "250 2.1.5 Ok",
        "452 4.5.3 Error: too many recipients",
    ]


def test_timeout_uses_the_injected_clock() -> None:
    """After smtpd_timeout of silence: 421 4.4.2 ... timeout exceeded, disconnect;
    activity restarts the timer."""
    h = SMTPHarness(config_text="smtpd_timeout = 60s\n")
    h.clock.advance(59)
    h.send("NOOP\n")
    h.clock.advance(59)
    assert not h.closed
    h.clock.advance(1)
    assert h.take() == ["421 4.4.2 mx.example.com Error: timeout exceeded"]
    assert h.closed


def test_timeout_waits_for_cleanup() -> None:
    """Waiting for cleanup is not client idleness: no timeout meanwhile."""
    cleanup = FakeCleanup(hold=True)
    h = SMTPHarness(config_text="smtpd_timeout = 60s\n", cleanup=cleanup)
    h.send(EHLO + TXN + "x\n.\n")
    h.clock.advance(120)
    assert not h.closed
    cleanup.pending[0].callback("Q")
    assert h.take() == ["250 2.0.0 Ok: queued as Q"]


def test_sequence_errors() -> None:
    """State checks: RCPT before MAIL, DATA before RCPT, nested MAIL, and DATA
    without valid recipients."""
    h = SMTPHarness()
    h.converse(
        """
        C: RCPT TO:<user@example.com>
        S: 503 5.5.1 Error: need MAIL command
        C: DATA
        S: 503 5.5.1 Error: need RCPT command
        C: MAIL FROM:<a@b.example>
        S: 250 2.1.0 Ok
        C: MAIL FROM:<a@b.example>
        S: 503 5.5.1 Error: nested MAIL command
        """
    )
    assert h.send("DATA\n") == ["554 5.5.1 Error: no valid recipients"]
    assert h.send("RSET\n") == ["250 2.0.0 Ok"]
    assert h.send("RCPT TO:<user@example.com>\n") == ["503 5.5.1 Error: need MAIL command"]


def test_refused_data_with_pipelined_content_disconnects() -> None:
    """Content pipelined behind DATA is never run as commands: DATA must end
    its group, so the session ends with 554 5.5.0 before DATA runs."""
    h = SMTPHarness(forbid_pipelining=True)
    h.send(EHLO)
    replies = h.send(
        "MAIL FROM:<a@b.example>\nRCPT TO:<x@remote.example>\nDATA\n"
        "MAIL FROM:<evil@x.example>\nRCPT TO:<user@example.com>\n"
    )
    assert replies[-1] == "554 5.5.0 Error: SMTP protocol synchronization"
    assert h.closed
    assert h.protocol.session.sender == "a@b.example"


def test_syntax_errors() -> None:
    """Malformed commands get 501 with the expected syntax or the address error."""
    h = SMTPHarness("smtpd_soft_error_limit = 100\n")
    h.converse(
        """
        C: EHLO
        S: 501 5.5.4 Syntax: EHLO hostname
        C: HELO
        S: 501 5.5.4 Syntax: HELO hostname
        C: EHLO c.example
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250 SMTPUTF8
        C: MAIL TO:<a@b.example>
        S: 501 5.5.4 Syntax: MAIL FROM:<address>
        C: MAIL FROM:<a@b
        S: 501 5.1.7 Bad sender address syntax
        C: MAIL FROM:<a@b.example> FOO=BAR
        S: 555 5.5.4 Unsupported option: FOO
        C: MAIL FROM:<a@b.example> SIZE=abc
        S: 501 5.5.4 Bad message size syntax
        C: MAIL FROM:<a@b.example>
        S: 250 2.1.0 Ok
        C: RCPT TO:<>
        S: 501 5.1.3 Bad recipient address syntax
        C: RCPT TO:<user@example.com> NOTIFY=NEVR
        S: 501 5.5.4 Bad NOTIFY parameter syntax
        C: RCPT TO:<user@example.com> FOO=BAR
        S: 555 5.5.4 Unsupported option: FOO
        C: RCPT FROM:<x@y.example>
        S: 501 5.5.4 Syntax: RCPT TO:<address>
        C: DATA now
        S: 501 5.5.4 Syntax: DATA
        """
    )


def test_postfix_tolerant_mail_forms() -> None:
    """Spaces after the colon, lower-case verbs and missing brackets are accepted."""
    h = SMTPHarness()
    h.send(EHLO)
    assert h.send("mail from: <a@b.example>\n") == ["250 2.1.0 Ok"]
    assert h.send("rcpt to:user@example.com\n") == ["250 2.1.5 Ok"]


def test_smtputf8_required_for_unicode_addresses() -> None:
    """A non-ASCII address needs SMTPUTF8 on MAIL (553 5.6.7), then is accepted."""
    h = SMTPHarness(resolver=None)
    h.resolver.users.add("jöran@example.com")
    h.send(EHLO)
    assert h.send("MAIL FROM:<jöran@example.com>\n") == [
        "553 5.6.7 Must declare SMTPUTF8 to send unicode address"
    ]
    assert h.send("MAIL FROM:<a@b.example>\nRCPT TO:<jöran@example.com>\n") == [
        "250 2.1.0 Ok",
        "553 5.6.7 Must declare SMTPUTF8 to send unicode address",
    ]
    h.send("RSET\n")
    assert h.send("MAIL FROM:<jöran@example.com> SMTPUTF8\nRCPT TO:<jöran@example.com>\n") == [
        "250 2.1.0 Ok",
        "250 2.1.5 Ok",
    ]
    h.send("DATA\nx\n.\n")
    assert h.cleanup.received[0][0].attributes["smtputf8"] == "yes"


def test_non_utf8_command_is_an_error_not_a_crash() -> None:
    """Invalid UTF-8 in a command gets 500 5.5.2, and the session goes on."""
    h = SMTPHarness()
    assert h.send(b"EHLO \xff\xfe\r\nNOOP\r\n") == [
        "500 5.5.2 Error: bad UTF-8 syntax",
        "250 2.0.0 Ok",
    ]


def test_vrfy_help_noop_rset() -> None:
    """VRFY answers 252 for a known address and 550 for an unknown one; HELP is 214."""
    h = SMTPHarness()
    assert h.send("VRFY <user@example.com>\n") == ["252 2.0.0 user@example.com"]
    assert h.send("VRFY nobody@example.com\n") == [
        "550 5.1.1 <nobody@example.com>: Recipient address rejected: "
        "User unknown in local recipient table"
    ]
    assert h.send("VRFY\n") == ["501 5.5.4 Syntax: VRFY address"]
    assert h.codes("HELP\nNOOP\nRSET\n") == ["214", "250", "250"]


def test_vrfy_disabled() -> None:
    """disable_vrfy_command=yes: VRFY is 502 5.5.1 and not advertised."""
    h = SMTPHarness(config_text="disable_vrfy_command = yes\n")
    assert "250-VRFY" not in h.send(EHLO)
    assert h.send("VRFY user@example.com\n") == ["502 5.5.1 VRFY command is disabled"]


def test_helo_required() -> None:
    """smtpd_helo_required=yes: MAIL before HELO gets 503 5.5.1."""
    h = SMTPHarness(config_text="smtpd_helo_required = yes\n")
    assert h.send("MAIL FROM:<a@b.example>\n") == ["503 5.5.1 Error: send HELO/EHLO first"]


def test_starttls_discards_pipelined_commands_and_resets_session(
    maillog_lines: list[str],
) -> None:
    """STARTTLS: 220 2.0.0, commands sent with it are discarded (CVE-2011-0411)
    and logged, EHLO/MAIL state is forgotten (RFC 3207), STARTTLS is not offered
    again, and a second STARTTLS is refused."""
    from pymta.tls import ServerTLS

    tls = object.__new__(ServerTLS)
    tls.required = False
    h = SMTPHarness(tls=tls)
    assert "250-STARTTLS" in h.send(EHLO)
    replies = h.send("MAIL FROM:<a@b.example>\nRSET\nSTARTTLS\nMAIL FROM:<evil@x.example>\n")
    assert replies == ["250 2.1.0 Ok", "250 2.0.0 Ok", "220 2.0.0 Ready to start TLS"]
    assert h.transport.tls_started is tls
    assert any("improper command pipelining after STARTTLS" in line for line in maillog_lines)
    assert h.protocol.session.helo_name == ""
    assert h.protocol.session.sender is None
    ehlo = h.send(EHLO)
    assert "250-STARTTLS" not in ehlo
    assert h.send("STARTTLS\n") == ["554 5.5.1 Error: TLS already active"]
    assert h.protocol.session.protocol == "ESMTPS"


def test_starttls_not_offered_without_tls() -> None:
    """Without a TLS context STARTTLS is 502 5.5.1."""
    h = SMTPHarness()
    assert h.send("STARTTLS\n") == ["502 5.5.1 Error: command not implemented"]


def test_encrypt_level_requires_starttls_before_mail() -> None:
    """smtpd_tls_security_level=encrypt: MAIL before STARTTLS is 530 5.7.0."""
    from pymta.tls import ServerTLS

    tls = object.__new__(ServerTLS)
    tls.required = True
    h = SMTPHarness(tls=tls)
    h.send(EHLO)
    assert h.send("MAIL FROM:<a@b.example>\n") == ["530 5.7.0 Must issue a STARTTLS command first"]


def test_maillog_lines_follow_postfix(maillog_lines: list[str]) -> None:
    """connect, client=, NOQUEUE reject and disconnect lines in Postfix's format."""
    h = SMTPHarness(forbid_pipelining=True)
    h.send(EHLO)
    h.send("MAIL FROM:<s@sender.example>\nRCPT TO:<x@remote.example>\n")
    h.send("RCPT TO:<user@example.com>\nDATA\n")
    h.send("hi\n.\nQUIT\n")
    h.protocol.connectionLost(None)
    assert maillog_lines == [
        "smtpd: connect from unknown[203.0.113.5]",
        "smtpd: NOQUEUE: reject: RCPT from unknown[203.0.113.5]: 454 4.7.1 "
        "<x@remote.example>: Relay access denied; from=<s@sender.example> "
        "to=<x@remote.example> proto=ESMTP helo=<client.example>",
        "smtpd: QID1: client=unknown[203.0.113.5]",
        "smtpd: disconnect from unknown[203.0.113.5] ehlo=1 mail=1 rcpt=1/2 data=1 "
        "quit=1 commands=5/6",
    ]


def test_lost_connection_is_logged(maillog_lines: list[str]) -> None:
    """A client that vanishes mid-session is logged with the last command."""
    h = SMTPHarness()
    h.send(EHLO + TXN)
    h.protocol.connectionLost(None)
    assert "smtpd: lost connection after DATA from unknown[203.0.113.5]" in maillog_lines


def test_unexpected_cleanup_error_is_logged_with_traceback() -> None:
    """An unexpected cleanup failure is logged as a failure event (traceback)."""
    with LogCapture() as capture:
        h = SMTPHarness(cleanup=FakeCleanup(error=RuntimeError("boom")))
        h.send(EHLO + TXN + "x\n.\n")
    assert any(
        e.get("log_failure") and e.get("log_level") == LogLevel.critical for e in capture.events
    )


def test_refused_data_pipelining_allowed_when_configured() -> None:
    """smtpd_forbid_unauth_pipelining=no keeps the session (as Postfix does)."""
    h = SMTPHarness("smtpd_forbid_unauth_pipelining = no\n")
    h.send(EHLO)
    replies = h.send("MAIL FROM:<a@b.example>\nDATA\nNOOP\n")
    assert replies == ["250 2.1.0 Ok", "554 5.5.1 Error: no valid recipients", "250 2.0.0 Ok"]
    assert not h.closed


def test_helo_name_control_characters_are_made_printable() -> None:
    """Control characters in the HELO name become "?" before they reach logs or
    cleanup's Received header."""
    h = SMTPHarness()
    h.send(b"EHLO evil\rX-Injected: yes\r\n")
    assert h.protocol.session.helo_name == "evil?X-Injected: yes"


def test_implicit_tls_transport_is_tls_from_the_start() -> None:
    """On a TLS-wrapped port (smtps), STARTTLS is not offered and protocol is ESMTPS."""
    from twisted.internet.interfaces import ISSLTransport
    from zope.interface import directlyProvides

    from pymta.smtpd.testing import TLSStringTransport

    h = SMTPHarness()
    transport = TLSStringTransport()
    directlyProvides(transport, ISSLTransport)
    protocol = h.factory.buildProtocol(transport.getPeer())
    protocol.makeConnection(transport)
    protocol.dataReceived(b"EHLO c.example\r\n")
    assert b"STARTTLS" not in transport.value()
    assert protocol.session.protocol == "ESMTPS"
    assert protocol.session.tls == "TLS"


def test_mail_reject_is_logged_with_the_sender(maillog_lines: list[str]) -> None:
    """A MAIL-stage reject logs from=<sender> after the semicolon, as Postfix does."""
    h = SMTPHarness(config_text="message_size_limit = 10\n")
    h.send(EHLO + "MAIL FROM:<big@sender.example> SIZE=11\n")
    assert maillog_lines[-1] == (
        "smtpd: NOQUEUE: reject: MAIL from unknown[203.0.113.5]: 552 5.3.4 Message size "
        "exceeds fixed limit; from=<big@sender.example> proto=ESMTP helo=<client.example>"
    )


def test_error_replies_slow_down_past_the_soft_limit() -> None:
    """Past smtpd_soft_error_limit each error reply waits smtpd_error_sleep_time
    (on the injected clock), and the replies after it wait too."""
    h = SMTPHarness("smtpd_soft_error_limit = 2\nsmtpd_error_sleep_time = 5s\n")
    assert h.send("FOO\n") == ["502 5.5.2 Error: command not recognized"]
    assert h.send("BAR\nNOOP\n") == []
    h.clock.advance(4.9)
    assert h.take() == []
    h.clock.advance(0.1)
    assert h.take() == ["502 5.5.2 Error: command not recognized", "250 2.0.0 Ok"]


def test_connection_count_limit_per_client() -> None:
    """More than smtpd_client_connection_count_limit sessions from one client
    get 421 4.7.0; mynetworks is exempt; a closed session frees its slot."""
    from pymta.smtpd.testing import TLSStringTransport

    h = SMTPHarness("smtpd_client_connection_count_limit = 1\n")
    second = TLSStringTransport()
    protocol = h.factory.buildProtocol(second.getPeer())
    protocol.makeConnection(second)
    assert second.value() == (
        b"421 4.7.0 mx.example.com Error: too many connections from 203.0.113.5\r\n"
    )
    assert second.disconnecting
    protocol.connectionLost(None)
    h.protocol.connectionLost(None)
    assert h.factory.rates.connections is not None
    assert h.factory.rates.connections.count("203.0.113.5") == 0
    local = [TLSStringTransport("127.0.0.1") for _ in range(3)]
    for transport in local:
        h.factory.buildProtocol(transport.getPeer()).makeConnection(transport)
        assert transport.value().startswith(b"220 ")


def test_http_and_tls_hello_on_plain_port_are_dropped(maillog_lines: list[str]) -> None:
    """smtpd_forbidden_commands (CONNECT, GET, POST) and non-letter junk end the
    session with 221 2.7.0, logged as a non-SMTP command warning."""
    h = SMTPHarness()
    assert h.send("GET / HTTP/1.1\n") == ["221 2.7.0 Error: I can break rules, too. Goodbye."]
    assert h.closed
    assert "smtpd: non-SMTP command from unknown[203.0.113.5]: GET / HTTP/1.1" in maillog_lines
    h2 = SMTPHarness()
    assert h2.codes(b"\x16\x03\x01\x02\x00\r\n") == ["221"]


def test_empty_command_line() -> None:
    """An empty command line is 500 5.5.2 Error: bad syntax."""
    h = SMTPHarness()
    assert h.send("\n") == ["500 5.5.2 Error: bad syntax"]


def test_strict_rfc821_envelopes() -> None:
    """strict_rfc821_envelopes=yes refuses addresses without angle brackets."""
    h = SMTPHarness("strict_rfc821_envelopes = yes\n")
    h.send(EHLO)
    assert h.send("MAIL FROM:a@b.example\n") == ["501 5.1.7 Bad sender address syntax"]
    assert h.send("MAIL FROM:<a@b.example>\n") == ["250 2.1.0 Ok"]


def test_discard_ehlo_keywords() -> None:
    """smtpd_discard_ehlo_keywords hides extensions from the EHLO reply."""
    h = SMTPHarness("smtpd_discard_ehlo_keywords = smtputf8, vrfy, dsn\n")
    assert h.send(EHLO) == [
        "250-mx.example.com",
        "250-PIPELINING",
        "250-SIZE 10240000",
        "250-ENHANCEDSTATUSCODES",
        "250 8BITMIME",
    ]


def test_end_of_data_restrictions() -> None:
    """smtpd_end_of_data_restrictions run after the content, before queueing."""
    h = SMTPHarness("smtpd_end_of_data_restrictions = reject\n")
    h.send(EHLO + TXN)
    assert h.send("x\n.\n") == ["554 5.7.1 <END-OF-MESSAGE>: End-of-data rejected: Access denied"]
    assert h.cleanup.received == []


class _PressingWriter(BufferedMessageWriter):
    """A writer whose disk is behind: every write asks the session to wait."""

    def __init__(self, cleanup: FakeCleanup) -> None:
        super().__init__(cleanup.submit)
        self.waits: list[Deferred[None]] = []

    def write(self, data: bytes) -> Deferred[None] | None:
        super().write(data)
        wait: Deferred[None] = Deferred()
        self.waits.append(wait)
        return wait


def test_reading_pauses_while_the_writer_waits_for_the_disk() -> None:
    """When cleanup's writer has too much waiting for the disk, the session
    stops reading its socket, and reads again once the disk caught up; the
    message is queued whole."""
    h = SMTPHarness()
    writers: list[_PressingWriter] = []

    def open_message(milters: object = None) -> _PressingWriter:
        writers.append(_PressingWriter(h.cleanup))
        return writers[-1]

    h.cleanup.open_message = open_message  # type: ignore[method-assign]
    h.send(EHLO + TXN)
    assert h.send(b"x" * 1000 + b"\r\n") == []
    assert h.transport.producerState == "paused"
    for wait in writers[0].waits:
        wait.callback(None)
    assert h.transport.producerState == "producing"
    assert h.send(b".\r\n") == ["250 2.0.0 Ok: queued as QID1"]
    assert h.cleanup.received[0][1] == b"x" * 1000 + b"\n"


def test_client_gone_in_the_middle_of_data_leaves_nothing() -> None:
    """A client that disconnects during DATA: cleanup's writer is aborted
    (its spool deleted) and nothing is submitted."""
    h = SMTPHarness()
    h.send(EHLO + TXN)
    assert h.send(b"Subject: half\r\n\r\nsome of the body\r\n") == []
    h.protocol.connectionLost(Failure(ConnectionDone()))
    assert h.cleanup.writers[-1].aborted
    assert h.cleanup.received == []


def test_each_reply_of_a_one_message_session_is_one_write_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that waits for each reply (smtp-source, one message per
    connection) gets every reply in one write, in the call that handled its
    command, the greeting in the accept's own: EHLO's lines all together,
    and no reply waits for a timer (the clock never moves)."""
    from pymta.smtpd.testing import TLSStringTransport

    writes: list[bytes] = []
    real_write = TLSStringTransport.write

    def recording_write(self: TLSStringTransport, data: bytes) -> None:
        writes.append(data)
        real_write(self, data)

    monkeypatch.setattr(TLSStringTransport, "write", recording_write)
    h = SMTPHarness(forbid_pipelining=True)
    assert writes == [b"220 mx.example.com ESMTP Postfix\r\n"]
    commands = [EHLO, *TXN.splitlines(keepends=True), "Subject: x\n\nbody\n.\n", "QUIT\n"]
    for command in commands:
        del writes[:]
        replies = h.send(command)
        assert len(writes) == 1, (command, writes)
        assert replies and replies[-1][3:4] == " "  # the whole reply
        assert len(replies) > 1 or command != EHLO
    assert h.clock.seconds() == 0
    assert h.closed
