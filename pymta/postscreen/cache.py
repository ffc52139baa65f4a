"""The temporary allowlist: clients that passed postscreen's tests, and until when.

Mirrors Postfix's ``postscreen_cache_map``: each client address that passed
a test is remembered with the time that pass expires, one time per test
(pregreet: ``postscreen_greet_ttl``; DNSBL: the DNS answers' TTL between
``postscreen_dnsbl_min_ttl`` and ``postscreen_dnsbl_max_ttl``). A client
whose every test is still valid goes straight to smtpd (``PASS OLD``).

The file survives restarts. Its format is pymta's own text, one line per
update, the last line of an address winning::

    203.0.113.5 1733600000 1733560000

(address, pregreet pass expiry, DNSBL pass expiry; Unix times, 0 for "not
passed"). The path is the one ``postscreen_cache_map`` names:
``btree:/var/lib/postfix/postscreen_cache`` is written as
``/var/lib/postfix/postscreen_cache.pymta`` so that Postfix's own Berkeley
DB file beside it is never read or overwritten (``texthash:PATH`` writes
PATH itself; ``proxy:`` is dropped, as there is one process per cache).
An empty ``postscreen_cache_map`` keeps the cache in memory only.

Disk work never runs on the reactor thread: updates are appended in one
write per reactor turn through the thread pool (a cache needs no fsync:
a lost line only means a client is tested once more). Every
``postscreen_cache_cleanup_interval`` the file is rewritten (temporary
file, then rename) without the clients whose tests all expired longer ago
than ``postscreen_cache_retention_time``; those are logged ``PASS NEW``
again when they return, as in Postfix. Reactor processes that share the
file (``pymta_processes``) each append their own passes and read the
others' every :data:`REFRESH_INTERVAL` seconds. The file is read in full
once, when the listener starts.

Untrusted input: the file (a malformed line is skipped). Writes the cache
file and its temporary twin. Logs the cleanup and unreadable files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from pymta.config.errors import ConfigError

__all__ = ["CacheEntry", "PostscreenCache", "cache_path"]

_log = Logger()

#: Seconds between reads of what other reactor processes appended.
REFRESH_INTERVAL = 1.0

#: The table types a ``postscreen_cache_map`` may name (Postfix's are
#: btree, lmdb or hash; pymta keeps its own text file beside them).
_TYPES = ("btree", "hash", "lmdb", "texthash")

Runner = Callable[[Callable[[], Any]], "Deferred[Any]"]


@dataclass(frozen=True)
class CacheEntry:
    """When each of a client's test passes expires (0: not passed)."""

    pregreet: float = 0.0
    dnsbl: float = 0.0

    def latest(self) -> float:
        return max(self.pregreet, self.dnsbl)


def cache_path(spec: str) -> str | None:
    """The file a ``postscreen_cache_map`` value names (None: memory only)."""
    spec = spec.strip()
    if not spec:
        return None
    kind, colon, name = spec.partition(":")
    if kind.lower() == "proxy":
        kind, colon, name = name.partition(":")
    kind = kind.lower()
    if not colon or kind not in _TYPES or not name.strip():
        raise ConfigError(
            f"bad value {spec!r}: expected btree:, lmdb:, hash: or texthash: and a file name",
            parameter="postscreen_cache_map",
        )
    name = name.strip()
    return name if kind == "texthash" else f"{name}.pymta"


def parse_lines(text: str) -> dict[str, CacheEntry]:
    """The entries of cache file text; malformed lines are skipped."""
    entries: dict[str, CacheEntry] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 3:
            continue
        try:
            entries[fields[0]] = CacheEntry(float(fields[1]), float(fields[2]))
        except ValueError:
            continue
    return entries


def format_line(address: str, entry: CacheEntry) -> str:
    return f"{address} {int(entry.pregreet)} {int(entry.dnsbl)}\n"


