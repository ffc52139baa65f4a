"""metadata: one user's METADATA entries (RFC 5464) as the mail store keeps them.

The IMAP METADATA commands (:mod:`pymta.imap.metadata`) read and change a
user's entries through the store's asynchronous API
(``IAsyncUserMailbox.metadata`` / ``set_metadata``); this module is how
the Maildir store keeps them, the way Dovecot keeps its per-user
dictionary beside the mailbox: one file per user, ``pymta-metadata`` in
the Maildir++ root, JSON with values in base64. A change is written whole
to a temporary file, fsync'd and renamed into place (the directory
fsync'd too) before the call returns, so an answered SETMETADATA survives
a crash. The file is read again when another process changed it (its
mtime). Every call runs in the store's threads (the asynchronous API puts
it there): a stat and, when it changed, a read of one small file.

Entries are ``entries[key][entry name] = value``, the key ``""`` for the
server's entries and a mailbox's MAILBOXID for its own (the IMAP layer
chooses the keys).

Untrusted input: the file (one that cannot be read or parsed is logged
and treated as empty, and is not overwritten until the next change).
Writes the file. Logs unreadable files.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Mapping

from twisted.logger import Logger

from pymta.mailstore.files import atomic_write

#: The file of a user's entries, in the Maildir++ root.
FILENAME = "pymta-metadata"

#: The entries of one user: key ("" the server, else a MAILBOXID) -> entry
#: name -> value.
Entries = dict[str, dict[str, bytes]]

_log = Logger(namespace="pymta.mailstore")


def apply_changes(
    entries: Entries, key: str, changes: Mapping[str, bytes | None], max_entries: int
) -> bool:
    """Set (a value) or remove (None) ``changes`` under ``key`` in
    ``entries``, unless the user would then hold more than ``max_entries``
    entries: then nothing changes and the answer is False."""
    changed = dict(entries.get(key, {}))
    for name, value in changes.items():
        if value is None:
            changed.pop(name, None)
        else:
            changed[name] = value
    total = sum(len(values) for box, values in entries.items() if box != key) + len(changed)
    if total > max_entries:
        return False
    if changed:
        entries[key] = changed
    else:
        entries.pop(key, None)
    return True


def copy_of(entries: Entries) -> Entries:
    """A copy the caller may keep (the store's own changes later)."""
    return {key: dict(values) for key, values in entries.items() if values}


class MetadataFile:
    """The entries of one Maildir++ root, cached while the file's mtime
    stays the same. Thread-safe (one call at a time)."""

    def __init__(self, root: str, fsync: bool = True) -> None:
        self.path = os.path.join(root, FILENAME)
        self._fsync = fsync
        self._entries: Entries = {}
        self._stamp: int | None = None  # the file's mtime_ns when read
        self._mutex = threading.Lock()

    def read(self) -> Entries:
        """The entries as the file holds them now (a copy)."""
        with self._mutex:
            self._refresh()
            return copy_of(self._entries)

    def change(self, key: str, changes: Mapping[str, bytes | None], max_entries: int) -> bool:
        """Apply ``changes`` to ``key``'s entries and write the file
        durably; False (nothing written) when that would make more than
        ``max_entries`` entries. An OSError of the write is raised, and
        the file is read again next time (the change may not be in it)."""
        with self._mutex:
            self._refresh()
            entries = copy_of(self._entries)
            if not apply_changes(entries, key, changes, max_entries):
                return False
            try:
                self._stamp = self._write(_serialized(entries))
            except BaseException:
                self._stamp = None
                raise
            self._entries = entries
            return True

    def _refresh(self) -> None:
        try:
            stamp = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            self._entries, self._stamp = {}, None
            return
        except OSError as e:
            _log.error("metadata {path}: {error}", path=self.path, error=e)
            return  # what was read last stands
        if stamp == self._stamp:
            return
        try:
            with open(self.path, "rb") as f:
                raw = json.loads(f.read())
            self._entries = {
                str(box): {str(k): base64.b64decode(v) for k, v in values.items()}
                for box, values in raw.items()
            }
        except (OSError, ValueError, AttributeError, TypeError) as e:
            _log.error("metadata {path} unreadable: {error}", path=self.path, error=e)
            self._entries = {}
        self._stamp = stamp

    def _write(self, data: bytes) -> int:
        """The file replaced (durably when fsync is on); its new mtime_ns."""
        atomic_write(self.path, data, self._fsync)
        if self._fsync:
            directory = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        return os.stat(self.path).st_mtime_ns


def _serialized(entries: Entries) -> bytes:
    return json.dumps(
        {
            box: {k: base64.b64encode(v).decode("ascii") for k, v in values.items()}
            for box, values in entries.items()
            if values
        },
        sort_keys=True,
    ).encode("ascii")
