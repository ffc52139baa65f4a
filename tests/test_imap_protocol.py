"""IMAP protocol tests over StringTransport and Clock: states, login, STARTTLS,
limits, and every mailbox and message command."""

from __future__ import annotations

import base64
import socket
from pathlib import Path

import pytest

from pymta.imap.settings import IMAPSettings
from tests.test_imap_harness import Session, World

MSG = b"From: a@example.org\nSubject: hi\n\nhello\n"


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path)
    w.mailbox().folder("INBOX").append(MSG)
    w.mailbox().folder("INBOX").claim_recent()  # old mail: no \Recent in the transcripts
    return w


@pytest.fixture
def s(world: World) -> Session:
    session = world.connect()
    session.login()
    return session


def caps(reply: bytes) -> list[str]:
    line = reply.split(b"\r\n")[0].decode()
    return line.split("[CAPABILITY ", 1)[1].split("]")[0].split()


# connection and login --------------------------------------------------------


def test_greeting_lists_capabilities_for_loopback(world: World) -> None:
    """The greeting carries CAPABILITY: the extensions, and AUTH=PLAIN on loopback."""
    session = world.connect()
    c = caps(session.greeting)
    for name in ("IMAP4rev1", "IDLE", "UIDPLUS", "MOVE", "LITERAL+", "SASL-IR", "AUTH=PLAIN"):
        assert name in c
    assert "LOGINDISABLED" not in c and "STARTTLS" not in c


def test_logindisabled_without_tls_from_untrusted_client(tmp_path: Path) -> None:
    """From outside imapd_plaintext_auth_networks without TLS: LOGINDISABLED, STARTTLS
    offered, LOGIN and AUTHENTICATE refused with [PRIVACYREQUIRED]."""
    world = World(tmp_path, tls=object())
    session = world.connect("203.0.113.9")
    c = caps(session.greeting)
    assert "LOGINDISABLED" in c and "STARTTLS" in c and "AUTH=PLAIN" not in c
    assert session.send("a LOGIN alice@example.org secret").startswith(b"a NO [PRIVACYREQUIRED]")
    assert session.send("b AUTHENTICATE PLAIN").startswith(b"b NO [PRIVACYREQUIRED]")


def test_trusted_network_may_log_in_without_tls(tmp_path: Path) -> None:
    """A client in imapd_plaintext_auth_networks may LOGIN in clear text."""
    world = World(tmp_path, tls=object())
    session = world.connect("192.0.2.200")
    session.login()


def test_starttls_discards_commands_pipelined_behind_it(tmp_path: Path) -> None:
    """CVE-2011-0411: a command sent in the same packet after STARTTLS is never run."""
    world = World(tmp_path, tls=object())
    session = world.connect("203.0.113.9")
    reply = session.send(b"a STARTTLS\r\nb LOGIN alice@example.org secret\r\n")
    assert reply == b"a OK Begin TLS negotiation now.\r\n"
    assert session.transport.tls_started is not None
    assert session.proto.state == "not authenticated"
    capability = session.send("c CAPABILITY")
    assert b"STARTTLS" not in capability and b"AUTH=PLAIN" in capability
    session.login()


def test_login_success_and_failure_are_logged_like_dovecot(world: World) -> None:
    """A failed LOGIN is NO [AUTHENTICATIONFAILED]; a good one logs imap-login: Login,
    and the session end logs Disconnected with the byte counters."""
    session = world.connect()
    assert session.send("a LOGIN alice@example.org wrong") == b""  # the failure delay
    world.clock.advance(10)
    assert session.read() == b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    assert session.send("a0 LOGIN alice@example.org secret") == b""  # the penalty first
    world.clock.advance(0.5)
    assert session.read().startswith(b"a0 OK [CAPABILITY ")
    session.send("z LOGOUT")
    session.drop()
    lines = world.log_lines()
    assert lines[0] == (
        "imap-login: Login: user=<alice@example.org>, method=PLAIN, rip=127.0.0.1, "
        "lip=127.0.0.1, mpid=4242, session=<AAECAwQFBgcI>"
    )
    assert lines[1].startswith(
        "imap(alice@example.org)<4242><AAECAwQFBgcI>: Disconnected: Logged out in="
    )


