"""tracking: the per-user memory of vacation replies and duplicate tests.

What Pigeonhole keeps in ``~/.dovecot.lda-dupes``: for vacation (RFC 5230
section 4.2) which senders got a reply with which handle, until ``:days``
pass; for duplicate (RFC 7352) which message IDs were seen, until
``:seconds`` pass. Kept as ``~/.pymta-sieve-tracking``: one ``KEY
EXPIRY`` line per entry (KEY a SHA-256 name made by the interpreter,
EXPIRY a Unix time); expired entries are dropped when the file is written.

The file is rewritten through a temporary file and a rename, under a lock
per file within the process; two processes writing at once may lose one
entry (one extra vacation reply), never corrupt the file. A line that
does not parse is skipped. Blocking file I/O: callers run it off the
reactor. Untrusted input: none (keys are hashes).
"""

from __future__ import annotations

import os
import threading

TRACKING_FILE = ".pymta-sieve-tracking"
#: More entries than this: the ones expiring first are dropped.
MAX_ENTRIES = 10000

_locks: dict[str, threading.RLock] = {}
_locks_lock = threading.Lock()


def lock(path: str) -> threading.RLock:
    """The lock of one tracking file in this process (re-entrant): held
    around a Sieve run, so that two deliveries to one user at once cannot
    both decide that a sender has had no vacation reply yet."""
    with _locks_lock:
        found = _locks.get(path)
        if found is None:
            found = _locks[path] = threading.RLock()
        return found


def tracking_path(home: str) -> str:
    return os.path.join(home, TRACKING_FILE)


def read(path: str, now: float) -> dict[str, float]:
    """The unexpired entries {key: expiry}."""
    entries: dict[str, float] = {}
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, expiry = line.strip().partition(" ")
                try:
                    when = float(expiry)
                except ValueError:
                    continue
                if when > now:
                    entries[key] = when
    except FileNotFoundError:
        pass
    return entries


def record(path: str, marks: list[tuple[str, float]], now: float) -> None:
    """Add (key, seconds) entries, dropping the expired ones."""
    if not marks:
        return
    with lock(path):
        entries = read(path, now)
        for key, seconds in marks:
            entries[key] = now + seconds
        if len(entries) > MAX_ENTRIES:
            kept = sorted(entries.items(), key=lambda kv: kv[1])[-MAX_ENTRIES:]
            entries = dict(kept)
        temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(temporary, "w", encoding="ascii") as f:
            f.writelines(f"{key} {expiry:.0f}\n" for key, expiry in entries.items())
        os.replace(temporary, path)
