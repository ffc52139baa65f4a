"""Read main.cf: ``name = value`` lines, continuations, comments.

Mirrors Postfix's postconf(5) file syntax. Input is the administrator's file;
a malformed line is a ConfigError naming file and line. Writes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pymta.config.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class Setting:
    """One ``name = value`` from a file, with where it came from."""

    name: str
    value: str
    filename: str
    lineno: int


def parse_main_cf(text: str, filename: str = "main.cf") -> list[Setting]:
    """Parse main.cf text into settings, in file order (a later one wins).

    A line starting with white space continues the logical line before it;
    a line whose first non-space character is ``#`` is a comment; empty lines
    end nothing (Postfix joins continuations across them only when they are
    indented, so a blank line is simply skipped).
    """
    settings: list[Setting] = []
    current: list[str] | None = None
    start = 0

    def flush() -> None:
        if current is None:
            return
        logical = " ".join(part.strip() for part in current)
        name, sep, value = logical.partition("=")
        name = name.strip()
        if not sep or not _NAME.match(name):
            raise ConfigError(
                f"bad parameter line {logical[:60]!r}: expected 'name = value'",
                filename,
                start,
            )
        settings.append(Setting(name, value.strip(), filename, start))

    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in " \t":
            if current is None:
                raise ConfigError(
                    "continuation line without a parameter before it", filename, lineno
                )
            current.append(stripped)
            continue
        flush()
        current = [line]
        start = lineno
    flush()
    return settings