def test_authenticate_plain_with_initial_response_and_continuation(world: World) -> None:
    """AUTHENTICATE PLAIN works with SASL-IR and with a '+' continuation; '*' aborts."""
    token = base64.b64encode(b"\0alice@example.org\0secret").decode()
    session = world.connect()
    assert session.send(f"a AUTHENTICATE PLAIN {token}").startswith(b"a OK [CAPABILITY ")
    other = world.connect()
    assert other.send("a AUTHENTICATE PLAIN") == b"+ \r\n"
    assert other.send("*") == b"a BAD Authentication aborted by client.\r\n"
    assert other.send("b AUTHENTICATE PLAIN") == b"+ \r\n"
    assert other.send(token).startswith(b"b OK [CAPABILITY ")
    assert world.connect().send("c AUTHENTICATE CRAM-MD5") == (
        b"c NO Unsupported authentication mechanism.\r\n"
    )


def test_commands_in_the_wrong_state_are_bad(world: World) -> None:
    """Selected-state and authenticated-state commands need their state; LOGIN twice is BAD."""
    session = world.connect()
    assert session.send("a SELECT INBOX") == b"a BAD Error in IMAP command: Not authenticated.\r\n"
    session.login()
    assert (
        session.send("b FETCH 1 FLAGS") == b"b BAD Error in IMAP command: No mailbox selected.\r\n"
    )
    assert session.send("c LOGIN x y") == b"c BAD Error in IMAP command: Already authenticated.\r\n"
    assert session.send("d FOO") == b"d BAD Error in IMAP command received by server.\r\n"
    assert session.send("* NOOP") == b"* BAD Error in IMAP command received by server.\r\n"


def test_too_many_bad_commands_end_the_session(tmp_path: Path) -> None:
    """imapd_hard_error_limit BAD commands end the session with BYE."""
    world = World(tmp_path, IMAPSettings(hard_error_limit=3))
    session = world.connect()
    session.send("a FOO")
    session.send("b FOO")
    assert session.send("c FOO") == b"* BYE Too many invalid IMAP commands.\r\n"
    assert session.transport.disconnecting


def test_oversize_append_refused_before_the_literal(tmp_path: Path) -> None:
    """APPEND with a literal over imapd_max_literal_size is NO [TOOBIG] with no '+'."""
    world = World(tmp_path, IMAPSettings(max_literal_size=1024))
    session = world.connect()
    session.login()
    assert session.send("a APPEND INBOX {1025}") == b"a NO [TOOBIG] Literal too big.\r\n"
    assert session.send("b NOOP") == b"b OK NOOP completed.\r\n"


def test_literals_before_login_are_small(world: World) -> None:
    """Before login a literal over 8 KiB is refused, so an anonymous client cannot make
    the server buffer a large message; after login the configured limit applies."""
    session = world.connect()
    assert session.send("a LOGIN {9000}") == b"a NO [TOOBIG] Literal too big.\r\n"
    assert session.send("b LOGIN {17}") == b"+ OK\r\n"
    assert session.send("alice@example.org secret").startswith(b"b OK [CAPABILITY ")
    assert session.send("c APPEND INBOX {9000}") == b"+ OK\r\n"


def test_idle_clients_are_disconnected(world: World) -> None:
    """Before login imapd_login_timeout applies; after, the longer imapd_timeout."""
    early = world.connect()
    world.clock.advance(world.settings.login_timeout + 1)
    assert early.read() == b"* BYE Disconnected for inactivity.\r\n"
    late = world.connect()
    late.login()
    world.clock.advance(world.settings.login_timeout + 1)
    assert late.read() == b""
    world.clock.advance(world.settings.timeout)
    assert late.read() == b"* BYE Disconnected for inactivity.\r\n"


