"""The milter client's protocol logic: negotiation, stages, replies, edits,
time limits and default actions, on StringTransport with task.Clock."""

from __future__ import annotations

import struct
from collections.abc import Callable

from twisted.internet import task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from pymta.milter import wire
from pymta.milter.chain import ContentResult, Milters
from pymta.milter.edits import apply_edits
from pymta.milter.protocol import MilterError, MilterProtocol
from pymta.milter.session import (
    ACCEPT,
    CONTINUE,
    REJECT,
    TEMPFAIL,
    Log,
    MilterSession,
    MilterSpec,
    Verdict,
    split_reply,
)

MACROS = {
    wire.SMFIM_CONNECT: ["j", "{daemon_name}", "v", "_"],
    wire.SMFIM_ENVFROM: ["i", "{auth_authen}"],
    wire.SMFIM_EOM: ["i"],
}


def NO_MACROS(name: str) -> str | None:
    return None


def macros(table: dict[str, str]) -> Callable[[str], str | None]:
    return table.get


IGNORE: Log = lambda line: None  # noqa: E731


def spec(default_action: str = "tempfail", name: str = "inet:127.0.0.1:1") -> MilterSpec:
    return MilterSpec(name, 5.0, 10.0, 60.0, default_action, 6, MACROS)


class FakeMilter:
    """The milter's side of a StringTransport: reads what the client sent."""

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.transport = StringTransport()
        self.proto = MilterProtocol(clock)
        self.reader = wire.PacketReader()
        self.connects = 0

    def connector(self, timeout: float) -> Deferred[MilterProtocol]:
        self.connects += 1
        self.proto.makeConnection(self.transport)
        return succeed(self.proto)

    def sent(self) -> list[tuple[bytes, bytes]]:
        data = self.transport.value()
        self.transport.clear()
        return self.reader.feed(data)

    def reply(self, code: bytes, data: bytes = b"") -> None:
        self.proto.dataReceived(wire.packet(code, data))

    def optneg(
        self, actions: int = wire.ALL_ACTIONS, protocol: int = 0, extra: bytes = b""
    ) -> None:
        self.proto.dataReceived(
            wire.packet(wire.SMFIC_OPTNEG, struct.pack("!III", 6, actions, protocol) + extra)
        )


def result_of(d: Deferred[Verdict]) -> Verdict:
    box: list[Verdict] = []
    d.addCallback(box.append)
    assert box, "not answered yet"
    return box[0]


def opened(
    milter: FakeMilter, default_action: str = "tempfail", protocol: int = 0
) -> tuple[MilterSession, list[str]]:
    logs: list[str] = []
    session = MilterSession(spec(default_action), milter.connector, logs.append)
    values = macros({"j": "mx.example.test", "v": "pymta", "i": "QID1"})
    d = session.connect("client.example", "192.0.2.1", 4321, values)
    negotiation = milter.sent()
    assert negotiation[0][0] == wire.SMFIC_OPTNEG
    milter.optneg(protocol=protocol)
    packets = milter.sent()
    if not protocol & (wire.SMFIP_NOCONNECT | wire.SMFIP_NR_CONN):
        assert [c for c, _ in packets] == [wire.SMFIC_MACRO, wire.SMFIC_CONNECT]
        milter.reply(wire.SMFIR_CONTINUE)
    assert result_of(d).action == CONTINUE
    return session, logs


def test_negotiation_offers_version_6_with_every_action_and_step() -> None:
    """SMFIC_OPTNEG offers protocol 6, all SMFIF actions and SMFIP steps."""
    clock = task.Clock()
    milter = FakeMilter(clock)
    session = MilterSession(spec(), milter.connector, IGNORE)
    session.connect("h", "192.0.2.1", 25, lambda name: None)
    ((command, data),) = milter.sent()
    assert command == wire.SMFIC_OPTNEG
    assert struct.unpack("!III", data) == (6, wire.ALL_ACTIONS, wire.ALL_PROTOCOL)


def test_connect_sends_macros_and_the_client_address() -> None:
    """The connect event carries the configured macros that have values,
    then hostname, family 4, port and address."""
    clock = task.Clock()
    milter = FakeMilter(clock)
    logs: list[str] = []
    session = MilterSession(spec(), milter.connector, logs.append)
    d = session.connect("client.example", "192.0.2.1", 4321, macros({"j": "mx", "v": "pymta"}))
    milter.sent()
    milter.optneg()
    (macro, connect) = milter.sent()
    assert macro == (wire.SMFIC_MACRO, b"Cj\0mx\0v\0pymta\0")
    assert connect == (
        wire.SMFIC_CONNECT,
        b"client.example\x004" + struct.pack("!H", 4321) + b"192.0.2.1\0",
    )
    milter.reply(wire.SMFIR_CONTINUE)
    assert result_of(d) == Verdict()


