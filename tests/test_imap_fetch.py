"""FETCH over StringTransport: every item, sections, partials, \\Seen, index-only paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from pymta.mailstore import mime
from pymta.mailstore.interface import FlagMode
from pymta.mailstore.maildir import MaildirStore
from tests.test_imap_harness import Session, World

NESTED = (
    b'From: Alice <alice@example.org>\nTo: bob@example.org, "Carol C" <carol@example.org>\n'
    b"Subject: nested\nX-Dup: one\nReceived: first\n folded\nx-dup: two\nMIME-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="outer"\n\npreamble\n--outer\n'
    b"Content-Type: text/plain; charset=utf-8\n\nplain body\n--outer\n"
    b'Content-Type: multipart/alternative; boundary="inner"\n\n--inner\n'
    b"Content-Type: text/plain\n\nalt one\n--inner\nContent-Type: text/html\n\n<p>two</p>\n"
    b"--inner--\n--outer\nContent-Type: message/rfc822\n\n"
    b"From: x@example.org\nSubject: inner msg\n\ninner body\n--outer--\n"
)
SIMPLE = (
    b"From: A <a@example.org>\nTo: b@example.org\nSubject: hello\n"
    b"Date: Mon, 1 Jan 2024 10:00:00 +0000\nMessage-ID: <m1@example.org>\n\nbody text\n"
)


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path)
    inbox = w.mailbox().folder("INBOX")
    inbox.append(NESTED, internal_date=1_700_000_000.0)
    inbox.append(SIMPLE, internal_date=1_700_000_100.0)
    inbox.claim_recent()  # old mail: no \Recent in the transcripts
    return w


@pytest.fixture
def s(world: World) -> Session:
    session = world.connect()
    session.login()
    session.select()
    return session


def test_bodystructure_of_nested_multipart(s: Session) -> None:
    """BODYSTRUCTURE describes nested multiparts and an encapsulated message with
    its envelope, CRLF sizes and line counts, with extension data."""
    assert s.send("f FETCH 1 BODYSTRUCTURE") == (
        b'* 1 FETCH (BODYSTRUCTURE (("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 10 1 '
        b'NIL NIL NIL NIL)(("TEXT" "PLAIN" NIL NIL NIL "7BIT" 7 1 NIL NIL NIL NIL)'
        b'("TEXT" "HTML" NIL NIL NIL "7BIT" 10 1 NIL NIL NIL NIL) "ALTERNATIVE" '
        b'("BOUNDARY" "inner") NIL NIL NIL)("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 53 '
        b'(NIL "inner msg" ((NIL NIL "x" "example.org")) ((NIL NIL "x" "example.org")) '
        b'((NIL NIL "x" "example.org")) NIL NIL NIL NIL NIL) ("TEXT" "PLAIN" NIL NIL NIL '
        b'"7BIT" 10 1 NIL NIL NIL NIL) 4 NIL NIL NIL NIL) "MIXED" ("BOUNDARY" "outer") '
        b"NIL NIL NIL))\r\nf OK Fetch completed.\r\n"
    )


def test_body_is_bodystructure_without_extensions(s: Session) -> None:
    """BODY (no section) is the non-extensible form."""
    reply = s.send("f FETCH 1 BODY")
    assert reply.startswith(b'* 1 FETCH (BODY (("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL')
    assert b' "ALTERNATIVE")(' in reply and reply.endswith(
        b' "MIXED"))\r\nf OK Fetch completed.\r\n'
    )


def test_header_fields_keep_original_bytes_order_and_duplicates(s: Session) -> None:
    """HEADER.FIELDS returns the chosen fields as sent: case, folding, order, duplicates."""
    assert s.send("f FETCH 1 BODY.PEEK[HEADER.FIELDS (x-dup received)]") == (
        b"* 1 FETCH (BODY[HEADER.FIELDS (X-DUP RECEIVED)] {52}\r\n"
        b"X-Dup: one\r\nReceived: first\r\n folded\r\nx-dup: two\r\n\r\n)\r\n"
        b"f OK Fetch completed.\r\n"
    )
    assert s.send(
        "f FETCH 1 BODY.PEEK[HEADER.FIELDS.NOT (X-Dup Received To From Content-Type)]"
    ) == (
        b"* 1 FETCH (BODY[HEADER.FIELDS.NOT (X-DUP RECEIVED TO FROM CONTENT-TYPE)] {38}\r\n"
        b"Subject: nested\r\nMIME-Version: 1.0\r\n\r\n)\r\nf OK Fetch completed.\r\n"
    )


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("1", b"BODY[1] {10}\r\nplain body"),
        ("1.MIME", b"BODY[1.MIME] {43}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"),
        ("2.1", b"BODY[2.1] {7}\r\nalt one"),
        ("2.2", b"BODY[2.2] {10}\r\n<p>two</p>"),
        ("3.HEADER", b"BODY[3.HEADER] {43}\r\nFrom: x@example.org\r\nSubject: inner msg\r\n\r\n"),
        ("3.TEXT", b"BODY[3.TEXT] {10}\r\ninner body"),
        ("3.1", b"BODY[3.1] {10}\r\ninner body"),
        ("4", b"BODY[4] {0}\r\n"),
        ("2.1.1", b"BODY[2.1.1] {0}\r\n"),
    ],
)
def test_numbered_sections(s: Session, section: str, expected: bytes) -> None:
    """Part numbers reach nested parts and encapsulated messages; absent parts are empty."""
    assert s.send(f"f FETCH 1 BODY.PEEK[{section}]") == (
        b"* 1 FETCH (" + expected + b")\r\nf OK Fetch completed.\r\n"
    )


def test_partial_fetch(s: Session) -> None:
    """<offset.length> returns those octets, labelled with the offset; past the end is empty."""
    assert s.send("f FETCH 2 BODY.PEEK[TEXT]<0.4>") == (
        b"* 2 FETCH (BODY[TEXT]<0> {4}\r\nbody)\r\nf OK Fetch completed.\r\n"
    )
    assert s.send("f FETCH 2 BODY.PEEK[TEXT]<5.100>") == (
        b"* 2 FETCH (BODY[TEXT]<5> {6}\r\ntext\r\n)\r\nf OK Fetch completed.\r\n"
    )
    assert s.send("f FETCH 2 BODY.PEEK[]<9999.10>") == (
        b"* 2 FETCH (BODY[]<9999> {0}\r\n)\r\nf OK Fetch completed.\r\n"
    )


def test_whole_message_and_rfc822_items(s: Session) -> None:
    """RFC822.HEADER, RFC822.TEXT and BODY[] carry the message with CRLF line ends;
    RFC822.TEXT sets \\Seen, so FLAGS is added."""
    wire = SIMPLE.replace(b"\n", b"\r\n")
    header, _, text = wire.partition(b"\r\n\r\n")
    reply = s.send("f FETCH 2 (RFC822.HEADER RFC822.TEXT BODY.PEEK[])")
    assert reply == (
        b"* 2 FETCH (RFC822.HEADER {%d}\r\n%s\r\n\r\n RFC822.TEXT {%d}\r\n%s BODY[] {%d}\r\n%s"
        b" FLAGS (\\Seen))\r\nf OK Fetch completed.\r\n"
        % (len(header) + 4, header, len(text), text, len(wire), wire)
    )


def test_envelope_and_simple_items(s: Session) -> None:
    """ENVELOPE fields in RFC 3501 order (sender and reply-to default to from),
    FLAGS, UID, INTERNALDATE in UTC, RFC822.SIZE with CRLF."""
    size = len(SIMPLE) + SIMPLE.count(b"\n")
    assert s.send("f FETCH 2 (FLAGS UID INTERNALDATE RFC822.SIZE ENVELOPE)") == (
        b'* 2 FETCH (FLAGS () UID 2 INTERNALDATE "14-Nov-2023 22:15:00 +0000" '
        b'RFC822.SIZE %d ENVELOPE ("Mon, 1 Jan 2024 10:00:00 +0000" "hello" '
        b'(("A" NIL "a" "example.org")) (("A" NIL "a" "example.org")) '
        b'(("A" NIL "a" "example.org")) ((NIL NIL "b" "example.org")) NIL NIL NIL '
        b'"<m1@example.org>"))\r\nf OK Fetch completed.\r\n' % size
    )


def test_macros(s: Session) -> None:
    """FAST, ALL and FULL expand to their items."""
    fast = s.send("f FETCH 2 FAST")
    assert b"FLAGS ()" in fast and b"INTERNALDATE" in fast and b"RFC822.SIZE" in fast
    assert b"ENVELOPE" not in fast
    assert b"ENVELOPE (" in s.send("f FETCH 2 ALL")
    full = s.send("f FETCH 2 FULL")
    assert b"ENVELOPE (" in full and b" BODY (" in full


def test_body_without_peek_sets_seen_and_reports_flags(s: Session, world: World) -> None:
    """BODY[] (not PEEK) sets \\Seen and adds FLAGS to the response; PEEK does not."""
    s.send("f FETCH 2 BODY.PEEK[TEXT]")
    assert "\\Seen" not in world.mailbox().folder("INBOX").get(2).flags
    reply = s.send("f FETCH 2 BODY[TEXT]")
    assert reply.endswith(b" FLAGS (\\Seen))\r\nf OK Fetch completed.\r\n")
    assert "\\Seen" in world.mailbox().folder("INBOX").get(2).flags
    reply = s.send("f FETCH 2 BODY[TEXT]")
    assert b"FLAGS" not in reply  # already seen: nothing changed


def test_examine_never_sets_seen(world: World) -> None:
    """In a read-only (EXAMINE) session reading a body leaves \\Seen alone."""
    s = world.connect()
    s.login()
    assert b"[READ-ONLY]" in s.send("e EXAMINE INBOX")
    s.send("f FETCH 1 RFC822")
    assert "\\Seen" not in world.mailbox().folder("INBOX").get(1).flags


def test_uid_fetch_always_includes_uid_and_skips_missing_uids(s: Session) -> None:
    """UID FETCH adds UID to each response; UIDs that do not exist are silently skipped."""
    assert s.send("u UID FETCH 2:9 FLAGS") == (
        b"* 2 FETCH (UID 2 FLAGS ())\r\nu OK Fetch completed.\r\n"
    )
    assert s.send("u UID FETCH 50:60 FLAGS") == b"u OK Fetch completed.\r\n"


def test_modseq_item_and_changedsince(s: Session, world: World) -> None:
    """MODSEQ is returned on request; CHANGEDSINCE limits the answer to newer changes."""
    folder = world.mailbox().folder("INBOX")
    m1 = folder.get(1).modseq
    s.send("st STORE 2 +FLAGS (\\Flagged)")
    m2 = folder.get(2).modseq
    assert m2 > m1
    assert s.send(f"f FETCH 1:* (FLAGS) (CHANGEDSINCE {m1})") == (
        b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % m2  # the first CONDSTORE command
        + b"* 2 FETCH (FLAGS (\\Flagged) MODSEQ (%d))\r\nf OK Fetch completed.\r\n" % m2
    )


@pytest.mark.parametrize(
    "command",
    [
        "f FETCH 1 (BODY[HEADER.FIELDS])",
        "f FETCH 1 (NOSUCHITEM)",
        "f FETCH 1 BODY[0]",
        "f FETCH 1 BODY[MIME]",
        "f FETCH 1 BODY[]<5>",
        "f FETCH x FLAGS",
        "f FETCH 1",
        "f FETCH 1 ()",
    ],
)
def test_bad_fetch_syntax_is_bad(s: Session, command: str) -> None:
    """Malformed FETCH commands are answered BAD."""
    assert s.send(command).startswith(b"f BAD ")


def test_message_number_beyond_mailbox_is_bad(s: Session) -> None:
    """A sequence number beyond EXISTS is an invalid message set."""
    assert s.send("f FETCH 3 FLAGS") == b"f BAD Error in IMAP command: Invalid messageset.\r\n"


def test_fetch_flags_uid_reads_the_index_only(tmp_path: Path) -> None:
    """FETCH 1:* (FLAGS UID) and SELECT never open a message file or the header cache."""
    store = MaildirStore(Clock(), "host", fsync=False)
    world = World(tmp_path, store=store)
    folder = world.mailbox().folder("INBOX")
    for i in range(100):
        folder.append(b"Subject: %d\n\nbody\n" % i)
    folder.claim_recent()  # old mail: FLAGS ()

    def refuse(*args: object) -> Any:
        raise AssertionError("message file read")

    for name in ("read", "open", "header_bytes", "mime_structure"):
        setattr(folder, name, refuse)
    s = world.connect()
    s.login()
    s.select()
    reply = s.lines("f FETCH 1:* (FLAGS UID)")
    assert len(reply) == 101 and reply[-1] == b"f OK Fetch completed."
    assert reply[99] == b"* 100 FETCH (FLAGS () UID 100)"


@pytest.mark.parametrize(
    ("header", "names", "exclude", "expected"),
    [
        # A continuation line belongs to the field above it, kept or not.
        (b"A: 1\n  more\nB: 2\n\nbody", ("a",), False, b"A: 1\r\n  more\r\n\r\n"),
        (b"A: 1\n  more\nB: 2\n\n", ("a",), True, b"B: 2\r\n\r\n"),
        # Before any field, an indented line is a field of its own, named by
        # its stripped text up to the colon.
        (b" X : 1\nY: 2\n", ("x",), False, b" X : 1\r\n\r\n"),
        # A line without a colon is named by its whole (stripped) text.
        (b"Odd line\nA: 1\n", ("odd line",), False, b"Odd line\r\n\r\n"),
        # Bare CR ends a line too (bytes.splitlines), and the blank line ends
        # the block even when CRLF.
        (b"A: 1\rB: 2\r\n\r\nA: 3\n", ("A",), False, b"A: 1\r\r\n"),
        # Names match case-insensitively (ASCII in the message), latin-1
        # bytes as the same latin-1 characters, and a name outside latin-1
        # matches nothing.
        (b"X-\xc0b: 1\nx-\xe0b: 2\n", ("X-\u00e0B",), False, b"x-\xe0b: 2\r\n\r\n"),
        (b"A: 1\n", ("\u0130",), True, b"A: 1\r\n\r\n"),
    ],
)
def test_select_fields_cases(
    header: bytes, names: tuple[str, ...], exclude: bool, expected: bytes
) -> None:
    """HEADER.FIELDS (.NOT) picks fields as header_lines splits them: folding,
    odd first lines, bare CR, blank line, latin-1 and non-latin-1 names."""
    from pymta.imap.structure import select_fields

    assert select_fields(header, names, exclude) == expected


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ("(UID FLAGS)", b"(UID 3 FLAGS ($Work \\Flagged))"),
        ("(FLAGS UID)", b"(FLAGS ($Work \\Flagged) UID 3)"),
        ("(UID UID FLAGS)", b"(UID 3 FLAGS ($Work \\Flagged))"),
        ("(UID FLAGS MODSEQ)", b"(UID 3 FLAGS ($Work \\Flagged) MODSEQ (5))"),
        ("(UID RFC822.SIZE)", b"(UID 3 RFC822.SIZE 17)"),
    ],
)
def test_index_only_fetch_items_in_the_order_asked(
    world: World, items: str, expected: bytes
) -> None:
    """Items the index answers alone come in the order the client named them,
    once each, FLAGS with keywords, MODSEQ last."""
    folder = world.mailbox().folder("INBOX")
    uid = folder.append(b"Subject: x\n\nb\n")
    folder.set_flags(uid, ["\\Flagged", "$Work"], FlagMode.ADD)
    folder.claim_recent()
    s = world.connect()
    s.login()
    s.select()
    lines = s.lines(f"f FETCH 3 {items}")
    if "MODSEQ" in items:  # the first CONDSTORE command reports [HIGHESTMODSEQ] first
        assert lines.pop(0).startswith(b"* OK [HIGHESTMODSEQ ")
    assert lines[0] == b"* 3 FETCH " + expected


HOSTILE = (
    b"From: x@example.org\nSubject: hostile\nContent-Type: multipart/x; boundary=\xff\n\n"
    b"--\xff\nContent-Type: text/plain\n\nhidden\n--\xff--\n"
)


def _three_messages(tmp_path: Path, store: str) -> Session:
    world = World(tmp_path, store=MaildirStore(Clock(), "host", fsync=False))
    if store == "memory":
        world = World(tmp_path)
    inbox = world.mailbox().folder("INBOX")
    for message in (SIMPLE, HOSTILE, SIMPLE):
        inbox.append(message, internal_date=1_700_000_000.0)
    session = world.connect()
    session.login()
    session.select()
    return session


PLAIN_STRUCTURE = b'("TEXT" "PLAIN" NIL NIL NIL "7BIT" 11 1 NIL NIL NIL NIL)'


@pytest.mark.parametrize("store", ["memory", "maildir"])
def test_eight_bit_boundary_message_does_not_break_a_range(tmp_path: Path, store: str) -> None:
    """A message whose boundary is an 8-bit byte, between two plain ones:
    FETCH 1:* (UID BODYSTRUCTURE) answers all three (it used to answer
    NO [SERVERBUG] for the whole range), and its parts are reachable."""
    s = _three_messages(tmp_path, store)
    # The 8-bit parameter value goes out as a literal (RFC 3501 section 4.3).
    assert s.send("f FETCH 1:* (UID BODYSTRUCTURE)") == (
        b"* 1 FETCH (UID 1 BODYSTRUCTURE " + PLAIN_STRUCTURE + b")\r\n"
        b'* 2 FETCH (UID 2 BODYSTRUCTURE (("TEXT" "PLAIN" NIL NIL NIL "7BIT" 6 1 NIL NIL NIL '
        b'NIL) "X" ("BOUNDARY" {3}\r\n\xef\xbf\xbd) NIL NIL NIL))\r\n'
        b"* 3 FETCH (UID 3 BODYSTRUCTURE " + PLAIN_STRUCTURE + b")\r\n"
        b"f OK Fetch completed.\r\n"
    )
    assert s.send("f FETCH 2 (BODY.PEEK[1] BINARY.PEEK[1])") == (
        b"* 2 FETCH (BODY[1] {6}\r\nhidden BINARY[1] {6}\r\nhidden)\r\nf OK Fetch completed.\r\n"
    )


@pytest.mark.parametrize("store", ["memory", "maildir"])
def test_mime_parser_failure_answers_text_plain_for_that_message(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the MIME parser fail on one message, that message is answered as
    one text/plain part (as Dovecot does for broken MIME) and the rest of the
    range as usual; BODY[1] is then the whole body."""
    real_parse = mime._parse

    def parse(data: bytes, *args: Any) -> Any:
        if b"hostile" in data:
            raise RuntimeError("a parser bug")
        return real_parse(data, *args)

    monkeypatch.setattr(mime, "_parse", parse)
    s = _three_messages(tmp_path, store)
    assert s.lines("f FETCH 1:* (UID BODYSTRUCTURE)") == [
        b"* 1 FETCH (UID 1 BODYSTRUCTURE " + PLAIN_STRUCTURE + b")",
        b'* 2 FETCH (UID 2 BODYSTRUCTURE ("TEXT" "PLAIN" NIL NIL NIL "7BIT" 48 5 NIL NIL NIL NIL))',
        b"* 3 FETCH (UID 3 BODYSTRUCTURE " + PLAIN_STRUCTURE + b")",
        b"f OK Fetch completed.",
    ]
    reply = s.send("f FETCH 2 BODY.PEEK[1]")
    assert reply.startswith(b"* 2 FETCH (BODY[1] {48}\r\n--\xff\r\n")
    assert reply.endswith(b"f OK Fetch completed.\r\n")
