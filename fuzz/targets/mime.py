"""MIME structure, BODYSTRUCTURE, ENVELOPE and FETCH sections of one message.

The message is anyone's mail. It goes into an in-memory folder and is
answered as IMAP FETCH answers it: ENVELOPE, BODY, BODYSTRUCTURE, the
header items and, for every part the MIME tree holds, BODY[n], BODY[n.MIME],
BODY[n.HEADER], BODY[n.TEXT], BINARY[n] and BINARY.SIZE[n].

Documented errors: :class:`~pymta.imap.fetch.UnknownCTE` (BINARY of a part
with an unknown transfer encoding: ``NO [UNKNOWN-CTE]``). Not allowed:
anything else, and :class:`~pymta.mailstore.mime.MimeError` too (the parser
documents that malformed MIME never raises; MimeError is the safety net).
Checked besides: every part's offsets lie inside its parent's, and each
answer reads back as IMAP syntax (our own tokenizer, nesting unlimited).
"""

from __future__ import annotations

from twisted.internet.task import Clock

from fuzz.common import Finding
from pymta.imap import parser
from pymta.imap.fetch import MessageData, UnknownCTE, parse_items, render
from pymta.imap.parser import tokenize
from pymta.mailstore.interface import MimePart
from pymta.mailstore.memory import MemoryFolder
from pymta.mailstore.mime import parse_mime

EXPECTED: tuple[type[BaseException], ...] = (UnknownCTE,)

_WHOLE = parse_items(
    tokenize(
        b"(UID ENVELOPE BODY BODYSTRUCTURE RFC822.HEADER RFC822.TEXT BODY.PEEK[HEADER] "
        b"BODY.PEEK[TEXT] BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT)] BINARY.PEEK[] "
        b"BODY.PEEK[]<3.20>)"
    )
)


def seeds() -> list[bytes]:
    """Messages from tests/test_imap_fetch.py and tests/test_mailstore_mime.py."""
    return [
        b'From: Alice <alice@example.org>\nTo: bob@example.org, "Carol C" <carol@example.org>\n'
        b"Subject: nested\nX-Dup: one\nReceived: first\n folded\nx-dup: two\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="outer"\n\npreamble\n--outer\n'
        b"Content-Type: text/plain; charset=utf-8\n\nplain body\n--outer\n"
        b'Content-Type: multipart/alternative; boundary="inner"\n\n--inner\n'
        b"Content-Type: text/plain\n\nalt one\n--inner\nContent-Type: text/html\n\n<p>two</p>\n"
        b"--inner--\n--outer\nContent-Type: message/rfc822\n\n"
        b"From: x@example.org\nSubject: inner msg\n\ninner body\n--outer--\n",
        b"From: A <a@example.org>\nTo: b@example.org\nSubject: hello\n"
        b"Date: Mon, 1 Jan 2024 10:00:00 +0000\nMessage-ID: <m1@example.org>\n\nbody text\n",
        b"Content-Type: multipart/x; boundary=\xff\n\n--\xff\nContent-Type: text/plain\n\none\n"
        b"--\xff\nContent-Type: text/html\n\n<p>two</p>\n--\xff--\n",
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; "
        b'filename="a.bin"\r\n\r\nAAECAw==\r\n--b\r\nContent-Transfer-Encoding: '
        b"quoted-printable\r\nContent-Language: en, de\r\n\r\ncaf=C3=A9=\r\n--b--\r\n",
        b"Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\nx\n--d--\n",
        b"Content-Type: text/plain; name*=utf-8''caf%C3%A9\nContent-Transfer-Encoding: x-uue\n\nx",
    ]


def _check_offsets(part: MimePart, start: int, end: int) -> None:
    if not (start <= part.header_start <= part.body_start <= part.end <= end):
        raise Finding(f"part offsets outside their parent: {part}")
    for child in part.parts:
        _check_offsets(child, part.header_start, part.end)


def _numbers(part: MimePart, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    out = []
    children = part.parts
    if part.content_type == "message" and part.parts:
        children = part.parts[0].parts or part.parts
    for i, child in enumerate(children[:20], 1):
        out.append((*prefix, i))
        out.extend(_numbers(child, (*prefix, i)))
    return out[:40]


def _answer(data: MessageData, items: bytes) -> None:
    # Without stream_min every piece is bytes (no file literal).
    answer = b"".join(
        piece
        for piece in render(data, parse_items(tokenize(items)), frozenset(), False)
        if isinstance(piece, bytes)
    )
    # ParseError here: the answer is not IMAP syntax. A BODYSTRUCTURE may
    # nest deeper than a client's command may, so the limit is lifted (and
    # put back: tests/test_fuzz_seeds.py runs this in the test process).
    limit = parser.MAX_NESTING
    parser.MAX_NESTING = 10_000
    try:
        tokenize(answer)
    finally:
        parser.MAX_NESTING = limit


def one_input(message: bytes) -> None:
    tree = parse_mime(message)
    _check_offsets(tree, 0, len(message))
    folder = MemoryFolder("INBOX", 1, Clock())
    uid = folder.append(message, internal_date=1_700_000_000.0)
    data = MessageData(folder, folder.get(uid))
    render(data, _WHOLE, frozenset(), False)
    _answer(data, b"(ENVELOPE BODYSTRUCTURE BODY)")
    for numbers in [(1,), *_numbers(tree)]:
        n = b".".join(b"%d" % x for x in numbers)
        _answer(
            data,
            b"(BODY.PEEK[%s] BODY.PEEK[%s.MIME] BODY.PEEK[%s.HEADER] BODY.PEEK[%s.TEXT])"
            % (n, n, n, n),
        )
        try:
            _answer(data, b"(BINARY.PEEK[%s] BINARY.SIZE[%s])" % (n, n))
        except UnknownCTE:
            pass
