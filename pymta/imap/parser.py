"""The IMAP command reader: bytes from the client in, whole commands out.

Mirrors the command grammar of RFC 3501 section 9 (with RFC 7888 LITERAL+
and LITERAL- literals). Two layers:

- :class:`CommandReader` cuts the byte stream into commands. A command is
  one or more lines joined by literals ``{n}`` (synchronising: the server
  must answer ``+`` before the client sends the bytes), ``{n+}`` (sent
  without waiting). The literal size is checked against the limit *before*
  any literal byte is read or a continuation is sent; a line longer than
  the line limit is refused and skipped to its end; a whole command may not
  exceed the command limit. Memory per connection is bounded by these
  limits.
- :func:`tokenize` turns one complete command into tokens: :class:`Atom`
  (``str``; atoms, ``NIL``, flags, FETCH items with their ``[...]`` section
  and ``<...>`` partial), ``bytes`` (quoted strings with ``\\\\`` and
  ``\\"`` escapes, and literals as :class:`Literal`), and ``list`` (groups,
  nested at most :data:`MAX_NESTING` deep).

Untrusted input: every byte. Nothing raises but :class:`ParseError` (the
protocol answers BAD). Writes nothing; logs nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_NESTING = 20

_TAG = re.compile(rb"[!#$&'+,\-./0-9:;<=>?@A-Z\[\^_`a-z|}~]{1,64}")
_LITERAL_AT_END = re.compile(rb"~?\{(\d{1,20})([+-]?)\}\Z")


class Atom(str):
    """An atom (unquoted word) of a command."""

    __slots__ = ()


class Literal(bytes):
    """A literal ``{n}`` or ``~{n}`` (bytes, as a quoted string is; APPEND
    tells its message from a quoted date-time by this)."""

    __slots__ = ()


Token = Atom | bytes | list["Token"]


class Literal8(Literal):
    """The octets of a literal8 ``~{n}`` (RFC 3516 4.4): may hold NUL and
    binary content; a plain literal is a :class:`Literal`."""

    __slots__ = ()


class ParseError(Exception):
    """The command does not follow the grammar; the message is for the client."""


@dataclass(frozen=True)
class Command:
    """One complete command: its bytes, literal markers made ``{n}`` (``~{n}``
    for a literal8)."""

    data: bytes


@dataclass(frozen=True)
class Continue:
    """A synchronising literal was announced: send ``+ OK`` to the client."""


@dataclass(frozen=True)
class Refused:
    """The command was refused before it was read in full (too long, literal too
    big); ``tag`` is the command's tag (``*`` when unknown), ``response``
    the whole status response to send, ``fatal`` asks to close the session."""

    tag: bytes
    response: bytes
    fatal: bool = False


Event = Command | Continue | Refused


def tag_of(line: bytes) -> bytes:
    """The tag of a command line, or ``*`` when it has none that is valid."""
    word = line.split(b" ", 1)[0]
    return word if _TAG.fullmatch(word) else b"*"


class CommandReader:
    """Cuts the client's bytes into commands (see the module docstring)."""

    def __init__(self, line_limit: int, literal_limit: int, command_limit: int) -> None:
        self.line_limit = line_limit
        self.literal_limit = literal_limit
        self.command_limit = command_limit
        self._buffer = bytearray()
        self._command = bytearray()  # the command so far: lines and literals
        self._started = False
        self._size = 0
        self._literal = 0  # bytes of literal still to read
        self._skip_line = False  # inside an overlong line: drop up to its LF
        self._skip_bytes = 0  # a refused non-synchronising literal being skipped
        self._tag = b"*"

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def clear(self) -> None:
        """Forget everything buffered (STARTTLS: CVE-2011-0411)."""
        self._buffer.clear()
        self._reset()

    def pending(self) -> int:
        return len(self._buffer)

    def take_buffered(self) -> bytes:
        """Hand over the bytes not read yet (after COMPRESS they are
        compressed: RFC 4978 starts right after the command's CRLF)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def in_command(self) -> bool:
        """Part of a command has arrived (a line without its end, or a
        command waiting for a literal or for what follows one)."""
        return self._started or bool(self._buffer)

    def _reset(self) -> None:
        self._command = bytearray()
        self._started = False
        self._size = 0
        self._literal = 0
        self._tag = b"*"

    def read_line(self) -> bytes | None:
        """One raw line (an AUTHENTICATE response, IDLE's DONE) without its
        line end, or None until it is complete. Overlong lines come back
        cut (``b"\\0"`` marks them: no valid response contains NUL)."""
        end = self._buffer.find(b"\n")
        if end < 0:
            if len(self._buffer) > self.line_limit:
                self._buffer.clear()
                self._skip_line = True
                return b"\0"
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        if self._skip_line:
            self._skip_line = False
            return self.read_line()
        return line[:-1] if line.endswith(b"\r") else line

    def next(self) -> Event | None:
        """The next event, or None until more bytes arrive."""
        while True:
            if self._skip_bytes:
                n = min(self._skip_bytes, len(self._buffer))
                del self._buffer[:n]
                self._skip_bytes -= n
                if self._skip_bytes:
                    return None
                self._skip_line = True  # and the rest of that command line
            if self._literal:
                if len(self._buffer) < self._literal:
                    return None
                self._command += self._buffer[: self._literal]
                del self._buffer[: self._literal]
                self._literal = 0
                continue
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self.line_limit:
                    if not self._started:
                        self._tag = tag_of(bytes(self._buffer[:80]))
                    self._buffer.clear()
                    if self._skip_line:
                        return None
                    self._skip_line = True
                    return self._refuse(b"BAD", b"Command line too long.")
                return None
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._skip_line:
                self._skip_line = False
                self._reset()
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            if not self._started:
                self._started = True
                self._tag = tag_of(line)
            if len(line) > self.line_limit:
                return self._refuse(b"BAD", b"Command line too long.")
            self._size += len(line)
            if self._size > self.command_limit:
                return self._refuse(b"BAD", b"Command too long.")
            m = _LITERAL_AT_END.search(line)
            if m is None:
                self._command += line
                data = bytes(self._command)
                self._reset()
                return Command(data)
            size = int(m.group(1))
            sync = m.group(2) != b"+"
            if size > self.literal_limit or self._size + size > self.command_limit:
                if sync:
                    # RFC 7889: refuse before the client sends anything.
                    return self._refuse(b"NO", b"[TOOBIG] Literal too big.")
                # The bytes are on their way: skip them without keeping them.
                self._skip_bytes = size
                return self._refuse(b"BAD", b"[TOOBIG] Literal too big.")
            self._size += size
            # "~" stays: a literal8 (RFC 3516) is told apart by the parser.
            marker = b"~{%d}\r\n" if line[m.start()] == 0x7E else b"{%d}\r\n"
            self._command += line[: m.start()] + marker % size
            self._literal = size
            if sync and size:
                return Continue()

    def _refuse(self, status: bytes, text: bytes) -> Refused:
        tag = self._tag
        self._reset()
        return Refused(tag, tag + b" " + status + b" " + text + b"\r\n")


class _Cursor:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0


# Atom characters: anything but space ( ) { " (CR and LF among the
# controls), controls, DEL, and "[" (which opens a section).
_ATOM_RUN = re.compile(rb'[^ (){"\x00-\x1f\x7f\[]*')


def tokenize(data: bytes) -> list[Token]:
    """Every token of one command (as :class:`CommandReader` delivered it)."""
    cur = _Cursor(data)
    tokens = _tokens(cur, 0)
    if cur.pos < len(data):
        raise ParseError("Unexpected ')'.")
    return tokens


def _tokens(cur: _Cursor, depth: int) -> list[Token]:
    if depth > MAX_NESTING:
        raise ParseError("Too deep nesting of parentheses.")
    out: list[Token] = []
    data = cur.data
    n = len(data)
    while cur.pos < n:
        c = data[cur.pos]
        if c == 0x20:
            cur.pos += 1
            continue
        if c == 0x28:  # (
            cur.pos += 1
            out.append(_tokens(cur, depth + 1))
            if cur.pos >= n or data[cur.pos] != 0x29:
                raise ParseError("Missing ')'.")
            cur.pos += 1
            continue
        if c == 0x29:  # )
            if depth == 0:
                raise ParseError("Unexpected ')'.")
            return out
        if c == 0x22:  # "
            out.append(_quoted(cur))
            continue
        if c == 0x7B or (c == 0x7E and data[cur.pos + 1 : cur.pos + 2] == b"{"):  # { or ~{
            out.append(_literal(cur))
            continue
        out.append(_atom(cur))
    if depth:
        raise ParseError("Missing ')'.")
    return out


def _quoted(cur: _Cursor) -> bytes:
    data = cur.data
    i = cur.pos + 1
    out = bytearray()
    while i < len(data):
        c = data[i]
        if c == 0x22:
            cur.pos = i + 1
            return bytes(out)
        if c == 0x5C:  # backslash: only \\ and \" (RFC 3501 quoted-specials)
            nxt = data[i + 1 : i + 2]
            if nxt not in (b"\\", b'"'):
                raise ParseError("Invalid escape in quoted string.")
            out += nxt
            i += 2
            continue
        if c in (0x0D, 0x0A, 0x00):
            raise ParseError("Line break in quoted string.")
        out.append(c)
        i += 1
    raise ParseError("Missing '\"'.")


def _literal(cur: _Cursor) -> bytes:
    data = cur.data
    literal_start = cur.pos
    start = cur.pos + (1 if data[cur.pos] == 0x7E else 0)
    close = data.find(b"}", start)
    if close < 0 or not data[start + 1 : close].isdigit():
        raise ParseError("Invalid literal.")
    size = int(data[start + 1 : close])
    if data[close + 1 : close + 3] != b"\r\n":
        raise ParseError("Literal must end its line.")
    begin = close + 3
    if begin + size > len(data):
        raise ParseError("Literal is cut short.")
    cur.pos = begin + size
    value = memoryview(data)[begin : begin + size]
    return Literal8(value) if start > literal_start else Literal(value)


def _atom(cur: _Cursor) -> Atom:
    data = cur.data
    i = cur.pos
    n = len(data)
    while i < n:
        # A run of atom characters in one regex step (a UID set of a few
        # hundred bytes is one atom), then a section, which runs to its ].
        run = _ATOM_RUN.match(data, i)
        assert run is not None  # "*": it matches the empty string
        i = run.end()
        if i < n and data[i] == 0x5B:
            close = data.find(b"]", i)
            # "[" is an atom character (RFC 3501 9: only "]" is special):
            # unclosed, it is part of the atom (SELECT a[b, LIST "" a[*).
            i = i + 1 if close < 0 else close + 1
            continue
        break
    if i == cur.pos:
        raise ParseError("Invalid characters in command.")
    try:
        text = data[cur.pos : i].decode("ascii")
    except UnicodeDecodeError:
        raise ParseError("8-bit characters in an atom.") from None
    cur.pos = i
    return Atom(text)
