"""Folder names, Maildir file names and flag letters, checked and converted.

Mirrors Maildir++ as Courier and Dovecot lay it out: the folder ``A/B`` is
the directory ``.A.B`` under the Maildir root, each part in modified UTF-7
(RFC 3501 section 5.1.3; Dovecot's default, so Dovecot serves our folders
unchanged). Flags are the letters after ``:2,`` in a file name, in ASCII
order (D draft, F flagged, P passed, R replied, S seen, T trashed), and
keywords the lower-case letters of Dovecot's ``dovecot-keywords`` file.
Message files are named as maildir(5) says, with Dovecot's size fields:
``<secs>.M<usecs>P<pid>Q<n>.<host>,S=<size>,W=<CRLF size>[:2,<letters>]``
(:class:`MaildirNames` gives the base, one process-wide sequence for every
writer: delivery, APPEND, COPY).

Untrusted input: folder names come from clients (IMAP CREATE, RENAME) and
file names from any program that writes into the Maildir. Everything here is
pure: it validates and converts, it touches no file.
"""

from __future__ import annotations

import base64
import itertools
import os
import re
from collections.abc import Callable, Iterator

from twisted.internet.interfaces import IReactorTime

from pymta.mailstore.headerblock import header_block as header_block
from pymta.mailstore.interface import SEPARATOR, InvalidFolderName

INBOX = "INBOX"
DISK_SEPARATOR = "."
MAX_NAME_BYTES = 240  # a directory name must fit in NAME_MAX (255) with room to spare

# Maildir letter <-> IMAP flag. "P" (passed) has no IMAP system flag; it maps
# to the $Forwarded keyword (RFC 5550), as most clients use it.
LETTER_TO_FLAG = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}
FLAG_TO_LETTER = {v.lower(): k for k, v in LETTER_TO_FLAG.items()}
FORWARDED = "$Forwarded"

_FORBIDDEN_IN_PART = re.compile(r"[\x00-\x1f\x7f./%*\\]")
# Printable ASCII without "/", not starting with "." (Maildir ignores dot files).
FILENAME_PATTERN = r"[!-\-0-~][!-.0-~]{0,254}"
_ACCEPTABLE_FILENAME = re.compile(FILENAME_PATTERN + r"\Z")
_KEYWORD = re.compile(r"^[!#$&'+,\-0-9:;<>?@A-Z^_`a-z|}~\[\]]{1,100}$")


_sequence = itertools.count(1)


def unique_number() -> int:
    """A number never returned before in this process (file names)."""
    return next(_sequence)


def safe_hostname(hostname: str) -> str:
    """The host part of a Maildir name: maildir(5) says "/" and ":" cannot
    appear there, and Dovecot writes them as ``\\057`` and ``\\072``."""
    return hostname.replace("/", "\\057").replace(":", "\\072")


class MaildirNames:
    """Unique Maildir base names, ``<secs>.M<usecs>P<pid>Q<n>.<host>``.

    Unique within the process by ``Q<n>``: by default every instance draws
    from the one process-wide sequence (:func:`unique_number`), so a
    delivery and an IMAP APPEND in the same microsecond never get the same
    name. ``numbers`` replaces that sequence (tests)."""

    def __init__(
        self,
        clock: IReactorTime,
        hostname: str,
        pid: int | None = None,
        numbers: Iterator[int] | None = None,
    ) -> None:
        self._clock = clock
        self.hostname = safe_hostname(hostname)
        self._pid = os.getpid() if pid is None else pid
        self._numbers = numbers if numbers is not None else _sequence

    def base_name(self) -> str:
        now = self._clock.seconds()
        secs = int(now)
        usecs = int((now - secs) * 1_000_000)
        number = next(self._numbers)
        return f"{secs}.M{usecs}P{self._pid}Q{number}.{self.hostname}"


def sized_name(base: str, size: int, rfc822_size: int | None = None) -> str:
    """``<base>,S=<size>[,W=<CRLF size>]``: with both sizes in the name the
    store need not read the file to know them (Dovecot's fields)."""
    name = f"{base},S={size}"
    return name if rfc822_size is None else f"{name},W={rfc822_size}"


_ARRIVAL = re.compile(r"(\d+)\.M(\d+)")


def arrival_key(name: str) -> tuple[int, int, str]:
    """A Maildir file name's place in arrival order: ``<secs>.M<usecs>...``
    compared as numbers (as text, M123456 would sort before M99999 of the
    same second, and new mail would get its UIDs out of order)."""
    match = _ARRIVAL.match(name)
    if match is None:
        head = name.split(".", 1)[0]
        return (int(head) if head.isdigit() else 0, 0, name)
    return (int(match.group(1)), int(match.group(2)), name)


