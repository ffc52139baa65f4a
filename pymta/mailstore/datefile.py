"""datefile: a Maildir folder's INTERNALDATEs read late, kept beside its index.

A folder's first scan reads no file's date (``-`` in ``pymta-uidlist``,
:mod:`pymta.mailstore.index`); the first command that shows or compares
dates has them read, one ``fstatat`` per file
(:meth:`pymta.mailstore.folder_read.FolderRead.fill_dates`). What those
calls found is kept here, in ``pymta-dates``, not as new lines of the
index: rewriting an index of 100,000 lines (and syncing it) cost as much
as the ``stat`` calls themselves, on the path of the first
``SORT (ARRIVAL)`` right after a SELECT. The next process (a restarted
server, another imapd or pop3d) that needs those dates reads them from
this file instead of the files, as Dovecot keeps the received dates it
read in its index cache.

Format (native byte order, the file is this host's cache)::

    b"pymta-dates 1\\n"  uidvalidity (uint32)  count (uint32)
    count UIDs (uint32)  count dates (float64, seconds), in the same order

A message's INTERNALDATE never changes while its UID lives (a flag change
renames the file; its mtime stays), so an entry stands until its UID is
expunged or the folder is numbered afresh: a file of another UIDVALIDITY
is ignored, as is one whose size does not match its count (torn,
damaged, or another program's) or one that is too big, and a date that
is not one (NaN, infinite, before 1902 or after 2514); entries of UIDs
no longer in the folder are dropped when the file is written again.
Written whole under a temporary name and renamed over the old one (two
writers: the last one's stands, the other's dates are read again by
whoever needs them), owned like the directory when written by root.
Nothing is fsync'd: the file only saves ``stat`` calls, a lost one costs
them again.

Untrusted input: the file (its owner may write anything: checked as
above, values are only ever used as dates). Writes ``pymta-dates`` and
its temporary file. Logs nothing.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from array import array
from collections.abc import Mapping, Set

from pymta.fdio import write_all

DATE_FILE = "pymta-dates"
MAGIC = b"pymta-dates 1\n"
_COUNTS = struct.Struct("=II")
_HEAD = len(MAGIC) + _COUNTS.size
#: Bytes per entry: a UID (uint32, array "I" on the platforms pymta runs
#: on) and a date (float64).
_ENTRY = array("I").itemsize + array("d").itemsize
#: Dates outside this range are not taken from the file (a mtime is in it;
#: a value beyond it would break the date arithmetic of the commands).
_EARLIEST, _LATEST = -(2**31), 2**34
#: A file of more entries than this is not read (nor written).
MAX_ENTRIES = 20_000_000


def load(directory: str, uidvalidity: int) -> dict[int, float]:
    """The dates kept in ``directory`` for this UIDVALIDITY, by UID;
    nothing when there is no file or it cannot be trusted (see the module
    doc)."""
    path = os.path.join(directory, DATE_FILE)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < _HEAD or size > _HEAD + MAX_ENTRIES * _ENTRY:
                return {}
            data = f.read(size + 1)
    except OSError:
        return {}
    if len(data) < _HEAD or not data.startswith(MAGIC):
        return {}
    kept_validity, count = _COUNTS.unpack_from(data, len(MAGIC))
    if kept_validity != uidvalidity or len(data) != _HEAD + count * _ENTRY:
        return {}
    uids = array("I")
    dates = array("d")
    split = _HEAD + count * uids.itemsize
    uids.frombytes(data[_HEAD:split])
    dates.frombytes(data[split:])
    earliest, latest = _EARLIEST, _LATEST
    # (NaN fails both comparisons.)
    pairs = zip(uids, dates, strict=True)
    return {uid: date for uid, date in pairs if earliest <= date <= latest and uid > 0}


def save(
    directory: str,
    uidvalidity: int,
    dates: Mapping[int, float],
    live: Set[int],
) -> None:
    """Keep ``dates`` (by UID) with those already kept for this
    UIDVALIDITY, of messages in ``live`` only (blocking; one write and a
    rename). Errors are ignored: the file only saves work."""
    if not dates:
        return
    kept = load(directory, uidvalidity)
    kept.update(dates)
    if len(kept) > len(live) or not kept.keys() <= live:
        kept = {uid: date for uid, date in kept.items() if uid in live}
    if not kept or len(kept) > MAX_ENTRIES:
        return
    uids = array("I", kept.keys())
    values = array("d", kept.values())
    data = MAGIC + _COUNTS.pack(uidvalidity, len(kept)) + uids.tobytes() + values.tobytes()
    path = os.path.join(directory, DATE_FILE)
    temp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with contextlib.suppress(OSError):
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                if os.geteuid() == 0:
                    owner = os.stat(directory)
                    os.fchown(fd, owner.st_uid, owner.st_gid)
                write_all(fd, data)
            finally:
                os.close(fd)
            os.rename(temp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
