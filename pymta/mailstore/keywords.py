"""keywords: a folder's ``dovecot-keywords`` file, the letters of its keywords.

Mirrors Dovecot's maildir-keywords.c: keywords (IMAP flag keywords other
than ``$Forwarded``, which is the letter ``P``) are the lower-case letters
``a``-``z`` after ``:2,`` in a file name; the folder's ``dovecot-keywords``
names them, one ``<number> <keyword>`` a line (0 is ``a``). A keyword that
finds no free letter (all 26 taken) has none: the folder's index keeps it,
a file name cannot.

Untrusted input: the file (any program may have written it; lines that do
not parse are skipped, names are kept as text). May write: the file, under
the folder's index lock (the caller holds it), replaced atomically. Logs
nothing.
"""

from __future__ import annotations

import os
from collections.abc import Collection

from pymta.mailstore.files import atomic_write
from pymta.mailstore.names import FORWARDED

KEYWORDS_FILE = "dovecot-keywords"
LETTERS = "abcdefghijklmnopqrstuvwxyz"


class KeywordLetters:
    """The keyword letters of the folder at ``path``, reloaded when the
    file changes. Not thread-safe: the folder's mutex or lock guards it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.names: dict[str, str] = {}  # letter -> keyword
        self.letters: dict[str, str] = {}  # keyword -> letter
        self._stamp: tuple[int, int] | None = None

    def load(self) -> None:
        """Read the file again if it changed since the last read (one stat
        otherwise). A missing file means no keyword has a letter."""
        path = os.path.join(self.path, KEYWORDS_FILE)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self.names, self.letters, self._stamp = {}, {}, None
            return
        if self._stamp == (st.st_ino, st.st_mtime_ns):
            return
        names: dict[str, str] = {}
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    num, _, keyword = line.rstrip("\n").partition(" ")
                    if num.isdigit() and int(num) < len(LETTERS) and keyword:
                        names[LETTERS[int(num)]] = keyword
        except OSError:
            return
        self.names = names
        self.letters = {v: k for k, v in names.items()}
        self._stamp = (st.st_ino, st.st_mtime_ns)

    def assign(self, keywords: Collection[str]) -> None:
        """Give letters to those of ``keywords`` that have none, while free
        letters last, and write the file (the folder's index lock held:
        two writers must not hand out one letter twice)."""
        self.load()
        new = sorted(k for k in keywords if k not in self.letters and k != FORWARDED)
        free = [c for c in LETTERS if c not in self.names]
        if not new or not free:
            return
        for keyword, letter in zip(new, free, strict=False):
            self.names[letter] = keyword
        text = "".join(f"{LETTERS.index(c)} {k}\n" for c, k in sorted(self.names.items()))
        atomic_write(os.path.join(self.path, KEYWORDS_FILE), text.encode("utf-8"), False)
        self._stamp = None
        self.load()