def test_ipv6_and_unknown_clients_are_encoded_with_their_family() -> None:
    """An IPv6 client is family '6'; no address is family 'U' without port."""
    assert wire.connect("h", "2001:db8::1", 25) == wire.packet(
        wire.SMFIC_CONNECT, b"h\x006" + struct.pack("!H", 25) + b"2001:db8::1\0"
    )
    assert wire.connect("h", "", 0) == wire.packet(wire.SMFIC_CONNECT, b"h\0U")


def test_reject_tempfail_and_replycode_at_mail() -> None:
    """SMFIR_REJECT, TEMPFAIL and REPLYCODE become Postfix's SMTP replies."""
    clock = task.Clock()
    milter = FakeMilter(clock)
    session, _ = opened(milter)
    d = session.mail("a@example.org", ["SIZE=10"], macros({"i": "Q"}))
    packets = milter.sent()
    assert packets == [
        (wire.SMFIC_MACRO, b"Mi\0Q\0"),
        (wire.SMFIC_MAIL, b"<a@example.org>\0SIZE=10\0"),
    ]
    milter.reply(wire.SMFIR_REJECT)
    assert result_of(d) == Verdict(REJECT, "550 5.7.1 Command rejected")
    d = session.rcpt("b@example.org", [], NO_MACROS)
    milter.sent()
    milter.reply(wire.SMFIR_TEMPFAIL)
    assert result_of(d) == Verdict(TEMPFAIL, "451 4.7.1 Service unavailable - try again later")
    d = session.rcpt("c@example.org", [], NO_MACROS)
    milter.sent()
    milter.reply(wire.SMFIR_REPLYCODE, b"554 5.7.0 go away\0")
    assert result_of(d) == Verdict(REJECT, "554 5.7.0 go away")


def test_skipped_and_unanswered_steps() -> None:
    """SMFIP_NOHELO skips HELO (nothing sent); SMFIP_NR_MAIL sends MAIL but
    waits for no answer."""
    clock = task.Clock()
    milter = FakeMilter(clock)
    session, _ = opened(milter, protocol=wire.SMFIP_NOHELO | wire.SMFIP_NR_MAIL)
    assert result_of(session.helo("client", NO_MACROS)) == Verdict()
    assert milter.sent() == []
    assert result_of(session.mail("a@b", [], NO_MACROS)) == Verdict()
    assert [c for c, _ in milter.sent()] == [wire.SMFIC_MAIL]


def test_content_phase_headers_body_and_edits() -> None:
    """Headers go one by one without the space after the colon, the body in
    CR LF chunks, and the modifications come back with the final reply."""
    clock = task.Clock()
    milter = FakeMilter(clock)
    session, _ = opened(milter)
    chain = Milters([session], {"i": "QID9"})
    message = b"Subject: hi\nFrom: a@example.org\n\nline 1\nline 2\n"
    d = chain.content(message)
    assert milter.sent() == [(wire.SMFIC_HEADER, b"Subject\0hi\0")]
    milter.reply(wire.SMFIR_CONTINUE)
    assert milter.sent() == [(wire.SMFIC_HEADER, b"From\0a@example.org\0")]
    milter.reply(wire.SMFIR_CONTINUE)
    assert milter.sent() == [(wire.SMFIC_EOH, b"")]
    milter.reply(wire.SMFIR_CONTINUE)
    assert milter.sent() == [(wire.SMFIC_BODY, b"line 1\r\nline 2\r\n")]
    milter.reply(wire.SMFIR_CONTINUE)
    assert milter.sent() == [(wire.SMFIC_MACRO, b"Ei\0QID9\0"), (wire.SMFIC_BODYEOB, b"")]
    milter.reply(wire.SMFIR_ADDHEADER, b"X-Spam\0yes\0")
    milter.reply(wire.SMFIR_INSHEADER, struct.pack("!I", 0) + b"X-Top\0first\0")
    milter.reply(wire.SMFIR_CHGHEADER, struct.pack("!I", 1) + b"Subject\0[SPAM] hi\0")
    milter.reply(wire.SMFIR_REPLBODY, b"new body\r\n")
    milter.reply(wire.SMFIR_ADDRCPT, b"<c@example.org>\0")
    milter.reply(wire.SMFIR_DELRCPT, b"<b@example.org>\0")
    milter.reply(wire.SMFIR_CHGFROM, b"<s@example.org>\0")
    milter.reply(wire.SMFIR_PROGRESS)
    assert not d.called
    milter.reply(wire.SMFIR_CONTINUE)
    box: list[ContentResult] = []
    d.addCallback(box.append)
    (result,) = box
    assert result.message == (
        b"X-Top: first\nSubject: [SPAM] hi\nFrom: a@example.org\nX-Spam: yes\n\nnew body\n"
    )
    assert result.envelope.add == [("c@example.org", "")]
    assert result.envelope.delete == ["b@example.org"]
    assert result.envelope.sender == ("s@example.org", "")
    assert result.refusal is None and not result.discard


