"""grammar: Sieve scripts (RFC 5228 section 8) to a syntax tree.

The lexical and syntactic layer only: comments (``#`` to the line end,
``/* ... */``), identifiers, tags (``:name``), numbers with the ``K``,
``M``, ``G`` quantifiers, quoted strings (``\\"`` and ``\\\\``; any other
backslash is dropped, section 2.4.2), ``text:`` multi-line strings (dot
stuffed, ending at a line holding only ``.``), string lists, tests, test
lists and blocks. What each command means is :mod:`pymta.sieve.check`'s.

Untrusted input: the whole script (a user writes it, ManageSieve uploads
it). Bounded: the script's size (the caller's limit), nesting depth
(:data:`MAX_NESTING`, tests and blocks together) and the number of items
in a list; a violation is :class:`SieveSyntaxError` with the line number,
never a crash or unbounded recursion. Pure: reads and writes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: Blocks and test lists nested deeper than this are refused (Pigeonhole
#: refuses beyond 32 block levels; tests count too here).
MAX_NESTING = 32
#: Items in one string list or test list.
MAX_LIST = 1024


class SieveSyntaxError(Exception):
    """A script that does not parse or check; ``line`` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        self.message = message
        super().__init__(f"line {line}: {message}")


@dataclass
class Tag:
    name: str  # lower-cased, without the colon
    line: int


@dataclass
class Number:
    value: int
    line: int


@dataclass
class StringList:
    values: list[str]
    line: int
    single: bool  # written as one string, not as a [list]


Argument = Tag | Number | StringList


@dataclass
class Test:
    name: str  # lower-cased identifier
    args: list[Argument]
    tests: list[Test]
    line: int
    #: Filled in by the checker: the test's parsed arguments.
    checked: dict[str, object] = field(default_factory=dict)


@dataclass
class Command:
    name: str
    args: list[Argument]
    tests: list[Test]
    block: list[Command] | None
    line: int
    #: Filled in by the checker: the command's parsed arguments.
    checked: dict[str, object] = field(default_factory=dict)


_TOKEN = re.compile(
    rb"""
    (?P<ws>[ \t\r\n]+)
  | (?P<hash>\#[^\n]*)
  | (?P<bracket>/\*)
  | (?P<text>text:[ \t]*(?:\#[^\n]*)?\r?\n)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<tag>:[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>[0-9]+[KkMmGg]?)
  | (?P<quote>")
  | (?P<special>[;{}()\[\],])
    """,
    re.VERBOSE,
)

_QUANTIFIERS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


@dataclass
class _Token:
    kind: str
    value: object
    line: int


def tokenize(source: bytes) -> list[_Token]:
    """The script's tokens; SieveSyntaxError for what is no token."""
    tokens: list[_Token] = []
    pos, line, end = 0, 1, len(source)
    while pos < end:
        m = _TOKEN.match(source, pos)
        if m is None:
            raise SieveSyntaxError(line, f"unexpected character {source[pos : pos + 1]!r}")
        kind = m.lastgroup or ""
        text = m.group()
        if kind == "bracket":
            close = source.find(b"*/", m.end())
            if close < 0:
                raise SieveSyntaxError(line, "unterminated /* comment")
            line += source.count(b"\n", pos, close)
            pos = close + 2
            continue
        if kind == "quote":
            value, pos2 = _quoted(source, m.end(), line)
            tokens.append(_Token("string", value, line))
            line += source.count(b"\n", pos, pos2)
            pos = pos2
            continue
        if kind == "text":
            value, pos2 = _multiline(source, m.end(), line)
            tokens.append(_Token("string", value, line))
            line += source.count(b"\n", pos, pos2)
            pos = pos2
            continue
        if kind == "ident":
            tokens.append(_Token("ident", text.decode().lower(), line))
        elif kind == "tag":
            tokens.append(_Token("tag", text[1:].decode().lower(), line))
        elif kind == "number":
            digits = text.decode()
            factor = _QUANTIFIERS.get(digits[-1].lower(), 1)
            if factor > 1:
                digits = digits[:-1]
            number = int(digits) * factor
            if number >= 1 << 63:
                raise SieveSyntaxError(line, "number too large")
            tokens.append(_Token("number", number, line))
        elif kind == "special":
            tokens.append(_Token(text.decode(), None, line))
        line += text.count(b"\n")
        pos = m.end()
    tokens.append(_Token("eof", None, line))
    return tokens