#: A file name as Dovecot and pymta write them, ``<secs>.M<usecs>...`` with
#: a base that ends in ``,S=<size>,W=<CRLF size>``: its time stamp, sizes
#: and ``:2,`` letters (None without them) in one match, for a folder's
#: scan of 100,000 names (the same values as :func:`arrival_key`,
#: :func:`filename_sizes` and :func:`split_filename`; any other name
#: goes through those).
sized_name_match = re.compile(r"(\d+)\.M(\d+)[^:]*?,S=(\d+),W=(\d+)(?::(?:2,(.*)|.*))?\Z").match


def is_inbox(name: str) -> bool:
    """INBOX is case-insensitive (RFC 3501 section 5.1)."""
    return name.upper() == INBOX


def normalize(name: str) -> str:
    """The canonical spelling: ``INBOX`` upper-cased, a trailing separator dropped."""
    if name.endswith(SEPARATOR):
        name = name[: -len(SEPARATOR)]
    return INBOX if is_inbox(name) else name


def validate_folder_name(name: str) -> list[str]:
    """Split a client's folder name into its parts, or InvalidFolderName.

    Refused: empty parts (``a//b``), ``.`` anywhere (the on-disk separator,
    and no ``..``), control characters, ``%``, ``*`` and ``\\``, names under
    INBOX (Maildir++ keeps folders beside INBOX), names too long for a
    directory.
    """
    name = normalize(name)
    if name == INBOX:
        return [INBOX]
    parts = name.split(SEPARATOR)
    if is_inbox(parts[0]):
        raise InvalidFolderName(f"folders cannot be created under INBOX: {name!r}")
    for part in parts:
        if not part or part.strip() != part:
            raise InvalidFolderName(f"empty or blank-edged name part in {name!r}")
        if _FORBIDDEN_IN_PART.search(part):
            raise InvalidFolderName(f"forbidden character in folder name {name!r}")
    if len(folder_dirname(name).encode("ascii")) > MAX_NAME_BYTES:
        raise InvalidFolderName(f"folder name too long: {name!r}")
    return parts


def folder_dirname(name: str) -> str:
    """The directory (relative to the Maildir root) of a valid folder name:
    ``""`` for INBOX, ``.A.B`` for ``A/B``, each part in modified UTF-7."""
    name = normalize(name)
    if name == INBOX:
        return ""
    return DISK_SEPARATOR + DISK_SEPARATOR.join(
        mutf7_encode(part) for part in name.split(SEPARATOR)
    )


def dirname_to_folder(dirname: str) -> str | None:
    """The folder name of a ``.A.B`` directory, or None when it is not a
    folder we can serve (bad mUTF-7, empty parts, forbidden characters)."""
    if not dirname.startswith(DISK_SEPARATOR) or dirname in (".", ".."):
        return None
    try:
        parts = [mutf7_decode(p) for p in dirname[1:].split(DISK_SEPARATOR)]
        name = SEPARATOR.join(parts)
        validate_folder_name(name)
    except (InvalidFolderName, ValueError):
        return None
    return name


def mutf7_encode(text: str) -> str:
    """Modified UTF-7 (RFC 3501 section 5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            b64 = base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")
            out.append("&" + b64 + "-")
            pending.clear()

    for ch in text:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def mutf7_decode(text: str) -> str:
    """Decode modified UTF-7; ValueError when it is malformed."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if not 0x20 <= ord(ch) <= 0x7E:
            raise ValueError("non-ASCII character in modified UTF-7")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i)
        if end < 0:
            raise ValueError("unterminated modified UTF-7 shift")
        chunk = text[i + 1 : end]
        if not chunk:
            out.append("&")
        else:
            b64 = chunk.replace(",", "/")
            b64 += "=" * (-len(b64) % 4)
            try:
                raw = base64.b64decode(b64, validate=True)
                out.append(raw.decode("utf-16-be"))
            except (ValueError, UnicodeDecodeError) as e:
                raise ValueError(f"bad modified UTF-7: {e}") from None
        i = end + 1
    return "".join(out)


def is_valid_keyword(keyword: str) -> bool:
    """An IMAP flag-keyword atom (RFC 3501 section 9), not a system flag."""
    return bool(_KEYWORD.match(keyword))


def split_filename(name: str) -> tuple[str, str]:
    """A Maildir file name's base (before ``:``) and its ``:2,`` info letters."""
    base, sep, info = name.partition(":")
    if sep and info.startswith("2,"):
        return base, info[2:]
    return base, ""


