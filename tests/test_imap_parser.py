"""The IMAP command reader and tokenizer: literals, quoting, limits (case tables)."""

from __future__ import annotations

import pytest

from pymta.imap.parser import (
    Atom,
    Command,
    CommandReader,
    Continue,
    ParseError,
    Refused,
    tokenize,
)
from pymta.imap.sequence import format_pairs, format_set, parse_sequence_set


def reader(line: int = 1000, literal: int = 100, command: int = 5000) -> CommandReader:
    return CommandReader(line, literal, command)


def events(r: CommandReader) -> list[object]:
    out: list[object] = []
    while (e := r.next()) is not None:
        out.append(e)
    return out


def test_simple_command_and_pipelining() -> None:
    """Lines end in CRLF or LF; several pipelined commands come out in order."""
    r = reader()
    r.feed(b"a1 NOOP\r\na2 CAPABILITY\na3 LOG")
    assert events(r) == [Command(b"a1 NOOP"), Command(b"a2 CAPABILITY")]
    r.feed(b"OUT\r\n")
    assert events(r) == [Command(b"a3 LOGOUT")]


def test_synchronising_literal_asks_for_continuation_then_waits() -> None:
    """{n} makes the reader ask for '+' and wait for exactly n bytes, then the rest of the line."""
    r = reader()
    r.feed(b"a1 LOGIN {5}\r\n")
    assert events(r) == [Continue()]
    r.feed(b"al")
    assert events(r) == []
    r.feed(b"ice {3}\r\n")
    assert events(r) == [Continue()]
    r.feed(b"p w\r\n")
    [cmd] = events(r)
    assert isinstance(cmd, Command)
    assert tokenize(cmd.data) == [Atom("a1"), Atom("LOGIN"), b"alice", b"p w"]


def test_non_synchronising_literal_needs_no_continuation() -> None:
    """LITERAL+ {n+}: the bytes follow at once, no '+' is sent."""
    r = reader()
    r.feed(b"a1 LOGIN {5+}\r\nalice secret\r\n")
    [cmd] = events(r)
    assert isinstance(cmd, Command)
    assert tokenize(cmd.data) == [Atom("a1"), Atom("LOGIN"), b"alice", Atom("secret")]


def test_literal_may_hold_crlf_and_parentheses() -> None:
    """A literal's bytes are taken as they are, line breaks and specials included."""
    r = reader()
    r.feed(b'a1 APPEND INBOX {12+}\r\n(x)\r\n"y\r\n{2}\r\n')
    [cmd] = events(r)
    assert isinstance(cmd, Command)
    assert tokenize(cmd.data)[-1] == b'(x)\r\n"y\r\n{2}'


def test_empty_literal() -> None:
    """{0} is an empty string and needs no continuation."""
    r = reader()
    r.feed(b"a1 LOGIN {0}\r\n x\r\n")
    [cmd] = events(r)
    assert isinstance(cmd, Command)
    assert tokenize(cmd.data) == [Atom("a1"), Atom("LOGIN"), b"", Atom("x")]


def test_oversize_literal_refused_before_any_byte_is_read() -> None:
    """A {n} over the limit is answered NO [TOOBIG] at once: no continuation, nothing buffered."""
    r = reader(literal=100)
    r.feed(b"a1 APPEND INBOX {101}\r\n")
    assert events(r) == [Refused(b"a1", b"a1 NO [TOOBIG] Literal too big.\r\n")]
    assert r.pending() == 0
    r.feed(b"a2 NOOP\r\n")
    assert events(r) == [Command(b"a2 NOOP")]


def test_oversize_non_synchronising_literal_is_skipped_without_buffering() -> None:
    """A {n+} over the limit is refused and its bytes are dropped as they arrive."""
    r = reader(literal=100)
    r.feed(b"a1 APPEND INBOX {1000+}\r\n" + b"x" * 600)
    assert events(r) == [Refused(b"a1", b"a1 BAD [TOOBIG] Literal too big.\r\n")]
    assert r.pending() == 0
    r.feed(b"x" * 400 + b" rest of line\r\na2 NOOP\r\n")
    assert events(r) == [Command(b"a2 NOOP")]