def test_garbage_gets_bad_never_an_exception(s: Session) -> None:
    """Binary junk, unbalanced parentheses and bad quoting are BAD responses."""
    for junk in (b"a (((\r\n", b'a LOGIN "x\r\n', b"\x00\x01\x02\r\n", b"a SELECT {x}\r\n"):
        assert b" BAD " in s.send(junk)


# any state ------------------------------------------------------------------


def test_capability_noop_id_namespace_enable(s: Session) -> None:
    """CAPABILITY, NOOP, ID, NAMESPACE and ENABLE answer as their RFCs say."""
    assert s.send("a NOOP") == b"a OK NOOP completed.\r\n"
    assert s.send('b ID ("name" "test")') == b'* ID ("name" "pymta")\r\nb OK ID completed.\r\n'
    assert (
        s.send("c NAMESPACE") == b'* NAMESPACE (("" "/")) NIL NIL\r\nc OK Namespace completed.\r\n'
    )
    assert s.send("d ENABLE CONDSTORE X-UNKNOWN") == b"* ENABLED CONDSTORE\r\nd OK Enabled.\r\n"
    assert s.send("e CAPABILITY").startswith(b"* CAPABILITY IMAP4rev1 ")


def test_logout(s: Session) -> None:
    """LOGOUT sends BYE, then OK, and closes."""
    assert s.send("a LOGOUT") == b"* BYE Logging out\r\na OK Logout completed.\r\n"
    assert s.transport.disconnecting


# mailboxes --------------------------------------------------------------------


def test_select_and_examine_responses(s: Session, world: World) -> None:
    """SELECT sends FLAGS, PERMANENTFLAGS, EXISTS, RECENT, UNSEEN, UIDVALIDITY, UIDNEXT,
    HIGHESTMODSEQ, MAILBOXID and READ-WRITE; EXAMINE is READ-ONLY with no permanent flags."""
    folder = world.mailbox().folder("INBOX")
    assert s.send("a SELECT INBOX") == (
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] "
        b"Flags permitted.\r\n* 1 EXISTS\r\n* 0 RECENT\r\n* OK [UNSEEN 1] First unseen.\r\n"
        b"* OK [UIDVALIDITY %d] UIDs valid\r\n* OK [UIDNEXT 2] Predicted next UID\r\n"
        b"* OK [HIGHESTMODSEQ %d] Highest\r\n* OK [MAILBOXID (F%08x)] Ok\r\n"
        b"a OK [READ-WRITE] Select completed.\r\n"
        % (folder.uidvalidity, folder.highest_modseq, folder.uidvalidity)
    )
    reply = s.send("b EXAMINE inbox")
    assert b"* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n" in reply
    assert reply.endswith(b"b OK [READ-ONLY] Select completed.\r\n")
    assert s.send("c STORE 1 +FLAGS (\\Seen)") == b"c NO [READ-ONLY] Mailbox is read-only.\r\n"
    assert s.send("d SELECT nosuch") == b"d NO [NONEXISTENT] Mailbox doesn't exist: nosuch\r\n"
    assert s.send("e FETCH 1 FLAGS").startswith(b"e BAD")  # a failed SELECT deselects