def test_quarantine_and_discard_at_end_of_message() -> None:
    """SMFIR_QUARANTINE holds the message; SMFIR_DISCARD drops it."""
    clock = task.Clock()
    milter = FakeMilter(clock)
    session, _ = opened(milter, protocol=wire.SMFIP_NOHDRS | wire.SMFIP_NOEOH | wire.SMFIP_NOBODY)
    chain = Milters([session])
    d = chain.content(b"Subject: x\n\nbody\n")
    assert [c for c, _ in milter.sent()] == [wire.SMFIC_BODYEOB]
    milter.reply(wire.SMFIR_QUARANTINE, b"looks odd\0")
    milter.reply(wire.SMFIR_CONTINUE)
    box: list[ContentResult] = []
    d.addCallback(box.append)
    assert box[0].quarantine == "looks odd" and box[0].message == b"Subject: x\n\nbody\n"
    d = chain.content(b"Subject: x\n\nbody\n")
    milter.sent()
    milter.reply(wire.SMFIR_DISCARD)
    box = []
    d.addCallback(box.append)
    assert box[0].discard


def test_modification_outside_end_of_message_is_a_protocol_error() -> None:
    """An edit in answer to MAIL breaks the protocol: the default action."""
    clock = task.Clock()
    milter = FakeMilter(clock)
    session, logs = opened(milter)
    d = session.mail("a@b", [], NO_MACROS)
    milter.sent()
    milter.reply(wire.SMFIR_ADDHEADER, b"X\0y\0")
    assert result_of(d).action == TEMPFAIL
    assert "protocol error" in logs[0]
    assert milter.transport.disconnecting


def test_slow_milter_times_out_into_the_default_action() -> None:
    """No answer within milter_command_timeout: tempfail, and every later
    event answers the same without asking the milter again."""
    clock = task.Clock()
    milter = FakeMilter(clock)
    session, logs = opened(milter)
    d = session.mail("a@b", [], NO_MACROS)
    milter.sent()
    clock.advance(9.9)
    assert not d.called
    clock.advance(0.2)
    assert result_of(d) == Verdict(TEMPFAIL, "451 4.7.1 Service unavailable - try again later")
    assert "timeout" in logs[0]
    again = session.rcpt("x@y", [], NO_MACROS)
    assert result_of(again).action == TEMPFAIL
    assert milter.sent() == []


def test_progress_restarts_the_time_limit() -> None:
    """SMFIR_PROGRESS keeps a slow but alive milter within its limit."""
    clock = task.Clock()
    milter = FakeMilter(clock)
    session, _ = opened(milter)
    d = session.mail("a@b", [], NO_MACROS)
    clock.advance(8)
    milter.reply(wire.SMFIR_PROGRESS)
    clock.advance(8)
    milter.reply(wire.SMFIR_CONTINUE)
    assert result_of(d) == Verdict()


def test_milter_down_follows_each_default_action() -> None:
    """An unreachable milter: accept leaves it out, reject is 550 5.7.1,
    tempfail 451 4.7.1, quarantine lets the mail through to hold."""
    expected = {
        "accept": Verdict(),
        "reject": Verdict(REJECT, "550 5.7.1 Command rejected"),
        "tempfail": Verdict(TEMPFAIL, "451 4.7.1 Service unavailable - try again later"),
        "quarantine": Verdict(quarantine="milter_default_action = quarantine"),
    }
    for action, verdict in expected.items():
        logs: list[str] = []

        def down(timeout: float) -> Deferred[MilterProtocol]:
            return fail(Failure(ConnectionRefusedError("refused")))

        session = MilterSession(spec(action), down, logs.append)
        assert result_of(session.connect("h", "192.0.2.1", 25, NO_MACROS)) == verdict
        assert f"default_action={action}" in logs[0]


