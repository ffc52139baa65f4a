"""hash: tables — the FILE.db that ``pymta postmap hash:FILE`` compiles.

Mirrors Postfix's dict_db (hash:, btree:) and dict_lmdb (lmdb:). The .db is
an SQLite database (stdlib sqlite3) with one indexed ``entries(key, value)``
table and a ``meta`` table naming the format and the source syntax. It is
written under a temporary name, fsync'd and renamed into place, so a reader
sees either the old table or the new one, never half of one. Readers open it
read-only and re-open it when the file is replaced (checked at most once a
second on the injected clock). A missing or unreadable .db is an open
failure (TableError). Writes only FILE.db (and its temporary) when compiling.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterable

from twisted.logger import Logger
from zope.interface import implementer

from pymta.tables.interface import IIterableTable, TableError
from pymta.tables.watch import FileWatch, stamp

_log = Logger(namespace="pymta.tables")

FORMAT = "pymta-hash-1"
SUFFIX = ".db"


def db_path(source: str) -> str:
    """The compiled file for a source file name (``FILE`` -> ``FILE.db``)."""
    return source + SUFFIX


def compile_db(path: str, entries: Iterable[tuple[str, str]], syntax: str = "map") -> None:
    """Write entries to the database path atomically (tmp, fsync, rename).

    Raises OSError or sqlite3.Error; the old database stays in place then.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp{os.getpid()}"
    if os.path.exists(tmp):
        os.unlink(tmp)
    try:
        conn = sqlite3.connect(tmp)
        try:
            conn.execute("PRAGMA journal_mode=OFF")
            conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute(
                "CREATE TABLE entries (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID"
            )
            conn.executemany(
                "INSERT INTO meta VALUES (?, ?)", [("format", FORMAT), ("syntax", syntax)]
            )
            conn.executemany("INSERT OR IGNORE INTO entries VALUES (?, ?)", entries)
            conn.commit()
        finally:
            conn.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _connect(path: str) -> sqlite3.Connection:
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro&immutable=1"
    try:
        os.stat(path)
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    except OSError as e:
        raise TableError(f"open database {path}: {e.strerror}") from None
    except sqlite3.Error as e:
        raise TableError(f"open database {path}: {e}") from None
    try:
        row = conn.execute("SELECT value FROM meta WHERE name = 'format'").fetchone()
    except sqlite3.Error as e:
        conn.close()
        raise TableError(f"open database {path}: not a pymta table: {e}") from None
    if row is None or row[0] != FORMAT:
        conn.close()
        raise TableError(f"open database {path}: unknown format {row[0] if row else None!r}")
    return conn


@implementer(IIterableTable)
class HashTable:
    """A compiled table, looked up by key in FILE.db."""

    def __init__(self, name: str, source: str, clock: Callable[[], float]) -> None:
        self.name = name
        self.path = db_path(source)
        self._watch = FileWatch(self.path, clock)
        try:
            current = stamp(self.path)
        except OSError as e:
            raise TableError(f"open database {self.path}: {e.strerror}") from None
        self._conn = _connect(self.path)
        self._watch.accept(current)

    def _refresh(self) -> None:
        current = self._watch.changed()
        if current is None:
            return
        try:
            conn = _connect(self.path)
        except TableError as e:
            _log.warn("{table}: re-open failed, keeping old database: {e}", table=self.name, e=e)
            return
        self._conn.close()
        self._conn = conn
        self._watch.accept(current)

    def lookup(self, key: str) -> str | None:
        self._refresh()
        try:
            row = self._conn.execute(
                "SELECT value FROM entries WHERE key = ?", (key.lower(),)
            ).fetchone()
        except sqlite3.Error as e:
            raise TableError(f"{self.name}: lookup failed: {e}") from None
        return None if row is None else str(row[0])

    def items(self) -> list[tuple[str, str]]:
        self._refresh()
        try:
            rows = self._conn.execute("SELECT key, value FROM entries ORDER BY key").fetchall()
        except sqlite3.Error as e:
            raise TableError(f"{self.name}: listing failed: {e}") from None
        return [(str(k), str(v)) for k, v in rows]

    def close(self) -> None:
        self._conn.close()
