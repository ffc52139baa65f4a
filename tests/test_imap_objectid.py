"""OBJECTID (RFC 8474) and PREVIEW (RFC 8970) over StringTransport."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_imap_harness import Session, World

PLAIN = b"Message-ID: <root@x>\nSubject: hello\n\nFirst   line\nsecond line.\n"
REPLY = b"Message-ID: <r@x>\nReferences: <root@x> <mid@x>\nSubject: Re: hello\n\nok\n"
MIXED = (
    b"Message-ID: <m@x>\nContent-Type: multipart/mixed; boundary=b\n\n--b\n"
    b"Content-Type: text/html; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n"
    b"<html><style>p {}</style><p>Caf=E9 &amp; <b>cr=E8me</b></p></html>\n--b\n"
    b"Content-Type: text/plain\nContent-Disposition: attachment\n\nnot this\n--b--\n"
)


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path)
    inbox = w.mailbox().folder("INBOX")
    for content in (PLAIN, REPLY, MIXED, b"Subject: bare\n\n"):
        inbox.append(content)
    w.mailbox().create_folder("Box")
    return w


@pytest.fixture
def s(world: World) -> Session:
    session = world.connect()
    session.login()
    session.select()
    return session


def ids(s: Session, item: str) -> list[str]:
    reply = s.lines(f"f FETCH 1:* ({item})")
    assert reply[-1] == b"f OK Fetch completed.", reply
    return [re.search(rb"\(([^()]+)\)\)$", line).group(1).decode() for line in reply[:-1]]  # type: ignore[union-attr]


def test_capabilities(s: Session) -> None:
    """OBJECTID and PREVIEW are announced."""
    caps = s.lines("c CAPABILITY")[0].split()
    assert b"OBJECTID" in caps and b"PREVIEW" in caps


def test_mailboxid_in_select_and_status_survives_rename(s: Session, world: World) -> None:
    """SELECT and STATUS give the same MAILBOXID; a rename keeps it, a
    mailbox deleted and made again under the name gets another."""
    select = s.send("x SELECT Box")
    [code] = re.findall(rb"\* OK \[MAILBOXID \((F[0-9a-f]+)\)\] Ok\r\n", select)
    inbox = s.send("y STATUS INBOX (MAILBOXID MESSAGES)")
    assert re.match(rb"\* STATUS \"INBOX\" \(MAILBOXID \(F[0-9a-f]+\) MESSAGES 4\)", inbox)
    assert code not in inbox
    s.send("u UNSELECT")
    assert s.send("r RENAME Box Old") == b"r OK Rename completed.\r\n"
    assert code in s.send("y STATUS Old (MAILBOXID)")
    s.send("d DELETE Old")
    s.send("c CREATE Old")
    assert code not in s.send("y STATUS Old (MAILBOXID)")


def test_emailid_is_kept_by_copy_and_move(s: Session) -> None:
    """EMAILID differs between messages and stays with a message through COPY
    and MOVE; SEARCH EMAILID finds it."""
    emails = ids(s, "EMAILID")
    assert len(set(emails)) == 4 and all(re.fullmatch(r"M[0-9a-f]{24}", e) for e in emails)
    s.send("c COPY 1 Box")
    s.send("m MOVE 2 Box")
    s.send("x SELECT Box")
    assert ids(s, "EMAILID") == emails[:2]
    assert s.lines(f"q SEARCH EMAILID {emails[1]}")[0] == b"* SEARCH 2"


def test_threadid_is_shared_by_a_thread(s: Session) -> None:
    """A reply has the THREADID of the message its References start with;
    unrelated messages have their own; SEARCH THREADID finds the thread."""
    threads = ids(s, "THREADID")
    assert threads[0] == threads[1]
    assert len({threads[0], threads[2], threads[3]}) == 3
    assert s.lines(f"q UID SEARCH THREADID {threads[0]}")[0] == b"* SEARCH 1 2"


def test_preview(s: Session) -> None:
    """PREVIEW is the first plain text part's text, white space collapsed;
    else an HTML part's text without tags, decoded from its charset; an
    empty body previews as ""; (LAZY) is accepted, other modifiers are BAD."""
    reply = s.send("p FETCH 1:4 (PREVIEW)")
    assert reply.startswith(
        b'* 1 FETCH (PREVIEW "First line second line.")\r\n* 2 FETCH (PREVIEW "ok")\r\n'
        b"* 3 FETCH (PREVIEW {14}\r\n" + "Café & crème".encode() + b")\r\n"
    ), reply
    assert "Café & crème".encode() in s.send("p FETCH 3 (PREVIEW (LAZY))")
    assert s.lines("p FETCH 4 PREVIEW")[0] == b'* 4 FETCH (PREVIEW "")'
    assert s.send("p FETCH 1 (PREVIEW (EAGER))").startswith(b"p BAD")


def test_preview_is_cut_at_256_characters(tmp_path: Path) -> None:
    """At most 256 characters, however long the text."""
    w = World(tmp_path)
    w.mailbox().folder("INBOX").append(b"Subject: long\n\n" + "é".encode() * 5000 + b"\n")
    s = w.connect()
    s.login()
    s.select()
    out = s.send("p FETCH 1 (PREVIEW)")
    assert "é".encode() * 256 + b")\r\n" in out and "é".encode() * 257 not in out
