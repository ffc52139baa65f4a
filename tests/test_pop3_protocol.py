"""POP3 protocol tests over StringTransport and Clock: every command, error paths, states."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from pymta.pop3.protocol import (
    AUTH_FAILED,
    IN_USE,
    PLAINTEXT_DISALLOWED,
    TLS_REQUIRED,
    TOO_MANY_ATTEMPTS,
    TOO_MANY_CONNECTIONS,
)
from pymta.pop3.settings import POP3Settings
from tests.test_pop3_harness import World

MSG1 = b"From: a@example.org\nSubject: one\n\nHello\n.leading dot\n..two dots\nend\n"
MSG2 = b"From: b@example.org\nSubject: two\n\nline1\nline2\nline3\n"


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path)
    inbox = w.inbox()
    inbox.append(MSG1)
    inbox.append(MSG2)
    return w


def crlf(data: bytes) -> int:
    return len(data) + data.count(b"\n")


def test_greeting_and_capa_from_loopback(world: World) -> None:
    """The greeting is +OK; CAPA lists what is offered: USER and SASL PLAIN on loopback, no STLS."""
    s = world.connect()
    assert s.greeting == "+OK pymta ready.\r\n"
    reply = s.send("CAPA")
    lines = reply.split("\r\n")
    assert lines[0].startswith("+OK")
    assert lines[-2:] == [".", ""]
    caps = lines[1:-2]
    for cap in ("CAPA", "TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE"):
        assert cap in caps
    assert "USER" in caps and "SASL PLAIN" in caps
    assert "STLS" not in caps


def test_capa_offers_stls_when_tls_configured(tmp_path: Path) -> None:
    """With TLS configured CAPA lists STLS; from an untrusted client, not USER or SASL."""
    world = World(tmp_path, tls=object())
    s = world.connect("203.0.113.9")
    caps = s.send("CAPA").split("\r\n")
    assert "STLS" in caps
    assert "USER" not in caps and "SASL PLAIN" not in caps


def test_plaintext_refused_from_untrusted_network(world: World) -> None:
    """USER, PASS and AUTH PLAIN are refused without TLS from a client outside the networks."""
    s = world.connect("203.0.113.9")
    assert s.send("USER alice@example.org") == PLAINTEXT_DISALLOWED + "\r\n"
    assert s.send("AUTH PLAIN") == PLAINTEXT_DISALLOWED + "\r\n"
    assert s.send("PASS secret") == PLAINTEXT_DISALLOWED + "\r\n"


def test_plaintext_allowed_from_trusted_network(world: World) -> None:
    """A client in pop3d_plaintext_auth_networks may log in without TLS."""
    s = world.connect("192.0.2.200")
    s.login()


def test_stat_list_uidl(world: World) -> None:
    """STAT, LIST, LIST n, UIDL and UIDL n report CRLF sizes and %08X%08X unique ids."""
    s = world.connect()
    s.login()
    size1, size2 = crlf(MSG1), crlf(MSG2)
    assert s.send("STAT") == f"+OK 2 {size1 + size2}\r\n"
    assert s.send("LIST") == (
        f"+OK 2 messages ({size1 + size2} octets)\r\n1 {size1}\r\n2 {size2}\r\n.\r\n"
    )
    assert s.send("LIST 2") == f"+OK 2 {size2}\r\n"
    assert s.send("LIST 3") == "-ERR There's no message 3.\r\n"
    assert s.send("LIST x") == "-ERR Invalid message number: x\r\n"
    assert s.send(b"LIST 1\r2\r\n") == "-ERR Invalid message number: 1?2\r\n"
    v = world.inbox().uidvalidity
    assert s.send("UIDL") == f"+OK\r\n1 00000001{v:08X}\r\n2 00000002{v:08X}\r\n.\r\n"
    assert s.send("UIDL 1") == f"+OK 1 00000001{v:08X}\r\n"


def test_retr_crlf_and_dot_stuffing(world: World) -> None:
    """RETR sends the message with CRLF line ends, dot-stuffed, with its octet count."""
    s = world.connect()
    s.login()
    out = s.transport
    s.proto.dataReceived(b"RETR 1\r\n")
    data = out.value()
    out.clear()
    assert data.startswith(f"+OK {crlf(MSG1)} octets\r\n".encode())
    body = data.split(b"\r\n", 1)[1]
    assert body == (
        b"From: a@example.org\r\nSubject: one\r\n\r\nHello\r\n..leading dot\r\n"
        b"...two dots\r\nend\r\n.\r\n"
    )


def test_top(world: World) -> None:
    """TOP n k sends the headers, the blank line and k body lines; TOP n 0 the headers only."""
    s = world.connect()
    s.login()
    assert s.send("TOP 2 0") == ("+OK\r\nFrom: b@example.org\r\nSubject: two\r\n\r\n.\r\n")
    assert s.send("TOP 2 2") == (
        "+OK\r\nFrom: b@example.org\r\nSubject: two\r\n\r\nline1\r\nline2\r\n.\r\n"
    )
    assert s.send("TOP 2 99").endswith("line3\r\n.\r\n")
    assert s.send("TOP 2").startswith("-ERR")
    assert s.send("TOP 2 -1").startswith("-ERR")


def test_dele_rset_and_clean_quit_expunges(world: World) -> None:
    """DELE marks (hidden from STAT/LIST, RETR refused); RSET unmarks; QUIT expunges the marked."""
    s = world.connect()
    s.login()
    assert s.send("DELE 1") == "+OK Marked to be deleted.\r\n"
    assert s.send("DELE 1") == "-ERR Message is deleted.\r\n"
    assert s.send("RETR 1") == "-ERR Message is deleted.\r\n"
    assert s.send("STAT") == f"+OK 1 {crlf(MSG2)}\r\n"
    assert s.send("LIST").split("\r\n")[1] == f"2 {crlf(MSG2)}"
    assert s.send("RSET") == "+OK\r\n"
    assert s.send("STAT").startswith("+OK 2 ")
    s.send("DELE 2")
    assert s.send("QUIT") == "+OK Logging out, messages deleted.\r\n"
    assert s.transport.disconnecting
    s.drop()
    assert [m.uid for m in world.inbox().messages()] == [1]


def test_dropped_connection_does_not_expunge(world: World) -> None:
    """DELE followed by a dropped connection (no QUIT) deletes nothing and frees the lock."""
    s = world.connect()
    s.login()
    s.send("DELE 1")
    s.drop()
    assert len(world.inbox().messages()) == 2
    again = world.connect()
    again.login()


def test_quit_without_deletions(world: World) -> None:
    """QUIT with nothing marked answers +OK Logging out. and closes; RETR'd mail becomes Seen."""
    s = world.connect()
    s.login()
    s.send("RETR 2")
    assert s.send("QUIT") == "+OK Logging out.\r\n"
    s.drop()
    flags = {m.uid: m.flags for m in world.inbox().messages()}
    assert "\\Seen" in flags[2] and "\\Seen" not in flags[1]


