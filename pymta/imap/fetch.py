"""FETCH data items: what the client asked for, and the bytes of the answer.

RFC 3501 sections 6.4.5 and 7.4.2, RFC 7162 (MODSEQ). :func:`parse_items`
reads the item list (macros ALL, FAST, FULL; FLAGS, UID, INTERNALDATE,
RFC822.SIZE, ENVELOPE, BODY, BODYSTRUCTURE, BODY[section]<partial>,
BODY.PEEK[...], RFC822, RFC822.HEADER, RFC822.TEXT, MODSEQ; EMAILID and
THREADID of RFC 8474, PREVIEW of RFC 8970). Sections:
``HEADER``, ``HEADER.FIELDS (..)``, ``HEADER.FIELDS.NOT (..)``, ``TEXT``,
``MIME`` and part numbers (``1.2.3``), found through the store's cached
MIME tree. RFC 3516 BINARY: ``BINARY[part]<partial>``, ``BINARY.PEEK[..]``
and ``BINARY.SIZE[part]`` give a part's body with its base64 or
quoted-printable transfer encoding undone (a literal8 ``~{n}`` when it has
NUL octets); another encoding is :class:`UnknownCTE` (``NO [UNKNOWN-CTE]``).
Message text in a plain ``{n}`` literal never carries NUL (sent as 0x80,
as Dovecot; RFC 3501 4.3).
:class:`MessageData` renders one message; it reads only what an
item needs: the index for FLAGS/UID/sizes/dates, the cached header block
for ENVELOPE and HEADER fields, the cached MIME tree for BODYSTRUCTURE,
the file for body sections. FETCH gives it the folder's asynchronous API
(:class:`~pymta.mailstore.asyncstore.IAsyncFolder`): what an item needs
is loaded first (:meth:`MessageData.load`, a Deferred; :func:`wants`
guesses it from the items) and rendering that finds something missing
raises :class:`NotLoaded`, so the caller loads it and renders again.

A whole message (``BODY[]``, ``BODY.PEEK[]``, ``RFC822``) of at least
:data:`STREAM_MIN` bytes is not read into memory: :func:`render` returns
a :class:`FileLiteral` in its place, which counts the literal's length in
one pass over the file and yields the CRLF form in :data:`READ_CHUNK`
pieces in a second (the open file keeps the bytes the same between the
two: Maildir never rewrites a message in place). The session writes them
with back-pressure (pymta.stream).

Untrusted input: the item list (ParseError on bad syntax) and the stored
message (a MIME structure the parser fails on is answered as one
text/plain part, and the failure logged). Writes nothing; the caller sets
\\Seen when :func:`sets_seen`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from pymta.imap.log import log
from pymta.imap.objectid import email_id, thread_id
from pymta.imap.parser import Atom, ParseError, Token
from pymta.imap.preview import preview
from pymta.imap.structure import body_structure, crlf, envelope, select_fields
from pymta.imap.transfer import UnknownCTE as UnknownCTE  # FETCH's BINARY failure
from pymta.imap.transfer import decode_transfer
from pymta.imap.wire import date_time, flag_list, literal, string
from pymta.mailstore.asyncstore import IAsyncFolder
from pymta.mailstore.interface import IFolder, MailStoreError, MessageInfo, MimePart, known_date
from pymta.mailstore.mime import MimeError, plain_structure
from pymta.mailstore.names import rfc822_size_of_stream

#: Whole messages this large (as stored) are sent from the file in pieces.
STREAM_MIN = 256 * 1024

#: Bytes read from a message file at once while it is sent.
READ_CHUNK = 128 * 1024

_SIMPLE = {
    "FLAGS",
    "UID",
    "INTERNALDATE",
    "RFC822.SIZE",
    "ENVELOPE",
    "BODY",
    "BODYSTRUCTURE",
    "RFC822",
    "RFC822.HEADER",
    "RFC822.TEXT",
    "MODSEQ",
    "EMAILID",  # RFC 8474 (pymta.imap.objectid)
    "THREADID",
    "PREVIEW",  # RFC 8970 (pymta.imap.preview)
}
_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_BODY_ITEM = re.compile(
    r"(BODY|BODY\.PEEK|BINARY|BINARY\.PEEK)\[([^\]]*)\](?:<(\d{1,10})(?:\.(\d{1,10}))?>)?\Z",
    re.IGNORECASE,
)
_BINARY_SIZE = re.compile(r"BINARY\.SIZE\[([^\]]*)\]\Z", re.IGNORECASE)
_BINARY_SECTION = re.compile(r"(?:[1-9]\d{0,5}\.)*[1-9]\d{0,5}\Z")
_SECTION = re.compile(
    r"((?:[1-9]\d{0,5}\.)*[1-9]\d{0,5})?(?:\.?(HEADER\.FIELDS\.NOT|HEADER\.FIELDS|HEADER|TEXT|MIME))?"
    r"(?: \((.*)\))?\Z",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Section:
    """The part of BODY[...]: part numbers and what of that part."""

    part: tuple[int, ...] = ()
    text: str = ""  # "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME
    fields: tuple[str, ...] = ()

    def label(self) -> str:
        spec = ".".join(str(n) for n in self.part)
        if self.text:
            spec = f"{spec}.{self.text}" if spec else self.text
        if self.fields:
            spec += " (" + " ".join(self.fields) + ")"
        return spec

    @functools.cached_property
    def wire_label(self) -> bytes:
        """:meth:`label` in ASCII bytes, made once per FETCH command rather
        than for every message it answers."""
        return self.label().encode("ascii")


#: BODY[]: the whole message.
_WHOLE = Section()


@dataclass(frozen=True)
class FetchItem:
    name: str  # the upper-case item name, BODY[] items as "BODY[]"
    section: Section | None = None
    peek: bool = False
    partial: tuple[int, int | None] | None = None


def _parse_section(text: str) -> Section:
    m = _SECTION.match(text)
    if not m or (m.group(3) is not None and not (m.group(2) or "").upper().startswith("HEADER.F")):
        raise ParseError(f"Invalid section {text!r}.")
    part = tuple(int(n) for n in m.group(1).split(".")) if m.group(1) else ()
    what = (m.group(2) or "").upper()
    if what == "MIME" and not part:
        raise ParseError("MIME needs a part number.")
    fields: tuple[str, ...] = ()
    if what.startswith("HEADER.FIELDS"):
        if not m.group(3) or not m.group(3).strip():
            raise ParseError("HEADER.FIELDS needs field names.")
        raw = m.group(3).replace('"', " ").split()
        fields = tuple(f.upper() for f in raw)
    return Section(part, what, fields)


def _parse_one(token: Token) -> list[FetchItem]:
    if not isinstance(token, Atom):
        raise ParseError("Invalid FETCH item.")
    upper = token.upper()
    if upper in _SIMPLE:
        return [FetchItem(upper)]
    size = _BINARY_SIZE.match(token)
    if size is not None:
        return [FetchItem("BINARY.SIZE[]", _parse_binary_section(size.group(1)))]
    m = _BODY_ITEM.match(token)
    if not m:
        raise ParseError(f"Unknown FETCH item {token[:40]!r}.")
    kind = m.group(1).upper()
    binary = kind.startswith("BINARY")
    section = _parse_binary_section(m.group(2)) if binary else _parse_section(m.group(2))
    partial: tuple[int, int | None] | None = None
    if m.group(3) is not None:
        if m.group(4) is None:
            raise ParseError("Partial needs <offset.length>.")
        partial = (int(m.group(3)), int(m.group(4)))
    name = "BINARY[]" if binary else "BODY[]"
    return [FetchItem(name, section, kind.endswith(".PEEK"), partial)]


def _parse_binary_section(text: str) -> Section:
    """RFC 3516 section-binary: part numbers only, or nothing."""
    if not text:
        return Section()
    if not _BINARY_SECTION.match(text):
        raise ParseError(f"Invalid BINARY section {text[:40]!r}.")
    return Section(tuple(int(n) for n in text.split(".")))


def parse_items(tokens: list[Token]) -> list[FetchItem]:
    """The items of a FETCH command (the tokens after the sequence set)."""
    if len(tokens) != 1:
        raise ParseError("FETCH takes one item or one parenthesised list.")
    arg = tokens[0]
    if isinstance(arg, Atom) and arg.upper() in _MACROS:
        return [FetchItem(n) for n in _MACROS[arg.upper()]]
    group = arg if isinstance(arg, list) else [arg]
    if not group:
        raise ParseError("Empty FETCH item list.")
    items: list[FetchItem] = []
    for n, token in enumerate(group):
        if isinstance(token, list) and n and items and items[-1].name == "PREVIEW":
            # RFC 8970 3.1: PREVIEW (LAZY); answered at once all the same.
            if not all(isinstance(m, Atom) and m.upper() == "LAZY" for m in token):
                raise ParseError("Unknown PREVIEW modifier.")
            continue
        items.extend(_parse_one(token))
    return items


def sets_seen(items: list[FetchItem]) -> bool:
    """Whether these items mark the message \\Seen (RFC 3501 6.4.5)."""
    for item in items:
        if item.name in ("RFC822", "RFC822.TEXT"):
            return True
        if item.name in ("BODY[]", "BINARY[]") and not item.peek:
            return True
    return False


def needs_file(items: list[FetchItem]) -> bool:
    """Whether rendering needs more than the index and header cache."""
    return any(
        i.name in ("RFC822", "RFC822.TEXT", "BODY[]", "BINARY[]", "BINARY.SIZE[]", "PREVIEW")
        for i in items
    )


#: What :meth:`MessageData.load` can load: the header block, the MIME
#: structure, the whole content, the file of a large whole message.
HEADER, MIME, CONTENT, FILE = "header", "mime", "content", "file"

_HEADER_ITEMS = frozenset({"ENVELOPE", "EMAILID", "THREADID", "RFC822.HEADER"})
_MIME_ITEMS = frozenset({"BODY", "BODYSTRUCTURE", "PREVIEW"})
_CONTENT_ITEMS = frozenset({"RFC822.TEXT", "BINARY[]", "BINARY.SIZE[]", "PREVIEW"})


def wants(items: list[FetchItem], size: int, stream_min: int | None) -> list[str]:
    """What rendering ``items`` for a message of ``size`` bytes will most
    likely need, to load before it (a guess: :class:`NotLoaded` corrects
    it)."""
    needed: set[str] = set()
    for item in items:
        name = item.name
        if name in _HEADER_ITEMS:
            needed.add(HEADER)
        if name in _MIME_ITEMS:
            needed.add(MIME)
        if name in _CONTENT_ITEMS:
            needed.add(CONTENT)
        whole = name == "RFC822" or (
            name == "BODY[]" and item.partial is None and item.section == _WHOLE
        )
        if whole:
            streamed = stream_min is not None and size >= stream_min
            needed.add(FILE if streamed else CONTENT)
        elif name == "BODY[]" and item.section is not None:
            if item.section.part:
                needed |= {MIME, CONTENT}
            elif item.section.text.startswith("HEADER"):
                needed.add(HEADER)
            else:
                needed |= {HEADER, CONTENT}
        elif name in ("BINARY[]", "BINARY.SIZE[]") and item.section and item.section.part:
            needed.add(MIME)
    if CONTENT in needed:
        needed.discard(FILE)
    return [kind for kind in (HEADER, MIME, CONTENT, FILE) if kind in needed]


class NotLoaded(Exception):
    """Rendering needs something of the message not loaded yet (its kind
    is the argument): load it (:meth:`MessageData.load`) and render again."""

    @property
    def kind(self) -> str:
        return str(self.args[0])


class SectionError(Exception):
    """The section does not exist in this message (answered as empty)."""


def text_literal(value: bytes) -> bytes:
    """A ``{n}`` literal of message text. RFC 3501 4.3: no NUL in a literal
    (only BINARY's literal8 may carry one); a NUL stored in a message (sent
    over SMTP) is sent as 0x80, as Dovecot does."""
    if b"\0" in value:
        value = value.replace(b"\0", b"\x80")
    return literal(value)


class FileLiteral:
    """The CRLF form of a whole stored message as an IMAP literal, read from
    its file in pieces. ``size`` is the literal's length (counted at once);
    :meth:`chunks` yields the bytes and closes the file."""

    def __init__(self, file: BinaryIO, read_chunk: int = READ_CHUNK) -> None:
        self.file = file
        self.read_chunk = read_chunk
        try:
            _, self.size = rfc822_size_of_stream(file.read)
            file.seek(0)
        except OSError as e:
            file.close()
            raise MailStoreError(f"cannot read message: {e}") from e

    def head(self) -> bytes:
        return b"{%d}\r\n" % self.size

    def close(self) -> None:
        self.file.close()

    def chunks(self) -> Iterator[bytes]:
        """The bytes crlf() gives for the whole file, piece by piece. A CR
        that ends a piece waits for the next, so that a CRLF split by the
        read is still seen as one line end."""
        sent = 0
        held_cr = b""
        try:
            while chunk := self.file.read(self.read_chunk):
                chunk = held_cr + chunk
                held_cr = b"\r" if chunk.endswith(b"\r") else b""
                piece = crlf(chunk[:-1] if held_cr else chunk)
                if b"\0" in piece:
                    piece = piece.replace(b"\0", b"\x80")  # as text_literal
                sent += len(piece)
                yield piece
        finally:
            self.file.close()
        sent += len(held_cr)
        yield held_cr
        if sent != self.size:
            # The literal's length is already on the wire: the session must end.
            raise MailStoreError(f"message changed while sent ({sent} of {self.size} bytes)")


class MessageData:
    """One message's data for FETCH. With ``store`` (the folder's
    asynchronous API: FETCH, NOTIFY's FETCH, CATENATE's URLs) it must be
    loaded first (:meth:`load`), and asking for what is not raises
    :class:`NotLoaded`. With a synchronous ``folder`` instead it is read
    when first asked for (only tests that render without a session do)."""

    def __init__(
        self,
        folder: IFolder | None,
        info: MessageInfo,
        store: IAsyncFolder | None = None,
    ) -> None:
        self.folder = folder
        self.store = store
        self.info = info
        self._content: bytes | None = None
        self._header: bytes | None = None
        self._mime: MimePart | None = None
        # Large whole messages opened for this answer, and how many of them
        # the render under way has handed out (RFC822 and BODY[] both: two).
        self._files: list[FileLiteral] = []
        self._handed = 0

    def load(self, kind: str) -> Deferred[None]:
        """Load one kind of data (:data:`HEADER`, :data:`MIME`,
        :data:`CONTENT`, :data:`FILE`) through the store; fails with
        MailStoreError when the message is gone."""
        store = self.store
        assert store is not None, "MessageData.load needs the asynchronous store"
        uid = self.info.uid
        if kind == HEADER:
            return store.header_bytes(uid).addCallback(self._set, "_header")
        if kind == CONTENT:
            self.close()  # whole_file() gives None once the content is here
            return store.read(uid).addCallback(self._set, "_content")
        if kind == FILE:
            return store.open(uid).addCallback(lambda f: self._files.append(FileLiteral(f)))
        if kind == MIME:
            d = store.mime_structure(uid).addCallbacks(self._set, self._unparsed, ("_mime",))
            return d
        raise ValueError(kind)

    def _set(self, value: Any, attribute: str) -> None:
        setattr(self, attribute, value)

    def given_header(self, header: bytes) -> None:
        """The header block, read already (FETCH asks the store for a run
        of messages' headers at once)."""
        self._header = header

    def _unparsed(self, failure: Failure) -> Deferred[None]:
        failure.trap(MimeError)
        self._log_unparsed(failure)
        if self._content is not None:
            self._mime = plain_structure(self._content)
            return succeed(None)
        return self.load(CONTENT).addCallback(lambda _: self._plain())

    def _plain(self) -> None:
        assert self._content is not None
        self._mime = plain_structure(self._content)

    def _log_unparsed(self, failure: Failure | None = None) -> None:
        # One message's broken MIME is answered for that message alone, as
        # one text/plain part (Dovecot does the same); the rest of the FETCH
        # range goes on.
        log.failure(
            "imap: uid {uid}: cannot parse MIME structure, answering text/plain",
            failure,
            uid=self.info.uid,
        )

    def rewind(self) -> None:
        """Before rendering again: the files loaded are handed out anew."""
        self._handed = 0

    def close(self, handed_out: bool = True) -> None:
        """Close the files loaded (with ``handed_out`` False, only those the
        last render did not hand out: the others are the answer's)."""
        keep = 0 if handed_out else self._handed
        for file in self._files[keep:]:
            file.close()
        del self._files[keep:]

    def whole_file(self, stream_min: int | None) -> FileLiteral | None:
        """The whole message as a FileLiteral when it is at least stream_min
        bytes and not read already, else None (the caller uses content())."""
        if stream_min is None or self._content is not None or self.info.size < stream_min:
            return None
        if self._handed == len(self._files):
            if self.folder is None:
                raise NotLoaded(FILE)
            self._files.append(FileLiteral(self.folder.open(self.info.uid)))
        self._handed += 1
        return self._files[self._handed - 1]

    def content(self) -> bytes:
        if self._content is None:
            if self.folder is None:
                raise NotLoaded(CONTENT)
            self._content = self.folder.read(self.info.uid)
        return self._content

    def header(self) -> bytes:
        if self._header is None:
            if self.folder is None:
                raise NotLoaded(HEADER)
            self._header = self.folder.header_bytes(self.info.uid)
        return self._header

    def mime(self) -> MimePart:
        if self._mime is None:
            if self.folder is None:
                raise NotLoaded(MIME)
            try:
                self._mime = self.folder.mime_structure(self.info.uid)
            except MimeError:
                self._log_unparsed()
                self._mime = plain_structure(self.content())
        return self._mime

    def _part_header(self, part: MimePart) -> bytes:
        return self.content()[part.header_start : part.body_start]

    def body_structure(self, extensible: bool) -> bytes:
        return body_structure(self.mime(), extensible, self._part_header)

    def _find(self, numbers: tuple[int, ...]) -> MimePart:
        node = self.mime()
        for depth, n in enumerate(numbers):
            if depth and node.content_type == "message" and node.subtype == "rfc822":
                if not node.parts:
                    raise SectionError
                node = node.parts[0]
            elif depth and node.content_type != "multipart":
                raise SectionError
            if node.content_type == "multipart":
                if n > len(node.parts):
                    raise SectionError
                node = node.parts[n - 1]
            elif n != 1:
                raise SectionError
        return node

    def section(self, section: Section) -> bytes:
        """The bytes of BODY[section] (CRLF line ends)."""
        what = section.text
        if not section.part:
            if what in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
                return self._header_section(self.header(), section)
            content = self.content()
            if what == "TEXT":
                return crlf(content[len(self.header()) :])
            return crlf(content)
        try:
            node = self._find(section.part)
        except SectionError:
            return b""
        content = self.content()
        if what == "MIME":
            return crlf(content[node.header_start : node.body_start])
        if what == "":
            if node.content_type == "multipart" and not section.part:
                return crlf(content)
            return crlf(content[node.body_start : node.end])
        # HEADER / TEXT of a part apply to an encapsulated message only.
        if not (node.content_type == "message" and node.subtype == "rfc822" and node.parts):
            return b""
        inner = node.parts[0]
        if what == "TEXT":
            return crlf(content[inner.body_start : inner.end])
        return self._header_section(content[inner.header_start : inner.body_start], section)

    def binary(self, section: Section) -> bytes:
        """The bytes of BINARY[section]: the whole message as stored for an
        empty section, a multipart or message part undecoded, else the part's
        body decoded (RFC 3516 4.2); UnknownCTE."""
        if not section.part:
            return crlf(self.content())
        try:
            node = self._find(section.part)
        except SectionError:
            return b""
        body = crlf(self.content()[node.body_start : node.end])
        if node.content_type in ("multipart", "message"):
            return body
        return decode_transfer(node.encoding, body)

    @staticmethod
    def _header_section(header: bytes, section: Section) -> bytes:
        if section.text == "HEADER":
            return crlf(header)
        return select_fields(header, section.fields, section.text.endswith(".NOT"))


_INDEX_ITEMS = frozenset({"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "MODSEQ"})


def index_renderer(
    items: list[FetchItem], with_modseq: bool
) -> Callable[[MessageInfo, frozenset[str]], bytes] | None:
    """For items the index answers alone (FLAGS, UID, INTERNALDATE, RFC822.SIZE,
    MODSEQ), a fast function (info, flags) -> the parenthesised answer; else None.
    This is the hot path of FETCH 1:* (FLAGS UID) on big mailboxes."""
    if not all(i.name in _INDEX_ITEMS for i in items):
        return None
    parts: list[Callable[[MessageInfo, frozenset[str]], bytes]] = []
    seen: set[str] = set()
    for item in items:
        if item.name in seen or item.name == "MODSEQ":
            continue
        seen.add(item.name)
        if item.name == "FLAGS":
            parts.append(lambda i, f: b"FLAGS " + flag_list(f))
        elif item.name == "UID":
            parts.append(lambda i, f: b"UID %d" % i.uid)
        elif item.name == "INTERNALDATE":
            parts.append(lambda i, f: b"INTERNALDATE " + date_time(known_date(i)))
        else:
            parts.append(lambda i, f: b"RFC822.SIZE %d" % i.rfc822_size)
    if with_modseq or any(i.name == "MODSEQ" for i in items):
        parts.append(lambda i, f: b"MODSEQ (%d)" % i.modseq)
    if len(parts) == 2 and seen == {"UID", "FLAGS"} and not with_modseq:
        # FETCH 1:* (UID FLAGS), a client's flag resync: one format per message.
        if items[0].name == "UID":
            return lambda i, f: b"(UID %d FLAGS %s)" % (i.uid, flag_list(f))
        return lambda i, f: b"(FLAGS %s UID %d)" % (flag_list(f), i.uid)
    if len(parts) == 2:
        first, second = parts
        return lambda i, f: b"(" + first(i, f) + b" " + second(i, f) + b")"
    return lambda i, f: b"(" + b" ".join([p(i, f) for p in parts]) + b")"


def _partial(label: bytes, value: bytes, item: FetchItem) -> tuple[bytes, bytes]:
    """The label and bytes of a section, cut to the item's ``<start.length>``
    (the label then names the start, RFC 3501 7.4.2)."""
    if item.partial is None:
        return label, value
    start, length = item.partial
    end = start + length if length is not None else None
    return label + b"<%d>" % start, value[start:end]


def render(
    data: MessageData,
    items: list[FetchItem],
    flags: frozenset[str],
    with_modseq: bool,
    *,
    stream_min: int | None = None,
) -> list[bytes | FileLiteral]:
    """The parenthesised FETCH answer for one message (after ``* n FETCH ``),
    in pieces to be sent in order: bytes, and with ``stream_min`` a
    FileLiteral for each whole message of that size or more.
    ``flags`` are what FLAGS shows (the session adds \\Recent)."""
    info = data.info
    out: list[bytes | tuple[bytes, FileLiteral]] = []
    done: set[str] = set()
    for item in items:
        name = item.name
        if name in done and name not in ("BODY[]", "BINARY[]", "BINARY.SIZE[]"):
            continue
        done.add(name)
        if name == "FLAGS":
            out.append(b"FLAGS " + flag_list(flags))
        elif name == "UID":
            out.append(b"UID %d" % info.uid)
        elif name == "INTERNALDATE":
            out.append(b"INTERNALDATE " + date_time(known_date(info)))
        elif name == "RFC822.SIZE":
            out.append(b"RFC822.SIZE %d" % info.rfc822_size)
        elif name == "MODSEQ":
            pass  # added once below
        elif name == "EMAILID":
            out.append(b"EMAILID (" + email_id(data.header(), info).encode("ascii") + b")")
        elif name == "THREADID":
            out.append(b"THREADID (" + thread_id(data.header(), info).encode("ascii") + b")")
        elif name == "PREVIEW":
            out.append(b"PREVIEW " + string(preview(data).encode("utf-8")))
        elif name == "ENVELOPE":
            out.append(b"ENVELOPE " + envelope(data.header()))
        elif name == "BODYSTRUCTURE":
            out.append(b"BODYSTRUCTURE " + data.body_structure(True))
        elif name == "BODY":
            out.append(b"BODY " + data.body_structure(False))
        elif name == "RFC822":
            whole = data.whole_file(stream_min)
            if whole is not None:
                out.append((b"RFC822 " + whole.head(), whole))
            else:
                out.append(b"RFC822 " + text_literal(crlf(data.content())))
        elif name == "RFC822.HEADER":
            out.append(b"RFC822.HEADER " + text_literal(crlf(data.header())))
        elif name == "RFC822.TEXT":
            body = data.content()[len(data.header()) :]
            out.append(b"RFC822.TEXT " + text_literal(crlf(body)))
        elif name == "BODY[]":
            assert item.section is not None
            whole = None
            if item.partial is None and item.section == _WHOLE:
                whole = data.whole_file(stream_min)
            if whole is not None:
                out.append((b"BODY[] " + whole.head(), whole))
                continue
            label, value = _partial(
                b"BODY[" + item.section.wire_label + b"]", data.section(item.section), item
            )
            out.append(label + b" " + text_literal(value))
        elif name == "BINARY[]":
            assert item.section is not None
            label, value = _partial(
                b"BINARY[" + item.section.wire_label + b"]", data.binary(item.section), item
            )
            # RFC 3516 4.2: NUL octets only in a literal8.
            out.append(label + b" " + (b"~" + literal(value) if b"\0" in value else literal(value)))
        elif name == "BINARY.SIZE[]":
            assert item.section is not None
            size = len(data.binary(item.section))
            out.append(b"BINARY.SIZE[" + item.section.wire_label + b"] %d" % size)
    if with_modseq or "MODSEQ" in done:
        out.append(b"MODSEQ (%d)" % info.modseq)
    pieces: list[bytes | FileLiteral] = []
    text = b"("
    for n, element in enumerate(out):
        separator = b" " if n else b""
        if isinstance(element, bytes):
            text += separator + element
        else:
            head, whole = element
            pieces += [text + separator + head, whole]
            text = b""
    pieces.append(text + b")")
    return pieces
