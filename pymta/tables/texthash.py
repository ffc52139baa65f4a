"""texthash: tables — a postmap(1) source file read straight into memory.

Mirrors Postfix's dict_thash: the same ``key whitespace value`` syntax as the
input of ``postmap``, without a compile step. A file in aliases(5) shape
(every entry ``name: value``) is read with the aliases syntax, so a
``texthash:`` table can serve as alias_maps. The file is re-read when it
changes (checked at most once a second on the injected clock); a re-read
that fails keeps the previous contents. Untrusted input: the file's syntax;
problems are logged as warnings naming file and line. Writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger
from zope.interface import implementer

from pymta.tables.interface import IIterableTable, TableError
from pymta.tables.source import Parsed, looks_like_aliases, parse_aliases, parse_map
from pymta.tables.watch import FileWatch, stamp

_log = Logger(namespace="pymta.tables")

SYNTAXES = ("auto", "map", "aliases")


def parse_table_text(text: str, filename: str, syntax: str = "auto") -> Parsed:
    """Parse a table source in the given syntax (auto: aliases shape or map)."""
    if syntax == "aliases" or (syntax == "auto" and looks_like_aliases(text)):
        return parse_aliases(text, filename)
    return parse_map(text, filename)


def read_table_file(path: str, syntax: str = "auto") -> Parsed:
    """Read and parse path; TableError naming the file when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as e:
        raise TableError(f"open {path}: {e.strerror}") from None
    return parse_table_text(text, path, syntax)


@implementer(IIterableTable)
class TextHashTable:
    """An in-memory table loaded from a text file, re-read when it changes."""

    def __init__(
        self,
        name: str,
        path: str,
        clock: Callable[[], float],
        syntax: str = "auto",
        strict: bool = False,
    ) -> None:
        self.name = name
        self.path = path
        self._syntax = syntax
        self._watch = FileWatch(path, clock)
        self._entries: dict[str, str] = {}
        try:
            current = stamp(path)
        except OSError as e:
            raise TableError(f"open {path}: {e.strerror}") from None
        self._load(current, strict)

    def _load(self, current: tuple[int, int, int, int], strict: bool = False) -> None:
        parsed = read_table_file(self.path, self._syntax)
        if strict and parsed.problems:
            raise TableError(str(parsed.problems[0]))
        for problem in parsed.problems:
            _log.warn("{table}: {problem}", table=self.name, problem=str(problem))
        self._entries = parsed.entries
        self._watch.accept(current)

    def _refresh(self) -> None:
        current = self._watch.changed()
        if current is None:
            return
        try:
            self._load(current)
        except TableError as e:
            # Keep serving what was loaded; try again at the next check.
            _log.warn("{table}: reload failed, keeping old contents: {e}", table=self.name, e=e)

    def lookup(self, key: str) -> str | None:
        self._refresh()
        return self._entries.get(key.lower())

    def items(self) -> list[tuple[str, str]]:
        self._refresh()
        return list(self._entries.items())
