"""APPEND with MULTIAPPEND (RFC 3502) and CATENATE (RFC 4469).

``APPEND mailbox [flags] [date] message [flags] [date] message ...``
stores several messages at once, atomically: either all are in the
mailbox and ``OK [APPENDUID v 7:9]`` answers, or none is (RFC 3502 6.3.11).
Each message may be a literal or ``CATENATE (TEXT {n} URL "/mbox/;uid=5/;section=1")``:
the message is put together from literal text and parts of messages this
user can read on this server, named by IMAP URLs (RFC 5092) without
URLAUTH: ``imap://user@host/mbox;uidvalidity=v/;uid=5/;section=header/;partial=0.100``
or its path alone. A URL naming another mailbox's UIDVALIDITY, a message
that is gone or anything unparsable is answered ``NO [BADURL url]`` and
nothing is stored; a target mailbox that does not exist ``NO [TRYCREATE]``
first. A message larger than ``imapd_max_literal_size`` (announced as
RFC 7889 ``APPENDLIMIT``) once put together is ``NO [TOOBIG]``.

A single plain message goes to :func:`pymta.imap.mailbox_commands.append`.
Several are stored by the store's ``append_many``
(:mod:`pymta.mailstore.asyncstore`, in its threads): every one is written
and fsync'd before any is numbered, so a write that fails (full disk)
leaves nothing behind; a numbering that fails half-way expunges what it
numbered, and the answer is NO.

Untrusted input: the arguments (BAD on bad syntax) and the URLs (NO
[BADURL]). Reads referenced messages through the store's asynchronous
API, as FETCH does; writes through the store only; logs store errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from pymta.imap import mailbox_commands as mc
from pymta.imap.fetch import MessageData, NotLoaded, parse_items
from pymta.imap.parser import Atom, Literal, ParseError, Token
from pymta.imap.structure import crlf
from pymta.imap.wire import parse_date_time
from pymta.mailstore.asyncstore import IAsyncUserMailbox
from pymta.mailstore.interface import MailStoreError

if TYPE_CHECKING:
    from pymta.imap.session import IMAPSession

#: Parts of one CATENATE (RFC 4469 leaves it to the server; Dovecot
#: allows as many as fit its command size).
MAX_CATENATE_PARTS = 1000


@dataclass(frozen=True)
class URLPart:
    """A CATENATE URL part, as the client wrote it."""

    url: bytes


@dataclass
class Pending:
    """One message of an APPEND before it is stored."""

    flags: list[str]
    date: float | None
    parts: list[bytes | URLPart]


class BadURL(Exception):
    """A CATENATE URL this server cannot resolve (NO [BADURL url])."""

    def __init__(self, url: bytes) -> None:
        super().__init__(url)
        self.url = url


def parse_messages(tokens: list[Token]) -> list[Pending]:
    """The messages after the mailbox name: ``[flags] [date] (literal |
    CATENATE (parts))`` repeated."""
    out: list[Pending] = []
    i = 0
    while i < len(tokens):
        flags: list[str] = []
        date: float | None = None
        token = tokens[i]
        if isinstance(token, list):
            for f in token:
                if not isinstance(f, Atom):
                    raise ParseError("Invalid flag.")
                flags.append(mc._flag_name(f))
            i += 1
        if i < len(tokens) and isinstance(tokens[i], bytes) and not isinstance(tokens[i], Literal):
            raw = tokens[i]
            assert isinstance(raw, bytes)
            try:
                date = parse_date_time(raw.decode("ascii"))
            except (ValueError, UnicodeDecodeError):
                raise ParseError("Invalid date-time.") from None
            i += 1
        if i >= len(tokens):
            raise ParseError("APPEND needs a message after its flags and date.")
        token = tokens[i]
        if isinstance(token, Literal):
            parts: list[bytes | URLPart] = [bytes(token)]
        elif (
            isinstance(token, Atom)
            and token.upper() == "CATENATE"
            and i + 1 < len(tokens)
            and isinstance(tokens[i + 1], list)
        ):
            i += 1
            parts = _catenate_parts(tokens[i])  # type: ignore[arg-type]
        else:
            raise ParseError("APPEND needs the message as a literal or CATENATE.")
        out.append(Pending(flags, date, parts))
        i += 1
    if not out:
        raise ParseError("APPEND takes a mailbox, optional flags and date, and a message.")
    return out


def _catenate_parts(tokens: list[Token]) -> list[bytes | URLPart]:
    if not tokens or len(tokens) % 2 or len(tokens) > 2 * MAX_CATENATE_PARTS:
        raise ParseError("CATENATE takes TEXT and URL parts.")
    parts: list[bytes | URLPart] = []
    for kind, value in zip(tokens[::2], tokens[1::2], strict=True):
        word = kind.upper() if isinstance(kind, Atom) else ""
        if word == "TEXT" and isinstance(value, Literal):
            parts.append(bytes(value))
        elif word == "URL" and isinstance(value, (bytes, Atom)) and not isinstance(value, list):
            parts.append(URLPart(value if isinstance(value, bytes) else value.encode("ascii")))
        else:
            raise ParseError("CATENATE takes TEXT literals and URL strings.")
    return parts


@dataclass(frozen=True)
class IMAPURL:
    """What a URL names: mailbox, UIDVALIDITY (or None), UID, section, partial."""

    mailbox: str
    uidvalidity: int | None
    uid: int
    section: str
    partial: tuple[int, int | None] | None


def parse_url(url: bytes) -> IMAPURL:
    """An IMAP URL (RFC 5092) naming one message or part; BadURL."""
    text = url.decode("ascii", "replace")
    path = text
    if text[:7].lower() == "imap://":
        slash = text.find("/", 7)
        if slash < 0:
            raise BadURL(url)
        path = text[slash:]
    if not path.startswith("/"):
        raise BadURL(url)
    pieces = path[1:].split("/;")
    mailbox_part = pieces[0]
    uidvalidity: int | None = None
    lowered = mailbox_part.lower()
    mark = lowered.find(";uidvalidity=")
    if mark >= 0:
        uidvalidity = _number(url, mailbox_part[mark + len(";uidvalidity=") :])
        mailbox_part = mailbox_part[:mark]
    try:
        mailbox = unquote_to_bytes(mailbox_part).decode("utf-8")
    except UnicodeDecodeError:
        raise BadURL(url) from None
    uid: int | None = None
    section = ""
    partial: tuple[int, int | None] | None = None
    for piece in pieces[1:]:
        key, eq, value = piece.partition("=")
        key = key.lower()
        if not eq:
            raise BadURL(url)
        if key == "uid" and uid is None:
            uid = _number(url, value)
        elif key == "section" and not section and uid is not None:
            section = unquote_to_bytes(value).decode("latin-1")
        elif key == "partial" and partial is None and uid is not None:
            offset, dot, length = value.partition(".")
            partial = (_number(url, offset, 0), _number(url, length) if dot else None)
        else:
            raise BadURL(url)
    if not mailbox or uid is None:
        raise BadURL(url)
    return IMAPURL(mailbox, uidvalidity, uid, section, partial)


def _number(url: bytes, text: str, least: int = 1) -> int:
    if not text.isdigit() or len(text) > 10 or int(text) < least:
        raise BadURL(url)
    return int(text)


async def resolve(folders: IAsyncUserMailbox, url: bytes) -> bytes:
    """The bytes a URL names, read through the store's asynchronous API
    (a Maildir read when nothing of the folder waits answers at once);
    BadURL."""
    named = parse_url(url)
    item = None
    if named.section:
        try:
            [item] = parse_items([Atom(f"BODY.PEEK[{named.section}]")])
        except (ParseError, ValueError):
            raise BadURL(url) from None
        assert item.section is not None
    try:
        folder = await folders.folder(named.mailbox)
        if named.uidvalidity is not None:
            status = await folder.status()
            if named.uidvalidity != status.uidvalidity:
                raise BadURL(url)
        info = await folder.get(named.uid)
        data = MessageData(None, info, folder)
        while True:
            try:
                if item is not None and item.section is not None:
                    value = data.section(item.section)
                else:
                    value = crlf(data.content())
                break
            except NotLoaded as missing:
                await data.load(missing.kind)
    except MailStoreError:
        raise BadURL(url) from None
    if named.partial is not None:
        offset, length = named.partial
        value = value[offset:] if length is None else value[offset : offset + length]
    return value


def append(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    if len(args) < 2:
        raise ParseError("APPEND takes a mailbox, optional flags and date, and a message.")
    messages = parse_messages(args[1:])
    if len(messages) == 1 and not any(isinstance(p, URLPart) for p in messages[0].parts):
        if len(messages[0].parts) == 1 and isinstance(args[-1], Literal):
            mc.append(s, tag, args, uid)  # one plain message: the usual path
            return
    name = mc.mailbox_arg(args[0], s.utf8_names)

    folders = s.folders
    assert folders is not None

    async def contents() -> mc.Contents:
        # Once the target is known to exist (TRYCREATE comes first).
        built: mc.Contents = []
        limit = s.settings.max_literal_size
        for m in messages:
            pieces: list[bytes] = []
            for part in m.parts:
                if isinstance(part, URLPart):
                    try:
                        pieces.append(await resolve(folders, part.url))
                    except BadURL as e:
                        s.no(tag, b"[BADURL " + _url_text(e.url) + b"] Invalid URL.")
                        raise mc.Answered from None
                else:
                    pieces.append(part)
            content = b"".join(pieces)
            if not content:
                s.no(tag, b"Can't save a zero byte message.")
                raise mc.Answered
            if len(content) > limit:
                s.no(tag, b"[TOOBIG] Message too large (APPENDLIMIT %d)." % limit)
                raise mc.Answered
            built.append((content, m.flags, m.date))
        return built

    mc.store_messages(s, tag, name, contents)


def _url_text(url: bytes) -> bytes:
    """A URL safe to echo in a response code (an atom-ish run)."""
    return bytes(c for c in url[:200] if 0x21 <= c < 0x7F and c not in b"[]")
