"""Tests of the SMTP DATA reader (pymta.smtpd.datareader): the end of data,
dot-unstuffing and line ends, whatever way the content is cut into reads."""

from __future__ import annotations

import random

import pytest

from pymta.smtpd.datareader import DataReader

# The smuggling table of test_smtpd_protocol: none of these ends the data.
FAKE_ENDS = [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r", b"\r.\r\n"]


def converted_whole(raw: bytes) -> tuple[bytes, bytes, bool] | None:
    """The reference: the whole content converted at once (the former
    in-memory conversion): (content, what followed, bare LF seen)."""
    buffer = b"\r\n" + raw
    end = buffer.find(b"\r\n.\r\n")
    if end < 0:
        return None
    body = buffer[: end + 2]
    content = body.replace(b"\r\n", b"\n").replace(b"\n.", b"\n")[1:]
    return content, buffer[end + 5 :], body.count(b"\n") != body.count(b"\r\n")


def feed_in_pieces(raw: bytes, cuts: list[int]) -> tuple[bytes, bytes, bool]:
    reader = DataReader()
    pieces: list[bytes] = []
    start = 0
    for cut in [*cuts, len(raw)]:
        got, done, rest = reader.feed(raw[start:cut])
        pieces += got
        # The count of LF handed out is always exact (it names the Maildir
        # file's ,W= size).
        assert reader.lines == sum(piece.count(b"\n") for piece in pieces)
        if done:
            return b"".join(pieces), rest + raw[cut:], reader.bare_lf
        start = cut
    raise AssertionError("no end of data")


@pytest.mark.parametrize("fake_end", FAKE_ENDS)
def test_smuggled_ends_are_content_at_every_cut(fake_end: bytes) -> None:
    """A fake end of data stays content, and the content is the same, however
    the input is cut in two (each cut point tried) or fed byte by byte."""
    raw = b"Subject: first" + fake_end + b"MAIL FROM:<evil@x.example>\r\n..dot\r\n.\r\nQUIT\r\n"
    expected = converted_whole(raw)
    assert expected is not None
    assert b"MAIL FROM:<evil@x.example>" in expected[0]
    assert expected[1] == b"QUIT\r\n"
    for cut in range(1, len(raw)):
        assert feed_in_pieces(raw, [cut]) == expected, cut
    assert feed_in_pieces(raw, list(range(1, len(raw)))) == expected


def test_dot_on_first_line_ends_an_empty_message() -> None:
    """The DATA line's CR LF starts the content: ``.`` at once is an empty message."""
    assert feed_in_pieces(b".\r\nNOOP\r\n", []) == (b"", b"NOOP\r\n", False)
    assert feed_in_pieces(b".\r\nNOOP\r\n", [1, 2]) == (b"", b"NOOP\r\n", False)


def test_unstuffing_across_reads() -> None:
    """A dot at a line start is removed when the line end and the dot come in
    different reads; a removed dot at a read's end does not make the next
    byte a line start (``..`` keeps one dot)."""
    raw = b"a\r\n..b\r\n.\r\n"
    for cut in range(1, len(raw)):
        assert feed_in_pieces(raw, [cut])[0] == b"a\n.b\n", cut


def test_random_inputs_match_the_whole_conversion() -> None:
    """Random mixes of CR, LF, dots and text, cut at random, give what the
    whole-content conversion gives (content, what followed, bare LF)."""
    alphabet = [b"\r", b"\n", b".", b"a", b"\r\n", b"\r\n.", b"..", b"\r\n.\r"]
    rng = random.Random(5321)
    for _ in range(3000):
        raw = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        raw += b"\r\n.\r\nRSET\r\n"
        expected = converted_whole(raw)
        assert expected is not None
        cuts = sorted(rng.sample(range(1, len(raw)), k=min(len(raw) - 1, rng.randint(0, 8))))
        assert feed_in_pieces(raw, cuts) == expected, (raw, cuts)


def test_mail_with_crlf_lines_matches_the_whole_conversion() -> None:
    """Content whose lines end in CR LF (the reader's fast path), with now
    and then a dot line, a lone CR or LF, a smuggled end, cut at random
    (also between CR LF and "."), gives what the whole-content conversion
    gives, and the LF count of what it handed out."""
    lines = [b"Subject: x", b"text line", b"", b".", b"..", b".dot", b"a\rb", b"c\nd", b"x."]
    weights = [5, 60, 5, 2, 2, 2, 1, 1, 3]
    rng = random.Random(5322)
    for _ in range(3000):
        picked = rng.choices(lines, weights, k=rng.randint(0, 30))
        raw = b"".join(line + b"\r\n" for line in picked) + b".\r\nQUIT\r\n"
        if rng.random() < 0.1:
            raw = b"head" + rng.choice(FAKE_ENDS) + b"tail\r\n" + raw
        expected = converted_whole(raw)
        assert expected is not None
        cuts = sorted(rng.sample(range(1, len(raw)), k=min(len(raw) - 1, rng.randint(0, 4))))
        assert feed_in_pieces(raw, cuts) == expected, (raw, cuts)


def test_reader_counts_the_lines_it_hands_out() -> None:
    """``lines`` is the LF count of the content (the DATA line's CR LF and
    the end of data not included), on either path."""
    reader = DataReader()
    pieces, done, _ = reader.feed(b"a\r\nb\r\n\r\nc\r\n.\r\n")
    assert done and b"".join(pieces) == b"a\nb\n\nc\n" and reader.lines == 4
    reader = DataReader()
    pieces, done, _ = reader.feed(b"a\nb\r\n..c\r\n.\r\n")
    assert done and b"".join(pieces) == b"a\nb\n.c\n" and reader.lines == 3
    reader = DataReader()
    assert reader.feed(b".\r\n") == ([], True, b"") and reader.lines == 0


def test_reader_holds_back_only_a_few_bytes() -> None:
    """The reader's memory does not grow with the message: of 1 MiB fed in
    64 KiB reads, all but at most 5 bytes are handed back at once."""
    reader = DataReader()
    fed = handed = 0
    block = (b"x" * 78 + b"\r\n") * 830
    for _ in range(16):
        pieces, done, _ = reader.feed(block)
        assert not done
        fed += len(block)
        handed += sum(len(p) for p in pieces)
        lines = fed // 80
        assert fed - lines - handed <= 5  # each CR LF became LF
    pieces, done, rest = reader.feed(b".\r\n")
    assert done and rest == b""


def test_fed_after_the_end_is_a_bug() -> None:
    """Feeding a finished reader raises (the session must start a new one)."""
    reader = DataReader()
    reader.feed(b".\r\n")
    with pytest.raises(RuntimeError):
        reader.feed(b"more")
