"""Tests of smtpd's reply path (pymta.smtpd.chat): replies in one write,
error counting, the tarpit, the hang-up after 421 and the reject log line."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.testing import StringTransport

from pymta.smtpd.chat import Chat
from pymta.smtpd.restrictions import Reject
from pymta.smtpd.session import Session
from pymta.smtpd.testing import LogCapture


def make_chat(soft: int = 3, hard: int = 5, sleep: float = 1.0) -> tuple[Chat, StringTransport]:
    settings: Any = SimpleNamespace(
        soft_error_limit=soft,
        hard_error_limit=hard,
        error_sleep_time=sleep,
        service_name="smtpd",
        myhostname="mx.example.com",
    )
    chat = Chat(settings, Session("192.0.2.7", client_name="client.example"))
    transport = StringTransport()
    chat.transport = transport
    chat.connected = True
    return chat, transport


def test_replies_go_out_together_in_order() -> None:
    """Queued replies are written in one write, in the order they were made."""
    chat, transport = make_chat()
    chat.reply(b"250 2.1.0 Ok\r\n")
    chat.error(b"550 5.1.1 no\r\n")
    assert transport.value() == b""
    chat.flush()
    assert transport.value() == b"250 2.1.0 Ok\r\n550 5.1.1 no\r\n"
    assert chat.failed


def test_soft_limit_starts_the_tarpit_and_holds_replies() -> None:
    """At smtpd_soft_error_limit errors the session is asked to pause, and
    while the tarpit runs replies wait; they go out when it ends."""
    chat, transport = make_chat(soft=2)
    chat.error(b"500 a\r\n")
    assert not chat.tarpit_due
    chat.error(b"500 b\r\n")
    assert chat.tarpit_due
    chat.start_tarpit()
    chat.flush()
    assert transport.value() == b""
    assert chat.end_tarpit()
    chat.flush()
    assert transport.value() == b"500 a\r\n500 b\r\n"


def test_hard_limit_hangs_up_with_421_and_logs() -> None:
    """At smtpd_hard_error_limit: Postfix's log line, 421 4.7.0 and the
    connection closed; a message accepted before forgives the errors."""
    chat, transport = make_chat(hard=3)
    chat.last_command = "RCPT"
    chat.error(b"550 x\r\n")
    chat.error(b"550 x\r\n")
    chat.forgive()
    chat.error(b"550 x\r\n")
    assert not chat.closing
    with LogCapture() as log:
        chat.error(b"550 x\r\n")
        chat.error(b"550 x\r\n")
    assert chat.closing and transport.disconnecting
    assert transport.value().endswith(b"421 4.7.0 mx.example.com Error: too many errors\r\n")
    assert log.maillog == ["smtpd: too many errors after RCPT from client.example[192.0.2.7]"]


def test_reject_logs_postfix_noqueue_line() -> None:
    """A restriction's refusal is logged as Postfix's NOQUEUE reject line and answered."""
    chat, transport = make_chat()
    chat.session.sender = "a@b.example"
    chat.session.helo_name = "helo.example"
    with LogCapture() as log:
        chat.reject(Reject(554, "5.7.1", "Relay access denied"), "RCPT", "x@y.example")
    chat.flush()
    assert transport.value() == b"554 5.7.1 Relay access denied\r\n"
    assert log.maillog == [
        "smtpd: NOQUEUE: reject: RCPT from client.example[192.0.2.7]:"
        " 554 5.7.1 Relay access denied; from=<a@b.example> to=<x@y.example>"
        " proto=SMTP helo=<helo.example>"
    ]


def test_dropped_when_the_client_is_gone() -> None:
    """Replies queued for a client that left are thrown away, never written."""
    chat, transport = make_chat()
    chat.reply(b"250 ok\r\n")
    chat.connected = False
    chat.flush()
    chat.drop()
    assert transport.value() == b"" and chat.out == []
