"""Dovecot passwd-file reader, re-read when the file changes.

Format (Dovecot doc "passwd-file"), one user a line::

    user@domain:{SCHEME}hash:uid:gid:(gecos):home:(shell):extra fields

Fields after the password may be empty or missing; extra fields are
space-separated ``key=value`` pairs (``mail=maildir:/srv/mail/u``,
``userdb_mail=...``, ``nologin``...). Lines starting with ``#`` and blank
lines are ignored. User names are looked up lower-cased, as Dovecot's default
``auth_username_format = %Lu`` does.

Untrusted input: none from the network here; the file is the administrator's.
A malformed line is skipped with a warning naming file and line, never fatal.
The file is checked for changes (mtime, size, inode) at most once a second
of the injected clock and re-read when it changed. An unreadable file is a
temporary failure (:class:`PasswdFileError`): logins are refused with
``[SYS/TEMP]``, the previous contents are not used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pymta.auth.schemes import StoredPassword

_log = Logger(namespace="pymta.auth")

CHECK_INTERVAL = 1.0


class PasswdFileError(Exception):
    """The passwd-file could not be read: a temporary failure, never a bad password."""


@dataclass(frozen=True)
class PasswdEntry:
    """One passwd-file line."""

    user: str
    password: StoredPassword | None
    uid: str = ""
    gid: str = ""
    gecos: str = ""
    home: str = ""
    shell: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    def mail_location(self) -> str | None:
        """The Maildir path from ``mail=maildir:PATH`` (or ``userdb_mail=``), else None.

        ``~`` at the start of PATH is the home directory; Dovecot's ``:KEY=value``
        options after the path (``:LAYOUT=fs``, ``:INDEX=...``) are ignored.
        """
        location = self.extra.get("userdb_mail") or self.extra.get("mail")
        if not location:
            return None
        kind, sep, path = location.partition(":")
        if not sep or kind.lower() != "maildir":
            return None
        path = path.split(":", 1)[0]
        if path == "~" or path.startswith("~/"):
            if not self.home:
                return None
            path = self.home.rstrip("/") + path[1:]
        return path or None


def parse_line(line: str) -> PasswdEntry | None:
    """An entry from one line; None for comments and blank lines; ValueError if malformed."""
    line = line.rstrip("\r\n")
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    parts = line.split(":", 7)
    user = parts[0].strip().lower()
    if not user:
        raise ValueError("empty user name")
    while len(parts) < 8:
        parts.append("")
    password = StoredPassword.parse(parts[1]) if parts[1] else None
    extra: dict[str, str] = {}
    for item in parts[7].split():
        key, _, value = item.partition("=")
        extra[key.lower()] = value
    return PasswdEntry(
        user=user,
        password=password,
        uid=parts[2],
        gid=parts[3],
        gecos=parts[4],
        home=parts[5],
        shell=parts[6],
        extra=extra,
    )


def parse_text(text: str, filename: str = "passwd") -> dict[str, PasswdEntry]:
    """All entries of a passwd-file text, by lower-cased user; bad lines are logged, skipped."""
    entries: dict[str, PasswdEntry] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        try:
            entry = parse_line(line)
        except ValueError as e:
            _log.warn(
                "{file}, line {line}: {error}: line ignored", file=filename, line=lineno, error=e
            )
            continue
        if entry is not None:
            # Dovecot uses the first matching line; so do we.
            entries.setdefault(entry.user, entry)
    return entries


class PasswdFile:
    """A passwd-file, re-read when it changes (checked at most once a CHECK_INTERVAL)."""

    def __init__(self, path: str, clock: IReactorTime) -> None:
        self.path = path
        self._clock = clock
        self._entries: dict[str, PasswdEntry] = {}
        self._signature: tuple[int, int, int] | None = None
        self._checked_at: float | None = None
        self._error: str | None = None

    def _refresh(self) -> None:
        now = self._clock.seconds()
        if self._checked_at is not None and now - self._checked_at < CHECK_INTERVAL:
            return
        self._checked_at = now
        try:
            st = os.stat(self.path)
            signature = (st.st_mtime_ns, st.st_size, st.st_ino)
            if signature == self._signature and self._error is None:
                return
            with open(self.path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as e:
            self._error = f"cannot read {self.path}: {e.strerror}"
            self._signature = None
            _log.error("passwd-file {error}", error=self._error)
            return
        self._entries = parse_text(text, self.path)
        self._signature = signature
        self._error = None

    def lookup(self, user: str) -> PasswdEntry | None:
        """The entry for user (case-insensitive), None if unknown; PasswdFileError if unreadable."""
        self._refresh()
        if self._error is not None:
            raise PasswdFileError(self._error)
        return self._entries.get(user.lower())

    def schemes(self) -> list[str]:
        """The schemes used in the file, most common first (for the unknown-user dummy hash)."""
        self._refresh()
        counts: dict[str, int] = {}
        for entry in self._entries.values():
            if entry.password is not None:
                counts[entry.password.scheme] = counts.get(entry.password.scheme, 0) + 1
        return sorted(counts, key=lambda s: -counts[s])