class PostscreenCache:
    """The temporary allowlist of one ``postscreen_cache_map``."""

    def __init__(
        self,
        path: str | None,
        clock: IReactorTime,
        run: Runner,
        retention: float,
        cleanup_interval: float,
    ) -> None:
        self.path = path
        self._clock = clock
        self._run = run
        self.retention = retention
        self.cleanup_interval = cleanup_interval
        self._entries: dict[str, CacheEntry] = {}
        self._pending: list[str] = []
        self._flush_call: IDelayedCall | None = None
        self._refresh_call: IDelayedCall | None = None
        self._cleanup_call: IDelayedCall | None = None
        self._offset = 0  # how much of the file this process has read
        self._inode = 0
        self._users = 0
        self._busy = False  # a thread job (refresh, cleanup) is under way

    # -- life cycle (each postscreen factory that uses it starts and stops it) --

    def start(self) -> None:
        self._users += 1
        if self._users > 1:
            return
        if self.path is not None:
            self._read_all()
            self._refresh_call = self._clock.callLater(REFRESH_INTERVAL, self._refresh)
        if self.cleanup_interval > 0:
            self._cleanup_call = self._clock.callLater(self.cleanup_interval, self._cleanup)

    def stop(self) -> None:
        self._users -= 1
        if self._users > 0:
            return
        for call in (self._flush_call, self._refresh_call, self._cleanup_call):
            if call is not None and call.active():
                call.cancel()
        self._flush_call = self._refresh_call = self._cleanup_call = None
        # The last few passes, at shutdown: one short append.
        if self._pending and self.path is not None:
            self._append(self._take_pending())

    def _read_all(self) -> None:
        """The whole file, at start (before the first client is accepted)."""
        assert self.path is not None
        try:
            with open(self.path, "rb") as f:
                data = f.read()
                stat = os.fstat(f.fileno())
        except FileNotFoundError:
            return
        except OSError as e:
            _log.warn("postscreen cache {path}: {e}; starting empty", path=self.path, e=e)
            return
        self._entries.update(parse_lines(data.decode("ascii", "replace")))
        self._offset, self._inode = len(data), stat.st_ino

    # -- lookups and updates ------------------------------------------------------

    def get(self, address: str) -> CacheEntry | None:
        return self._entries.get(address)

    def update(self, address: str, entry: CacheEntry) -> None:
        """Remember a client's passes; the line reaches the file within a turn."""
        self._entries[address] = entry
        if self.path is None:
            return
        self._pending.append(format_line(address, entry))
        if self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self._flush)

    def __len__(self) -> int:
        return len(self._entries)

    def _take_pending(self) -> bytes:
        data = "".join(self._pending).encode("ascii", "replace")
        self._pending = []
        return data

    def _flush(self) -> None:
        self._flush_call = None
        data = self._take_pending()
        self._run(lambda: self._append(data)).addErrback(
            lambda failure: _log.failure("postscreen cache: append failed", failure)
        )

    def _append(self, data: bytes) -> None:
        """One O_APPEND write (in the thread pool): lines of several
        processes never interleave inside a line."""
        assert self.path is not None
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    # -- other processes' passes ------------------------------------------------

    def _refresh(self) -> None:
        self._refresh_call = self._clock.callLater(REFRESH_INTERVAL, self._refresh)
        if self._busy:
            return
        self._busy = True
        offset, inode = self._offset, self._inode
        d = self._run(lambda: self._read_tail(offset, inode))
        d.addCallback(self._merge_tail)
        d.addErrback(lambda failure: _log.failure("postscreen cache: read failed", failure))
        d.addBoth(self._idle)

    def _idle(self, _: object) -> None:
        self._busy = False

    def _read_tail(self, offset: int, inode: int) -> tuple[bytes, int, int] | None:
        """What was appended since offset (the whole file when it was
        replaced by a cleanup); None when nothing changed."""
        assert self.path is not None
        try:
            with open(self.path, "rb") as f:
                stat = os.fstat(f.fileno())
                if stat.st_ino != inode:
                    offset = 0
                if stat.st_size <= offset:
                    return None
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return None
        # Only whole lines: a line being appended right now is read next time.
        end = data.rfind(b"\n") + 1
        return data[:end], offset + end, stat.st_ino

    def _merge_tail(self, tail: tuple[bytes, int, int] | None) -> None:
        if tail is None:
            return
        data, self._offset, self._inode = tail
        for address, entry in parse_lines(data.decode("ascii", "replace")).items():
            mine = self._entries.get(address)
            if mine is None or entry.latest() >= mine.latest():
                self._entries[address] = entry

    # -- cleanup ------------------------------------------------------------------

    def _cleanup(self) -> None:
        self._cleanup_call = self._clock.callLater(self.cleanup_interval, self._cleanup)
        if self._busy:
            return
        now = self._clock.seconds()
        horizon = now - self.retention
        expired = [a for a, e in self._entries.items() if e.latest() < horizon]
        for address in expired:
            del self._entries[address]
        if self.path is None:
            self._log_cleanup(len(self._entries), len(expired))
            return
        self._busy = True
        # Pending lines go into the rewrite, not after it.
        self._pending = []
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        keep = dict(self._entries)
        d = self._run(lambda: self._rewrite(keep, horizon))
        d.addCallback(self._rewritten, len(expired))
        d.addErrback(lambda failure: _log.failure("postscreen cache: cleanup failed", failure))
        d.addBoth(self._idle)

    def _rewrite(self, keep: dict[str, CacheEntry], horizon: float) -> tuple[int, int]:
        """The file without expired entries, merged with what other
        processes appended (in the thread pool); (offset, inode) after."""
        assert self.path is not None
        try:
            with open(self.path, "rb") as f:
                on_disk = parse_lines(f.read().decode("ascii", "replace"))
        except FileNotFoundError:
            on_disk = {}
        merged = {a: e for a, e in on_disk.items() if e.latest() >= horizon}
        for address, entry in keep.items():
            theirs = merged.get(address)
            if theirs is None or entry.latest() >= theirs.latest():
                merged[address] = entry
        data = "".join(format_line(a, e) for a, e in merged.items()).encode("ascii", "replace")
        temporary = f"{self.path}.tmp{os.getpid()}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temporary, self.path)
        return len(data), os.stat(self.path).st_ino

    def _rewritten(self, result: tuple[int, int], dropped: int) -> None:
        self._offset, self._inode = result
        self._log_cleanup(len(self._entries), dropped)

    def _log_cleanup(self, kept: int, dropped: int) -> None:
        # Postfix's dict_cache statistics line.
        _log.info(
            "cache {path} full cleanup: retained={kept} dropped={dropped} entries",
            path=self.path or "(memory)",
            kept=kept,
            dropped=dropped,
        )


_SHARED: dict[str | None, PostscreenCache] = {}


def shared_cache(
    spec: str, clock: IReactorTime, run: Runner, retention: float, cleanup_interval: float
) -> PostscreenCache:
    """One cache per file in a process: every postscreen listener, and the
    factory a reload makes, use the same entries."""
    path = cache_path(spec)
    if path is None:
        return PostscreenCache(None, clock, run, retention, cleanup_interval)
    cache = _SHARED.get(path)
    if cache is None or cache._clock is not clock:
        cache = _SHARED[path] = PostscreenCache(path, clock, run, retention, cleanup_interval)
    cache.retention, cache.cleanup_interval = retention, cleanup_interval
    return cache
