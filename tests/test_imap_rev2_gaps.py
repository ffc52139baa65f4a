"""IMAP4rev2 gaps: UTF8=ACCEPT (RFC 6855), no UNSEEN code in a rev2 SELECT,
RECENT refused in rev2 STATUS and SEARCH (RFC 9051)."""

from __future__ import annotations

from pathlib import Path

from tests.test_imap_harness import Session, World


def _session(tmp_path: Path, enable: str | None = None) -> tuple[World, Session]:
    world = World(tmp_path)
    s = world.connect()
    s.login()
    if enable is not None:
        assert s.lines(f"e ENABLE {enable}") == [
            f"* ENABLED {enable}".encode(),
            b"e OK Enabled.",
        ]
    return world, s


def test_utf8_accept_advertised_and_enabled(tmp_path: Path) -> None:
    """CAPABILITY lists UTF8=ACCEPT; ENABLE UTF8=ACCEPT is confirmed once,
    and a second ENABLE names nothing new."""
    _, s = _session(tmp_path)
    caps = s.lines("c CAPABILITY")[0]
    assert b" UTF8=ACCEPT" in caps
    assert s.lines("e ENABLE UTF8=ACCEPT") == [b"* ENABLED UTF8=ACCEPT", b"e OK Enabled."]
    assert s.lines("f ENABLE UTF8=ACCEPT") == [b"* ENABLED", b"f OK Enabled."]


def test_utf8_accept_names_are_utf8_both_ways(tmp_path: Path) -> None:
    """After ENABLE UTF8=ACCEPT a mailbox is created, listed, appended to
    (with the RFC 6855 ``UTF8 (~{n})`` literal form accepted by the parser as
    a plain literal) and selected under its UTF-8 name, not mUTF-7."""
    world, s = _session(tmp_path, "UTF8=ACCEPT")
    name = "Entwürfe"
    assert s.lines(f'c CREATE "{name}"')[-1] == b"c OK Create completed."
    assert world.mailbox().folder(name).name == name
    listing = s.lines(f'l LIST "" "{name}"')
    assert listing[0].endswith(b' "/" "' + name.encode() + b'"'), listing
    msg = b"Subject: hi\r\n\r\nx\r\n"
    raw = f'a APPEND "{name}" ~{{{len(msg)}+}}\r\n'.encode() + msg + b"\r\n"
    assert s.lines(raw)[-1].startswith(b"a OK [APPENDUID ")
    assert b"s OK [READ-WRITE]" in s.send(f's SELECT "{name}"')


def test_without_utf8_names_stay_modified_utf7(tmp_path: Path) -> None:
    """Without ENABLE the same folder is listed in modified UTF-7."""
    world, s = _session(tmp_path)
    world.mailbox().create_folder("Entwürfe")
    listing = s.lines('l LIST "" "Entw*"')
    assert listing[0].endswith(b' "/" "Entw&APw-rfe"'), listing


def _unseen_world(tmp_path: Path) -> tuple[World, Session]:
    world = World(tmp_path)
    inbox = world.mailbox().folder("INBOX")
    inbox.append(b"Subject: read\n\nx\n", ["\\Seen"])
    inbox.append(b"Subject: unread\n\nx\n")
    s = world.connect()
    s.login()
    return world, s


def test_rev2_select_has_no_unseen_code(tmp_path: Path) -> None:
    """A rev1 SELECT names the first unseen message; after ENABLE IMAP4rev2
    the UNSEEN response code is gone (RFC 9051 7.1)."""
    _, s = _unseen_world(tmp_path)
    assert b"* OK [UNSEEN 2]" in s.send("s SELECT INBOX")
    assert s.lines("e ENABLE IMAP4rev2")[0] == b"* ENABLED IMAP4rev2"
    reply = s.send("t SELECT INBOX")
    assert b"t OK [READ-WRITE]" in reply
    assert b"UNSEEN" not in reply


def test_rev2_status_recent_is_bad(tmp_path: Path) -> None:
    """STATUS (RECENT) works in rev1 and is BAD once IMAP4rev2 is enabled,
    while the other items still work."""
    _, s = _unseen_world(tmp_path)
    assert s.lines("a STATUS INBOX (RECENT)")[-1] == b"a OK Status completed."
    s.lines("e ENABLE IMAP4rev2")
    assert s.lines("b STATUS INBOX (MESSAGES RECENT)")[-1].startswith(b"b BAD ")
    assert s.lines("c STATUS INBOX (MESSAGES)") == [
        b'* STATUS "INBOX" (MESSAGES 2)',
        b"c OK Status completed.",
    ]


def test_rev2_search_recent_new_old_are_bad(tmp_path: Path) -> None:
    """SEARCH RECENT / NEW / OLD work in rev1 and are BAD in a rev2 session."""
    _, s = _unseen_world(tmp_path)
    s.select()
    assert s.lines("a SEARCH RECENT")[-1] == b"a OK Search completed."
    s.lines("e ENABLE IMAP4rev2")
    for n, key in enumerate(("RECENT", "NEW", "OLD", "NOT RECENT")):
        assert s.lines(f"b{n} SEARCH {key}")[-1].startswith(b"b%d BAD " % n), key
    assert s.lines("c SEARCH UNSEEN")[-1] == b"c OK Search completed."
