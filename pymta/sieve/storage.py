"""storage: where a user's Sieve scripts are, as Pigeonhole lays them out.

Pigeonhole's default ``sieve = file:~/sieve;active=~/.dovecot.sieve``:
the scripts are ``~/sieve/NAME.sieve``, the active one is the symbolic
link ``~/.dovecot.sieve`` pointing at ``sieve/NAME.sieve`` (a regular file
there is an active script that ManageSieve does not manage), so a Dovecot
site's scripts keep working unchanged. ``~`` is the user's home from the
userdb (the passwd-file's home field; for a virtual user without one, the
Maildir). ``include :global`` scripts are ``pymta_sieve_global_dir/NAME.sieve``.

:class:`ScriptCache` compiles a script once per (path, inode, size, mtime)
and hands out the result; compilation errors are cached the same way.

Untrusted input: script names (from ManageSieve clients and ``include``),
checked by :func:`valid_name`; script contents (see
:mod:`pymta.sieve.check`). Blocking file I/O: callers run it off the
reactor. May write: ManageSieve's changes (:class:`ScriptStore`), each
through a temporary file and a rename.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass

from pymta.sieve.check import compile_script
from pymta.sieve.grammar import Command, SieveSyntaxError

SCRIPT_DIR = "sieve"
ACTIVE_LINK = ".dovecot.sieve"
SUFFIX = ".sieve"

_NAME = re.compile(r"[^/\x00-\x1f\x7f]{1,255}\Z")


def valid_name(name: str) -> bool:
    """A script name a file may carry (RFC 5804 section 1.6, without ``/``
    and control characters, not starting with a dot)."""
    return bool(_NAME.match(name)) and not name.startswith(".")


def script_path(home: str, name: str) -> str:
    return os.path.join(home, SCRIPT_DIR, name + SUFFIX)


def active_path(home: str) -> str | None:
    """The active script's file, or None when the user has none."""
    link = os.path.join(home, ACTIVE_LINK)
    try:
        if os.path.islink(link):
            target = os.path.join(home, os.readlink(link))
            return target if os.path.isfile(target) else None
        return link if os.path.isfile(link) else None
    except OSError:
        return None


@dataclass(frozen=True)
class Compiled:
    """A compiled script, or the error that stopped it."""

    commands: list[Command] | None
    required: frozenset[str]
    error: str | None = None


class ScriptCache:
    """Compiled scripts by file identity; safe to use from several threads."""

    def __init__(self, max_size: int = 1 << 20, entries: int = 1000) -> None:
        self.max_size = max_size
        self._entries = entries
        self._cache: dict[str, tuple[tuple[int, int, int, int], Compiled]] = {}
        self._lock = threading.Lock()

    def load(self, path: str) -> Compiled | None:
        """The compiled script at path; None when there is no such file."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        identity = (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._cache.get(path)
        if cached is not None and cached[0] == identity:
            return cached[1]
        if st.st_size > self.max_size:
            compiled = Compiled(None, frozenset(), f"script larger than {self.max_size} bytes")
        else:
            try:
                with open(path, "rb") as f:
                    source = f.read(self.max_size + 1)
            except OSError as e:
                return Compiled(None, frozenset(), f"cannot read script: {e.strerror}")
            compiled = compile_text(source, self.max_size)
        with self._lock:
            if len(self._cache) >= self._entries:
                self._cache.clear()
            self._cache[path] = (identity, compiled)
        return compiled


def compile_text(source: bytes, max_size: int = 1 << 20) -> Compiled:
    """Compile script text into a :class:`Compiled` (error included)."""
    try:
        commands, required = compile_script(source, max_size)
    except SieveSyntaxError as e:
        return Compiled(None, frozenset(), str(e))
    except RecursionError:
        return Compiled(None, frozenset(), "script nested too deeply")
    return Compiled(commands, frozenset(required))
