"""smtpd's milter stages on a StringTransport: each SMTP stage asks the
milters after smtpd's own restrictions, and their answers are the replies."""

from __future__ import annotations

from twisted.internet import task

from pymta.milter import wire
from pymta.milter.config import MilterClients
from pymta.milter.session import MilterSpec
from pymta.smtpd.testing import SMTPHarness
from tests.test_milter_session import MACROS, FakeMilter


def harness(milter: FakeMilter, config: str = "", **kwargs: object) -> SMTPHarness:
    spec = MilterSpec("inet:127.0.0.1:1", 5.0, 10.0, 60.0, "tempfail", 6, MACROS)
    clients = MilterClients([spec], lambda name: milter.connector, {"j": "mx.example.test"})
    return SMTPHarness(config, clock=milter.clock, milters=clients, **kwargs)  # type: ignore[arg-type]


def answer_connect(milter: FakeMilter, reply: bytes = wire.SMFIR_CONTINUE) -> None:
    assert [c for c, _ in milter.sent()] == [wire.SMFIC_OPTNEG]
    milter.optneg()
    packets = milter.sent()
    assert packets[-1][0] == wire.SMFIC_CONNECT
    assert packets[-1][1].startswith(b"[203.0.113.5]\x004")
    milter.reply(reply)


def test_the_greeting_waits_for_the_milters_connect_answer() -> None:
    """The banner goes out only once the milter answered the connect event."""
    milter = FakeMilter(task.Clock())
    h = harness(milter)
    assert h.banner == []
    answer_connect(milter)
    assert h.take()[0].startswith("220 ")


def test_refusal_at_connect_refuses_each_command() -> None:
    """A milter's tempfail at connect: every later command gets 451 4.7.1."""
    milter = FakeMilter(task.Clock())
    h = harness(milter)
    answer_connect(milter, wire.SMFIR_TEMPFAIL)
    h.take()
    assert h.send("EHLO client.test\n") == ["451 4.7.1 Service unavailable - try again later"]


def test_each_stage_asks_the_milter_after_the_restrictions() -> None:
    """HELO, MAIL, RCPT and DATA go to the milter in order; its REJECT of
    one recipient refuses that recipient only; a recipient smtpd refuses
    itself (relay denied) never reaches the milter; the message goes to
    cleanup with the session's milters."""
    milter = FakeMilter(task.Clock())
    h = harness(milter)
    answer_connect(milter)
    h.take()
    h.protocol.dataReceived(b"EHLO client.test\r\n")
    assert milter.sent()[-1] == (wire.SMFIC_HELO, b"client.test\0")
    milter.reply(wire.SMFIR_CONTINUE)
    assert h.take()[0].startswith("250-")
    h.protocol.dataReceived(b"MAIL FROM:<a@example.org> SIZE=100\r\n")
    assert milter.sent()[-1] == (wire.SMFIC_MAIL, b"<a@example.org>\0SIZE=100\0")
    milter.reply(wire.SMFIR_CONTINUE)
    assert h.take() == ["250 2.1.0 Ok"]
    h.protocol.dataReceived(b"RCPT TO:<x@elsewhere.test>\r\n")
    assert "Relay access denied" in h.take()[0]
    assert milter.sent() == []
    h.protocol.dataReceived(b"RCPT TO:<user@example.com>\r\n")
    assert milter.sent()[-1] == (wire.SMFIC_RCPT, b"<user@example.com>\0")
    milter.reply(wire.SMFIR_REJECT)
    assert h.take() == ["550 5.7.1 Command rejected"]
    h.protocol.dataReceived(b"RCPT TO:<alice@virtual.example>\r\n")
    milter.sent()
    milter.reply(wire.SMFIR_CONTINUE)
    assert h.take() == ["250 2.1.5 Ok"]
    h.protocol.dataReceived(b"DATA\r\n")
    assert milter.sent()[-1] == (wire.SMFIC_DATA, b"")
    milter.reply(wire.SMFIR_CONTINUE)
    assert h.take()[0].startswith("354 ")
    assert h.send("Subject: x\n\nhi\n.\n")[0].startswith("250 2.0.0 Ok: queued as")
    assert h.cleanup.milters[0] is not None
    envelope, _ = h.cleanup.received[0]
    assert [r.address for r in envelope.recipients] == ["alice@virtual.example"]


def test_milter_answers_keep_pipelined_replies_in_order() -> None:
    """Pipelined commands wait for the milter: replies stay in command order."""
    milter = FakeMilter(task.Clock())
    h = harness(milter)
    answer_connect(milter)
    h.take()
    h.protocol.dataReceived(b"EHLO c\r\n")
    milter.sent()
    milter.reply(wire.SMFIR_CONTINUE)
    h.take()
    h.protocol.dataReceived(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<alice@virtual.example>\r\n")
    assert [c for c, _ in milter.sent()] == [wire.SMFIC_MAIL]
    assert h.take() == []
    milter.reply(wire.SMFIR_CONTINUE)
    assert [c for c, _ in milter.sent()][-1] == wire.SMFIC_RCPT
    milter.reply(wire.SMFIR_CONTINUE)
    assert h.take() == ["250 2.1.0 Ok", "250 2.1.5 Ok"]


def test_a_client_leaving_closes_the_milter_connection() -> None:
    """QUIT ends the milter's session with SMFIC_QUIT."""
    milter = FakeMilter(task.Clock())
    h = harness(milter)
    answer_connect(milter)
    h.take()
    h.send("QUIT\n")
    h.protocol.connectionLost(None)
    assert milter.sent()[-1] == (wire.SMFIC_QUIT, b"")
    assert milter.transport.disconnecting


def test_mail_and_rcpt_macros_say_where_the_address_goes() -> None:
    """{mail_mailer}/{mail_host} and {rcpt_mailer}/{rcpt_host} carry the
    transport and next hop the address resolves to, as Postfix's do
    (rspamd and others read them); {rcpt_addr} the recipient."""
    milter = FakeMilter(task.Clock())
    macros = {
        wire.SMFIM_ENVFROM: ["{mail_addr}", "{mail_mailer}", "{mail_host}"],
        wire.SMFIM_ENVRCPT: ["{rcpt_addr}", "{rcpt_mailer}", "{rcpt_host}"],
    }
    spec = MilterSpec("inet:127.0.0.1:1", 5.0, 10.0, 60.0, "tempfail", 6, macros)
    clients = MilterClients([spec], lambda name: milter.connector, {"j": "mx.example.test"})
    h = SMTPHarness("", clock=milter.clock, milters=clients)
    answer_connect(milter)
    h.take()
    h.protocol.dataReceived(b"EHLO client.test\r\n")
    milter.sent()
    milter.reply(wire.SMFIR_CONTINUE)
    h.take()
    h.protocol.dataReceived(b"MAIL FROM:<a@example.org>\r\n")
    sent = milter.sent()
    assert (
        wire.SMFIC_MACRO,
        b"M{mail_addr}\0a@example.org\0{mail_mailer}\0smtp\0{mail_host}\0example.org\0",
    ) in sent
    milter.reply(wire.SMFIR_CONTINUE)
    h.take()
    h.protocol.dataReceived(b"RCPT TO:<alice@virtual.example>\r\n")
    sent = milter.sent()
    assert (
        wire.SMFIC_MACRO,
        b"R{rcpt_addr}\0alice@virtual.example\0{rcpt_mailer}\0virtual\0"
        b"{rcpt_host}\0virtual.example\0",
    ) in sent