def test_quit_in_authorization(world: World) -> None:
    """QUIT before login closes the connection with +OK."""
    s = world.connect()
    assert s.send("QUIT") == "+OK Logging out.\r\n"
    assert s.transport.disconnecting


def test_noop_and_state_checks(world: World) -> None:
    """Transaction commands are refused before login, login commands after it."""
    s = world.connect()
    for cmd in ("STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "UIDL", "TOP 1 1"):
        assert s.send(cmd) == "-ERR Unknown command.\r\n"
    s.login()
    assert s.send("NOOP") == "+OK\r\n"
    assert s.send("USER bob@example.org") == "-ERR Unknown command.\r\n"
    assert s.send("AUTH PLAIN") == "-ERR Unknown command.\r\n"


def test_commands_case_insensitive(world: World) -> None:
    """Command keywords are case-insensitive (RFC 1939 section 3)."""
    s = world.connect()
    assert s.send("user alice@example.org") == "+OK\r\n"
    assert s.send("pass secret") == "+OK Logged in.\r\n"
    assert s.send("stat").startswith("+OK 2")


def test_messages_arriving_during_session_not_shown(world: World) -> None:
    """Messages delivered during a session do not appear in it, and appear in the next one."""
    s = world.connect()
    s.login()
    world.inbox().append(b"Subject: late\n\nx\n")
    world.inbox().deliver_external(b"Subject: later\n\ny\n")  # type: ignore[attr-defined]
    assert s.send("STAT").startswith("+OK 2 ")
    assert s.send("RETR 3") == "-ERR There's no message 3.\r\n"
    s.send("QUIT")
    s.drop()
    again = world.connect()
    again.login()
    assert again.send("STAT").startswith("+OK 4 ")


def test_in_use(world: World) -> None:
    """A second session for the same mailbox gets -ERR [IN-USE] until the first ends."""
    first = world.connect()
    first.login()
    second = world.connect()
    second.send("USER alice@example.org")
    assert second.send("PASS secret") == IN_USE + "\r\n"
    assert second.proto.state == "AUTHORIZATION"
    second.drop()
    assert world.log_lines()[-1].startswith("pop3-login: Disconnected (mailbox in use, 1 attempts")
    second = world.connect()
    first.send("QUIT")
    first.drop()
    second.send("USER alice@example.org")
    assert second.send("PASS secret") == "+OK Logged in.\r\n"


def test_uidl_stable_across_sessions(world: World) -> None:
    """UIDL values are the same in every session, also after other messages are deleted."""
    s = world.connect()
    s.login()
    before = s.send("UIDL").split("\r\n")[2]
    s.send("DELE 1")
    s.send("QUIT")
    s.drop()
    again = world.connect()
    again.login()
    assert again.send("UIDL").split("\r\n")[1] == "1 " + before.split(" ")[1]


def test_bad_password_and_unknown_user_identical(world: World) -> None:
    """A bad password and an unknown user get the same reply after the same delay."""
    replies = []
    for user in ("alice@example.org", "nobody@example.org"):
        s = world.connect("192.0.2.200" if user.startswith("a") else "192.0.2.201")
        s.send(f"USER {user}")
        assert s.send("PASS wrong") == ""
        world.clock.advance(0.49)
        assert s.read() == ""
        world.clock.advance(0.01)
        replies.append(s.read())
    assert replies == [AUTH_FAILED + "\r\n"] * 2


def test_auth_attempt_limit_disconnects(world: World) -> None:
    """After pop3d_auth_attempt_limit failed logins the session is closed."""
    s = world.connect()
    for _ in range(3):
        s.send("USER alice@example.org")
        s.send("PASS wrong")
        world.clock.advance(5)  # the penalty before the check
        world.clock.advance(5)  # the failure delay after it
    assert s.read() == AUTH_FAILED + "\r\n"
    assert s.transport.disconnecting


def test_pass_without_user(world: World) -> None:
    """PASS before USER is an error."""
    s = world.connect()
    assert s.send("PASS x") == "-ERR No username given.\r\n"


def test_password_with_spaces(tmp_path: Path) -> None:
    """PASS takes the rest of the line, spaces included (RFC 1939)."""
    world = World(tmp_path)
    world.passwd.write_text("sp@example.org:{PLAIN}a b  c::::/mail/sp::\n")
    world.clock.advance(2)
    s = world.connect()
    s.send("USER sp@example.org")
    assert s.send("PASS a b  c") == "+OK Logged in.\r\n"


def plain(authz: str, user: str, pw: str) -> str:
    return base64.b64encode(f"{authz}\0{user}\0{pw}".encode()).decode()


def test_auth_plain_initial_response(world: World) -> None:
    """AUTH PLAIN with an initial response logs in (RFC 5034)."""
    s = world.connect()
    assert s.send("AUTH PLAIN " + plain("", "alice@example.org", "secret")) == "+OK Logged in.\r\n"
    assert s.proto.state == "TRANSACTION"


def test_auth_plain_continuation(world: World) -> None:
    """AUTH PLAIN without initial response sends '+ ' and takes the next line."""
    s = world.connect()
    assert s.send("AUTH PLAIN") == "+ \r\n"
    assert s.send(plain("bob@example.org", "bob@example.org", "hunter2")) == "+OK Logged in.\r\n"


def test_auth_plain_cancel_and_bad_base64(world: World) -> None:
    """'*' cancels an AUTH exchange; bad base64 and a malformed response are refused."""
    s = world.connect()
    s.send("AUTH PLAIN")
    assert s.send("*") == "-ERR Authentication aborted by client.\r\n"
    assert s.send("AUTH PLAIN !!!!").startswith("-ERR Invalid base64")
    bad = base64.b64encode(b"no-nuls").decode()
    assert s.send("AUTH PLAIN " + bad).startswith("-ERR [AUTH]")
    assert s.send("AUTH CRAM-MD5") == "-ERR Unsupported authentication mechanism.\r\n"


def test_auth_plain_wrong_password_and_foreign_authzid(world: World) -> None:
    """AUTH PLAIN fails with [AUTH] for a bad password and for another authorization identity."""
    s = world.connect()
    s.send("AUTH PLAIN " + plain("", "alice@example.org", "bad"))
    world.clock.advance(10)
    assert s.read() == AUTH_FAILED + "\r\n"
    s.send("AUTH PLAIN " + plain("bob@example.org", "alice@example.org", "secret"))
    world.clock.advance(5)  # the penalty of the first failure, then the check
    world.clock.advance(5)  # the failure delay
    assert s.read() == AUTH_FAILED + "\r\n"


def test_auth_without_mechanism_lists(world: World) -> None:
    """AUTH without a mechanism lists the mechanisms (RFC 1734 style), for old clients."""
    s = world.connect()
    assert s.send("AUTH") == "+OK\r\nPLAIN\r\n.\r\n"


def test_apop(tmp_path: Path) -> None:
    """With APOP enabled the banner carries a timestamp and the right digest logs in."""
    world = World(tmp_path, settings=POP3Settings(enable_apop=True, hostname="mail.example.org"))
    world.inbox().append(MSG1)
    s = world.connect("203.0.113.9")
    stamp = s.greeting.strip().split(" ")[-1]
    assert stamp.startswith("<4242.") and stamp.endswith("@mail.example.org>")
    digest = hashlib.md5(stamp.encode() + b"secret").hexdigest()
    assert s.send(f"APOP alice@example.org {digest}") == "+OK Logged in.\r\n"


def test_apop_bad_digest_and_disabled(world: World, tmp_path: Path) -> None:
    """APOP is an unknown command when not offered; a wrong digest fails with [AUTH]."""
    s = world.connect()
    assert "<" not in s.greeting
    assert s.send("APOP alice@example.org " + "0" * 32) == "-ERR Unknown command.\r\n"
    other = World(tmp_path, settings=POP3Settings(enable_apop=True))
    t = other.connect()
    t.send("APOP alice@example.org " + "0" * 32)
    other.clock.advance(1)
    assert t.read() == AUTH_FAILED + "\r\n"


def test_pipelining_waits_for_login(world: World) -> None:
    """Pipelined commands after PASS are answered in order once the (delayed) login finishes."""
    s = world.connect()
    s.send("USER alice@example.org")
    s.send("PASS wrong")
    world.clock.advance(1)
    s.read()
    # a good login with commands behind it, after the 0.5 s penalty of the failure
    out = s.send(b"USER alice@example.org\r\nPASS secret\r\nSTAT\r\nUIDL 1\r\nQUIT\r\n")
    assert out == "+OK\r\n"
    world.clock.advance(0.5)
    out = s.read()
    assert out.startswith("+OK Logged in.\r\n+OK 2 ")
    assert out.endswith("+OK Logging out.\r\n")


def test_pipelined_during_delay(world: World) -> None:
    """Commands sent while a failed login waits its delay are answered after it, in order."""
    s = world.connect()
    out = s.send(
        b"USER alice@example.org\r\nPASS bad\r\nUSER alice@example.org\r\nPASS secret\r\nSTAT\r\n"
    )
    assert out == "+OK\r\n"
    world.clock.advance(0.5)  # the failure delay
    assert s.read() == AUTH_FAILED + "\r\n+OK\r\n"
    world.clock.advance(0.5)  # the penalty before the next check
    assert s.read().startswith("+OK Logged in.\r\n+OK 2 ")


def test_stls_discards_injected_commands(tmp_path: Path) -> None:
    """STLS starts TLS and discards what followed it in the same packet (CVE-2011-0411)."""
    tls = object()
    world = World(tmp_path, tls=tls)
    s = world.connect("203.0.113.9")
    out = s.send(b"STLS\r\nUSER alice@example.org\r\n")
    assert out == "+OK Begin TLS negotiation now.\r\n"
    assert s.transport.tls_started is tls
    caps = s.send("CAPA").split("\r\n")
    assert "STLS" not in caps and "USER" in caps
    assert s.send("STLS") == "-ERR TLS is already active.\r\n"
    s.login()


def test_stls_without_tls_configured(world: World) -> None:
    """STLS is an unknown command when no certificate is configured."""
    s = world.connect()
    assert s.send("STLS") == "-ERR Unknown command.\r\n"


def test_tls_required_refuses_login_before_stls(tmp_path: Path) -> None:
    """With pop3d_tls_security_level = encrypt even loopback cannot log in before STLS."""
    world = World(tmp_path, settings=POP3Settings(tls_required=True), tls=object())
    s = world.connect()
    assert s.send("USER alice@example.org") == TLS_REQUIRED + "\r\n"
    s.send("STLS")
    s.login()


def test_idle_timeout(world: World) -> None:
    """An idle client is told so and disconnected after pop3d_timeout; activity resets the timer."""
    s = world.connect()
    s.login()
    world.clock.advance(599)
    s.send("NOOP")
    world.clock.advance(599)
    assert s.read() == ""
    world.clock.advance(1)
    assert s.read() == "-ERR Disconnected for inactivity.\r\n"
    assert s.transport.disconnecting
    s.drop()
    assert world.inbox().lock() is not None


def test_too_many_bad_commands(world: World) -> None:
    """The session ends after pop3d_hard_error_limit bad commands."""
    s = world.connect()
    for _ in range(9):
        assert s.send("BOGUS") == "-ERR Unknown command.\r\n"
    assert s.send("BOGUS") == "-ERR Too many bad commands.\r\n"
    assert s.transport.disconnecting
    assert s.send("CAPA") == ""


def test_overlong_line(world: World) -> None:
    """An overlong line is refused and skipped to its end; the next command works."""
    s = world.connect()
    assert s.send(b"NOOP " + b"x" * 5000) == "-ERR Line too long.\r\n"
    assert s.send(b"y" * 10 + b"\r\nCAPA\r\n").startswith("+OK Capability")
    assert s.send(b"X" * 3000 + b"\r\n") == "-ERR Line too long.\r\n"


def test_bare_lf_accepted(world: World) -> None:
    """Commands ending in a bare LF are accepted, as Dovecot does."""
    s = world.connect()
    assert s.send(b"USER alice@example.org\n") == "+OK\r\n"


def test_flow_control_pauses_commands(world: World) -> None:
    """While the transport asks to pause, pipelined commands wait; resuming answers them."""
    s = world.connect()
    s.login()
    s.proto.pauseProducing()
    assert s.send(b"STAT\r\nNOOP\r\n") == ""
    s.proto.resumeProducing()
    assert s.read().endswith("+OK\r\n")


def test_sys_temp_when_passdb_unreadable(world: World) -> None:
    """An unreadable passwd-file answers [SYS/TEMP], not [AUTH]."""
    world.passwd.unlink()
    s = world.connect()
    s.send("USER alice@example.org")
    assert s.send("PASS secret") == "-ERR [SYS/TEMP] Temporary authentication failure.\r\n"


def test_user_without_mailbox(world: World) -> None:
    """A user with no mail location gets [SYS/PERM] after a correct password."""
    s = world.connect()
    s.send("USER nomail@example.org")
    assert s.send("PASS x") == "-ERR [SYS/PERM] Mailbox unavailable.\r\n"


def test_logs_login_and_logout(world: World) -> None:
    """Login and logout are logged Dovecot-style with the session counters."""
    s = world.connect()
    s.login()
    s.send("TOP 1 0")
    s.send("RETR 2")
    s.send("DELE 1")
    s.send("QUIT")
    s.drop()
    lines = world.log_lines()
    assert lines[0].startswith("pop3-login: Login: user=<alice@example.org>, method=PLAIN, ")
    assert "rip=127.0.0.1" in lines[0] and "mpid=4242" in lines[0]
    size = crlf(MSG1) + crlf(MSG2)
    top_bytes = len(b"From: a@example.org\r\nSubject: one\r\n\r\n")
    assert lines[1] == (
        "pop3(alice@example.org)<4242><AAECAwQFBgcI>: Disconnected: Logged out "
        f"top=1/{top_bytes}, retr=1/{crlf(MSG2)}, del=1/2, size={size}"
    )


def test_logs_auth_failure_disconnect(world: World) -> None:
    """A session that only failed to log in is logged as auth failed with its attempt count."""
    s = world.connect("192.0.2.200")
    s.send("USER mallory@example.org")
    s.send("PASS x")
    world.clock.advance(2)
    s.drop()
    line = world.log_lines()[-1]
    assert line.startswith(
        "pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): "
        "user=<mallory@example.org>, method=PLAIN, rip=192.0.2.200"
    )


def test_implicit_tls_connection_is_secure(tmp_path: Path) -> None:
    """On an implicit-TLS port (pop3d_tls_wrappermode) the session is secure from the start."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.interfaces import ISSLTransport
    from zope.interface import directlyProvides

    from tests.test_pop3_harness import Session, TLSStringTransport

    world = World(tmp_path, tls=object())
    proto = world.factory.buildProtocol(IPv4Address("TCP", "203.0.113.9", 4000))
    transport = TLSStringTransport(peerAddress=IPv4Address("TCP", "203.0.113.9", 4000))
    directlyProvides(transport, ISSLTransport)
    proto.makeConnection(transport)
    s = Session(world, proto, transport)
    caps = s.send("CAPA").split("\r\n")
    assert "STLS" not in caps and "USER" in caps
    s.login()
    s.send("QUIT")
    s.drop()
    assert ", TLS, session=" in world.log_lines()[0]


def test_too_many_login_attempts_are_refused(world: World) -> None:
    """A login beyond pymta_auth_client_concurrency_limit attempts in progress
    from one address gets -ERR [SYS/TEMP] at once; a session that hangs up
    while its login waits for the penalty withdraws it."""
    world.checker.throttle.concurrency_limit = 1
    first = world.connect("192.0.2.200")
    first.send("USER alice@example.org")
    first.send("PASS wrong")
    world.clock.advance(1)
    assert first.read() == AUTH_FAILED + "\r\n"
    first.send("USER alice@example.org")
    assert first.send("PASS secret") == ""  # waits for the penalty
    second = world.connect("192.0.2.200")
    second.send("USER alice@example.org")
    assert second.send("PASS secret") == TOO_MANY_ATTEMPTS + "\r\n"
    first.drop()
    assert world.checker.throttle.in_progress("192.0.2.200") == 0
    second.send("USER alice@example.org")
    second.send("PASS secret")
    world.clock.advance(0.5)
    assert second.read() == "+OK Logged in.\r\n"


def test_connections_before_login_are_capped_per_client(tmp_path: Path) -> None:
    """Beyond pop3d_max_login_ip_connections connections not logged in yet from
    one address, the next gets -ERR [SYS/TEMP] instead of a greeting and is
    closed; logged-in sessions and other addresses do not count."""
    world = World(
        tmp_path, settings=POP3Settings(hostname="mail.example.org", max_login_ip_connections=2)
    )
    first = world.connect("192.0.2.200")
    world.connect("192.0.2.200")
    third = world.connect("192.0.2.200")
    assert third.greeting == TOO_MANY_CONNECTIONS + "\r\n"
    assert third.transport.disconnecting
    third.drop()
    assert world.connect("192.0.2.201").greeting.startswith("+OK ")
    first.login()
    assert world.connect("192.0.2.200").greeting.startswith("+OK ")
    assert world.connect("192.0.2.200").greeting == TOO_MANY_CONNECTIONS + "\r\n"
