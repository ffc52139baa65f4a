"""MULTIAPPEND (RFC 3502), CATENATE (RFC 4469) and APPENDLIMIT (RFC 7889)
over StringTransport, on the memory store and on Maildir's staged path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from pymta.imap.append import BadURL, parse_url
from pymta.imap.settings import IMAPSettings
from pymta.mailstore.interface import MailStoreError
from pymta.mailstore.maildir import MaildirStore
from tests.test_imap_harness import Session, World
from tests.test_pop3_harness import sync_runner


def lit(data: bytes) -> bytes:
    return b"{%d+}\r\n%s" % (len(data), data)


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path)
    w.mailbox().folder("INBOX").append(
        b"From: a@x\nSubject: one\n\nHello world\n", [], 1_700_000_000.0
    )
    return w


@pytest.fixture
def s(world: World) -> Session:
    session = world.connect()
    session.login()
    return session


def test_capabilities_announce_the_extensions(s: Session) -> None:
    """MULTIAPPEND, CATENATE and APPENDLIMIT (the literal limit) are announced."""
    caps = s.lines("c CAPABILITY")[0].split()
    assert b"MULTIAPPEND" in caps and b"CATENATE" in caps
    assert b"APPENDLIMIT=%d" % s.world.settings.max_literal_size in caps


def test_multiappend_stores_all_with_one_appenduid(s: Session, world: World) -> None:
    """Several messages in one APPEND, each with its own flags and date, get
    consecutive UIDs named by one APPENDUID set."""
    folder = world.mailbox().folder("INBOX")
    reply = s.send(
        b"a APPEND INBOX (\\Seen) "
        + lit(b"Subject: 1\r\n\r\nx")
        + b' "05-Jan-2024 10:00:00 +0100" '
        + lit(b"Subject: 2\r\n\r\ny")
        + b" "
        + lit(b"Subject: 3\r\n\r\nz")
        + b"\r\n"
    )
    assert reply == b"a OK [APPENDUID %d 2:4] Append completed.\r\n" % folder.uidvalidity
    assert folder.read(3) == b"Subject: 2\n\ny"
    assert folder.get(2).flags == {"\\Seen"} and folder.get(3).flags == frozenset()
    assert folder.get(3).internal_date == 1704445200.0


def test_multiappend_is_atomic(s: Session, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """When a later message cannot be stored, the earlier ones of the same
    APPEND are taken out again: the mailbox is as before and the answer NO."""
    folder = world.mailbox().folder("INBOX")
    cls = type(folder)
    real = cls.append
    calls = []

    def failing(self: Any, content: bytes, *a: Any, **kw: Any) -> int:
        calls.append(content)
        if len(calls) == 2:
            raise MailStoreError("disk trouble")
        return real(self, content, *a, **kw)

    monkeypatch.setattr(cls, "append", failing)
    reply = s.send(
        b"a APPEND INBOX " + lit(b"A: 1\r\n\r\nx") + b" " + lit(b"A: 2\r\n\r\ny") + b"\r\n"
    )
    assert reply == b"a NO [SERVERBUG] Internal error occurred.\r\n"
    assert [m.uid for m in folder.messages()] == [1]


def test_catenate_builds_from_text_and_urls(s: Session, world: World) -> None:
    """CATENATE joins literal text and parts of messages named by IMAP URLs
    (path alone or imap://, with UIDVALIDITY, section and partial)."""
    folder = world.mailbox().folder("INBOX")
    v = folder.uidvalidity
    reply = s.send(
        b'a APPEND INBOX (\\Flagged) CATENATE (URL "/INBOX;UIDVALIDITY=%d/;UID=1/;SECTION=HEADER" '
        % v
        + b"TEXT "
        + lit(b"new body\r\n")
        + b")\r\n"
    )
    assert reply == b"a OK [APPENDUID %d 2] Append completed.\r\n" % v
    assert folder.read(2) == b"From: a@x\nSubject: one\n\nnew body\n"
    assert folder.get(2).flags == {"\\Flagged"}
    reply = s.send(
        b"b APPEND INBOX CATENATE (TEXT "
        + lit(b"Subject: quote\r\n\r\n")
        + b' URL "imap://alice@mail.example.org/INBOX/;uid=1/;section=TEXT/;partial=0.5")'
        + b' CATENATE (URL "/INBOX/;UID=1")\r\n'
    )
    assert reply == b"b OK [APPENDUID %d 3:4] Append completed.\r\n" % v
    assert folder.read(3) == b"Subject: quote\n\nHello"
    assert folder.read(4) == folder.read(1)


@pytest.mark.parametrize(
    "url",
    [
        b"/INBOX;UIDVALIDITY=12345/;UID=1",  # another UIDVALIDITY
        b"/INBOX/;UID=99",  # no such message
        b"/Nope/;UID=1",  # no such mailbox
        b"INBOX/;UID=1",  # not a path
        b"/INBOX",  # no UID
        b"/INBOX/;UID=1/;SECTION=1.X",  # a section FETCH does not know
        b"/INBOX/;UID=1/;URLAUTH=anonymous",
    ],
)
def test_catenate_bad_urls_store_nothing(s: Session, world: World, url: bytes) -> None:
    """A URL this server cannot resolve is NO [BADURL], and no message of the
    APPEND is stored, even one before it."""
    folder = world.mailbox().folder("INBOX")
    reply = s.send(
        b"a APPEND INBOX "
        + lit(b"A: 1\r\n\r\nx")
        + b" CATENATE (TEXT "
        + lit(b"B: 2\r\n\r\n")
        + b' URL "'
        + url
        + b'")\r\n'
    )
    assert reply.startswith(b"a NO [BADURL "), reply
    assert len(folder.messages()) == 1


def test_append_errors(s: Session, world: World) -> None:
    """A missing mailbox is TRYCREATE before any URL is looked at; a
    message put together beyond APPENDLIMIT is TOOBIG, an empty one NO;
    bad syntax is BAD."""
    assert s.send(b'a APPEND Nope CATENATE (URL "/INBOX;UIDVALIDITY=1/;UID=1")\r\n') == (
        b"a NO [TRYCREATE] Mailbox doesn't exist: Nope\r\n"
    )
    big = b"x" * 600
    reply = s.send(b"b APPEND INBOX CATENATE (TEXT " + lit(big) + b" TEXT " + lit(big) + b")\r\n")
    assert reply.startswith(b"b OK")  # below the default limit
    assert s.send(b'c APPEND INBOX CATENATE (URL "/INBOX/;UID=1/;SECTION=9")\r\n') == (
        b"c NO Can't save a zero byte message.\r\n"
    )
    for bad in (
        b"d APPEND INBOX CATENATE ()",
        b'd APPEND INBOX CATENATE (TEXT "quoted")',
        b"d APPEND INBOX (\\Seen) ",
        b'd APPEND INBOX "01-Jan-2024 00:00:00 +0000" "not a literal"',
    ):
        assert s.send(bad + b"\r\n").startswith(b"d BAD"), bad


def test_catenate_beyond_appendlimit_is_toobig(tmp_path: Path) -> None:
    """The message CATENATE puts together counts against APPENDLIMIT."""
    w = World(tmp_path, IMAPSettings(hostname="mail.example.org", max_literal_size=1024))
    w.mailbox().folder("INBOX").append(b"Subject: x\n\n" + b"y" * 900)
    s = w.connect()
    s.login()
    reply = s.send(
        b'a APPEND INBOX CATENATE (URL "/INBOX/;UID=1" TEXT ' + lit(b"z" * 200) + b")\r\n"
    )
    assert reply == b"a NO [TOOBIG] Message too large (APPENDLIMIT 1024).\r\n"


def test_staged_multiappend_on_maildir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On Maildir every message is staged (written, fsync'd) before any is
    numbered: a write failing on the second leaves no file and no message,
    and a successful MULTIAPPEND is in the folder as one APPENDUID set."""
    w = World(tmp_path, store=MaildirStore(Clock(), "host", fsync=False))
    folder = w.mailbox().folder("INBOX")
    s = w.connect()
    s.proto.run_in_thread = sync_runner
    s.login()
    two = b"a APPEND INBOX " + lit(b"A: 1\r\n\r\nx") + b" " + lit(b"A: 2\r\n\r\ny") + b"\r\n"
    cls = type(folder)
    real = cls.stage
    staged: list[bytes] = []

    def failing(self: Any, content: bytes, *a: Any, **kw: Any) -> Any:
        staged.append(content)
        if len(staged) == 2:
            raise OSError(5, "I/O error")
        return real(self, content, *a, **kw)

    monkeypatch.setattr(cls, "stage", failing)
    assert s.send(two).startswith(b"a NO ")
    assert folder.messages() == [] and not list((tmp_path / "alice" / "tmp").iterdir())
    monkeypatch.setattr(cls, "stage", real)
    assert s.send(two) == b"a OK [APPENDUID %d 1:2] Append completed.\r\n" % folder.uidvalidity
    assert [folder.read(u) for u in (1, 2)] == [b"A: 1\n\nx", b"A: 2\n\ny"]


def test_parse_url() -> None:
    """IMAP URLs (RFC 5092) with percent-encoded names and sections."""
    url = parse_url(b"/Sent%20Items;UIDVALIDITY=7/;UID=3/;SECTION=HEADER.FIELDS%20(SUBJECT)")
    assert (url.mailbox, url.uidvalidity, url.uid) == ("Sent Items", 7, 3)
    assert url.section == "HEADER.FIELDS (SUBJECT)" and url.partial is None
    assert parse_url(b"/a/;uid=1/;partial=10").partial == (10, None)
    for bad in (b"/a/;uid=0", b"/a/;uid=1/;uid=2", b"imap://host", b"/a/;partial=1"):
        with pytest.raises(BadURL):
            parse_url(bad)