def is_acceptable_filename(name: str) -> bool:
    """Whether a directory entry may be taken as a message: not a dot file
    (Maildir's rule), printable ASCII, not too long. listdir never yields a
    ``/``, so a name cannot point outside its directory; symbolic links are
    refused when the file is opened."""
    return bool(_ACCEPTABLE_FILENAME.match(name))


#: :func:`is_acceptable_filename` as the pattern's own match (truthy when
#: acceptable): ``filter(acceptable_match, names)`` loops in C.
acceptable_match = _ACCEPTABLE_FILENAME.match


def filename_sizes(base: str) -> tuple[int | None, int | None]:
    """The ``,S=`` (file size) and ``,W=`` (CRLF size) fields of a base name."""
    size: int | None = None
    vsize: int | None = None
    if "=" not in base:
        return size, vsize
    # The common name ends in ",S=<size>,W=<CRLF size>": those are the
    # last fields of each letter, without a regular expression.
    head, sep, tail = base.rpartition(",W=")
    if sep and tail.isdigit() and tail.isascii():
        _, sep, digits = head.rpartition(",S=")
        if sep and digits.isdigit() and digits.isascii():
            return int(digits), int(tail)
    for letter, digits in _SIZE_FIELD.findall(base):
        if letter == "S":
            size = int(digits)
        else:
            vsize = int(digits)
    return size, vsize


#: A ``,S=<n>`` or ``,W=<n>`` field of a base name (the last one counts).
_SIZE_FIELD = re.compile(r",([SW])=([0-9]+)(?=,|\Z)")


def letters_to_flags(
    letters: str, keyword_names: dict[str, str]
) -> tuple[frozenset[str], frozenset[str]]:
    """System flags and keywords from ``:2,`` letters; ``keyword_names`` maps
    lower-case letters to names (dovecot-keywords). Unknown letters are ignored."""
    flags: set[str] = set()
    keywords: set[str] = set()
    for letter in letters:
        if letter in LETTER_TO_FLAG:
            flags.add(LETTER_TO_FLAG[letter])
        elif letter == "P":
            keywords.add(FORWARDED)
        elif letter in keyword_names:
            keywords.add(keyword_names[letter])
    return frozenset(flags), frozenset(keywords)


def flags_to_letters(
    flags: frozenset[str], keywords: frozenset[str], keyword_letters: dict[str, str]
) -> str:
    """The ``:2,`` letters for flags and keywords, in ASCII order (Maildir's
    rule). Keywords without a letter are kept only in the index."""
    letters = {FLAG_TO_LETTER[f.lower()] for f in flags if f.lower() in FLAG_TO_LETTER}
    if FORWARDED in keywords:
        letters.add("P")
    letters.update(keyword_letters[k] for k in keywords if k in keyword_letters)
    return "".join(sorted(letters))


#: A system flag in any case -> its canonical spelling.
_CANONICAL_FLAGS = {v.lower(): v for v in LETTER_TO_FLAG.values()}


def split_flags(flags: object) -> tuple[frozenset[str], frozenset[str]]:
    """Split a client's mixed flag list into (system flags, keywords), with
    system flags in canonical case; unknown ``\\`` flags (\\Recent) dropped,
    keywords that are not atoms dropped."""
    system: set[str] = set()
    keywords: set[str] = set()
    for flag in flags:  # type: ignore[attr-defined]
        if not isinstance(flag, str):
            continue
        if flag.startswith("\\"):
            canonical = _CANONICAL_FLAGS.get(flag.lower())
            if canonical is not None:
                system.add(canonical)
        elif is_valid_keyword(flag):
            keywords.add(flag)
    return frozenset(system), frozenset(keywords)


def rfc822_size(content: bytes) -> int:
    """The size with every line ending as CRLF (bare LFs counted twice)."""
    size = len(content) + content.count(b"\n")
    # Stored mail has LF line ends: one fast scan for CR spares a second count.
    return size - content.count(b"\r\n") if b"\r" in content else size


def rfc822_size_of_stream(
    read: Callable[[int], bytes], chunk_size: int = 1 << 20
) -> tuple[int, int]:
    """(size, CRLF size) of a file read in chunks, so that a big message
    never sits in memory whole."""
    size = vsize = 0
    prev_cr = False
    while chunk := read(chunk_size):
        crlf = chunk.count(b"\r\n") + (1 if prev_cr and chunk[:1] == b"\n" else 0)
        size += len(chunk)
        vsize += len(chunk) + chunk.count(b"\n") - crlf
        prev_cr = chunk.endswith(b"\r")
    return size, vsize
