"""Parse postmap(1) source text: ``key whitespace value`` and aliases(5) text.

Mirrors Postfix's postmap/postalias input readers. The input is an
administrator's file: untrusted as to syntax, so every problem is reported
as a warning naming the file and line, never a crash. Writes nothing, logs
nothing: problems are returned as values for the caller to report.

Logical lines: a line that starts with white space continues the previous
one; empty lines and lines whose first non-blank character is ``#`` are
ignored. Keys are folded to lower case (Postfix's default for hash tables);
a duplicate key keeps the first value and is a warning, as postmap does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from twisted.logger import Logger

from pymta.tables.interface import TableError

_log = Logger(namespace="pymta.tables")

#: What a rule-list table's parser gives (read_rules).
RulesT = TypeVar("RulesT")


@dataclass(frozen=True)
class Problem:
    """One syntax problem: where, and what."""

    filename: str
    lineno: int
    message: str

    def __str__(self) -> str:
        return f"{self.filename}, line {self.lineno}: {self.message}"


@dataclass
class Parsed:
    """Entries in file order, plus the problems found on the way."""

    entries: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, joined text) for each logical line of a table file."""
    start = 0
    parts: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in " \t" and parts:
            parts.append(stripped)
            continue
        if parts:
            yield start, " ".join(parts)
        start, parts = lineno, [stripped]
    if parts:
        yield start, " ".join(parts)


def _add(parsed: Parsed, filename: str, lineno: int, key: str, value: str) -> None:
    key = key.lower()
    if key in parsed.entries:
        parsed.problems.append(
            Problem(filename, lineno, f"duplicate entry: {key!r}; keeping the first")
        )
        return
    parsed.entries[key] = value


def parse_map(text: str, filename: str) -> Parsed:
    """postmap(1) syntax: ``key whitespace value``."""
    parsed = Parsed()
    for lineno, line in logical_lines(text):
        fields = line.split(None, 1)
        key = fields[0]
        value = fields[1].strip() if len(fields) > 1 else ""
        if not value:
            parsed.problems.append(
                Problem(filename, lineno, "expected format: key whitespace value")
            )
            continue
        _add(parsed, filename, lineno, key, value)
    return parsed


# aliases(5): ``name: value, value``; the name may be quoted ("a b": c).
_ALIAS_NAME = re.compile(r'^("(?:[^"\\]|\\.)*"|[^\s:"]+)\s*:(.*)$')
# What a first line looks like in an aliases file, and not in a postmap
# file: a colon right after the name and then white space or the end (an
# IPv6 access-table key such as 2001:db8::1 has no space after its colon).
_ALIAS_SHAPE = re.compile(r'^("(?:[^"\\]|\\.)*"|[^\s:"]+)\s*:(\s|$)')


def _unquote(name: str) -> str:
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return re.sub(r"\\(.)", r"\1", name[1:-1])
    return name


def parse_aliases(text: str, filename: str) -> Parsed:
    """aliases(5) syntax: ``name: value, value``; values are kept as written."""
    parsed = Parsed()
    for lineno, line in logical_lines(text):
        match = _ALIAS_NAME.match(line)
        if match is None:
            parsed.problems.append(Problem(filename, lineno, "expected format: name: value"))
            continue
        name = _unquote(match.group(1))
        value = match.group(2).strip()
        if not name:
            parsed.problems.append(Problem(filename, lineno, "empty alias name"))
            continue
        if not value:
            parsed.problems.append(Problem(filename, lineno, f"no value for alias {name!r}"))
            continue
        _add(parsed, filename, lineno, name, value)
    return parsed


def looks_like_aliases(text: str) -> bool:
    """True when every entry has aliases(5) shape (``name:`` then white space)."""
    seen = False
    for _lineno, line in logical_lines(text):
        if not _ALIAS_SHAPE.match(line):
            return False
        seen = True
    return seen


def read_rules(
    path: str,
    table: str,
    parse: Callable[[str, str], tuple[RulesT, list[Problem]]],
    strict: bool = False,
) -> RulesT:
    """The rules of a rule-list table file (regexp:, pcre:, cidr:): the file
    read as the tables read text (UTF-8, undecodable bytes kept as
    surrogates), ``parse(text, path)`` giving the rules and the bad lines.
    With ``strict`` the first bad line is a TableError; otherwise each is
    logged as a warning naming ``table`` and the rule is skipped."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as e:
        raise TableError(f"open {path}: {e.strerror}") from None
    rules, problems = parse(text, path)
    if strict and problems:
        raise TableError(str(problems[0]))
    for problem in problems:
        _log.warn("{table}: {problem}", table=table, problem=str(problem))
    return rules
