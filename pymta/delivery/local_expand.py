"""local_expand: what an alias or a .forward file expands to, as local(8) reads it.

One copy of the rules, used by both sides of local delivery: the local
agent (:mod:`pymta.delivery.local`), which decides what to deliver, and the
root helper (:mod:`pymta.privsep.verify`), which re-derives the same
expansion from the files themselves before it writes a file or runs a
command as a user, so that it never takes a target on the agent's word.

:func:`expand_values` sorts alias values (aliases(5)) or .forward lines
into addresses, ``/files`` and ``|commands``, each with its class
(``alias``, ``forward``, ``include``: what allow_mail_to_files and
allow_mail_to_commands name), reading ``:include:`` files through the
caller's ``read_file`` (at most :data:`INCLUDE_DEPTH` deep).
:func:`forward_values` are the values of a .forward file's text.
:func:`split_extension` and :func:`alias_owner` are local(8)'s address
split and the alias database's owner.

Untrusted input: .forward text and include files (parsed, never run here).
Reads nothing itself (``read_file`` does). Logs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from pymta.tables import split_alias_value

INCLUDE_DEPTH = 10

Outcome = tuple[str, str]  # (status, reason)


@dataclass
class Expansion:
    """Addresses, files and commands of an alias or a .forward (with their class)."""

    addresses: list[str] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)  # (path, class)
    commands: list[tuple[str, str]] = field(default_factory=list)  # (command, class)
    error: Outcome | None = None


def _unquote(item: str) -> str:
    item = item.strip()
    if len(item) >= 2 and item[0] == '"' and item[-1] == '"':
        item = item[1:-1]
    return item


def _lines_as_values(text: str) -> list[str]:
    lines = [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    return split_alias_value(", ".join(lines))


def forward_values(text: str) -> list[str]:
    """The values of a .forward (or :include:) file: comments and blank lines dropped."""
    return _lines_as_values(text)


def expand_values(
    values: list[str],
    origin: str,
    read_file: Callable[[str], str],
    allow_files: Collection[str],
    out: Expansion,
    depth: int = 0,
) -> None:
    """Add what values expand to to out (out.error set on the first failure)."""
    for raw in values:
        item = _unquote(raw)
        if not item:
            continue
        if item.startswith("|"):
            out.commands.append((item[1:].strip(), origin))
        elif item.startswith("/"):
            out.files.append((item, origin))
        elif item.lower().startswith(":include:"):
            path = item[len(":include:") :].strip()
            if depth >= INCLUDE_DEPTH:
                out.error = ("5.4.6", f"include file nesting too deep: {path}")
                return
            if origin not in allow_files and "include" not in allow_files:
                out.error = ("5.7.1", f"mail to file is restricted: :include:{path}")
                return
            try:
                text = read_file(path)
            except OSError as e:
                out.error = ("4.3.0", f"cannot open include file {path}: {e.strerror}")
                return
            expand_values(_lines_as_values(text), "include", read_file, allow_files, out, depth + 1)
            if out.error is not None:
                return
        else:
            out.addresses.append(item)


def split_extension(local: str, delimiter: str) -> tuple[str, str]:
    """(user, extension) of a local part at the first delimiter character."""
    if delimiter:
        for index, char in enumerate(local):
            if char in delimiter:
                return local[:index], local[index + 1 :]
    return local, ""


def alias_owner(specs: list[str]) -> int | None:
    """The owner uid of the first file-backed alias table (its .db when compiled)."""
    for spec in specs:
        kind, _, name = spec.partition(":")
        kind = kind.lower()
        if kind == "proxy":
            kind, _, name = name.partition(":")
        if not name or not name.startswith("/"):
            continue
        for path in (f"{name}.db", name) if kind in ("hash", "btree", "lmdb") else (name,):
            try:
                return os.stat(path).st_uid
            except OSError:
                continue
    return None