def _decode(raw: bytes, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SieveSyntaxError(line, "string is not valid UTF-8") from None


def _quoted(source: bytes, pos: int, line: int) -> tuple[str, int]:
    out = bytearray()
    end = len(source)
    while pos < end:
        c = source[pos]
        if c == 0x22:  # "
            return _decode(bytes(out), line), pos + 1
        if c == 0x5C and pos + 1 < end:  # backslash: the next character as is
            out.append(source[pos + 1])
            pos += 2
            continue
        out.append(c)
        pos += 1
    raise SieveSyntaxError(line, "unterminated string")


def _multiline(source: bytes, pos: int, line: int) -> tuple[str, int]:
    out: list[bytes] = []
    end = len(source)
    while pos < end:
        nl = source.find(b"\n", pos)
        if nl < 0:
            break
        text = source[pos:nl].rstrip(b"\r")
        pos = nl + 1
        if text == b".":
            return _decode(b"".join(out), line), pos
        if text.startswith(b".."):
            text = text[1:]
        out.append(text + b"\r\n")
    raise SieveSyntaxError(line, "unterminated text: string (no line with a single '.')")


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def expect(self, kind: str, what: str) -> _Token:
        token = self.take()
        if token.kind != kind:
            raise SieveSyntaxError(token.line, f"expected {what}, found {_describe(token)}")
        return token

    def commands(self, depth: int, until: str) -> list[Command]:
        out: list[Command] = []
        while self.peek().kind != until:
            out.append(self.command(depth))
        return out

    def command(self, depth: int) -> Command:
        token = self.expect("ident", "a command")
        args, tests = self.arguments(depth)
        nxt = self.take()
        block: list[Command] | None = None
        if nxt.kind == "{":
            if depth >= MAX_NESTING:
                raise SieveSyntaxError(nxt.line, "blocks nested too deeply")
            block = self.commands(depth + 1, "}")
            self.expect("}", "'}'")
        elif nxt.kind != ";":
            raise SieveSyntaxError(nxt.line, f"expected ';' or '{{', found {_describe(nxt)}")
        return Command(str(token.value), args, tests, block, token.line)

    def arguments(self, depth: int) -> tuple[list[Argument], list[Test]]:
        args: list[Argument] = []
        while True:
            token = self.peek()
            if token.kind == "tag":
                self.take()
                args.append(Tag(str(token.value), token.line))
            elif token.kind == "number":
                self.take()
                args.append(Number(int(token.value), token.line))  # type: ignore[call-overload]
            elif token.kind == "string":
                self.take()
                args.append(StringList([str(token.value)], token.line, True))
            elif token.kind == "[":
                args.append(self.string_list())
            else:
                break
        tests: list[Test] = []
        token = self.peek()
        if token.kind == "ident":
            tests.append(self.test(depth))
        elif token.kind == "(":
            tests = self.test_list(depth)
        return args, tests

    def string_list(self) -> StringList:
        start = self.expect("[", "'['")
        values: list[str] = []
        while True:
            token = self.expect("string", "a string")
            values.append(str(token.value))
            if len(values) > MAX_LIST:
                raise SieveSyntaxError(token.line, "string list too long")
            sep = self.take()
            if sep.kind == "]":
                return StringList(values, start.line, False)
            if sep.kind != ",":
                raise SieveSyntaxError(sep.line, f"expected ',' or ']', found {_describe(sep)}")

    def test(self, depth: int) -> Test:
        if depth >= MAX_NESTING:
            raise SieveSyntaxError(self.peek().line, "tests nested too deeply")
        token = self.expect("ident", "a test")
        args, tests = self.arguments(depth + 1)
        return Test(str(token.value), args, tests, token.line)

    def test_list(self, depth: int) -> list[Test]:
        self.expect("(", "'('")
        tests = [self.test(depth + 1)]
        while True:
            sep = self.take()
            if sep.kind == ")":
                return tests
            if sep.kind != ",":
                raise SieveSyntaxError(sep.line, f"expected ',' or ')', found {_describe(sep)}")
            tests.append(self.test(depth + 1))
            if len(tests) > MAX_LIST:
                raise SieveSyntaxError(sep.line, "test list too long")


def _describe(token: _Token) -> str:
    if token.kind == "eof":
        return "end of script"
    if token.kind in ("ident", "number"):
        return f"{token.kind} {token.value!r}"
    if token.kind == "tag":
        return f"tag ':{token.value}'"
    if token.kind == "string":
        return "a string"
    return f"'{token.kind}'"


def parse(source: bytes) -> list[Command]:
    """The script's commands; SieveSyntaxError on a syntax error."""
    parser = _Parser(tokenize(source))
    commands = parser.commands(0, "eof")
    return commands