def test_list_wildcards_and_attributes(s: Session) -> None:
    """LIST with * and % returns special-use and CHILDREN attributes; a missing parent
    of a match for % is \\Noselect; LIST "" "" gives the separator."""
    assert s.send("a CREATE Work/2024/Q1").startswith(b"a OK")
    s.send("b DELETE Work/2024")
    reply = s.lines('c LIST "" *')
    assert b'* LIST (\\HasNoChildren) "/" "INBOX"' in reply
    assert b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"' in reply
    assert b'* LIST (\\HasChildren) "/" "Work"' in reply
    assert b'* LIST (\\HasNoChildren) "/" "Work/2024/Q1"' in reply
    assert all(b'Work/2024"' not in line for line in reply)
    assert s.lines('d LIST "" %/%') == [
        b'* LIST (\\Noselect \\HasChildren) "/" "Work/2024"',
        b"d OK List completed.",
    ]
    assert s.lines('e LIST "Work/" %') == [
        b'* LIST (\\Noselect \\HasChildren) "/" "Work/2024"',
        b"e OK List completed.",
    ]
    assert s.send('f LIST "" ""') == b'* LIST (\\Noselect) "/" ""\r\nf OK List completed.\r\n'
    assert s.lines('g LIST "" inbox')[0] == b'* LIST (\\HasNoChildren) "/" "INBOX"'


def test_list_extended_special_use_and_subscribed(s: Session) -> None:
    """LIST (SPECIAL-USE) lists only special-use folders; RETURN (SUBSCRIBED) marks them."""
    reply = s.lines('a LIST (SPECIAL-USE) "" * RETURN (SUBSCRIBED)')
    assert reply[-1] == b"a OK List completed."
    assert len(reply) == 6
    assert b'* LIST (\\HasNoChildren \\Trash \\Subscribed) "/" "Trash"' in reply
    s.send("b UNSUBSCRIBE Trash")
    assert b'* LIST (\\HasNoChildren \\Trash) "/" "Trash"' in s.lines(
        'c LIST "" * RETURN (SUBSCRIBED)'
    )
    assert s.lines('d LIST (SUBSCRIBED) "" T*') == [b"d OK List completed."]


def test_lsub_subscribe_unsubscribe(s: Session) -> None:
    """SUBSCRIBE adds a name to LSUB (it need not exist); UNSUBSCRIBE removes it."""
    assert s.send("a SUBSCRIBE Later") == b"a OK Subscribe completed.\r\n"
    assert b'* LSUB () "/" "Later"' in s.lines('b LSUB "" *')
    assert s.send("c UNSUBSCRIBE Later") == b"c OK Unsubscribe completed.\r\n"
    assert b'* LSUB () "/" "Later"' not in s.lines('d LSUB "" *')


def test_create_delete_rename_hierarchy(s: Session, world: World) -> None:
    """CREATE makes parents; RENAME moves children along; DELETE keeps children;
    errors carry ALREADYEXISTS / NONEXISTENT / CANNOT."""
    assert s.send("a CREATE Projects/Alpha/") == b"a OK Create completed.\r\n"
    assert s.send("b CREATE Projects") == b"b NO [ALREADYEXISTS] Mailbox already exists\r\n"
    assert s.send("c RENAME Projects Archive/Old") == b"c OK Rename completed.\r\n"
    assert s.send("c RENAME Archive/Old Sent").startswith(b"c NO [ALREADYEXISTS]")
    names = [f.name for f in world.mailbox().list_folders()]
    assert "Archive/Old/Alpha" in names and "Projects" not in names
    assert s.send("d DELETE nosuch") == b"d NO [NONEXISTENT] Mailbox doesn't exist: nosuch\r\n"
    assert s.send("e DELETE INBOX").startswith(b"e NO [CANNOT]")
    assert s.send("f CREATE a..b").startswith(b"f NO [CANNOT]")
    assert s.send("g DELETE Archive/Old") == b"g OK Delete completed.\r\n"
    assert "Archive/Old/Alpha" in [f.name for f in world.mailbox().list_folders()]


def test_mailbox_names_are_modified_utf7_on_the_wire(s: Session, world: World) -> None:
    """A client's mUTF-7 name is stored as Unicode and listed in mUTF-7."""
    assert s.send("a CREATE Entw&APw-rfe") == b"a OK Create completed.\r\n"
    assert "Entwürfe" in [f.name for f in world.mailbox().list_folders()]
    assert b'* LIST (\\HasNoChildren) "/" "Entw&APw-rfe"' in s.lines('b LIST "" Entw*')
    assert s.send("c CREATE &Jjo-bad&").startswith(b"c NO [CANNOT]")  # as Dovecot


