"""METADATA (RFC 5464) over StringTransport, on the memory store and on Maildir."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from pymta.imap import metadata
from pymta.mailstore import metadata as stored
from pymta.mailstore.maildir import MaildirStore
from tests.test_imap_harness import Session, World
from tests.test_imap_prefetch import QueuedRunner


@pytest.fixture
def s(tmp_path: Path) -> Session:
    w = World(tmp_path)
    w.mailbox().create_folder("Box")
    session = w.connect()
    session.login()
    return session


def test_set_and_get_on_server_and_mailbox(s: Session) -> None:
    """Entries are set on the server ("") and on a mailbox apart, read back
    by name (any case), several at once; NIL removes one; absent entries are
    left out of the answer."""
    assert b"METADATA" in s.lines("c CAPABILITY")[0].split()
    assert s.send('a SETMETADATA "" (/private/Vendor/x "one" /shared/comment "srv")') == (
        b"a OK Setmetadata completed.\r\n"
    )
    assert s.send("b SETMETADATA Box (/private/comment {3+}\r\nbox)") == (
        b"b OK Setmetadata completed.\r\n"
    )
    assert s.lines('c GETMETADATA "" (/private/vendor/x /shared/comment /private/none)') == [
        b'* METADATA "" ("/private/vendor/x" "one" "/shared/comment" "srv")',
        b"c OK Getmetadata completed.",
    ]
    assert s.lines("d GETMETADATA Box /private/comment") == [
        b'* METADATA "Box" ("/private/comment" "box")',
        b"d OK Getmetadata completed.",
    ]
    s.send("e SETMETADATA Box (/private/comment NIL)")
    assert s.lines("f GETMETADATA Box /private/comment") == [b"f OK Getmetadata completed."]


def test_depth_maxsize_and_binary_values(s: Session) -> None:
    """DEPTH 1 adds the entries one level below, infinity all below; MAXSIZE
    leaves out longer values and says how long the longest was; a value
    with NUL comes back as a literal8."""
    s.send(
        b'a SETMETADATA "" (/private/a "1" /private/a/b "22" /private/a/b/c "333" '
        b"/private/z ~{3+}\r\nx\0y)\r\n"
    )
    assert s.lines('b GETMETADATA (DEPTH 1) "" /private/a')[0] == (
        b'* METADATA "" ("/private/a" "1" "/private/a/b" "22")'
    )
    assert s.lines('b GETMETADATA (DEPTH infinity) "" (/private/a)')[0].endswith(
        b'"/private/a/b/c" "333")'
    )
    assert s.lines('c GETMETADATA (MAXSIZE 2 DEPTH infinity) "" /private/a') == [
        b'* METADATA "" ("/private/a" "1" "/private/a/b" "22")',
        b"c OK [METADATA LONGENTRIES 3] Getmetadata completed.",
    ]
    assert s.send('d GETMETADATA "" /private/z') == (
        b'* METADATA "" ("/private/z" ~{3}\r\nx\0y)\r\nd OK Getmetadata completed.\r\n'
    )


def test_limits_and_errors(s: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    """Too big a value is NO [METADATA MAXSIZE], too many entries NO
    [METADATA TOOMANY] (nothing of the command set), a missing mailbox NO
    [NONEXISTENT]; bad entry names and syntax are BAD."""
    monkeypatch.setattr(metadata, "MAX_VALUE", 4)
    monkeypatch.setattr(metadata, "MAX_ENTRIES", 2)
    assert s.send('a SETMETADATA "" (/private/a "12345")') == (
        b"a NO [METADATA MAXSIZE 4] Metadata value too large.\r\n"
    )
    assert s.send('a SETMETADATA "" (/private/a "1" /private/b "2" /private/c "3")') == (
        b"a NO [METADATA TOOMANY] Too many metadata entries.\r\n"
    )
    assert s.lines('b GETMETADATA "" (/private/a)') == [b"b OK Getmetadata completed."]
    assert s.send('c SETMETADATA Nope (/private/a "1")') == (
        b"c NO [NONEXISTENT] Mailbox doesn't exist.\r\n"
    )
    for bad in (
        'SETMETADATA "" (/other/a "1")',
        'SETMETADATA "" (/private "1")',
        'SETMETADATA "" (/private/a* "1")',
        'SETMETADATA "" (/private//a "1")',
        'SETMETADATA "" (/private/a)',
        'SETMETADATA "" (/private/a FOO)',
        'GETMETADATA (DEPTH 2) "" /private/a',
        'GETMETADATA "" ()',
    ):
        assert s.send(f"x {bad}").startswith(b"x BAD"), bad


def test_mailbox_entries_follow_rename_not_recreation(s: Session) -> None:
    """A mailbox's entries stay with it through RENAME; a mailbox deleted and
    made again under the same name starts without them."""
    s.send('a SETMETADATA Box (/private/comment "kept")')
    s.send("r RENAME Box Other")
    assert s.lines("g GETMETADATA Other /private/comment")[0] == (
        b'* METADATA "Other" ("/private/comment" "kept")'
    )
    s.send("d DELETE Other")
    s.send("c CREATE Other")
    assert s.lines("g GETMETADATA Other /private/comment") == [b"g OK Getmetadata completed."]


def test_maildir_keeps_entries_in_a_file(tmp_path: Path) -> None:
    """On Maildir the entries are written to pymta-metadata in the user's
    root before the OK, and a server started afresh (or another process)
    reads them from there."""
    w = World(tmp_path, store=MaildirStore(Clock(), "host", fsync=False))
    s = w.connect()
    s.login()
    assert s.send('a SETMETADATA "" (/private/comment "durable")') == (
        b"a OK Setmetadata completed.\r\n"
    )
    path = tmp_path / "alice" / stored.FILENAME
    assert json.loads(path.read_text()) == {"": {"/private/comment": "ZHVyYWJsZQ=="}}
    fresh = World(tmp_path, store=MaildirStore(Clock(), "host", fsync=False)).connect()
    fresh.login()
    assert fresh.lines('g GETMETADATA "" /private/comment')[0] == (
        b'* METADATA "" ("/private/comment" "durable")'
    )
    # Another process writes the file: the next GETMETADATA sees it.
    path.write_text(json.dumps({"": {"/private/comment": "Y2hhbmdlZA=="}}))
    os.utime(path, ns=(1, 1))
    assert fresh.lines('g GETMETADATA "" /private/comment')[0] == (
        b'* METADATA "" ("/private/comment" "changed")'
    )


def test_metadata_file_is_never_touched_on_the_reactor_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GETMETADATA and SETMETADATA leave the METADATA file to the store's
    threads: while the store's work waits, the session neither stats,
    reads nor writes the file and has not answered; once the store ran it,
    the answers come in order (the read sees the write)."""
    runner = QueuedRunner()
    w = World(tmp_path, store=MaildirStore(Clock(), "host", fsync=False, run_in_thread=runner))
    s = w.connect()
    s.send("l LOGIN alice@example.org secret")
    runner.run_all()
    assert s.read().startswith(b"l OK")
    path = str(tmp_path / "alice" / stored.FILENAME)
    on_reactor: list[str] = []
    real_stat, real_open = os.stat, os.open

    def stat(name: Any, *args: Any, **kwargs: Any) -> Any:
        if not runner.in_thread and os.fspath(name).startswith(path):
            on_reactor.append(f"stat {name}")
        return real_stat(name, *args, **kwargs)

    def open_(name: Any, *args: Any, **kwargs: Any) -> Any:
        if not runner.in_thread and os.fspath(name).startswith(path):
            on_reactor.append(f"open {name}")
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "open", open_)
    commands = b'a SETMETADATA "" (/private/comment "hi")\r\nb GETMETADATA "" /private/comment\r\n'
    assert s.send(commands) == b""
    assert on_reactor == []
    runner.run_all()
    assert s.read() == (
        b"a OK Setmetadata completed.\r\n"
        b'* METADATA "" ("/private/comment" "hi")\r\n'
        b"b OK Getmetadata completed.\r\n"
    )
    assert s.send('c GETMETADATA "" /private/comment') == b""
    runner.run_all()
    assert s.read().startswith(b'* METADATA "" ("/private/comment" "hi")')
    assert on_reactor == []
