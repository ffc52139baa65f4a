"""POP3 wire encoding: CRLF conversion, dot-stuffing and TOP, on whole messages."""

from __future__ import annotations

import pytest

from pymta.pop3.wire import to_wire, top, wire_size


@pytest.mark.parametrize(
    ("stored", "wire"),
    [
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b".\n", b"..\r\n"),
        (b"x\n.\n..\n.y\n", b"x\r\n..\r\n...\r\n..y\r\n"),
        (b"no final newline", b"no final newline\r\n"),
        (b"", b""),
        (b"crlf\r\nalready\r\n", b"crlf\r\nalready\r\n"),
        (b"bare\rcr\n", b"bare\r\ncr\r\n"),
        (b"a\r\n.\r\n", b"a\r\n..\r\n"),
    ],
)
def test_to_wire(stored: bytes, wire: bytes) -> None:
    """Stored LF messages become CRLF, a leading '.' is doubled, no line can end the response."""
    assert to_wire(stored) == wire


def test_no_line_is_a_lone_dot() -> None:
    """Whatever the content, the wire form never contains a line that is a lone '.'."""
    nasty = b".\n\r.\r\n.\n\n.\r\r\n."
    assert b"\r\n.\r\n" not in b"\r\n" + to_wire(nasty)


def test_wire_size_matches_to_wire_before_stuffing() -> None:
    """wire_size is the CRLF length the message has on the wire, before dot-stuffing."""
    msg = b"Subject: x\n\nbody\nmore\n"
    assert wire_size(msg) == len(to_wire(msg))


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (0, b"H: 1\nH: 2\n\n"),
        (1, b"H: 1\nH: 2\n\nb1\n"),
        (3, b"H: 1\nH: 2\n\nb1\nb2\nb3\n"),
        (10, b"H: 1\nH: 2\n\nb1\nb2\nb3\n"),
    ],
)
def test_top(lines: int, expected: bytes) -> None:
    """TOP gives the header block, the blank line and at most n body lines."""
    assert top(b"H: 1\nH: 2\n\nb1\nb2\nb3\n", lines) == expected


def test_top_without_body_or_headers() -> None:
    """A message without a blank line is all header; one starting blank has no header."""
    assert top(b"H: 1\nH: 2\n", 5) == b"H: 1\nH: 2\n"
    assert top(b"\nbody1\nbody2\n", 1) == b"\nbody1\n"
