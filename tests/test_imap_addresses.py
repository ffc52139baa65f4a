"""The ENVELOPE address parser (pymta.imap.addresses) ends on every input.

A From: of ``a: b: c`` (a group inside a group) once made it loop forever,
appending empty addresses: one such message, sent by anyone, hung the IMAP
server's reactor on ``FETCH ENVELOPE`` and grew its memory without bound
(found by ``python -m fuzz.run mime``). Each case runs under an alarm so a
regression fails instead of hanging the suite.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
from twisted.internet.task import Clock

from pymta.imap.addresses import Address, address_text, parse_addresses
from pymta.imap.fetch import MessageData, parse_items, render
from pymta.imap.parser import tokenize
from pymta.mailstore.memory import MemoryFolder


class _Hang(Exception):
    pass


@pytest.fixture
def alarm() -> Iterator[None]:
    def hang(signum: int, frame: object) -> None:
        raise _Hang("the parser did not end")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, 5.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize(
    ("value", "mailboxes"),
    [
        ("a: b: c;", ["a", "b", "c"]),
        (
            "Alice aroled:ME-Versint-Type: mon: 1.0",
            ["Alice aroled", "ME-Versint-Type", "mon", "1.0"],
        ),
        ("a:::;", ["a"]),
        ("g: x@y, : z@w;", ["g", "x", "z"]),
    ],
)
def test_a_group_inside_a_group_ends(alarm: None, value: str, mailboxes: list[str]) -> None:
    """A stray ':' inside a group is skipped; the group's members and its
    end marker are still there."""
    addresses = parse_addresses(value)
    assert [a.mailbox for a in addresses[:-1]] == mailboxes
    assert addresses[-1] == Address(None, None, None, None)
    address_text(value)


def test_fetch_envelope_of_a_nested_group_message_answers(alarm: None) -> None:
    """The message the fuzzer found gets an ENVELOPE answer, not a hang."""
    message = (
        b"From: Alice aroled:ME-Versint-Type: mon: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="outer"\n\npreamble\n--outer--\n'
    )
    folder = MemoryFolder("INBOX", 1, Clock())
    uid = folder.append(message, internal_date=1_700_000_000.0)
    data = MessageData(folder, folder.get(uid))
    answer = b"".join(
        piece
        for piece in render(data, parse_items(tokenize(b"(ENVELOPE)")), frozenset(), False)
        if isinstance(piece, bytes)
    )
    assert b'("ME-Versint-Type" NIL)' not in answer
    assert b'(NIL NIL "ME-Versint-Type" NIL)' in answer
