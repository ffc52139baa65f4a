"""scripts: one user's Sieve scripts as ManageSieve changes them.

Pigeonhole's layout (:mod:`pymta.sieve.storage`): ``~/sieve/NAME.sieve``
and the active script as the symbolic link ``~/.dovecot.sieve`` ->
``sieve/NAME.sieve``. Every change is atomic: a script is written to a
temporary file and renamed over the old one; the link is made under a
temporary name and renamed over ``.dovecot.sieve``, so the delivery side
always sees the old or the new script, never half of one. A regular file
at ``~/.dovecot.sieve`` (a script written by hand) is kept as
``sieve/dovecot-orig.sieve`` when another script is activated, as
Pigeonhole keeps it.

Untrusted input: script names (checked by
:func:`pymta.sieve.storage.valid_name`) and contents (checked by the
caller). Blocking file I/O: the caller runs it off the reactor. Errors are
:class:`ScriptError` with the RFC 5804 response code.
"""

from __future__ import annotations

import os

from pymta.sieve import storage

#: What a kept hand-written active script is named.
ORIGINAL = "dovecot-orig"


class ScriptError(Exception):
    """A refused change; ``code`` is the ManageSieve response code or ""."""

    def __init__(self, code: str, text: str) -> None:
        self.code = code
        self.text = text
        super().__init__(text)


class ScriptStore:
    """The scripts under one home directory."""

    def __init__(self, home: str) -> None:
        self.home = home
        self.directory = os.path.join(home, storage.SCRIPT_DIR)
        self.link = os.path.join(home, storage.ACTIVE_LINK)

    def _path(self, name: str) -> str:
        if not storage.valid_name(name):
            raise ScriptError("", f"Invalid script name: {name[:60]!r}")
        return storage.script_path(self.home, name)

    def active(self) -> str | None:
        """The active script's name (a link into sieve/), or None."""
        try:
            target = os.readlink(self.link)
        except OSError:
            return None
        prefix = storage.SCRIPT_DIR + "/"
        if target.startswith(prefix) and target.endswith(storage.SUFFIX):
            return target[len(prefix) : -len(storage.SUFFIX)]
        return None

    def names(self) -> list[str]:
        try:
            entries = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(
            e[: -len(storage.SUFFIX)]
            for e in entries
            if e.endswith(storage.SUFFIX) and storage.valid_name(e[: -len(storage.SUFFIX)])
        )

    def get(self, name: str) -> bytes:
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ScriptError("NONEXISTENT", "Script does not exist.") from None

    def put(self, name: str, content: bytes) -> None:
        path = self._path(name)
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)

    def delete(self, name: str) -> None:
        path = self._path(name)
        if self.active() == name:
            raise ScriptError("ACTIVE", "Cannot delete the active script.")
        try:
            os.unlink(path)
        except FileNotFoundError:
            raise ScriptError("NONEXISTENT", "Script does not exist.") from None

    def rename(self, old: str, new: str) -> None:
        old_path, new_path = self._path(old), self._path(new)
        if not os.path.exists(old_path):
            raise ScriptError("NONEXISTENT", "Script does not exist.")
        if os.path.exists(new_path):
            raise ScriptError("ALREADYEXISTS", "A script with that name already exists.")
        was_active = self.active() == old
        os.link(old_path, new_path)  # fails if new appeared meanwhile
        if was_active:
            self._point_to(new)
        os.unlink(old_path)

    def set_active(self, name: str) -> None:
        """Activate ``name``; the empty name deactivates every script."""
        if name == "":
            if os.path.islink(self.link):
                os.unlink(self.link)
            return
        if not os.path.exists(self._path(name)):
            raise ScriptError("NONEXISTENT", "Script does not exist.")
        if os.path.isfile(self.link) and not os.path.islink(self.link):
            kept = self._path(ORIGINAL)
            if not os.path.exists(kept):
                os.makedirs(self.directory, mode=0o700, exist_ok=True)
                os.rename(self.link, kept)
        self._point_to(name)

    def _point_to(self, name: str) -> None:
        temporary = f"{self.link}.{os.getpid()}.tmp"
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        os.symlink(f"{storage.SCRIPT_DIR}/{name}{storage.SUFFIX}", temporary)
        os.replace(temporary, self.link)