def test_eight_bit_mailbox_names_are_refused(s: Session, world: World) -> None:
    """A raw UTF-8 name (as mbsync 1.4 sends) is not valid mUTF-7: NO [CANNOT],
    as Dovecot answers, and nothing is created under a translated name."""
    before = sorted(f.name for f in world.mailbox().list_folders())
    assert s.send('a CREATE "Bücher"') == (b"a NO [CANNOT] Mailbox name is not valid mUTF-7\r\n")
    assert sorted(f.name for f in world.mailbox().list_folders()) == before


def test_status(s: Session) -> None:
    """STATUS reports the requested items from the index."""
    assert s.send("a STATUS INBOX (MESSAGES UNSEEN UIDNEXT RECENT)") == (
        b'* STATUS "INBOX" (MESSAGES 1 UNSEEN 1 UIDNEXT 2 RECENT 0)\r\na OK Status completed.\r\n'
    )
    assert s.send("b STATUS INBOX (BOGUS)").startswith(b"b BAD")
    assert s.send("c STATUS nosuch (MESSAGES)").startswith(b"c NO [NONEXISTENT]")


def test_partial_command_is_acknowledged_at_once(s: Session, world: World) -> None:
    """A read that leaves a command incomplete with nothing to answer (an
    APPEND literal whose CRLF has not come yet) takes the socket out of
    delayed-ACK mode (TCP_QUICKACK): a client that sends the CRLF in a
    second write (imaplib) is not held 40 ms by Nagle. A read answered
    with a continuation or a reply needs no extra ACK."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    ours, _ = listener.accept()
    listener.close()
    try:
        s.transport.getHandle = lambda: ours  # type: ignore[method-assign]

        def quickack() -> bool:
            return bool(ours.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK))

        ours.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
        assert s.send("a APPEND INBOX {8}") == b"+ OK\r\n"
        assert not quickack()
        assert s.send(b"Hi\r\n\r\nyo") == b""
        assert quickack()
        ours.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
        assert s.send(b"\r\n").startswith(b"a OK [APPENDUID")
        assert not quickack()
        assert s.send(b"b NO") == b""
        assert quickack()
    finally:
        ours.close()
        client.close()


def test_append_with_flags_date_and_appenduid(s: Session, world: World) -> None:
    """APPEND stores the literal with its flags and date; APPENDUID names the new UID;
    a missing mailbox is TRYCREATE; flags and date are optional."""
    folder = world.mailbox().folder("INBOX")
    assert s.send('a APPEND INBOX (\\Seen $Work) "05-Jan-2024 10:00:00 +0100" {8}') == b"+ OK\r\n"
    assert s.send("Hi\r\n\r\nyo") == (
        b"a OK [APPENDUID %d 2] Append completed.\r\n" % folder.uidvalidity
    )
    info = folder.get(2)
    assert info.flags == {"\\Seen"} and info.keywords == {"$Work"}
    assert info.internal_date == 1704445200.0
    assert folder.read(2) == b"Hi\n\nyo"
    assert s.send(b"b APPEND INBOX {3+}\r\nabc\r\n").startswith(b"b OK [APPENDUID")
    assert s.send(b"c APPEND Nope {3+}\r\nabc\r\n") == (
        b"c NO [TRYCREATE] Mailbox doesn't exist: Nope\r\n"
    )
    assert s.send(b"d APPEND INBOX (\\Recent) {3+}\r\nabc\r\n").startswith(b"d BAD")


# messages ---------------------------------------------------------------------


def test_store_forms(s: Session) -> None:
    """STORE FLAGS replaces, +FLAGS adds, -FLAGS removes; UID STORE includes UID."""
    s.select()
    assert s.send("a STORE 1 FLAGS (\\Seen \\Flagged)") == (
        b"* 1 FETCH (FLAGS (\\Flagged \\Seen))\r\na OK Store completed.\r\n"
    )
    assert s.send("b STORE 1 -FLAGS \\Seen") == (
        b"* 1 FETCH (FLAGS (\\Flagged))\r\nb OK Store completed.\r\n"
    )
    assert s.send("c UID STORE 1 +FLAGS ($Label1)").endswith(  # after FLAGS for $Label1
        b"* 1 FETCH (FLAGS ($Label1 \\Flagged) UID 1)\r\nc OK Store completed.\r\n"
    )
    assert s.send("d STORE 1 BOGUS (\\Seen)").startswith(b"d BAD")


def test_store_unchangedsince(s: Session, world: World) -> None:
    """UNCHANGEDSINCE older than the message's modseq changes nothing: [MODIFIED]."""
    s.select()
    modseq = world.mailbox().folder("INBOX").get(1).modseq
    assert s.send(f"a STORE 1 (UNCHANGEDSINCE {modseq - 1}) +FLAGS (\\Seen)") == (
        b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % modseq  # the first CONDSTORE command
        + b"a OK [MODIFIED 1] Conditional STORE failed.\r\n"
    )
    reply = s.send(f"b STORE 1 (UNCHANGEDSINCE {modseq}) +FLAGS (\\Seen)")
    assert reply.startswith(b"* 1 FETCH (FLAGS (\\Seen) MODSEQ (")


