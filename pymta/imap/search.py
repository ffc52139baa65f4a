"""SEARCH criteria: parse the keys of RFC 3501 section 6.4.4 and test messages.

Every key of RFC 3501 (ALL, ANSWERED, BCC, BEFORE, BODY, CC, DELETED,
DRAFT, FLAGGED, FROM, HEADER, KEYWORD, LARGER, NEW, NOT, OLD, ON, OR,
RECENT, SEEN, SENTBEFORE, SENTON, SENTSINCE, SINCE, SMALLER, SUBJECT, TEXT,
TO, UID, UNANSWERED, UNDELETED, UNDRAFT, UNFLAGGED, UNKEYWORD, UNSEEN,
sequence sets, parenthesised groups), RFC 7162's MODSEQ, RFC 5182's
``$`` (the saved result) and RFC 8474's EMAILID and THREADID. String keys
match case-insensitively as substrings (RFC 3501), against header values
with RFC 2047 encoded words decoded; header keys read the store's cached
header block, BODY and TEXT the file. Dates compare the UTC date,
disregarding time, as RFC 3501 asks.

:func:`parse_search` returns a :class:`Criteria` (a test function plus
what it needs: file, header, MODSEQ); the session calls it per message.

Untrusted input: the criteria (ParseError on bad syntax; NOT, OR and
parentheses nest at most :data:`MAX_SEARCH_DEPTH` deep, so that neither
the parser nor the test it builds can exhaust the stack) and the messages.
:attr:`Criteria.uses_content` tells that some key (BODY, TEXT) reads the
whole message: the session runs such a search off the reactor thread
(pymta.imap.scan). A test reads nothing but its :class:`Candidate`, so it
may run in a worker thread when the candidate's loaders do. Writes and
logs nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.utils import parsedate_tz

from pymta.imap.addresses import address_text
from pymta.imap.objectid import email_id, thread_id
from pymta.imap.parser import Atom, ParseError, Token
from pymta.imap.sequence import SequenceSet, parse_sequence_set
from pymta.imap.structure import header_values
from pymta.imap.wire import parse_date
from pymta.mailstore.interface import MessageInfo, known_date

CHARSETS = ("UTF-8", "US-ASCII")

#: How deep NOT, OR and parenthesised groups may nest in one SEARCH
#: (``NOT NOT ... x`` 10,000 deep would exhaust the stack). Real clients
#: nest a few levels (``OR OR OR a b c d`` for four terms).
MAX_SEARCH_DEPTH = 200


class BadCharset(Exception):
    """SEARCH CHARSET names a charset we do not support (NO [BADCHARSET])."""


@dataclass(slots=True)
class Candidate:
    """One message under test: index data now, header and content on demand."""

    msn: int
    info: MessageInfo
    recent: bool
    largest_msn: int
    largest_uid: int
    load_header: Callable[[], bytes]
    load_content: Callable[[], bytes]
    #: For a whole SEARCH: the UIDs whose header may hold a needle (see
    #: :func:`candidates`), or None when the store cannot tell.
    header_hits: Callable[[bytes], Collection[int] | None] = field(
        default=lambda needle: None, repr=False
    )
    _header: bytes | None = field(default=None, repr=False)
    _values: dict[str, list[str]] | None = field(default=None, repr=False)
    _body: str | None = field(default=None, repr=False)
    _flat: bytes | None = field(default=None, repr=False)

    def move_to(self, msn: int, info: MessageInfo, recent: bool) -> None:
        """Make this the candidate of another message, forgetting what was
        loaded for the last one (see :func:`candidates`)."""
        self.msn, self.info, self.recent = msn, info, recent
        self._header = self._values = self._body = self._flat = None

    def header(self) -> bytes:
        """The header block, read once however many keys look at it."""
        if self._header is None:
            self._header = self.load_header()
        return self._header

    def header_values(self) -> dict[str, list[str]]:
        if self._values is None:
            self._values = header_values(self.header())
        return self._values

    def flat_header(self) -> bytes:
        """The header block lower-cased with its line ends removed: every
        unfolded field value (as header_values gives it) is a substring."""
        if self._flat is None:
            self._flat = self.header().replace(b"\r", b"").replace(b"\n", b"").lower()
        return self._flat

    def body_text(self) -> str:
        if self._body is None:
            content = self.load_content()
            header_len = len(self.header())
            self._body = content[header_len:].decode("utf-8", "replace").lower()
        return self._body


Test = Callable[[Candidate], bool]


def candidates(
    messages: Iterable[tuple[int, MessageInfo, bool]],
    largest_msn: int,
    largest_uid: int,
    load_header: Callable[[int], bytes],
    load_content: Callable[[int], bytes],
    hits: Mapping[bytes, Collection[int] | None] | None = None,
) -> Iterator[Candidate]:
    """A Candidate for each (msn, info, recent) in turn: one object moved
    along, whose loaders read the message it is at. A SEARCH tests every
    message once and no test keeps its candidate, so a new object and two
    loader closures per message (of a SEARCH over thousands) are saved.

    ``hits`` maps each of the criteria's :attr:`Criteria.needles` to the
    UIDs whose header may hold it (the store's ``headers_may_contain``,
    asked once per needle for the whole SEARCH), or None when the store
    cannot tell."""
    todo = iter(messages)
    first = next(todo, None)
    if first is None:
        return
    known = hits if hits is not None else {}

    def header_hits(needle: bytes) -> Collection[int] | None:
        return known.get(needle)

    msn, info, recent = first
    cand = Candidate(
        msn,
        info,
        recent,
        largest_msn,
        largest_uid,
        lambda: load_header(cand.info.uid),
        lambda: load_content(cand.info.uid),
        header_hits,
    )
    yield cand
    for msn, info, recent in todo:
        cand.move_to(msn, info, recent)
        yield cand


@dataclass
class Criteria:
    test: Test
    uses_modseq: bool = False
    uses_header: bool = False  # some key reads the header block
    uses_content: bool = False  # some key (BODY, TEXT) reads the whole message
    #: The lower-case needles whose absence from a header block rules a
    #: message out of a header key (the store's headers_may_contain tells
    #: where they may be; an RFC 2047 encoded word may hide them, so the
    #: store is asked for ``=?`` with each).
    needles: frozenset[bytes] = frozenset()
    #: Some key (BEFORE, ON, SINCE) compares the internal date: the store
    #: is asked for dates it has not read yet (IAsyncFolder.get_dated).
    uses_date: bool = False


def _decoded(value: str) -> str:
    try:
        text = value.encode("latin-1", "replace").decode("utf-8")
    except UnicodeDecodeError:
        text = value
    if "=?" in text:
        try:
            text = str(make_header(decode_header(text)))
        except Exception:  # malformed encoded words: match the raw text
            pass
    return text.lower()


def _address_needle(needle: str) -> bytes | None:
    """The piece of an address needle that the whole raw header block must
    hold (its longest between "@"s, without white space), or None."""
    pieces = [p.encode("ascii") for p in needle.split("@") if p] if needle.isascii() else []
    longest = max(pieces, key=len) if pieces else None
    return longest if longest is not None and longest.split() == [longest] else None


def _header_needle(needle: str) -> bytes | None:
    """An ASCII needle without white space, which cannot straddle a folded
    line: the raw cached blocks of the whole folder can be searched for it
    at once. None otherwise."""
    quick = needle.encode("ascii") if needle and needle.isascii() else None
    return quick if quick is not None and quick.split() == [quick] else None


def _address_has(name: str, needle: str) -> Test:
    """FROM/TO/CC/BCC: the needle in the field as written or in its addresses
    written plainly (comments dropped: ``<user (c)@ (c) domain.org>`` is
    found by ``user@domain.org``, as in Dovecot)."""
    # The raw header need only hold each piece between "@"s for a match.
    pieces = [p.encode("ascii") for p in needle.split("@") if p] if needle.isascii() else []
    whole = _address_needle(needle)

    def test(c: Candidate) -> bool:
        if whole is not None:
            hits = c.header_hits(whole)
            if hits is not None and c.info.uid not in hits:
                return False
        if pieces:
            flat = c.flat_header()
            if b"=?" not in flat and not all(p in flat for p in pieces):
                return False
        values = c.header_values().get(name)
        if values is None:
            return False
        if not needle:
            return True
        return any(needle in _decoded(v) or needle in _decoded(address_text(v)) for v in values)

    return test


def _header_has(name: str, needle: str) -> Test:
    # An ASCII needle absent from the whole flattened header block, which
    # holds no RFC 2047 encoded word, cannot be in any decoded value: most
    # messages are ruled out without parsing their header (a SEARCH for one
    # Message-ID in a big folder).
    quick = needle.encode("ascii") if needle and needle.isascii() else None
    whole = _header_needle(needle)

    def test(c: Candidate) -> bool:
        if whole is not None:
            hits = c.header_hits(whole)
            if hits is not None and c.info.uid not in hits:
                return False
        if quick is not None:
            flat = c.flat_header()
            if quick not in flat and b"=?" not in flat:
                return False
        values = c.header_values().get(name)
        if values is None:
            return False
        if not needle:
            return True  # HEADER name "" matches any message with the field
        return any(needle in _decoded(v) for v in values)

    return test


def _utc_date(seconds: float) -> tuple[int, int, int]:
    t = time.gmtime(seconds)
    return (t.tm_year, t.tm_mon, t.tm_mday)


def _sent_date(c: Candidate) -> tuple[int, int, int] | None:
    values = c.header_values().get("date")
    if not values:
        return None
    parsed = parsedate_tz(values[0])
    if parsed is None:
        return None
    return (parsed[0], parsed[1], parsed[2])


class _Parser:
    def __init__(
        self, tokens: list[Token], charset: str, saved: frozenset[int], rev2: bool = False
    ) -> None:
        self.tokens = tokens
        self.rev2 = rev2
        self.pos = 0
        self.charset = charset
        self.saved = saved
        self.uses_modseq = False
        self.uses_header = False
        self.uses_content = False
        self.uses_date = False
        self.needles: set[bytes] = set()
        self.depth = 0  # NOT, OR and groups open around the key being parsed

    def more(self) -> bool:
        return self.pos < len(self.tokens)

    def take(self) -> Token:
        if self.pos >= len(self.tokens):
            raise ParseError("Missing SEARCH argument.")
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def atom(self) -> str:
        token = self.take()
        if not isinstance(token, Atom):
            raise ParseError("Expected an atom in SEARCH.")
        return str(token)

    def text(self) -> str:
        token = self.take()
        if isinstance(token, list):
            raise ParseError("Expected a string in SEARCH.")
        raw = token if isinstance(token, bytes) else str(token).encode("utf-8")
        try:
            return raw.decode("utf-8").lower()
        except UnicodeDecodeError:
            raise ParseError("SEARCH string is not UTF-8.") from None

    def number(self) -> int:
        value = self.atom()
        if not value.isdigit() or len(value) > 20:
            raise ParseError("Expected a number in SEARCH.")
        return int(value)

    def date(self) -> tuple[int, int, int]:
        token = self.take()
        raw = token.decode("ascii", "replace") if isinstance(token, bytes) else str(token)
        try:
            return parse_date(raw)
        except ValueError:
            raise ParseError("Invalid date in SEARCH.") from None

    def all_keys(self) -> Test:
        tests = [self.key()]
        while self.more():
            tests.append(self.key())
        return _and(tests)

    def nested(self) -> Test:
        """A key inside NOT, OR or a group: one level deeper."""
        if self.depth >= MAX_SEARCH_DEPTH:
            raise ParseError(
                f"SEARCH criteria nested too deeply (NOT, OR and parentheses: "
                f"at most {MAX_SEARCH_DEPTH} levels)."
            )
        self.depth += 1
        try:
            return self.key()
        finally:
            self.depth -= 1

    def _needle(self, needle: bytes | None) -> None:
        if needle is not None:
            self.needles.add(needle)

    def key(self) -> Test:
        token = self.take()
        if isinstance(token, list):
            if not token:
                raise ParseError("Empty SEARCH group.")
            if self.depth >= MAX_SEARCH_DEPTH:
                self.nested()  # raises
            sub = _Parser(token, self.charset, self.saved, self.rev2)
            sub.depth = self.depth + 1
            test = sub.all_keys()
            self.uses_modseq |= sub.uses_modseq
            self.uses_header |= sub.uses_header
            self.uses_content |= sub.uses_content
            self.uses_date |= sub.uses_date
            self.needles |= sub.needles
            return test
        if isinstance(token, bytes):
            raise ParseError("Unexpected string in SEARCH.")
        word = token.upper()
        if self.rev2 and word in _REV1_ONLY:
            raise ParseError(f"{word} is not an IMAP4rev2 search key.")
        simple = _FLAG_KEYS.get(word)
        if simple is not None:
            return simple
        if word == "$":  # RFC 5182: the saved result, kept as UIDs
            saved = self.saved
            return lambda c: c.info.uid in saved
        if word[:1].isdigit() or word[:1] == "*":
            seq = _seq(token)
            return lambda c: seq.contains(c.msn, c.largest_msn)
        if word == "UID":
            uids = _seq(self.atom())
            return lambda c: uids.contains(c.info.uid, c.largest_uid)
        if word == "NOT":
            inner = self.nested()
            return lambda c: not inner(c)
        if word == "OR":
            a, b = self.nested(), self.nested()
            return lambda c: a(c) or b(c)
        if word in ("FROM", "TO", "CC", "BCC", "SUBJECT", "HEADER", "TEXT") or word.startswith(
            "SENT"
        ):
            self.uses_header = True
        if word in ("FROM", "TO", "CC", "BCC"):
            needle = self.text()
            self._needle(_address_needle(needle))
            return _address_has(word.lower(), needle)
        if word in ("SUBJECT", "HEADER"):
            name = "subject" if word == "SUBJECT" else self.text()
            needle = self.text()
            self._needle(_header_needle(needle))
            return _header_has(name, needle)
        if word in ("KEYWORD", "UNKEYWORD"):
            kw = self.atom().lower()
            has: Test = lambda c: any(k.lower() == kw for k in c.info.all_flags)  # noqa: E731
            return has if word == "KEYWORD" else (lambda c: not has(c))
        if word in ("LARGER", "SMALLER"):
            size = self.number()
            if word == "LARGER":
                return lambda c: c.info.rfc822_size > size
            return lambda c: c.info.rfc822_size < size
        if word in ("BEFORE", "ON", "SINCE"):
            self.uses_date = True
            day = self.date()
            return _date_test(word, day, lambda c: _utc_date(known_date(c.info)))
        if word in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            day = self.date()
            return _date_test(word[4:], day, _sent_date)
        if word in ("BODY", "TEXT"):
            self.uses_content = True
        if word == "BODY":
            needle = self.text()
            return lambda c: needle in c.body_text()
        if word == "TEXT":
            needle = self.text()

            def text_test(c: Candidate) -> bool:
                header = c.header().decode("utf-8", "replace").lower()
                return needle in header or needle in c.body_text()

            return text_test
        if word in ("EMAILID", "THREADID"):  # RFC 8474 (pymta.imap.objectid)
            self.uses_header = True
            wanted = self.atom()
            ident = email_id if word == "EMAILID" else thread_id
            return lambda c: ident(c.header(), c.info) == wanted
        if word == "MODSEQ":
            self.uses_modseq = True
            if self.more() and isinstance(self.tokens[self.pos], bytes):
                self.take()  # entry name (RFC 7162 search-modseq-ext)
                self.atom()  # entry type: priv / shared / all
            modseq = self.number()
            return lambda c: c.info.modseq >= modseq
        raise ParseError(f"Unknown SEARCH key {token[:30]!r}.")


def _seq(text: str) -> SequenceSet:
    try:
        return parse_sequence_set(text)
    except ValueError as e:
        raise ParseError(f"Invalid sequence set in SEARCH: {e}") from None


def _and(tests: list[Test]) -> Test:
    if len(tests) == 1:
        return tests[0]
    return lambda c: all(t(c) for t in tests)


def _date_test(
    kind: str,
    day: tuple[int, int, int],
    get: Callable[[Candidate], tuple[int, int, int] | None],
) -> Test:
    def test(c: Candidate) -> bool:
        value = get(c)
        if value is None:
            return False
        if kind == "BEFORE":
            return value < day
        if kind == "ON":
            return value == day
        return value >= day

    return test


def _flag(name: str, present: bool = True) -> Test:
    return lambda c: (name in c.info.flags) == present


_FLAG_KEYS: dict[str, Test] = {
    "ALL": lambda c: True,
    "ANSWERED": _flag("\\Answered"),
    "DELETED": _flag("\\Deleted"),
    "DRAFT": _flag("\\Draft"),
    "FLAGGED": _flag("\\Flagged"),
    "SEEN": _flag("\\Seen"),
    "UNANSWERED": _flag("\\Answered", False),
    "UNDELETED": _flag("\\Deleted", False),
    "UNDRAFT": _flag("\\Draft", False),
    "UNFLAGGED": _flag("\\Flagged", False),
    "UNSEEN": _flag("\\Seen", False),
    "RECENT": lambda c: c.recent,
    "NEW": lambda c: c.recent and "\\Seen" not in c.info.flags,
    "OLD": lambda c: not c.recent,
}


#: Keys about \\Recent, which RFC 9051 removed: BAD in an IMAP4rev2 session.
_REV1_ONLY = frozenset({"RECENT", "NEW", "OLD"})


def parse_search(tokens: list[Token], saved: Collection[int] = (), rev2: bool = False) -> Criteria:
    """The criteria of SEARCH (tokens after the command name, with an
    optional ``CHARSET name`` first); ParseError, BadCharset. ``saved`` are
    the UIDs that ``$`` stands for (RFC 5182 SEARCHRES); with ``rev2``
    (IMAP4rev2 enabled) RECENT, NEW and OLD are refused."""
    charset = "UTF-8"
    if len(tokens) >= 2 and isinstance(tokens[0], Atom) and tokens[0].upper() == "CHARSET":
        raw = tokens[1]
        if isinstance(raw, list):
            raise ParseError("Invalid CHARSET.")
        charset = (raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw).upper()
        if charset not in CHARSETS:
            raise BadCharset(charset)
        tokens = tokens[2:]
    if not tokens:
        raise ParseError("Missing SEARCH criteria.")
    parser = _Parser(tokens, charset, frozenset(saved), rev2)
    test = parser.all_keys()
    return Criteria(
        test,
        parser.uses_modseq,
        parser.uses_header,
        parser.uses_content,
        frozenset(parser.needles),
        parser.uses_date,
    )
