"""METADATA (RFC 5464): annotations on the server and on each mailbox.

``SETMETADATA mailbox (entry value ...)`` sets (a value of NIL removes)
and ``GETMETADATA [(MAXSIZE n DEPTH 0|1|infinity)] mailbox entries``
reads entries named ``/private/...`` or ``/shared/...``; the mailbox ``""``
means the server. Both kinds are kept per user (a user sees only their
own: pymta has no shared mailboxes, so ``/shared/`` is the user's too).

Storage: the mail store keeps each user's entries, read and changed
through its asynchronous API (``IAsyncUserMailbox.metadata`` and
``set_metadata``), never on the reactor thread: the Maildir store in one
file per user, ``pymta-metadata`` in the Maildir++ root, written durably
in its threads before the OK (so an answered SETMETADATA survives a
crash) and read again when another process changed it
(:mod:`pymta.mailstore.metadata`); the memory store in memory. The
user's calls run in order, so two sessions' SETMETADATA never lose each
other's change. Mailbox entries are kept under the mailbox's MAILBOXID
(pymta.imap.objectid), so they follow a RENAME and are not inherited by
a mailbox deleted and made again; the mailbox and its MAILBOXID are
looked up through the store's asynchronous API (the answer waits while
the folder's store work does).

Limits: values of at most :data:`MAX_VALUE` bytes (``NO [METADATA MAXSIZE
n]``), at most :data:`MAX_ENTRIES` entries per user (``NO [METADATA
TOOMANY]``), entry names of at most :data:`MAX_NAME` characters.

Untrusted input: the arguments (BAD on bad syntax). Writes through the
store; logs failed writes.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.python.failure import Failure

from pymta.imap.mailbox_commands import mailbox_arg
from pymta.imap.objectid import mailbox_id
from pymta.imap.parser import Atom, ParseError, Token
from pymta.imap.stored import when_stored
from pymta.imap.wire import mailbox_out, string
from pymta.mailstore.interface import NoSuchFolder

if TYPE_CHECKING:
    from pymta.imap.session import IMAPSession

MAX_VALUE = 64 * 1024
MAX_ENTRIES = 1000
MAX_NAME = 1024
SERVER = ""  # the key of server entries
_DEPTHS = ("0", "1", "infinity")
NO_MAILBOX = b"[NONEXISTENT] Mailbox doesn't exist."
SET_DONE = (b"OK", b"Setmetadata completed.")

_ENTRY = re.compile(r"/(?:private|shared)(?:/[\x21-\x24\x26-\x29\x2b-\x2e\x30-\x7e]+)+", re.I)


def _mailbox_key(s: IMAPSession, token: Token) -> Deferred[tuple[str, bytes] | None]:
    """(key, name as sent back) of the mailbox argument, or None when there
    is no such mailbox: its MAILBOXID from the folder's status, read
    through the store's asynchronous API (at once when nothing of the
    folder waits)."""
    if isinstance(token, list):
        raise ParseError("Expected a mailbox name.")
    raw = token if isinstance(token, bytes) else token.encode("utf-8")
    if raw == b"":
        return succeed((SERVER, b'""'))
    name = mailbox_arg(token, s.utf8_names)
    folders = s.folders
    assert folders is not None

    async def look() -> tuple[str, bytes] | None:
        try:
            folder = await folders.folder(name)
        except NoSuchFolder:
            return None
        status = await folder.status()
        return mailbox_id(status.uidvalidity), mailbox_out(folder.name, s.utf8_names)

    return ensureDeferred(look())


def _entry_name(token: Token) -> str:
    if isinstance(token, list):
        raise ParseError("Expected an entry name.")
    text = token.decode("ascii", "replace") if isinstance(token, bytes) else str(token)
    if len(text) > MAX_NAME or not _ENTRY.fullmatch(text) or "//" in text:
        raise ParseError("Invalid metadata entry name.")
    return text.lower()


def setmetadata(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    if len(args) != 2 or not isinstance(args[1], list) or not args[1] or len(args[1]) % 2:
        raise ParseError("SETMETADATA takes a mailbox and (entry value ...).")
    pairs = args[1]
    changes: list[tuple[str, bytes | None]] = []
    for name_token, value in zip(pairs[::2], pairs[1::2], strict=True):
        name = _entry_name(name_token)
        if isinstance(value, list):
            raise ParseError("A metadata value is a string, a literal or NIL.")
        if isinstance(value, Atom):
            if value.upper() != "NIL":
                raise ParseError("A metadata value is a string, a literal or NIL.")
            changes.append((name, None))
        else:
            changes.append((name, bytes(value)))
    setting = ensureDeferred(_set(s, _mailbox_key(s, args[0]), changes))
    when_stored(s, tag, "SETMETADATA", setting, lambda answer: _answer_set(s, tag, answer))


#: SETMETADATA's answer: status and text, or the failure of the write.
SetAnswer = tuple[bytes, bytes] | Failure


async def _set(
    s: IMAPSession,
    mailbox: Deferred[tuple[str, bytes] | None],
    changes: list[tuple[str, bytes | None]],
) -> SetAnswer:
    """Apply SETMETADATA's changes once the mailbox is known, through the
    store (durable before the answer)."""
    target = await mailbox
    if target is None:
        return b"NO", NO_MAILBOX
    key, _ = target
    biggest = max((len(v) for _, v in changes if v is not None), default=0)
    if biggest > MAX_VALUE:
        return b"NO", b"[METADATA MAXSIZE %d] Metadata value too large." % MAX_VALUE
    folders = s.folders
    assert folders is not None
    try:
        done = await folders.set_metadata(key, dict(changes), MAX_ENTRIES)
    except Exception:
        return Failure()
    if not done:
        return b"NO", b"[METADATA TOOMANY] Too many metadata entries."
    return SET_DONE


def _answer_set(s: IMAPSession, tag: bytes, answer: SetAnswer) -> None:
    if isinstance(answer, Failure):
        if s.store_refused(tag, answer.value):
            return
        s.log.failure("imap({user}): SETMETADATA", answer, user=s.user)
        s.no(tag, b"[SERVERBUG] Internal error occurred.")
        return
    status, text = answer
    (s.ok if status == b"OK" else s.no)(tag, text)


def _options(token: list[Token]) -> tuple[int | None, str]:
    maxsize: int | None = None
    depth = "0"
    i = 0
    while i < len(token):
        word = token[i].upper() if isinstance(token[i], Atom) else ""  # type: ignore[union-attr]
        value = token[i + 1] if i + 1 < len(token) else None
        if word == "MAXSIZE" and isinstance(value, Atom) and value.isdigit() and len(value) < 11:
            maxsize = int(value)
        elif (
            word == "DEPTH" and isinstance(value, Atom) and value.lower() in ("0", "1", "infinity")
        ):
            depth = value.lower()
        else:
            raise ParseError("Unknown GETMETADATA option.")
        i += 2
    return maxsize, depth


def getmetadata(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    maxsize: int | None = None
    depth = "0"
    if args and isinstance(args[0], list):
        maxsize, depth = _options(args[0])
        args = args[1:]
    if len(args) != 2:
        raise ParseError("GETMETADATA takes options, a mailbox and entries.")
    wanted = args[1] if isinstance(args[1], list) else [args[1]]
    if not wanted:
        raise ParseError("GETMETADATA needs entry names.")
    names = [_entry_name(t) for t in wanted]
    # The mailbox argument's syntax is checked now (BAD), its look-up later.
    looking = ensureDeferred(_look_up(s, _mailbox_key(s, args[0])))
    when_stored(
        s, tag, "GETMETADATA", looking, lambda found: _get(s, tag, found, names, depth, maxsize)
    )


#: GETMETADATA's mailbox as sent back and its entries, or None (no such mailbox).
Found = tuple[bytes, dict[str, bytes]] | None


async def _look_up(s: IMAPSession, mailbox: Deferred[tuple[str, bytes] | None]) -> Found:
    """The mailbox, then the user's entries, through the store (its
    threads: the Maildir store stats and perhaps reads its file)."""
    target = await mailbox
    if target is None:
        return None
    key, wire_name = target
    folders = s.folders
    assert folders is not None
    entries = await folders.metadata()
    return wire_name, entries.get(key, {})


def _get(
    s: IMAPSession,
    tag: bytes,
    found_entries: Found,
    names: list[str],
    depth: str,
    maxsize: int | None,
) -> None:
    if found_entries is None:
        s.no(tag, NO_MAILBOX)
        return
    wire_name, entries = found_entries
    found: dict[str, bytes] = {}
    for name in names:
        if name in entries:
            found[name] = entries[name]
        if depth != "0":
            prefix = name + "/"
            for other, value in entries.items():
                if other.startswith(prefix) and (
                    depth == "infinity" or "/" not in other[len(prefix) :]
                ):
                    found[other] = value
    longest = 0
    parts: list[bytes] = []
    for name in sorted(found):
        value = found[name]
        if maxsize is not None and len(value) > maxsize:
            longest = max(longest, len(value))
            continue
        parts.append(string(name.encode("ascii")) + b" " + _value(value))
    if parts:
        s.send(b"* METADATA " + wire_name + b" (" + b" ".join(parts) + b")\r\n")
    if longest:
        s.ok(tag, b"[METADATA LONGENTRIES %d] Getmetadata completed." % longest)
    else:
        s.ok(tag, b"Getmetadata completed.")


def _value(value: bytes) -> bytes:
    """A value as a string, a literal, or a literal8 when it holds NUL."""
    if b"\0" in value:
        return b"~{%d}\r\n" % len(value) + value
    return string(value)
