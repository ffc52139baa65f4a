"""pipe_args: the attributes of a master.cf ``pipe`` line, checked at start.

Mirrors the command-line attributes of Postfix's pipe(8): ``flags=``
(``B D F O R X h q u . >``; others are refused), ``user=name[:group]``
(required, never root), ``argv=command ...`` (required, last: every word
after it belongs to the command), ``size=``, ``eol=`` (with ``\\r``,
``\\n``, ``\\t`` escapes), ``directory=``, ``null_sender=``. A malformed line
is a ConfigError naming file and line, at start and in ``pymta check``;
whether the user exists is asked at delivery time, as Postfix does (Debian's
stock master.cf names users few hosts have). Writes nothing, logs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from pymta.config.errors import ConfigError

#: pipe(8)'s flags that pymta acts on (see pymta.delivery.pipe).
FLAGS = frozenset("BDFORXhqu.>")


@dataclass(frozen=True)
class PipeSpec:
    """A pipe service's attributes."""

    flags: str
    user: str
    group: str | None
    argv: tuple[str, ...]
    size_limit: int
    eol: str
    directory: str | None
    null_sender: str


def _unescape(text: str) -> str:
    return text.replace("\\r", "\r").replace("\\n", "\n").replace("\\t", "\t")


def parse_pipe(args: list[str], where: tuple[str, int] | None = None) -> PipeSpec:
    """PipeSpec of a pipe line's arguments (after ``-o`` overrides were taken)."""
    filename, lineno = where or ("master.cf", 0)

    def error(text: str) -> ConfigError:
        return ConfigError(f"pipe: {text}", filename, lineno)

    flags = ""
    user = ""
    argv: list[str] = []
    size_limit = 0
    eol = "\n"
    directory: str | None = None
    null_sender = "MAILER-DAEMON"
    for index, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if not eq:
            raise error(f"expected name=value, found {arg!r}")
        if name == "argv":
            argv = [value, *args[index + 1 :]] if value else list(args[index + 1 :])
            break
        if name == "flags":
            unknown = sorted(set(value) - FLAGS)
            if unknown:
                raise error(f"flags={value}: unsupported flag(s) {''.join(unknown)}")
            flags = value
        elif name == "user":
            user = value
        elif name == "size":
            if not value.isdigit():
                raise error(f"size={value}: expected a number of bytes")
            size_limit = int(value)
        elif name == "eol":
            eol = _unescape(value)
        elif name == "directory":
            directory = value
        elif name == "null_sender":
            null_sender = value
        else:
            raise error(f"unknown attribute {name!r}")
    if not user:
        raise error("missing user= attribute")
    name, _, group = user.partition(":")
    if name == "root" or name == "0":
        raise error("user= must not be root (pipe never runs commands as root)")
    if not argv or not argv[0]:
        raise error("missing argv= attribute")
    return PipeSpec(
        flags, name, group or None, tuple(argv), size_limit, eol, directory, null_sender
    )
