"""Folder names, modified UTF-7, Maildir flag letters and MIME structure."""

from __future__ import annotations

import pytest

from pymta.mailstore import mime
from pymta.mailstore.interface import InvalidFolderName
from pymta.mailstore.names import (
    dirname_to_folder,
    filename_sizes,
    flags_to_letters,
    folder_dirname,
    is_acceptable_filename,
    letters_to_flags,
    mutf7_decode,
    mutf7_encode,
    rfc822_size,
    rfc822_size_of_stream,
    split_flags,
    validate_folder_name,
)


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("Sent", "Sent"),
        ("a&b", "a&-b"),
        ("Café", "Caf&AOk-"),
        ("日本語", "&ZeVnLIqe-"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
    ],
)
def test_mutf7_round_trip(text: str, encoded: str) -> None:
    """Modified UTF-7 matches RFC 3501 section 5.1.3's examples both ways."""
    assert mutf7_encode(text) == encoded
    assert mutf7_decode(encoded) == text


@pytest.mark.parametrize("bad", ["&", "&Jjo", "&Jjo!-", "é"])
def test_mutf7_rejects_malformed(bad: str) -> None:
    """Malformed modified UTF-7 is a ValueError, never garbage."""
    with pytest.raises(ValueError):
        mutf7_decode(bad)


def test_folder_dirnames() -> None:
    """Folders map to Maildir++ .A.B directories and back; INBOX is the root."""
    assert folder_dirname("inbox") == ""
    assert folder_dirname("A/Café") == ".A.Caf&AOk-"
    assert dirname_to_folder(".A.Caf&AOk-") == "A/Café"
    for junk in [".", "..", "..pymta-deleted-1", ".a..b", "cur", ".&bad"]:
        assert dirname_to_folder(junk) is None


@pytest.mark.parametrize(
    "bad", ["", "/", "a//b", "a.b", "../x", "x/..", "INBOX/x", " a", "a\tb", "a%", "b*", "x" * 300]
)
def test_bad_folder_names(bad: str) -> None:
    """Names that could escape, clash with the on-disk separator or confuse
    LIST are refused."""
    with pytest.raises(InvalidFolderName):
        validate_folder_name(bad)


def test_flag_letters() -> None:
    """Flags map to D F P R S T in ASCII order and keywords to a-z letters."""
    letters = flags_to_letters(
        frozenset({"\\Seen", "\\Draft", "\\Deleted"}),
        frozenset({"$Forwarded", "work", "nolet"}),
        {"work": "b"},
    )
    assert letters == "DPSTb"
    flags, keywords = letters_to_flags("DPSTbz", {"b": "work"})
    assert flags == {"\\Draft", "\\Seen", "\\Deleted"}
    assert keywords == {"$Forwarded", "work"}


def test_split_flags_canonicalises() -> None:
    """Client flags are case-folded to canonical system flags; \\Recent and
    non-atom keywords are dropped."""
    assert split_flags(["\\SEEN", "\\Recent", "ok", "bad word", "(x"]) == (
        frozenset({"\\Seen"}),
        frozenset({"ok"}),
    )


def test_filename_checks() -> None:
    """Dot files, control characters and slashes are not message names; S=/W= are parsed."""
    assert is_acceptable_filename("1.M2P3.host,S=10,W=12:2,S")
    for bad in [".x", "a/b", "a b", "a\nb", "", "x" * 256]:
        assert not is_acceptable_filename(bad)
    assert filename_sizes("1.a.host,S=10,W=12") == (10, 12)
    assert filename_sizes("1.a.host,S=x") == (None, None)


def test_filename_sizes_takes_the_last_field_of_each_letter() -> None:
    """The common ``,S=<n>,W=<n>`` ending and every other order give the
    same answer: the last ``,S=`` and ``,W=`` fields holding only ASCII
    digits and ending at a comma or the end count; anything else is no
    hint."""
    assert filename_sizes("1.a.host,S=1,W=2,S=3") == (3, 2)
    assert filename_sizes("1.a.host,S=1,S=4,W=5") == (4, 5)
    assert filename_sizes("1.a.host,W=5,S=6") == (6, 5)
    assert filename_sizes("1.a.host,S=7,W=8x") == (7, None)
    assert filename_sizes("1.a.host,S=,W=9") == (None, 9)
    assert filename_sizes("1.a.host,S=\u00b2,W=9") == (None, 9)  # a digit, not ASCII
    assert filename_sizes("1.a.host,S=1x,W=2") == (None, 2)
    assert filename_sizes("1.a.host,S=10,W=12,x") == (10, 12)
    assert filename_sizes("1.a.host,XS=10,W=12") == (None, 12)
    assert rfc822_size(b"a\nb\r\nc\n") == 9


def test_mime_nested_and_cached_form() -> None:
    """message/rfc822 inside multipart is parsed with offsets, and the JSON
    cache form round-trips."""
    inner = b"Subject: inner\nContent-Type: text/html\n\n<p>x</p>\n"
    msg = (
        b"Content-Type: multipart/mixed; boundary=XX\n\n--XX\n"
        b"Content-Type: text/plain\n\nhello\n--XX\nContent-Type: message/rfc822\n"
        b'Content-Disposition: attachment; filename="m.eml"\n\n' + inner + b"--XX--\n"
    )
    tree = mime.parse_mime(msg)
    assert [p.subtype for p in tree.parts] == ["plain", "rfc822"]
    attached = tree.parts[1]
    assert attached.disposition == "attachment"
    assert attached.disposition_params == (("filename", "m.eml"),)
    assert msg[attached.body_start : attached.end] == inner.rstrip(b"\n")
    assert attached.parts[0].parts == ()
    assert attached.parts[0].subtype == "html"
    assert mime.from_json(mime.to_json(tree)) == tree


def test_mime_malformed_is_text() -> None:
    """A multipart without a usable boundary, or no header at all, becomes
    text/plain instead of an error."""
    assert mime.parse_mime(b"Content-Type: multipart/mixed\n\nbody\n").subtype == "plain"
    bare = mime.parse_mime(b"\njust a body\n")
    assert (bare.content_type, bare.lines) == ("text", 1)
    deep = b"".join(b"Content-Type: message/rfc822\n\n" for _ in range(100)) + b"x\n"
    assert mime.parse_mime(deep) is not None


def test_rfc822_size_of_stream_across_chunks() -> None:
    """Counting in chunks gives the same CRLF size as counting at once, also
    when a CRLF is split between two chunks."""
    import io

    data = b"a\r\nb\nc\r\n\r\nd\r" + b"\n" * 3
    for chunk in range(1, 8):
        assert rfc822_size_of_stream(io.BytesIO(data).read, chunk) == (
            len(data),
            rfc822_size(data),
        )
