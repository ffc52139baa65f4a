"""IMAP4rev2 (RFC 9051) and the extensions that came with it, over StringTransport:
ENABLE IMAP4rev2, UTF-8 mailbox names, no \\Recent, ESEARCH (RFC 4731), SEARCHRES
(RFC 5182), LIST \\NonExistent and LIST-STATUS (RFC 5819), STATUS SIZE / DELETED,
BINARY (RFC 3516)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymta.mailstore.memory import MemoryFolder
from tests.test_imap_harness import Session, World

PLAIN = b"From: a@example.org\nSubject: apples\n\nhello\n"
MIME = (
    b"From: b@example.org\nSubject: pears\nMIME-Version: 1.0\n"
    b"Content-Type: multipart/mixed; boundary=XX\n\n"
    b"--XX\nContent-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: quoted-printable\n\ncaf=C3=A9 soft=\nbreak\nline\n"
    b"--XX\nContent-Type: application/octet-stream\n"
    b"Content-Transfer-Encoding: base64\n\nAAECAwQ=\n"
    b"--XX\nContent-Type: text/plain\nContent-Transfer-Encoding: x-uuencode\n\nbegin\n"
    b"--XX--\n"
)


SENT = (PLAIN, MIME, PLAIN.replace(b"apples", b"plums"))


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path)
    inbox = w.mailbox().folder("INBOX")
    for message in SENT:
        inbox.append(message)
    inbox.claim_recent()  # old mail: no \Recent in the transcripts
    return w


def rev2(world: World) -> Session:
    session = world.connect()
    session.login()
    assert session.send("e ENABLE IMAP4rev2") == b"* ENABLED IMAP4rev2\r\ne OK Enabled.\r\n"
    return session


def rev1(world: World) -> Session:
    session = world.connect()
    session.login()
    return session


# capabilities and ENABLE ---------------------------------------------------------


def test_capabilities_advertise_rev2_and_its_extensions(world: World) -> None:
    """CAPABILITY lists IMAP4rev2 next to IMAP4rev1 and ESEARCH, SEARCHRES, BINARY,
    STATUS=SIZE and LIST-STATUS."""
    caps = rev1(world).send("c CAPABILITY").split(b"\r\n")[0].split()
    assert caps[2:4] == [b"IMAP4rev1", b"IMAP4rev2"]
    for name in (b"ESEARCH", b"SEARCHRES", b"BINARY", b"STATUS=SIZE", b"LIST-STATUS"):
        assert name in caps


def test_enable_rev2_is_reported_once(world: World) -> None:
    """ENABLE IMAP4rev2 answers ENABLED IMAP4rev2 the first time, nothing after (RFC 5161)."""
    s = rev2(world)
    assert s.send("f ENABLE IMAP4rev2") == b"* ENABLED\r\nf OK Enabled.\r\n"


# UTF-8 mailbox names ----------------------------------------------------------


def test_utf8_names_after_enable_and_mutf7_for_rev1_sessions(world: World) -> None:
    """Before ENABLE an 8-bit name is NO [CANNOT]; after it CREATE takes UTF-8 and LIST
    shows UTF-8, while a rev1 session sees the same folder in modified UTF-7."""
    s = rev1(world)
    assert s.send('a CREATE "Blåbær"').startswith(b"a NO [CANNOT]")
    assert s.send("e ENABLE IMAP4rev2").startswith(b"* ENABLED IMAP4rev2")
    assert s.send('b CREATE "Blåbær"') == b"b OK Create completed.\r\n"
    assert '* LIST (\\HasNoChildren) "/" "Blåbær"'.encode() in s.lines('c LIST "" "Bl*"')
    assert s.send('d SELECT "Blåbær"').endswith(b"d OK [READ-WRITE] Select completed.\r\n")
    other = rev1(world)
    assert b'* LIST (\\HasNoChildren) "/" "Bl&AOU-b&AOY-r"' in other.lines('c LIST "" "Bl*"')


def test_rev2_names_are_never_decoded_as_mutf7(world: World) -> None:
    """After ENABLE IMAP4rev2 "&" is an ampersand (RFC 6855 3): "R&D" is a folder
    named R&D, which a rev1 session sees as "R&-D"."""
    s = rev2(world)
    assert s.send('a CREATE "R&D"') == b"a OK Create completed.\r\n"
    assert b'* LIST (\\HasNoChildren) "/" "R&D"' in s.lines('b LIST "" "R*"')
    assert b'* LIST (\\HasNoChildren) "/" "R&-D"' in rev1(world).lines('b LIST "" "R*"')


def test_decomposed_utf8_name_is_stored_in_nfc(world: World) -> None:
    """A name sent in decomposed form (a + combining ring) names the NFC folder."""
    s = rev2(world)
    assert s.send('a CREATE "Å"') == b"a OK Create completed.\r\n"
    assert s.send('b CREATE "A\u030a"').startswith(b"b NO [ALREADYEXISTS]")


# no \Recent -------------------------------------------------------------------


def test_rev2_select_names_the_mailbox_and_reports_closed(world: World) -> None:
    """A rev2 SELECT includes LIST with the canonical name (RFC 9051 6.3.2); selecting
    again first sends OK [CLOSED] for the previous mailbox."""
    s = rev2(world)
    first = s.send("s SELECT inbox")
    assert b'* LIST () "/" "INBOX"\r\n' in first and b"[CLOSED]" not in first
    assert s.send("t EXAMINE INBOX").startswith(b"* OK [CLOSED] Previous mailbox closed.\r\n")
    assert b"[CLOSED]" not in rev1(world).send("s SELECT INBOX")


def test_rev2_select_and_updates_have_no_recent(world: World) -> None:
    """A rev2 SELECT sends no RECENT, FLAGS never show \\Recent, and new mail is
    announced with EXISTS alone, while a rev1 session still gets RECENT."""
    s = rev2(world)
    reply = s.send("s SELECT INBOX")
    assert b"* 3 EXISTS\r\n" in reply and b"RECENT" not in reply
    assert s.send("f FETCH 1 FLAGS") == b"* 1 FETCH (FLAGS ())\r\nf OK Fetch completed.\r\n"
    old = rev1(world)
    old.send("x EXAMINE INBOX")
    assert s.send("i IDLE") == b"+ idling\r\n"
    world.mailbox().folder("INBOX").append(PLAIN)
    assert s.read() == b"* 4 EXISTS\r\n"
    assert s.send("DONE") == b"i OK Idle completed.\r\n"
    assert old.send("n NOOP") == b"* 4 EXISTS\r\n* 0 RECENT\r\nn OK NOOP completed.\r\n"


def test_enable_while_selected_hides_recent_at_once(world: World) -> None:
    """ENABLE IMAP4rev2 in the selected state drops \\Recent from later FLAGS."""
    inbox = world.mailbox().folder("INBOX")
    assert isinstance(inbox, MemoryFolder)
    inbox.deliver_external(PLAIN)
    s = rev1(world)
    assert b"* 1 RECENT" in s.send("s SELECT INBOX")
    assert b"\\Recent" in s.send("f FETCH 4 FLAGS")
    s.send("e ENABLE IMAP4rev2")
    assert s.send("g FETCH 4 FLAGS") == b"* 4 FETCH (FLAGS ())\r\ng OK Fetch completed.\r\n"


# ESEARCH and SEARCHRES --------------------------------------------------------


def test_rev2_search_answers_with_esearch_all(world: World) -> None:
    """In rev2, SEARCH without RETURN is ESEARCH with ALL (RFC 9051 6.4.4), UID SEARCH
    adds UID, and no match gives the bare ESEARCH line."""
    s = rev2(world)
    s.send("s SELECT INBOX")
    assert s.lines("a SEARCH SUBJECT apples") == [
        b'* ESEARCH (TAG "a") ALL 1',
        b"a OK Search completed.",
    ]
    assert s.lines("b UID SEARCH ALL")[0] == b'* ESEARCH (TAG "b") UID ALL 1:3'
    assert s.lines("c UID SEARCH SUBJECT nothing")[0] == b'* ESEARCH (TAG "c") UID'


def test_search_return_options_for_rev1(world: World) -> None:
    """RETURN (MIN MAX COUNT) gives ESEARCH to rev1 clients; RETURN () means ALL;
    COUNT 0 is sent when nothing matches; plain SEARCH stays * SEARCH."""
    s = rev1(world)
    s.send("s SELECT INBOX")
    assert s.lines("a SEARCH RETURN (MIN MAX COUNT) NOT SUBJECT pears")[0] == (
        b'* ESEARCH (TAG "a") MIN 1 MAX 3 COUNT 2'
    )
    assert s.lines("b SEARCH RETURN () ALL")[0] == b'* ESEARCH (TAG "b") ALL 1:3'
    assert s.lines("c SEARCH RETURN (COUNT MIN) SUBJECT nothing")[0] == (
        b'* ESEARCH (TAG "c") COUNT 0'
    )
    assert s.lines("d SEARCH SUBJECT pears")[0] == b"* SEARCH 2"
    assert s.send("e SEARCH RETURN (BOGUS) ALL").startswith(b"e BAD")


def test_esearch_carries_modseq_with_a_modseq_criterion(world: World) -> None:
    """RFC 7162 3.1.5: ESEARCH with a MODSEQ criterion ends with the highest MODSEQ."""
    s = rev2(world)
    s.send("s SELECT INBOX")
    s.send("t STORE 2 +FLAGS.SILENT (\\Flagged)")
    line = s.lines("a SEARCH RETURN (ALL) MODSEQ 1")[1]  # after [HIGHESTMODSEQ]
    assert line.startswith(b'* ESEARCH (TAG "a") ALL 1:3 MODSEQ ')
    assert int(line.rsplit(b" ", 1)[1]) >= 4


def test_searchres_saves_result_for_dollar(world: World) -> None:
    """RETURN (SAVE) alone sends no ESEARCH; $ then names the found messages in FETCH
    and SEARCH; an expunged message drops out; SELECT empties $."""
    s = rev1(world)
    s.send("s SELECT INBOX")
    assert s.send("a UID SEARCH RETURN (SAVE) SUBJECT apples") == b"a OK Search completed.\r\n"
    assert s.lines("b FETCH $ (UID)") == [b"* 1 FETCH (UID 1)", b"b OK Fetch completed."]
    assert s.lines("c SEARCH RETURN (COUNT SAVE) OR $ SUBJECT plums")[0] == (
        b'* ESEARCH (TAG "c") COUNT 2'
    )
    s.send("d STORE 1 +FLAGS.SILENT (\\Deleted)")
    s.send("e EXPUNGE")
    assert s.lines("f FETCH $ (UID)") == [b"* 2 FETCH (UID 3)", b"f OK Fetch completed."]
    s.send("g SELECT INBOX")
    assert s.lines("h SEARCH RETURN (ALL) $") == [
        b'* ESEARCH (TAG "h")',
        b"h OK Search completed.",
    ]


def test_searchres_with_min_saves_only_the_minimum(world: World) -> None:
    """RFC 5182 2.4: SAVE with MIN (and no ALL or COUNT) keeps only the lowest match."""
    s = rev1(world)
    s.send("s SELECT INBOX")
    assert s.lines("a SEARCH RETURN (MIN SAVE) ALL")[0] == b'* ESEARCH (TAG "a") MIN 1'
    assert s.lines("b UID FETCH $ UID") == [b"* 1 FETCH (UID 1)", b"b OK Fetch completed."]


# LIST and STATUS --------------------------------------------------------------


def test_rev2_list_marks_missing_parents_nonexistent(world: World) -> None:
    """A parent that is not a folder is \\NonExistent \\HasChildren for rev2 (and still
    \\Noselect for rev1 clients)."""
    s = rev2(world)
    s.send("a CREATE Work/2024/Q1")
    s.send("b DELETE Work/2024")
    assert s.lines('c LIST "" %/%') == [
        b'* LIST (\\NonExistent \\HasChildren) "/" "Work/2024"',
        b"c OK List completed.",
    ]
    assert rev1(world).lines('c LIST "" %/%')[0] == (
        b'* LIST (\\Noselect \\HasChildren) "/" "Work/2024"'
    )


def test_list_status_follows_each_selectable_name(world: World) -> None:
    """LIST ... RETURN (STATUS (MESSAGES SIZE)) sends a STATUS right after each listed
    folder, none for a name that is not a folder (RFC 5819)."""
    s = rev1(world)
    s.send("a CREATE Work/2024/Q1")
    s.send("b DELETE Work/2024")
    assert s.lines('c LIST "" (INBOX Work/%) RETURN (STATUS (MESSAGES SIZE))') == [
        b'* LIST (\\HasNoChildren) "/" "INBOX"',
        b'* STATUS "INBOX" (MESSAGES 3 SIZE %d)' % sum(len(m) + m.count(b"\n") for m in SENT),
        b'* LIST (\\Noselect \\HasChildren) "/" "Work/2024"',
        b"c OK List completed.",
    ]


def test_status_size_and_deleted(world: World) -> None:
    """STATUS SIZE is the sum of RFC822.SIZE; DELETED counts \\Deleted messages."""
    s = rev2(world)
    s.send("s SELECT INBOX")
    sizes = [
        int(line.rsplit(b" ", 1)[1].rstrip(b")"))
        for line in s.lines("f FETCH 1:* RFC822.SIZE")[:-1]
    ]
    s.send("t STORE 1,3 +FLAGS.SILENT (\\Deleted)")
    assert s.lines("a STATUS INBOX (SIZE DELETED MESSAGES)")[0] == (
        b'* STATUS "INBOX" (SIZE %d DELETED 2 MESSAGES 3)' % sum(sizes)
    )


# BINARY -----------------------------------------------------------------------


def test_binary_decodes_quoted_printable_and_base64(world: World) -> None:
    """BINARY[1] undoes quoted-printable (CRLF kept), BINARY[2] base64 as a literal8
    (it has NUL), BINARY.SIZE gives the decoded sizes."""
    s = rev2(world)
    s.send("s SELECT INBOX")
    reply = s.send("a FETCH 2 (BINARY.SIZE[1] BINARY.SIZE[2] BINARY.PEEK[1] BINARY.PEEK[2])")
    text = "café softbreak\r\nline".encode()
    assert reply == (
        b"* 2 FETCH (BINARY.SIZE[1] %d BINARY.SIZE[2] 5 BINARY[1] {%d}\r\n%s"
        b" BINARY[2] ~{5}\r\n\x00\x01\x02\x03\x04)\r\na OK Fetch completed.\r\n"
        % (len(text), len(text), text)
    )


def test_binary_partial_whole_message_and_unencoded_part(world: World) -> None:
    """BINARY[2]<1.3> is a slice of the decoded bytes; BINARY[] is the message as
    BODY[] gives it; BINARY[1] of a 7-bit single part is its body."""
    s = rev2(world)
    s.send("s SELECT INBOX")
    assert s.send("a FETCH 2 BINARY.PEEK[2]<1.3>") == (
        b"* 2 FETCH (BINARY[2]<1> {3}\r\n\x01\x02\x03)\r\na OK Fetch completed.\r\n"
    )
    body = s.send("b FETCH 1 BODY.PEEK[]").replace(b"BODY[]", b"BINARY[]")
    assert s.send("c FETCH 1 BINARY.PEEK[]") == body.replace(b"b OK", b"c OK")
    assert s.send("d FETCH 1 BINARY.PEEK[1]") == (
        b"* 1 FETCH (BINARY[1] {7}\r\nhello\r\n)\r\nd OK Fetch completed.\r\n"
    )


def test_binary_sets_seen_and_peek_does_not(world: World) -> None:
    """BINARY[..] marks the message \\Seen (reported with FLAGS), BINARY.PEEK does not."""
    s = rev2(world)
    s.send("s SELECT INBOX")
    assert b"FLAGS" not in s.send("a FETCH 3 BINARY.PEEK[1]")
    assert s.send("b FETCH 3 BINARY[1]") == (
        b"* 3 FETCH (BINARY[1] {7}\r\nhello\r\n FLAGS (\\Seen))\r\nb OK Fetch completed.\r\n"
    )


def test_binary_of_unknown_encoding_is_unknown_cte(world: World) -> None:
    """A part in a transfer encoding the server cannot undo fails the FETCH with
    NO [UNKNOWN-CTE] (RFC 3516 4.3); section text like HEADER is BAD for BINARY."""
    s = rev2(world)
    s.send("s SELECT INBOX")
    assert s.send("a FETCH 2 BINARY.PEEK[3]") == (
        b"a NO [UNKNOWN-CTE] Unknown Content-Transfer-Encoding.\r\n"
    )
    assert s.send("b FETCH 2 BINARY[1.HEADER]").startswith(b"b BAD")
    assert s.send("c FETCH 2 BINARY.SIZE[1.MIME]").startswith(b"c BAD")
