"""Removing what dead writers left in a Maildir's ``tmp/``.

maildir(5): a writer creates its file in ``tmp/`` and renames it into
``new/``; one killed in between leaves the file behind, and a reader
"should delete" files in ``tmp/`` that have been left alone for 36 hours.
Dovecot (maildir_check_tmp) does it when it opens a folder, at most once
per scan interval, and remembers the scan in the access time of ``tmp/``
itself, so every process (and the next start) sees when the last scan was.
pymta does the same for every folder that delivery writes to or a session
opens (:mod:`pymta.mailstore.deliver`, :mod:`pymta.mailstore.maildir_folder`):

- a file is stale when its status change time (ctime) is over
  ``TMP_MAX_AGE`` (36 hours) old. Not its mtime: an APPEND stages its file
  with the message's internal date as mtime, which may be years ago, and a
  writer can set any mtime; ctime moves with every write and no one can
  set it back;
- a folder is scanned when ``tmp/``'s access time is over
  ``TMP_SCAN_INTERVAL`` (8 hours, Dovecot's long-standing interval) old;
  the scan then sets that access time to now. Within one process the same
  folder is not even looked at again within the interval;
- the scan (stat, listdir, unlinks) runs in a worker thread, never on the
  reactor; the removed files are logged on the reactor thread as
  ``mailstore: removed stale PATH``.

Untrusted input: names in ``tmp/`` (only non-directories directly in it are
removed, never followed: ``lstat``). Writes: unlinks in ``tmp/`` and the
access time of ``tmp/``. A store that cannot be written (read-only, full)
just keeps its files: every error is ignored.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python import threadable
from twisted.python.failure import Failure

from pymta.maillog import maillog

__all__ = ["TMP_MAX_AGE", "TMP_SCAN_INTERVAL", "TmpCleaner", "clean_tmp"]

TMP_MAX_AGE = 36 * 3600
TMP_SCAN_INTERVAL = 8 * 3600

RunInThread = Callable[[Callable[[], list[str]]], "Deferred[list[str]]"]

_log = Logger(namespace="pymta.mailstore")


def clean_tmp(
    maildir: str,
    now: float,
    max_age: float = TMP_MAX_AGE,
    scan_interval: float = TMP_SCAN_INTERVAL,
    lstat: Callable[[str], os.stat_result] = os.lstat,
) -> list[str]:
    """Remove the stale files of ``maildir``'s tmp/ if a scan is due (see
    the module docstring); returns the paths removed. Blocking: call it in
    a worker thread. ``lstat`` gives each file's type and ctime (a seam for
    tests: no one can set a ctime)."""
    tmp = os.path.join(maildir, "tmp")
    try:
        st = os.stat(tmp)
    except OSError:
        return []
    if st.st_atime > now - scan_interval:
        return []  # scanned recently, by this process or another
    limit = now - max_age
    removed: list[str] = []
    try:
        names = os.listdir(tmp)
    except OSError:
        return []
    for name in names:
        path = os.path.join(tmp, name)
        try:
            found = lstat(path)
            if stat.S_ISDIR(found.st_mode) or found.st_ctime > limit:
                continue
            os.unlink(path)
        except OSError:
            continue  # gone meanwhile, or a store that cannot be written
        removed.append(path)
    with contextlib.suppress(OSError):
        # The scan's time, for every process: tmp/'s access time (its mtime
        # is kept; nothing else reads tmp/'s times).
        st = os.stat(tmp)
        os.utime(tmp, ns=(int(now * 1e9), st.st_mtime_ns))
    return removed


def _run_in_pool(clock: Any) -> RunInThread | None:
    """The reactor's thread pool, when ``clock`` is a reactor with one."""
    if not hasattr(clock, "getThreadPool") or not hasattr(clock, "callFromThread"):
        return None
    from twisted.internet.threads import deferToThreadPool

    def run(work: Callable[[], list[str]]) -> Deferred[list[str]]:
        return deferToThreadPool(clock, clock.getThreadPool(), work)

    return run


class TmpCleaner:
    """Cleans the tmp/ of each Maildir folder it is told about, at most once
    per ``scan_interval`` per folder, in a thread (see the module docstring).

    ``run_in_thread`` defaults to the reactor's thread pool when ``clock``
    is a reactor; with a plain clock (tests) the scan runs at once.
    """

    def __init__(
        self,
        clock: IReactorTime,
        run_in_thread: RunInThread | None = None,
        *,
        max_age: float = TMP_MAX_AGE,
        scan_interval: float = TMP_SCAN_INTERVAL,
        lstat: Callable[[str], os.stat_result] = os.lstat,
    ) -> None:
        self._clock = clock
        self._lstat = lstat
        self._run = run_in_thread or _run_in_pool(clock) or maybeDeferred
        self._max_age = max_age
        self._scan_interval = scan_interval
        self._checked: dict[str, float] = {}

    def touched(self, maildir: str) -> None:
        """A folder was delivered to or opened (any thread): clean its tmp/
        if it has not been looked at within the interval."""
        now = self._clock.seconds()
        last = self._checked.get(maildir)
        if last is not None and now - last < self._scan_interval:
            return
        self._checked[maildir] = now
        call_from_thread = getattr(self._clock, "callFromThread", None)
        in_worker = threadable.ioThread is not None and not threadable.isInIOThread()
        if call_from_thread is not None and in_worker:
            call_from_thread(self._start, maildir, now)
        else:
            self._start(maildir, now)

    def _start(self, maildir: str, now: float) -> None:
        max_age, interval, lstat = self._max_age, self._scan_interval, self._lstat
        d = self._run(lambda: clean_tmp(maildir, now, max_age, interval, lstat))
        d.addCallbacks(self._removed, self._failed)

    def _removed(self, paths: list[str]) -> None:
        for path in paths:
            maillog("mailstore", f"removed stale {path}")

    def _failed(self, failure: Failure) -> None:
        _log.failure("cleaning a Maildir tmp/ failed", failure)
