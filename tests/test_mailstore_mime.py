"""The MIME parser of stored messages: hostile input gives a tree, or
MimeError, never another error."""

from __future__ import annotations

import pytest

from pymta.mailstore import mime
from pymta.mailstore.mime import MimeError, parse_mime, plain_structure

# The fuzzing finding of issue 18: an 8-bit byte as the whole boundary.
EIGHT_BIT_BOUNDARY = (
    b"Content-Type: multipart/x; boundary=\xff\n\n"
    b"--\xff\nContent-Type: text/plain\n\none\n"
    b"--\xff\nContent-Type: text/html\n\n<p>two</p>\n"
    b"--\xff--\n"
)


def test_eight_bit_boundary_is_matched_as_its_bytes() -> None:
    """A boundary holding an 8-bit byte splits the body at delimiter lines
    holding that byte (it used to raise UnicodeEncodeError)."""
    tree = parse_mime(EIGHT_BIT_BOUNDARY)
    assert (tree.content_type, tree.subtype) == ("multipart", "x")
    assert [(p.content_type, p.subtype) for p in tree.parts] == [
        ("text", "plain"),
        ("text", "html"),
    ]
    first, second = tree.parts
    assert EIGHT_BIT_BOUNDARY[first.body_start : first.end] == b"one"
    assert EIGHT_BIT_BOUNDARY[second.body_start : second.end] == b"<p>two</p>"


@pytest.mark.parametrize(
    "message",
    [
        b"Content-Type: multipart/x; boundary=\xff",
        b"Content-Type: multipart/x; boundary=\xff\n\n",
        b'Content-Type: multipart/mixed; boundary="a\xe9\xff b"\n\n--a\xe9\xff b\n\nx\n',
        b"Content-Type: multipart/x; boundary=\xc3\xa9\n\n--\xc3\xa9\n\nx\n--\xc3\xa9--\n",
    ],
)
def test_eight_bit_boundaries_never_raise(message: bytes) -> None:
    """Boundaries of 8-bit bytes, with or without a body or delimiters, parse."""
    tree = parse_mime(message)
    assert tree.end == len(message)


def test_a_parser_failure_is_mime_error_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever goes wrong inside the parser reaches the caller as MimeError,
    the one error type it documents."""

    def broken(*args: object) -> None:
        raise KeyError("bug")

    monkeypatch.setattr(mime, "_parse", broken)
    with pytest.raises(MimeError):
        parse_mime(b"Subject: x\n\nbody\n")


def test_plain_structure_is_the_whole_message_as_text_plain() -> None:
    """The fallback is one text/plain part: the body after the header, CRLF
    size and line count as BODYSTRUCTURE reports them."""
    part = plain_structure(b"Subject: x\nContent-Type: multipart/x\n\nline one\nline two")
    assert (part.content_type, part.subtype, part.params, part.parts) == ("text", "plain", (), ())
    assert (part.header_start, part.body_start, part.end) == (0, 38, 55)
    assert (part.rfc822_body_size, part.lines) == (18, 2)


def _spans_nest(part: mime.MimePart, start: int, end: int) -> bool:
    inside = start <= part.header_start <= part.body_start <= part.end <= end
    return inside and all(_spans_nest(p, part.header_start, part.end) for p in part.parts)


@pytest.mark.parametrize(
    "message",
    [
        # Found by fuzz/targets/mime.py: a digest part without a blank line is
        # all header, and its encapsulated message, empty, took the line break
        # after the part (the delimiter's) as its header's end.
        b"Content-Type: multipart/digest; boundary=d\n\n--d\nSubject: one\n--d--\n",
        b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\nSubject: one\r\n--d--\r\n",
        b"Content-Type: message/rfc822\n",
    ],
)
def test_part_offsets_stay_inside_their_parent(message: bytes) -> None:
    """Every part's header and body lie inside its parent's span, so BODY[n.MIME]
    and BODY[n.HEADER] never show bytes of a delimiter or another part."""
    assert _spans_nest(parse_mime(message), 0, len(message))