def test_copy_and_move_with_copyuid(s: Session, world: World) -> None:
    """COPY answers COPYUID; MOVE sends COPYUID untagged then EXPUNGE; a missing target
    is TRYCREATE."""
    archive = world.mailbox().folder("Archive")
    s.select()
    assert s.send("a COPY 1 Archive") == (
        b"a OK [COPYUID %d 1 1] Copy completed.\r\n" % archive.uidvalidity
    )
    assert s.send("b MOVE 1 Archive") == (
        b"* OK [COPYUID %d 1 2] Moved UIDs.\r\n* 1 EXPUNGE\r\nb OK Move completed.\r\n"
        % archive.uidvalidity
    )
    assert [m.uid for m in archive.messages()] == [1, 2]
    assert s.send("c COPY 1:* Archive") == b"c OK No messages found.\r\n"
    s.send(b"d APPEND INBOX {3+}\r\nabc\r\n")
    assert s.send("e UID MOVE 2 Nope") == b"e NO [TRYCREATE] Mailbox doesn't exist.\r\n"


def test_expunge_uid_expunge_close_unselect(s: Session, world: World) -> None:
    """EXPUNGE removes \\Deleted messages; UID EXPUNGE only those in the set; CLOSE
    expunges silently; UNSELECT does not expunge."""
    folder = world.mailbox().folder("INBOX")
    for _ in range(3):
        folder.append(MSG, ["\\Deleted"])
    s.select()
    assert s.send("a UID EXPUNGE 2:3") == (
        b"* 3 EXPUNGE\r\n* 2 EXPUNGE\r\na OK Expunge completed.\r\n"
    )
    assert s.send("b UNSELECT") == b"b OK Unselect completed.\r\n"
    assert [m.uid for m in folder.messages()] == [1, 4]
    s.select()
    assert s.send("c CLOSE") == b"c OK Close completed.\r\n"
    assert [m.uid for m in folder.messages()] == [1]
    assert s.send("d EXPUNGE").startswith(b"d BAD")


def test_check(s: Session) -> None:
    """CHECK is allowed in the selected state and answers OK."""
    s.select()
    assert s.send("a CHECK") == b"a OK Check completed.\r\n"


def test_reading_pauses_only_when_input_piles_up(s: Session) -> None:
    """While the client does not read our responses, commands wait; the socket is paused
    only after a backlog of input (a TLS handshake can still read), and both resume."""
    s.proto.pauseProducing()
    assert s.transport.producerState == "producing"
    assert s.send("a NOOP") == b""
    s.proto.dataReceived(b"b NOOP\r\n" * 40000)
    assert s.transport.producerState == "paused"
    s.proto.resumeProducing()
    assert s.transport.producerState == "producing"
    reply = s.lines(b"")
    assert reply[0] == b"a OK NOOP completed." and len(reply) == 40001