def test_overlong_line_is_refused_and_skipped_to_its_end() -> None:
    """A line over the limit gets BAD once, is discarded up to its LF, and memory stays bounded."""
    r = reader(line=50)
    r.feed(b"a1 " + b"x" * 60)
    assert events(r) == [Refused(b"a1", b"a1 BAD Command line too long.\r\n")]
    assert r.pending() == 0
    r.feed(b"y" * 100)
    assert events(r) == []
    assert r.pending() == 0
    r.feed(b"zz\r\na2 NOOP\r\n")
    assert events(r) == [Command(b"a2 NOOP")]


def test_whole_command_limit_counts_literals() -> None:
    """Many literals in one command cannot exceed the command limit."""
    r = reader(literal=100, command=150)
    r.feed(b"a1 X {90+}\r\n" + b"a" * 90 + b" {90+}\r\n")
    assert events(r) == [Refused(b"a1", b"a1 BAD [TOOBIG] Literal too big.\r\n")]


def test_clear_drops_buffered_input() -> None:
    """clear() (STARTTLS) forgets everything received so far."""
    r = reader()
    r.feed(b"a1 STARTTLS\r\na2 LOGIN x y\r\n")
    assert r.next() == Command(b"a1 STARTTLS")
    r.clear()
    assert events(r) == []


@pytest.mark.parametrize(
    ("data", "tokens"),
    [
        (b'a "quoted \\"x\\" \\\\ y"', [Atom("a"), b'quoted "x" \\ y']),
        (b'a ""', [Atom("a"), b""]),
        (b"a (1 (2 3) NIL)", [Atom("a"), [Atom("1"), [Atom("2"), Atom("3")], Atom("NIL")]]),
        (
            b"a FETCH 1 (BODY.PEEK[HEADER.FIELDS (From To)]<0.10> FLAGS)",
            [
                Atom("a"),
                Atom("FETCH"),
                Atom("1"),
                [Atom("BODY.PEEK[HEADER.FIELDS (From To)]<0.10>"), Atom("FLAGS")],
            ],
        ),
        (
            b"a STORE 1 +FLAGS (\\Seen $Junk)",
            [Atom("a"), Atom("STORE"), Atom("1"), Atom("+FLAGS"), [Atom("\\Seen"), Atom("$Junk")]],
        ),
        (b'a LIST "" %', [Atom("a"), Atom("LIST"), b"", Atom("%")]),
        # One atom through several sections (spaces and parentheses inside).
        (b"a 1,3:5,9 x[a (b)]y[]z", [Atom("a"), Atom("1,3:5,9"), Atom("x[a (b)]y[]z")]),
        (b'a b"c"', [Atom("a"), Atom("b"), b"c"]),
    ],
)
def test_tokens(data: bytes, tokens: list[object]) -> None:
    """Atoms (ending where a quoted string begins, running through sections),
    quoted strings with \\\\ and \\" escapes, nested lists, sections with spaces."""
    assert tokenize(data) == tokens


@pytest.mark.parametrize(
    "data",
    [
        b'a "unterminated',
        b'a "bad \\n escape"',
        b"a (unclosed",
        b"a closed)",
        b"a " + b"(" * 30 + b")" * 30,
        b"a \xff\xfe",
        b"a {5}\r\nab",
        b"a b\x01c",
        b"a b\x7fc",
        b"a b\rc",
    ],
)
def test_malformed_commands_raise_parse_error(data: bytes) -> None:
    """Malformed input is a ParseError (answered BAD), never another exception."""
    with pytest.raises(ParseError):
        tokenize(data)


def test_sequence_sets() -> None:
    """Ranges resolve against the largest number, in either order, merged; * is the largest."""
    s = parse_sequence_set("5:3,1,10:*")
    assert s.ranges(12) == [(1, 1), (3, 5), (10, 12)]
    assert s.contains(11, 12) and not s.contains(2, 12)
    assert parse_sequence_set("*").ranges(7) == [(7, 7)]
    assert parse_sequence_set("20:*").ranges(7) == [(7, 20)]
    for bad in ("", "0", "1:0", "a", "1,,2", "01", "99999999999"):
        with pytest.raises(ValueError):
            parse_sequence_set(bad)


def test_format_sets() -> None:
    """Sets are written back short; COPYUID lists keep their order."""
    assert format_set([5, 1, 2, 3, 9]) == "1:3,5,9"
    assert format_set([]) == ""
    assert format_pairs([4, 5, 6, 2]) == "4:6,2"
