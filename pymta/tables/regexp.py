"""regexp: and pcre: tables — pattern rules tried in order (regexp_table(5)).

Mirrors Postfix's dict_regexp and dict_pcre. Syntax, one rule per logical
line (a line starting with white space continues the previous one; ``#``
lines and empty lines are ignored):

    /pattern/flags result        the result when the key matches
    !/pattern/flags result       the result when the key does not match
    if /pattern/flags            the rules up to the matching endif apply
    if !/pattern/flags           only when the key (does not) match
    endif

Any punctuation character other than a backslash may delimit the pattern.
Matching is case-insensitive by default; flag ``i`` toggles that. Flag ``m``
makes ``^``/``$`` match at embedded newlines; ``x`` allows white space and
comments in the pattern; pcre: also takes ``s`` (dot matches newline) and
``A`` (anchored at the start). ``$1``/``${1}`` in a result is replaced with
the matched group (empty when it did not take part), ``$$`` with ``$``.
Keys are not folded to lower case.

Difference from Postfix: both types use Python's ``re``. regexp: therefore
has no POSIX basic syntax (Postfix's ``x`` flag turns extended syntax off;
here it means verbose, as in pcre:) and alternatives match leftmost-first
rather than POSIX leftmost-longest; and Python's re has no match limit, so
a pattern that nests unbounded repetitions (``(.*)*``, ``(\\S+\\s*)+``),
which PCRE would cut off at its match limit, is refused as a bad rule
(:mod:`pymta.tables.redos`). Untrusted input: the file's syntax and
the lookup keys. A bad rule is a warning naming file and line and is
skipped, as Postfix does; with strict=True (postmap, config checks) it is
an error. The file is re-read when it changes. Writes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from twisted.logger import Logger
from zope.interface import implementer

from pymta.tables.interface import ILookupTable, TableError
from pymta.tables.redos import exponential_repeat
from pymta.tables.source import Problem, logical_lines, read_rules
from pymta.tables.watch import FileWatch, stamp

_log = Logger(namespace="pymta.tables")

_FLAGS = {
    "regexp": {"m": re.MULTILINE, "x": re.VERBOSE},
    "pcre": {"m": re.MULTILINE, "x": re.VERBOSE, "s": re.DOTALL},
}
_SUBST = re.compile(r"\$(?:\$|(\d+)|\{(\d+)\}|\((\d+)\))")


@dataclass(frozen=True)
class Rule:
    """One parsed rule: a match rule, the start of an if block, or an endif."""

    kind: str  # "match", "if" or "endif"
    pattern: re.Pattern[str] | None  # None: an if whose pattern was bad (never applies)
    negate: bool
    anchored: bool
    result: str
    lineno: int


class RuleError(Exception):
    """A syntax error in one rule."""


def _parse_pattern(text: str, flavour: str) -> tuple[re.Pattern[str], bool, bool, str]:
    """(pattern, negate, anchored, rest) from ``[!]/re/flags rest``."""
    negate = text.startswith("!")
    if negate:
        text = text[1:].lstrip()
    if not text or text[0].isspace() or text[0].isalnum() or text[0] == "\\":
        raise RuleError("expected /pattern/")
    delim = text[0]
    i = 1
    while i < len(text) and text[i] != delim:
        i += 2 if text[i] == "\\" else 1
    if i >= len(text):
        raise RuleError(f"no closing {delim!r} in pattern")
    body = text[1:i]
    rest = text[i + 1 :]
    flag_text = re.match(r"\S*", rest).group(0)  # type: ignore[union-attr]
    rest = rest[len(flag_text) :].strip()
    ignorecase = True
    anchored = False
    flags = 0
    for ch in flag_text:
        if ch == "i":
            ignorecase = not ignorecase
        elif ch in _FLAGS[flavour]:
            flags ^= _FLAGS[flavour][ch]
        elif ch == "A" and flavour == "pcre":
            anchored = True
        else:
            raise RuleError(f"unknown flag {ch!r}")
    if ignorecase:
        flags |= re.IGNORECASE
    try:
        pattern = re.compile(body, flags)
    except re.error as e:
        raise RuleError(f"bad pattern /{body}/: {e}") from None
    why = exponential_repeat(body, flags)
    if why is not None:
        # PCRE would stop such a match at its match limit; Python's re never
        # does (pymta.tables.redos).
        raise RuleError(
            f"pattern /{body}/ can take exponential time ({why}): "
            "write it without a repetition inside a repetition"
        )
    return pattern, negate, anchored, rest


def _check_result(result: str, pattern: re.Pattern[str], negate: bool) -> None:
    for m in _SUBST.finditer(result):
        number = next((g for g in m.groups() if g is not None), None)
        if number is None:
            continue
        if negate:
            raise RuleError("$number substitution in a negated rule")
        if int(number) > pattern.groups:
            raise RuleError(f"out of range substitution ${number}")


def parse_rules(text: str, filename: str, flavour: str) -> tuple[list[Rule], list[Problem]]:
    """Parse a regexp:/pcre: file into rules; bad lines become problems."""
    rules: list[Rule] = []
    problems: list[Problem] = []
    depth = 0
    for lineno, line in logical_lines(text):
        word = line.split(None, 1)[0].lower() if line else ""
        try:
            if word == "endif":
                if depth == 0:
                    raise RuleError("ignoring endif without matching if")
                if line.strip().lower() != "endif":
                    raise RuleError("text after endif")
                depth -= 1
                rules.append(Rule("endif", None, False, False, "", lineno))
            elif word == "if" or line.lower().startswith("if!"):
                depth += 1
                try:
                    pattern, negate, anchored, rest = _parse_pattern(line[2:].lstrip(), flavour)
                    if rest:
                        raise RuleError("text after if pattern")
                except RuleError:
                    # The block still needs its endif; a bad if applies to nothing.
                    rules.append(Rule("if", None, False, False, "", lineno))
                    raise
                rules.append(Rule("if", pattern, negate, anchored, "", lineno))
            else:
                pattern, negate, anchored, rest = _parse_pattern(line, flavour)
                if not rest:
                    raise RuleError("no result after pattern")
                _check_result(rest, pattern, negate)
                rules.append(Rule("match", pattern, negate, anchored, rest, lineno))
        except RuleError as e:
            problems.append(Problem(filename, lineno, str(e)))
    if depth:
        problems.append(Problem(filename, lineno if rules else 0, "missing endif"))
    return rules, problems


def _expand(result: str, match: re.Match[str] | None) -> str:
    def one(m: re.Match[str]) -> str:
        number = next((g for g in m.groups() if g is not None), None)
        if number is None:
            return "$"
        if match is None:
            return ""
        return match.group(int(number)) or ""

    return _SUBST.sub(one, result)


def _search(rule: Rule, key: str) -> tuple[bool, re.Match[str] | None]:
    if rule.pattern is None:
        return False, None
    found = rule.pattern.match(key) if rule.anchored else rule.pattern.search(key)
    return (found is None) if rule.negate else (found is not None), found


def _skip_block(rules: list[Rule], i: int) -> int:
    """Index after the endif that closes the if at i."""
    depth = 0
    while i < len(rules):
        if rules[i].kind == "if":
            depth += 1
        elif rules[i].kind == "endif":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def evaluate(rules: list[Rule], key: str) -> str | None:
    """The result of the first rule that applies to key, else None."""
    i = 0
    while i < len(rules):
        rule = rules[i]
        if rule.kind == "endif":
            i += 1
        elif rule.kind == "if":
            applies, _ = _search(rule, key)
            i = i + 1 if applies else _skip_block(rules, i)
        else:
            applies, found = _search(rule, key)
            if applies:
                return _expand(rule.result, found)
            i += 1
    return None


# Constructs whose meaning depends on group numbers or names: a pattern with
# one is not merged into the prefilter (a false positive only skips it).
_GROUP_REFERENCE = re.compile(r"\\[1-9]|\(\?P=|\(\?\(")
_INLINE_FLAGS = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"), (re.VERBOSE, "x"))


def build_prefilter(rules: list[Rule]) -> re.Pattern[str] | None:
    """One pattern that matches wherever some match rule's pattern does.

    A key it does not match cannot get a result (a result needs a match
    rule whose pattern matches), so lookup answers None after one search in
    C instead of one Python step per rule: body_checks try every body line
    against every rule. None (no prefilter) when a rule is negated (it
    answers when its pattern does not match) or a pattern cannot be merged
    (group references, global inline flags).
    """
    alternatives = []
    for rule in rules:
        if rule.kind != "match":
            continue  # if/endif only narrow which match rules apply
        if rule.negate or rule.pattern is None:
            return None
        source = rule.pattern.pattern
        if _GROUP_REFERENCE.search(source):
            return None
        flags = "".join(letter for flag, letter in _INLINE_FLAGS if rule.pattern.flags & flag)
        # A newline ends a verbose-mode comment before the closing parenthesis.
        alternatives.append(f"(?{flags}:{source}\n)" if "x" in flags else f"(?{flags}:{source})")
    if not alternatives:
        return None
    try:
        return re.compile("|".join(alternatives))
    except re.error:
        return None


@implementer(ILookupTable)
class RegexpTable:
    """A regexp: or pcre: table read from a file, re-read when it changes."""

    def __init__(
        self,
        name: str,
        path: str,
        flavour: str,
        clock: Callable[[], float],
        strict: bool = False,
    ) -> None:
        self.name = name
        self.path = path
        self.flavour = flavour
        self._watch = FileWatch(path, clock)
        self._rules: list[Rule] = []
        self._prefilter: re.Pattern[str] | None = None
        try:
            current = stamp(path)
        except OSError as e:
            raise TableError(f"open {path}: {e.strerror}") from None
        self._load(current, strict)

    def _load(self, current: tuple[int, int, int, int], strict: bool = False) -> None:
        rules = read_rules(
            self.path, self.name, lambda text, path: parse_rules(text, path, self.flavour), strict
        )
        self._rules = rules
        self._prefilter = build_prefilter(rules)
        self._watch.accept(current)

    def results(self) -> list[str]:
        """The result text of every rule, in file order (unexpanded), for
        checks of what a table can answer (header_checks refuses FILTER)."""
        return [rule.result for rule in self._rules if rule.kind == "match"]

    def lookup(self, key: str) -> str | None:
        current = self._watch.changed()
        if current is not None:
            try:
                self._load(current)
            except TableError as e:
                _log.warn("{table}: reload failed, keeping old rules: {e}", table=self.name, e=e)
        if self._prefilter is not None and self._prefilter.search(key) is None:
            return None
        return evaluate(self._rules, key)
