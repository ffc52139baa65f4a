"""freshscan: the listing of a folder never indexed, as columns.

A folder's first scan (:mod:`pymta.mailstore.folder_scan`, Dovecot's
first maildir sync) numbers every file of ``new/`` and ``cur/`` in
arrival order. When every name is one Dovecot or pymta wrote
(``<secs>.M<usecs>...,S=<size>,W=<CRLF size>[:2,<letters>]``, sizes a
file can have) this module lists them without a Python step per file:
the names of the regular files (the listing's file types) joined into
one text, one regular expression over it (:data:`_SIZED_LINE`, the same
names :func:`~pymta.mailstore.names.acceptable_match` and
:func:`~pymta.mailstore.names.sized_name_match` take), its fields as
columns, put in arrival order (:func:`~pymta.mailstore.names.arrival_key`'s
order) by one sort of whole numbers. Anything else (a name without
sizes or with impossible ones, an odd name, two files of one base name,
two files of one microsecond) gives None: the caller takes the general
scan, which handles each file on its own.

Untrusted input: the file names (checked by the expression, never used
as paths here). Reads the two directories; writes nothing; logs nothing.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from itertools import repeat
from operator import add, itemgetter, le, mul

#: One listed file per line, ``sub/name``: the file name (1), time stamp
#: (2, 3), sizes (4, 5: written without leading zeros, as pymta and
#: Dovecot write them, so that the index line can take them as they
#: are) and ``:2,`` letters (6, empty when none). The characters are
#: those of names.FILENAME_PATTERN (printable ASCII but ``/``), the base
#: without ``:``; the rest as sized_name_match (its one base ending in
#: ``,S=<size>,W=<CRLF size>`` right before ``:`` or the end).
_SIZED_LINE = re.compile(
    r"^((?:new|cur)/([0-9]+)\.M([0-9]+)[!-.0-9;-~]*?"
    r",S=(0|[1-9][0-9]*),W=(0|[1-9][0-9]*)"
    r"(?::(?:2,([!-.0-~]*)|[!-.0-~]*))?)$",
    re.MULTILINE,
)

_MICROS = 1_000_000

#: Above this, a time stamp as microseconds is not exact as a float.
_EXACT = 1 << 53


@dataclass
class Listing:
    """The message files of new/ and cur/ as columns in the order listed
    (the file name ``sub/name``, size and CRLF size as the name spells
    them, ``:2,`` letters; the first ``in_new`` from new/), ``order``
    their positions in arrival order, ``rank`` each one's place in it."""

    in_new: int
    filenames: list[str]
    sizes: list[str]
    rfc822_sizes: list[str]
    letters: list[str]
    order: list[int]
    rank: list[int]

    def __len__(self) -> int:
        return len(self.filenames)


def list_columns(path: str) -> Listing | None:
    """The folder's files as a :class:`Listing`, or None when one of them
    needs the general scan (see the module doc)."""
    parts: list[str] = []
    listed = in_new = 0
    for sub in ("new", "cur"):
        try:
            entries = os.scandir(os.path.join(path, sub))
        except FileNotFoundError:
            continue
        with entries:
            names = [e.name for e in entries if e.is_file(follow_symlinks=False)]
        if names:
            parts.append(f"{sub}/" + f"\n{sub}/".join(names))
            listed += len(names)
        if sub == "new":
            in_new = listed
    text = "\n".join(parts)
    if text.count("\n") != max(listed - 1, 0):
        return None  # a name with a line feed in it: not one we take
    rows = _SIZED_LINE.findall(text)
    if len(rows) != listed:
        return None
    if not rows:
        return Listing(0, [], [], [], [], [], [])
    # Columns of strings (the tuples go: nothing left for the collector).
    filenames, secs, usecs, size_fields, rfc822_fields, letters = (
        list(map(itemgetter(i), rows)) for i in range(6)
    )
    del rows
    sizes = list(map(int, size_fields))
    rfc822_sizes = list(map(int, rfc822_fields))
    # Sizes no file can have (a CRLF size below the size, or above twice
    # it) are measured by the general scan.
    if not all(map(le, sizes, rfc822_sizes)):
        return None
    if not all(map(le, rfc822_sizes, map(mul, sizes, repeat(2)))):
        return None
    micros = list(map(int, usecs))
    if max(micros) >= _MICROS:
        return None
    # Arrival order: the time stamp as one number (seconds and
    # microseconds). Two files of one microsecond (or one base name: the
    # stamp is part of it) go by name: the general scan.
    keys = list(map(add, map(mul, map(int, secs), repeat(_MICROS)), micros))
    if max(keys) >= _EXACT or len(set(keys)) != listed:
        return None
    # Sorted as floats (exact here): the sort's fast comparison.
    stamps = list(map(float, keys))
    order = sorted(range(listed), key=stamps.__getitem__)
    rank = [0] * listed
    for place, position in enumerate(order):
        rank[position] = place
    return Listing(in_new, filenames, size_fields, rfc822_fields, letters, order, rank)