def test_random_input_never_raises(world: World) -> None:
    """Seeded random commands built from IMAP words and junk get BAD/NO/OK answers;
    nothing is logged as an unexpected error and the server keeps answering."""
    import random

    rng = random.Random(4242)
    words = [
        "FETCH", "STORE", "SEARCH", "UID", "SELECT", "LIST", "APPEND", "COPY", "MOVE",
        "1:*", "*", "0", "2", "(", ")", "[", "]", "BODY[", "BODY[1.2.MIME]<0.5>", '"x',
        '"\\\\"', "{3}", "{2+}", "NIL", "\\Seen", "+FLAGS", "INBOX", "%", "OR", "NOT",
        "HEADER", "CHARSET", "\x00", "\xff", "(UNCHANGEDSINCE 1)", "RETURN", "(QRESYNC (1 2))",
    ]  # fmt: skip
    session = world.connect()
    session.login()
    session.select()
    for n in range(400):
        line = f"t{n} " + " ".join(rng.choice(words) for _ in range(rng.randint(0, 6)))
        session.proto.bad_commands = 0  # stay under the hard error limit
        session.send(line.encode("latin-1") + b"\r\n")
        session.send(b"ab\r\n")  # feeds any literal that was announced
    assert session.send("z NOOP").endswith(b"z OK NOOP completed.\r\n")
    assert not [e for e in world.events if e.get("log_failure") is not None]


def test_too_many_login_attempts_are_refused(world: World) -> None:
    """A LOGIN beyond pymta_auth_client_concurrency_limit attempts in progress
    from one address gets NO [UNAVAILABLE] at once; a session that hangs up
    while its login waits for the penalty withdraws it."""
    world.checker.throttle.concurrency_limit = 1
    first = world.connect("192.0.2.200")
    first.send("a LOGIN alice@example.org wrong")
    world.clock.advance(1)
    assert first.read() == b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    assert first.send("b LOGIN alice@example.org secret") == b""  # waits for the penalty
    second = world.connect("192.0.2.200")
    assert second.send("c LOGIN alice@example.org secret") == (
        b"c NO [UNAVAILABLE] Too many login attempts from your address, try later.\r\n"
    )
    first.drop()
    assert world.checker.throttle.in_progress("192.0.2.200") == 0
    second.send("d LOGIN alice@example.org secret")
    world.clock.advance(0.5)
    assert second.read().startswith(b"d OK [CAPABILITY ")


def test_connections_before_login_are_capped_per_client(tmp_path: Path) -> None:
    """Beyond imapd_max_login_ip_connections connections not logged in yet from
    one address, the next gets * BYE instead of a greeting and is closed;
    logged-in sessions and other addresses do not count, and a closed
    connection frees its place."""
    world = World(tmp_path, settings=IMAPSettings(hostname="h", max_login_ip_connections=2))
    first = world.connect("192.0.2.200")
    second = world.connect("192.0.2.200")
    third = world.connect("192.0.2.200")
    assert first.greeting.startswith(b"* OK ") and second.greeting.startswith(b"* OK ")
    assert third.greeting == b"* BYE Too many connections from your address, try later.\r\n"
    assert third.transport.disconnecting
    third.drop()
    assert world.connect("192.0.2.201").greeting.startswith(b"* OK ")
    first.login()  # logged in: no longer counted
    assert world.connect("192.0.2.200").greeting.startswith(b"* OK ")
    assert world.connect("192.0.2.200").greeting.startswith(b"* BYE ")
    second.drop()  # frees its place
    assert world.connect("192.0.2.200").greeting.startswith(b"* OK ")
    lines = world.log_lines()
    assert any("Disconnected (too many connections from this address)" in line for line in lines)