def test_garbage_from_the_milter_is_a_failure_not_a_crash() -> None:
    """A bad packet length or unknown reply code fails the milter."""
    for garbage in (b"\xff\xff\xff\xff", b"\0\0\0\x01Z", b"\0\0\0\0"):
        clock = task.Clock()
        milter = FakeMilter(clock)
        session, logs = opened(milter)
        d = session.mail("a@b", [], NO_MACROS)
        milter.proto.dataReceived(garbage)
        assert result_of(d).action == TEMPFAIL, garbage
        assert "protocol error" in logs[0]


def test_connection_closed_by_milter() -> None:
    """The milter closing its socket mid-command is a failure."""
    clock = task.Clock()
    milter = FakeMilter(clock)
    session, _ = opened(milter, default_action="reject")
    d = session.data(NO_MACROS)
    milter.proto.connectionLost(Failure(ConnectionError("gone")))
    assert result_of(d).action == REJECT


def test_accept_at_connect_leaves_the_milter_out_for_the_connection() -> None:
    """SMFIR_ACCEPT at connect: no further events go to that milter."""
    clock = task.Clock()
    milter = FakeMilter(clock)
    session = MilterSession(spec(), milter.connector, IGNORE)
    d = session.connect("h", "192.0.2.1", 25, NO_MACROS)
    milter.sent()
    milter.optneg()
    milter.sent()
    milter.reply(wire.SMFIR_ACCEPT)
    assert result_of(d).action == ACCEPT
    assert result_of(session.mail("a@b", [], NO_MACROS)) == Verdict()
    assert milter.sent() == []


def test_new_transaction_aborts_the_old_one() -> None:
    """A second MAIL after a refused RCPT sends SMFIC_ABORT first."""
    clock = task.Clock()
    milter = FakeMilter(clock)
    session, _ = opened(milter)
    chain = Milters([session])
    d = chain.mail("a@b", [])
    milter.sent()
    milter.reply(wire.SMFIR_CONTINUE)
    result_of(d)
    chain.mail("a@b", [])
    assert [c for c, _ in milter.sent()] == [wire.SMFIC_ABORT, wire.SMFIC_MAIL]


def test_milter_asking_for_unoffered_actions_fails_negotiation() -> None:
    """Options we did not offer (a newer milter) fail the milter."""
    clock = task.Clock()
    milter = FakeMilter(clock)
    logs: list[str] = []
    session = MilterSession(spec("accept"), milter.connector, logs.append)
    d = session.connect("h", "192.0.2.1", 25, NO_MACROS)
    milter.sent()
    milter.optneg(actions=0x8000)
    assert result_of(d) == Verdict()
    assert "unavailable actions" in logs[0]


def test_setsymlist_replaces_the_macros_of_a_stage() -> None:
    """A milter that negotiated SMFIF_SETSYMLIST gets the macros it asked for."""
    clock = task.Clock()
    milter = FakeMilter(clock)
    session = MilterSession(spec(), milter.connector, IGNORE)
    d = session.connect("h", "192.0.2.1", 25, macros({"j": "mx", "{client_addr}": "192.0.2.1"}))
    milter.sent()
    milter.optneg(extra=struct.pack("!I", wire.SMFIM_CONNECT) + b"{client_addr}\0")
    macro, _ = milter.sent()
    assert macro == (wire.SMFIC_MACRO, b"C{client_addr}\x00192.0.2.1\0")
    milter.reply(wire.SMFIR_CONTINUE)
    result_of(d)


def test_header_edits_follow_sendmail_semantics() -> None:
    """CHGHEADER counts same-named headers from 1, an empty value deletes,
    a missing header is added; INSHEADER past the end appends."""
    message = b"Received: a\nX-A: 1\nX-A: 2\n\nbody\n"

    def chg(index: int, name: str, value: str) -> wire.Reply:
        return wire.Reply(wire.SMFIR_CHGHEADER, name=name, value=value, index=index)

    out, _ = apply_edits(
        message,
        [
            chg(2, "x-a", ""),
            chg(1, "X-A", "one\r\n\tfolded"),
            chg(1, "X-New", "n"),
            wire.Reply(wire.SMFIR_INSHEADER, name="X-End", value="e", index=99),
        ],
    )
    assert out == b"Received: a\nX-A: one\n\tfolded\nX-New: n\nX-End: e\n\nbody\n"


