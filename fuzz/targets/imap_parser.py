"""The IMAP command parser: bytes from the client to commands and their arguments.

The input is what a client sends, cut into chunks as a network might
deliver it, read by :class:`~pymta.imap.parser.CommandReader` with small
limits (so that overlong lines, literals and commands are reached), and
answered with ``+`` continuations. Each whole command is tokenised, and its
arguments read by every argument parser the commands use: the sequence
set, FETCH items, SEARCH criteria (IMAP4rev1 and rev2), and APPEND and
SEARCH dates.

Documented errors: :class:`~pymta.imap.parser.ParseError` (BAD) and
:class:`~pymta.imap.search.BadCharset` (NO [BADCHARSET]); ValueError from
the sequence-set and date parsers, which document it, is caught where they
are called. Checked besides: the reader's buffers stay within its limits.
"""

from __future__ import annotations

from fuzz.common import Finding, chunks
from pymta.imap.fetch import parse_items
from pymta.imap.parser import Atom, Command, CommandReader, ParseError, Token, tokenize
from pymta.imap.search import BadCharset, parse_search
from pymta.imap.sequence import parse_sequence_set
from pymta.imap.wire import parse_date, parse_date_time

EXPECTED: tuple[type[BaseException], ...] = (ParseError, BadCharset)

LINE_LIMIT = 200
LITERAL_LIMIT = 300
COMMAND_LIMIT = 600


def seeds() -> list[bytes]:
    """Commands from tests/test_imap_parser.py, test_imap_fetch.py, test_imap_search.py
    (first byte: chunk size)."""
    commands = [
        b"a1 LOGIN {17}\r\nalice@example.org {6+}\r\nsecret\r\n",
        b"f FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (x-dup received)] BODY[1.MIME]<0.10>)\r\n",
        b"f UID FETCH 1,3:5,* (BINARY.PEEK[1.2] BINARY.SIZE[1] MODSEQ) (CHANGEDSINCE 3)\r\n",
        b'q SEARCH CHARSET UTF-8 OR FROM "alice" NOT SUBJECT {5+}\r\n'
        b"caf\xc3\xa9 SINCE 1-Feb-1994\r\n",
        b"q UID SEARCH RETURN (MIN MAX) UNSEEN LARGER 100 (HEADER X-Tag red) UID 1:3 $\r\n",
        b'a APPEND INBOX (\\Seen) "14-Nov-2023 10:00:00 +0000" ~{5}\r\nhello\r\n',
        b'a STORE 1:2 +FLAGS.SILENT (\\Deleted $Junk) s LIST "" "*" r RENAME "a b" c\r\n',
    ]
    return [bytes([0]) + c for c in commands]


def _arguments(tokens: list[Token]) -> None:
    for start in (1, 2, 3):
        words = tokens[start:]
        if words and isinstance(words[0], Atom):
            try:
                parse_sequence_set(words[0])
            except ValueError:
                pass
            for rest in (words[1:2], words[1:]):
                try:
                    parse_items(rest)
                except ParseError:
                    pass
        for rev2 in (False, True):
            try:
                parse_search(words, (3, 1, 2), rev2)
            except (ParseError, BadCharset):
                pass
    for token in tokens:
        if isinstance(token, list):
            _arguments([Atom("x"), *token])
            continue
        text = token.decode("latin-1") if isinstance(token, bytes) else str(token)
        for parse in (parse_date, parse_date_time):
            try:
                parse(text)
            except ValueError:
                pass


def one_input(data: bytes) -> None:
    reader = CommandReader(LINE_LIMIT, LITERAL_LIMIT, COMMAND_LIMIT)
    for chunk in chunks(data):
        reader.feed(chunk)
        while (event := reader.next()) is not None:
            if isinstance(event, Command):
                if len(event.data) > COMMAND_LIMIT + LINE_LIMIT:
                    raise Finding(f"a command of {len(event.data)} bytes passed the limits")
                try:
                    tokens = tokenize(event.data)
                except ParseError:
                    continue
                _arguments(tokens)
        if reader.pending() > len(data):
            raise Finding("the reader holds more than it was given")
    while reader.read_line() is not None:
        pass
