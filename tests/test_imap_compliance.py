"""IMAP behaviours Dovecot has and clients (and Dovecot's imaptest) rely on:
one transcript per finding, over StringTransport and Clock, on the Maildir
store and, where the store matters, on the memory store too."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock

from pymta.mailstore.maildir import MaildirStore
from tests.test_imap_harness import Session, World

MSG = b"From: a@example.org\nSubject: hi\n\nhello\n"


@pytest.fixture(params=["maildir", "memory"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> World:
    if request.param == "maildir":
        return World(tmp_path, store=MaildirStore(Clock(), "host", fsync=False))
    return World(tmp_path)


def session(world: World) -> Session:
    s = world.connect()
    s.login()
    return s


# \Recent ---------------------------------------------------------------------


def test_appended_mail_is_recent_examine_keeps_it_select_claims_it(world: World) -> None:
    """Mail added by APPEND is \\Recent: EXAMINE and STATUS count it without
    taking it away, the first SELECT reports and claims it, STATUS then says 0
    (RFC 3501 2.3.2, 6.3.2; imaptest's select group)."""
    s = session(world)
    assert s.send("c CREATE box").endswith(b"c OK Create completed.\r\n")
    for tag in ("a1", "a2"):
        assert s.send(f"{tag} APPEND box {{{len(MSG)}+}}\r\n".encode() + MSG + b"\r\n").startswith(
            f"{tag} OK".encode()
        )
    examined = s.send("e EXAMINE box")
    assert b"* 2 EXISTS\r\n* 2 RECENT\r\n" in examined
    assert b"* 1 FETCH (FLAGS (\\Recent))" in s.send("f FETCH 1 FLAGS")
    s.send("x CLOSE")
    assert b"(MESSAGES 2 RECENT 2)" in s.send("t STATUS box (MESSAGES RECENT)")
    selected = s.send("s SELECT box")
    assert b"* 2 EXISTS\r\n* 2 RECENT\r\n" in selected
    s.send("x CLOSE")
    assert b"(RECENT 0)" in s.send("t STATUS box (RECENT)")
    again = s.send("s SELECT box")
    assert b"* 0 RECENT\r\n" in again


def test_copied_mail_is_recent_in_the_session_that_has_the_target_selected(
    world: World,
) -> None:
    """COPY makes \\Recent messages, flags kept: another session with the
    target selected hears EXISTS and RECENT and FETCHes \\Recent with the
    copied flags (imaptest's copy group)."""
    one = session(world)
    two = session(world)
    one.select()
    for n in range(2):
        one.send(f"a{n} APPEND INBOX {{{len(MSG)}+}}\r\n".encode() + MSG + b"\r\n")
    one.send("n NOOP")
    one.send("f STORE 1 FLAGS (\\Seen)")
    two.send("c CREATE box")
    two.select("box")
    assert one.send("c COPY 1:2 box").startswith(b"c OK [COPYUID ")
    assert two.send("n NOOP") == b"* 2 EXISTS\r\n* 2 RECENT\r\nn OK NOOP completed.\r\n"
    fetched = two.send("f FETCH 1:2 FLAGS")
    assert b"* 1 FETCH (FLAGS (\\Recent \\Seen))" in fetched
    assert b"* 2 FETCH (FLAGS (\\Recent))" in fetched


# keywords announced in FLAGS ---------------------------------------------------


def test_store_of_a_new_keyword_announces_flags_first(world: World) -> None:
    """A STORE that makes a keyword the mailbox did not have sends ``* FLAGS``
    and ``* OK [PERMANENTFLAGS ...]`` before the FETCH that shows it, once
    (RFC 3501 7.2.6; imaptest: "Keyword used without being in FLAGS")."""
    world.mailbox().folder("INBOX").append(MSG)
    s = session(world)
    s.select()
    assert s.lines("a STORE 1 +FLAGS ($Work)") == [
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)",
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work \\*)]"
        b" Flags permitted.",
        b"* 1 FETCH (FLAGS ($Work \\Recent))",
        b"a OK Store completed.",
    ]
    assert s.lines("b STORE 1 FLAGS ($Work)") == [
        b"* 1 FETCH (FLAGS ($Work \\Recent))",
        b"b OK Store completed.",
    ]


