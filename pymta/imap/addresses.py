"""Address lists of a header field (RFC 5322 3.4) as IMAP ENVELOPE sees them.

RFC 3501 7.4.2 gives each address as (name, route, mailbox, host), and a
group as a start marker ``(NIL NIL "group" NIL)``, its members, and an end
marker ``(NIL NIL NIL NIL)``. :func:`parse_addresses` reads one field's
value into that list, as Dovecot's message-address parser does:

- comments are dropped, except that a mailbox with no display name takes
  its last comment as its name (``user@domain (Real Name)``);
- ``<@route1,@route2:user@domain>`` keeps its source route;
- local parts and domains are joined without the white space and comments
  around their dots and ``@`` (``<user (c)@ (c) domain.org>`` is
  ``user@domain.org``), so SEARCH FROM finds it (:func:`address_text`).

Untrusted input: the field value; any text gives some list, never an
exception. Writes nothing; logs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Characters that end an atom (RFC 5322 3.2.3 specials, and white space).
_SPECIALS = frozenset('()<>[]:;@\\,."')


@dataclass(frozen=True)
class Address:
    """One ENVELOPE address; a group start has only ``mailbox`` (the group's
    name), a group end nothing."""

    name: str | None
    route: str | None
    mailbox: str | None
    host: str | None


#: Tokens: kind is "atom", "quoted", "comment", "literal" or the special itself.
_Token = tuple[str, str]


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif c == '"':
            i, value = _quoted(text, i + 1, '"')
            out.append(("quoted", value))
        elif c == "(":
            depth, i, start = 1, i + 1, i + 1
            buf: list[str] = []
            while i < n and depth:
                ch = text[i]
                if ch == "\\" and i + 1 < n:
                    buf.append(text[i + 1])
                    i += 2
                    continue
                depth += ch == "("
                depth -= ch == ")"
                if depth:
                    buf.append(ch)
                i += 1
            del start
            out.append(("comment", "".join(buf).strip()))
        elif c == "[":
            i, value = _quoted(text, i + 1, "]")
            out.append(("literal", "[" + value + "]"))
        elif c in _SPECIALS:
            out.append((c, c))
            i += 1
        else:
            start = i
            while i < n and text[i] not in _SPECIALS and text[i] not in " \t\r\n":
                i += 1
            out.append(("atom", text[start:i]))
    return out


def _quoted(text: str, i: int, close: str) -> tuple[int, str]:
    buf: list[str] = []
    n = len(text)
    while i < n and text[i] != close:
        if text[i] == "\\" and i + 1 < n:
            i += 1
        if text[i] not in "\r\n":
            buf.append(text[i])
        i += 1
    return i + 1, "".join(buf)


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.pos = 0
        self.comments: list[str] = []

    def peek(self) -> str | None:
        """Kind of the next token that is not a comment (comments are kept)."""
        while self.pos < len(self.toks) and self.toks[self.pos][0] == "comment":
            if self.toks[self.pos][1]:
                self.comments.append(self.toks[self.pos][1])
            self.pos += 1
        return self.toks[self.pos][0] if self.pos < len(self.toks) else None

    def take(self) -> _Token:
        self.peek()
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def words(self, stop: str) -> list[_Token]:
        """Atoms, quoted strings, dots and literals up to a special in ``stop``."""
        got: list[_Token] = []
        while (kind := self.peek()) is not None and kind not in stop:
            if kind in ("atom", "quoted", "literal", "."):
                got.append(self.take())
            else:
                self.pos += 1  # a stray special: skipped, as Dovecot does
        return got

    def address_list(self) -> list[Address]:
        out: list[Address] = []
        while self.peek() is not None:
            if self.peek() in (",", ";"):
                self.pos += 1
                continue
            start = self.pos
            phrase = self.words(":<@,;")
            if self.peek() == ":":  # a group: "name: members ;"
                self.pos += 1
                out.append(Address(None, None, _phrase(phrase) or "", None))
                while (kind := self.peek()) is not None and kind != ";":
                    if kind == ",":
                        self.pos += 1
                        continue
                    member = self.words("<@,;:")
                    if not member and self.peek() not in ("<", "@"):
                        # A stray ":" (a group inside a group) that nothing
                        # takes: skipped, or the loop would never end.
                        self.pos += 1
                        continue
                    out.append(self.mailbox(member))
                if self.peek() == ";":
                    self.pos += 1
                out.append(Address(None, None, None, None))
                continue
            if not phrase and self.peek() not in ("<", "@"):
                if self.pos == start:
                    self.pos += 1  # never loop on a token nothing takes
                continue
            out.append(self.mailbox(phrase))
        return out

    def mailbox(self, phrase: list[_Token]) -> Address:
        self.comments = []
        if self.peek() == "<":
            self.pos += 1
            route = None
            if self.peek() == "@":
                hops: list[str] = []
                while self.peek() in ("@", ","):
                    if self.take()[0] == "@":
                        hops.append("@" + _joined(self.words(",:>")))
                if self.peek() == ":":
                    self.pos += 1
                route = ",".join(hops) or None
            local = _joined(self.words("@>,;"))
            host = None
            if self.peek() == "@":
                self.pos += 1
                host = _joined(self.words(">,;"))
            if self.peek() == ">":
                self.pos += 1
            name = _phrase(phrase) or None
            return Address(name, route, local, host or None)
        local = _joined(phrase)
        host = None
        if self.peek() == "@":
            self.pos += 1
            host = _joined(self.words(",;<"))
        if self.peek() == "<":  # "local@host <other>": take the angle address
            return self.mailbox(phrase)
        name = self.comments[-1] if self.comments else None
        return Address(name, None, local, host or None)


def _joined(words: list[_Token]) -> str:
    return "".join(v for _, v in words)


def _phrase(words: list[_Token]) -> str:
    text = ""
    for kind, value in words:
        if kind == "." or not text:
            text += value
        else:
            text += " " + value
    return text


def parse_addresses(value: str) -> list[Address]:
    """The ENVELOPE addresses of one field's (unfolded) value."""
    return _Parser(value).address_list()


def address_text(value: str) -> str:
    """The addresses of a field written plainly, ``Name <user@host>, ...``,
    groups and comments aside: what SEARCH FROM/TO/CC/BCC also match."""
    parts: list[str] = []
    for a in parse_addresses(value):
        if a.host is None and a.name is None:
            continue  # group markers
        spec = f"{a.mailbox}@{a.host}" if a.host else (a.mailbox or "")
        parts.append(f"{a.name} <{spec}>" if a.name else spec)
    return ", ".join(parts)
