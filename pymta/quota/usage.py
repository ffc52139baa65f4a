"""usage: how many bytes and messages a Maildir++ mailbox holds.

The numbers Dovecot's Maildir++ quota counts (its ``maildirsize`` after a
recalculation): every file in ``cur/`` and ``new/`` of INBOX and of each
``.Folder``, its size taken from the ``,S=`` field of the name when there
is one (as Dovecot does), else from stat. pymta keeps the figures in
memory, not trusting a ``maildirsize`` file (anyone's program may have
left it wrong; :mod:`pymta.quota.maildirsize` only writes it): each
directory is listed again only when its modification time changed (any
delivery, move or expunge changes it), so the count never drifts from
the files.

Blocking file I/O: callers run it off the reactor. Untrusted input: file
names in the Maildir (only parsed for ``,S=``). Writes nothing.
"""

from __future__ import annotations

import os
import threading
import time

from pymta.mailstore.names import filename_sizes, split_filename

#: A directory changed more recently than this is listed again next time.
_SETTLE_NS = 1_000_000_000


class MaildirUsage:
    """Counts mailboxes; one instance per process, safe from several threads."""

    def __init__(self, entries: int = 100_000) -> None:
        self._cache: dict[str, tuple[int, int, int]] = {}  # dir -> (mtime_ns, bytes, count)
        self._entries = entries
        self._lock = threading.Lock()

    def usage(self, maildir: str) -> tuple[int, int]:
        """(bytes, messages) of the whole mailbox at ``maildir``."""
        total_bytes = total_count = 0
        for folder in self._folders(maildir):
            for sub in ("cur", "new"):
                size, count = self._directory(os.path.join(folder, sub))
                total_bytes += size
                total_count += count
        return total_bytes, total_count

    def _folders(self, maildir: str) -> list[str]:
        folders = [maildir]
        try:
            with os.scandir(maildir) as entries:
                for entry in entries:
                    if entry.name.startswith(".") and entry.name not in (".", ".."):
                        if entry.is_dir(follow_symlinks=False):
                            folders.append(entry.path)
        except OSError:
            pass
        return folders

    def _directory(self, path: str) -> tuple[int, int]:
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            return 0, 0
        with self._lock:
            cached = self._cache.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1], cached[2]
        size = count = 0
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    base, _ = split_filename(entry.name)
                    known, _ = filename_sizes(base)
                    if known is None:
                        try:
                            known = entry.stat(follow_symlinks=False).st_size
                        except OSError:
                            continue  # expunged meanwhile
                    size += known
                    count += 1
        except OSError:
            return 0, 0
        if time.time_ns() - mtime < _SETTLE_NS:
            # Changed within the file system's timestamp granularity: a
            # change right after this listing could keep the same mtime.
            return size, count
        with self._lock:
            if len(self._cache) >= self._entries:
                self._cache.clear()
            self._cache[path] = (mtime, size, count)
        return size, count

    def forget(self, maildir: str) -> None:
        """Drop what is cached under ``maildir`` (a test, or after a restore)."""
        with self._lock:
            for path in [p for p in self._cache if p.startswith(maildir)]:
                del self._cache[path]


#: One counter per process: lmtpd, the virtual agent and imapd share it.
SHARED = MaildirUsage()