def test_edit_values_cannot_end_the_header_section() -> None:
    """A value with bare line breaks stays one folded header."""
    out, _ = apply_edits(
        b"A: 1\n\nbody\n", [wire.Reply(wire.SMFIR_ADDHEADER, name="X", value="a\n\nB: evil")]
    )
    assert out == b"A: 1\nX: a\n\t\n\tB: evil\n\nbody\n"


def test_reply_decoder_refuses_malformed_replies() -> None:
    """Missing NULs, bad header names and non-4xx/5xx REPLYCODEs are errors."""
    bad = [
        (wire.SMFIR_REPLYCODE, b"250 ok\0"),
        (wire.SMFIR_REPLYCODE, b"550 no terminator"),
        (wire.SMFIR_ADDHEADER, b"Bad:Name\0v\0"),
        (wire.SMFIR_ADDHEADER, b"X\0"),
        (wire.SMFIR_CHGHEADER, b"\0\0"),
        (b"Z", b""),
    ]
    for code, data in bad:
        try:
            wire.decode_reply(code, data)
        except wire.MilterProtocolError:
            continue
        raise AssertionError(f"accepted {code!r} {data!r}")


def test_split_reply_adds_missing_enhanced_codes() -> None:
    """REPLYCODE text without an enhanced code gets one of its class."""
    assert split_reply("550 go away", "5.7.1") == (550, "5.7.1", "go away")
    assert split_reply("451 4.3.2 busy", "4.7.1") == (451, "4.3.2", "busy")
    assert split_reply("550-5.7.1 a\r\n550 5.7.1 b", "5.7.1") == (550, "5.7.1", "a; b")


def test_protocol_refuses_a_second_command_while_one_waits() -> None:
    """One command at a time: the protocol never interleaves answers."""
    clock = task.Clock()
    proto = MilterProtocol(clock)
    proto.makeConnection(StringTransport())
    proto.request(wire.packet(wire.SMFIC_DATA), 5)
    second = proto.request(wire.packet(wire.SMFIC_DATA), 5)
    failures: list[Failure] = []
    second.addErrback(failures.append)
    assert failures and failures[0].check(MilterError)


def test_client_leaving_during_the_content_does_not_cut_the_milters_off() -> None:
    """quit() while a message's content is with the milter waits for its
    answer: the message is not let through unfiltered (default accept)."""
    clock = task.Clock()
    milter = FakeMilter(clock)
    session, _ = opened(milter, protocol=wire.SMFIP_NOHDRS | wire.SMFIP_NOEOH | wire.SMFIP_NOBODY)
    chain = Milters([session])
    d = chain.content(b"Subject: x\n\nbody\n")
    milter.sent()
    chain.quit()
    assert not milter.transport.disconnecting
    milter.reply(wire.SMFIR_REJECT)
    box: list[ContentResult] = []
    d.addCallback(box.append)
    assert box[0].refusal is not None
    assert milter.sent() == [(wire.SMFIC_QUIT, b"")]
    assert milter.transport.disconnecting


def test_an_older_milter_gets_no_data_command() -> None:
    """A milter answering protocol version 2 is never sent SMFIC_DATA."""
    clock = task.Clock()
    milter = FakeMilter(clock)
    session = MilterSession(spec(), milter.connector, IGNORE)
    d = session.connect("h", "192.0.2.1", 25, NO_MACROS)
    milter.sent()
    milter.proto.dataReceived(
        wire.packet(wire.SMFIC_OPTNEG, struct.pack("!III", 2, wire.SMFIF_ADDHDRS, 0))
    )
    milter.sent()
    milter.reply(wire.SMFIR_CONTINUE)
    result_of(d)
    assert result_of(session.data(NO_MACROS)) == Verdict()
    assert milter.sent() == []


def test_edits_beyond_the_limit_fail_the_milter() -> None:
    """A milter replacing the body with more than the edit limit is failed
    (default action), not trusted to grow the message without bound."""
    clock = task.Clock()
    milter = FakeMilter(clock)
    milter.proto = MilterProtocol(clock, edit_limit=100)
    session, logs = opened(
        milter, protocol=wire.SMFIP_NOHDRS | wire.SMFIP_NOEOH | wire.SMFIP_NOBODY
    )
    d = Milters([session]).content(b"Subject: x\n\nbody\n")
    milter.sent()
    milter.reply(wire.SMFIR_REPLBODY, b"x" * 60)
    milter.reply(wire.SMFIR_REPLBODY, b"x" * 60)
    box: list[ContentResult] = []
    d.addCallback(box.append)
    assert box[0].refusal is not None and box[0].refusal.action == TEMPFAIL
    assert "edits larger than 100 bytes" in logs[0]