def test_keyword_made_by_another_session_is_announced_before_its_fetch(world: World) -> None:
    """Another session's new keyword reaches this one as FLAGS, PERMANENTFLAGS,
    then the FETCH (imaptest stress: no keyword outside FLAGS)."""
    world.mailbox().folder("INBOX").append(MSG)
    world.mailbox().folder("INBOX").claim_recent()
    one, two = session(world), session(world)
    one.select()
    two.select()
    two.send("a STORE 1 +FLAGS.SILENT ($Later)")
    assert one.lines("n NOOP") == [
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Later)",
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Later \\*)]"
        b" Flags permitted.",
        b"* 1 FETCH (UID 1 FLAGS ($Later))",
        b"n OK NOOP completed.",
    ]


def test_fetch_flags_before_the_update_announces_a_new_keyword_first(world: World) -> None:
    """A FETCH FLAGS run before this session heard of another's new keyword
    (no NOOP between) sends FLAGS and PERMANENTFLAGS before the FETCH that
    shows it (imaptest stress, 50 clients)."""
    world.mailbox().folder("INBOX").append(MSG)
    world.mailbox().folder("INBOX").claim_recent()
    one, two = session(world), session(world)
    one.select()
    two.select()
    two.send("a STORE 1 +FLAGS.SILENT ($Later)")
    lines = one.lines("f FETCH 1 FLAGS")
    assert lines[0] == b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Later)"
    assert lines[1].startswith(b"* OK [PERMANENTFLAGS (")
    assert b"* 1 FETCH (FLAGS ($Later))" in lines
    assert one.lines("g FETCH 1 FLAGS")[0] == b"* 1 FETCH (FLAGS ($Later))"


# MIME: folded parameters, quoted-printable ------------------------------------

FOLDED = (
    b"From: user@example.org\nMime-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="foo\n bar"\n\n'
    b"prologue\n\n--foo bar\nContent-Type: text/x-myown; charset=us-ascii\n\nhello\n\n"
    b"--foo bar--\n"
)


def test_boundary_folded_inside_quotes_is_unfolded(world: World) -> None:
    """``boundary="foo<CRLF> bar"`` is the boundary ``foo bar`` (RFC 5322
    2.2.3 unfolding), so the multipart has its part, and no raw CRLF reaches
    BODYSTRUCTURE (imaptest fetch-body-mime, fetch-bodystructure)."""
    world.mailbox().folder("INBOX").append(FOLDED)
    s = session(world)
    s.select()
    assert s.lines("f FETCH 1 BODYSTRUCTURE")[0] == (
        b'* 1 FETCH (BODYSTRUCTURE (("TEXT" "X-MYOWN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 7 1'
        b' NIL NIL NIL NIL) "MIXED" ("BOUNDARY" "foo bar") NIL NIL NIL))'
    )
    assert s.lines("g FETCH 1 BODY.PEEK[1]")[0] == b"* 1 FETCH (BODY[1] {7}"


QP = (
    b"Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n"
    b"hello  \nbar=\n\nfoo\t=\nbar\nfoo\t \t= \n=62\nfoo = \t\nbar\nfoo  \nfoo_bar\n"
)


def test_binary_quoted_printable_drops_trailing_white_space(world: World) -> None:
    """BINARY undoes quoted-printable as RFC 2045 6.7 says: white space at a
    line's end is deleted, so ``= `` and ``=<tab>`` there are soft line
    breaks (imaptest fetch-binary-mime-qp)."""
    world.mailbox().folder("INBOX").append(QP)
    s = session(world)
    s.select()
    decoded = b"hello\r\nbar\r\nfoo\tbar\r\nfoo\t \tb\r\nfoo bar\r\nfoo\r\nfoo_bar\r\n"
    assert s.send("f FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])") == (
        b"* 1 FETCH (BINARY.SIZE[1] %d BINARY[1] {%d}\r\n%s)\r\nf OK Fetch completed.\r\n"
        % (len(decoded), len(decoded), decoded)
    )


# binary content: literal8 APPEND, NUL in literals ------------------------------

BINARY = (
    b"From: user@example.org\r\nMime-Version: 1.0\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
)
OCTETS = b"\x00-\xe4\n\r\n\n"


def test_literal8_append_keeps_binary_octets_exactly(world: World) -> None:
    """A binary part appended in a literal8 is stored as base64: BODY[1] is
    7-bit text with no NUL, BINARY[1] gives back the very octets (bare LF and
    CRLF kept apart) in a literal8 (RFC 3516 4.4; imaptest append-binary)."""
    s = session(world)
    message = BINARY + OCTETS
    assert s.send(b"a APPEND INBOX ~{%d+}\r\n" % len(message) + message + b"\r\n").startswith(
        b"a OK [APPENDUID "
    )
    s.select()
    body = s.send("f FETCH 1 BODY.PEEK[1]")
    assert b"\0" not in body and b"AC3kCg0KCg==" in body
    assert s.send("g FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])") == (
        b"* 1 FETCH (BINARY.SIZE[1] 7 BINARY[1] ~{7}\r\n%s)\r\ng OK Fetch completed.\r\n" % OCTETS
    )
    header = s.send("h FETCH 1 BODY.PEEK[HEADER.FIELDS (CONTENT-TRANSFER-ENCODING)]")
    assert b"Content-Transfer-Encoding: base64" in header


def test_nul_in_stored_text_is_never_sent_in_a_plain_literal(world: World) -> None:
    """A NUL that reached the store another way (a plain literal, SMTP) goes
    out as 0x80 in BODY[] and RFC822 (RFC 3501 4.3, as Dovecot)."""
    world.mailbox().folder("INBOX").append(b"Subject: x\n\na\x00b\n")
    s = session(world)
    s.select()
    reply = s.send("f FETCH 1 (BODY.PEEK[TEXT] RFC822)")
    assert b"\0" not in reply and reply.count(b"a\x80b\r\n") == 2


# atoms -----------------------------------------------------------------------


def test_unclosed_bracket_is_an_atom_character(world: World) -> None:
    """``[`` needs no ``]`` outside a FETCH section (RFC 3501 9: only ``]`` is
    special): SELECT a[b is NO (no such mailbox), LIST "" a[* lists, CREATE
    makes it; an unclosed section in FETCH stays BAD (imaptest atoms)."""
    s = session(world)
    assert s.send("a SELECT a[b").startswith(b"a NO ")
    assert s.send("a2 SELECT !#$&'+,-.0123456789:;<=>?@^_`|[}") == (
        b"a2 NO [CANNOT] Mailbox name is not valid mUTF-7\r\n"  # "&'+,-" is no mUTF-7
    )
    assert s.send("b CREATE a[b") == b"b OK Create completed.\r\n"
    assert s.lines('c LIST "" a[*') == [
        b'* LIST (\\HasNoChildren) "/" "a[b"',
        b"c OK List completed.",
    ]
    s.select()
    assert s.send("d FETCH 1 BODY[HEADER").startswith(b"d BAD ")


# addresses: ENVELOPE groups and comments, SEARCH FROM ---------------------------


def test_envelope_keeps_groups_routes_and_comment_names(world: World) -> None:
    """ENVELOPE gives RFC 5322 groups as start/end markers, a source route,
    and a comment as the name of a mailbox that has none (RFC 3501 7.4.2,
    as Dovecot; imaptest fetch-envelope)."""
    inbox = world.mailbox().folder("INBOX")
    inbox.append(
        b"From: user@domain (Real Name)\n"
        b"To: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\n"
        b"Cc: group:;, group2: (foo) ;\n"
        b"Bcc: <@route:user@domain>\n\nbody\n"
    )
    s = session(world)
    s.select()
    real = b'(("Real Name" NIL "user" "domain"))'
    assert s.lines("f FETCH 1 ENVELOPE")[0] == (
        b"* 1 FETCH (ENVELOPE (NIL NIL " + real + b" " + real + b" " + real + b" "
        b'((NIL NIL "group" NIL)(NIL NIL "g1" "d1.org")(NIL NIL "g2" "d2.org")(NIL NIL NIL NIL)'
        b'(NIL NIL "group2" NIL)(NIL NIL "g3" "d3.org")(NIL NIL NIL NIL)) '
        b'((NIL NIL "group" NIL)(NIL NIL NIL NIL)(NIL NIL "group2" NIL)(NIL NIL NIL NIL)) '
        b'((NIL "@route" "user" "domain")) NIL NIL))'
    )


def test_search_from_sees_through_comments_in_addresses(world: World) -> None:
    """SEARCH FROM matches an address whose local part and domain are split
    by comments, as the address itself (imaptest search-addresses)."""
    inbox = world.mailbox().folder("INBOX")
    inbox.append(b"From: <user-from (comment)@ (comment) domain.org>\n\nb\n")
    inbox.append(b"From: RealFrom <user-from@domain.org>\n\nb\n")
    inbox.append(b"From: other@domain.org (user-from@domain.org is not me)\n\nb\n")
    s = session(world)
    s.select()
    assert s.lines("f SEARCH FROM user-from@domain.org")[0] == b"* SEARCH 1 2 3"
    assert s.lines("g SEARCH FROM realfrom")[0] == b"* SEARCH 2"
    assert s.lines("h SEARCH FROM nobody@domain.org")[0] == b"* SEARCH"


# LSUB ------------------------------------------------------------------------


def test_lsub_lists_unsubscribed_parents_of_subscribed_children_noselect(
    world: World,
) -> None:
    """LSUB with % gives the parent of a subscribed child as \\Noselect when
    the parent itself is not subscribed, whether it exists or not, and never
    the child below % (RFC 3501 6.3.9; imaptest subscribe)."""
    s = session(world)
    for name in ("box", "box/test", "box/test2", "box/test2/test"):
        s.send(f"c CREATE {name}")
    s.send("u SUBSCRIBE box/test")
    s.send("u SUBSCRIBE box/test2/test")
    s.send("u SUBSCRIBE box/test3/test3")
    assert sorted(s.lines('l LSUB "" box/%')[:-1]) == [
        b'* LSUB (\\HasNoChildren) "/" "box/test"',
        b'* LSUB (\\Noselect) "/" "box/test2"',
        b'* LSUB (\\Noselect) "/" "box/test3"',
    ]


# LIST-EXTENDED -----------------------------------------------------------------


def test_list_extended_recursivematch_childinfo_and_unknown_options(world: World) -> None:
    """LIST (SUBSCRIBED RECURSIVEMATCH) lists an unsubscribed name that
    matches with CHILDINFO ("SUBSCRIBED") when a subscribed descendant is
    not listed itself; unknown selection or RETURN options and RECURSIVEMATCH
    alone are BAD (RFC 5258 3, 3.5; imaptest listext)."""
    s = session(world)
    for name in ("b/t2/t1", "b/t7/t7", "b/t8/t8", "b/t8/t9"):
        s.send(f"c CREATE {name}")
    for name in ("b/t2/t1", "b/t7/t7", "b/t8/t8", "b/t8/t9"):
        s.send(f"u SUBSCRIBE {name}")
    assert s.lines('a LIST (SUBSCRIBED RECURSIVEMATCH) "" b/t2') == [
        b'* LIST (\\HasChildren) "/" "b/t2" ("CHILDINFO" ("SUBSCRIBED"))',
        b"a OK List completed.",
    ]
    assert s.lines('b LIST (SUBSCRIBED RECURSIVEMATCH) "" b*t7') == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "b/t7/t7"',
        b"b OK List completed.",
    ]
    assert sorted(s.lines('c LIST (SUBSCRIBED RECURSIVEMATCH) "" b*t8')[:-1]) == [
        b'* LIST (\\HasChildren) "/" "b/t8" ("CHILDINFO" ("SUBSCRIBED"))',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "b/t8/t8"',
    ]
    for bad in (
        'd LIST (IMAPTEST) "" ""',
        'd LIST (RECURSIVEMATCH) "" ""',
        'd LIST (RECURSIVEMATCH REMOTE) "" ""',
        'd LIST "" "" RETURN (IMAPTEST)',
    ):
        assert s.send(bad).startswith(b"d BAD "), bad
    assert s.send('e LIST (REMOTE) "" %').endswith(b"e OK List completed.\r\n")


# CONDSTORE / ESEARCH -------------------------------------------------------------


def test_first_condstore_command_reports_highestmodseq_and_esearch_min_max_modseq(
    world: World,
) -> None:
    """The first CONDSTORE-enabling command in a selected mailbox sends
    ``* OK [HIGHESTMODSEQ n]``; ESEARCH MIN or MAX with MODSEQ gives the
    modseq of that message, ALL the highest of all found (RFC 7162 3.1,
    3.1.5; imaptest esearch-condstore)."""
    inbox = world.mailbox().folder("INBOX")
    for _ in range(4):
        inbox.append(MSG)
    s = session(world)
    s.select()
    top = inbox.highest_modseq
    assert s.lines("f FETCH 1 MODSEQ")[0] == b"* OK [HIGHESTMODSEQ %d] Highest" % top
    assert not s.send("f2 FETCH 1 MODSEQ").startswith(b"* OK [HIGHESTMODSEQ")
    modseq = {}
    for n in (1, 3, 2, 4):
        s.send(f"s STORE {n} +FLAGS.SILENT (\\Seen)")
        modseq[n] = inbox.get(n).modseq
    search = 'SEARCH RETURN ({}) 1:3 MODSEQ "/flags/\\\\seen" all 1'
    assert s.lines("a " + search.format("MIN"))[0] == (
        b'* ESEARCH (TAG "a") MIN 1 MODSEQ %d' % modseq[1]
    )
    assert s.lines("b " + search.format("MAX"))[0] == (
        b'* ESEARCH (TAG "b") MAX 3 MODSEQ %d' % modseq[3]
    )
    assert s.lines("c " + search.format("MIN MAX"))[0] == (
        b'* ESEARCH (TAG "c") MIN 1 MAX 3 MODSEQ %d' % max(modseq[1], modseq[3])
    )
    assert s.lines("d " + search.format("ALL"))[0] == (
        b'* ESEARCH (TAG "d") ALL 1:3 MODSEQ %d' % modseq[2]
    )


# ID before login -----------------------------------------------------------------


def test_id_at_rfc2971_maxima_is_accepted_before_login(world: World) -> None:
    """ID with 30 fields of 30 octets and values of 1024 (RFC 2971 3.3's
    maxima, a 31.8 KB line) is answered before login, as Dovecot does; a
    longer line is still refused (imaptest id)."""
    s = world.connect()
    pairs = " ".join(f'"{chr(97 + i % 26)}{i:029d}" "{"1" * 1024}"' for i in range(30))
    command = f"a ID ({pairs})"
    assert 31_000 < len(command) < 33_000
    assert s.send(command).endswith(b"a OK ID completed.\r\n")
    too_long = "b ID (" + '"x" "' + "1" * 40_000 + '")'
    assert s.send(too_long) == b"b BAD Command line too long.\r\n"


# EXPUNGEISSUED -----------------------------------------------------------------


def test_fetch_of_only_expunged_messages_is_no_with_dovecots_words(world: World) -> None:
    """A FETCH whose every message another session expunged is ``NO
    [EXPUNGEISSUED] Some of the requested messages no longer exist.``; with
    some data back it is OK, "Some messages were already expunged." (RFC
    5530; Dovecot's texts, which imaptest's stress run accepts)."""
    world.mailbox().folder("INBOX").append(MSG)
    world.mailbox().folder("INBOX").append(MSG)
    a, b = session(world), session(world)
    a.select()
    b.select()
    b.send("s STORE 1 +FLAGS.SILENT (\\Deleted)")
    b.send("e EXPUNGE")
    assert a.lines("f FETCH 1 BODY.PEEK[]")[-1] == (
        b"f NO [EXPUNGEISSUED] Some of the requested messages no longer exist."
    )
    assert a.lines("g FETCH 1:2 FLAGS")[-1] == (
        b"g OK [EXPUNGEISSUED] Some messages were already expunged."
    )
