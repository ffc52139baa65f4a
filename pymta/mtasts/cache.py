"""cache: MTA-STS policies kept across deliveries and restarts (RFC 8461 section 5.1).

:class:`PolicyCache` holds, per domain, the policy last fetched, the id of
the TXT record it came with and when it was fetched (wall-clock seconds,
from the caller's clock); an entry is fresh until ``fetched + max_age``.
It lives in memory and in one file (``pymta_mta_sts_cache_file``, by
default ``$data_directory/mta_sts_cache``), so that a restart keeps the
policies that protect against a downgrade while a policy host is
unreachable.

- :meth:`PolicyCache.load` reads the file once, in a worker thread; a
  missing file is an empty cache, a damaged one is logged and replaced.
- :meth:`PolicyCache.put` updates memory at once and writes the file in a
  worker thread: under an flock of ``<file>.lock`` it reads the file
  again, keeps the newer entry of each domain (several reactor processes
  share the file), writes a temporary file, fsyncs it and renames it over
  the old one, so a crash leaves either the old or the new file.
  Writes are coalesced: while one runs, later puts wait for one more.
- At most ``size`` domains (``pymta_mta_sts_cache_size``) are kept: the
  entries that expire first go first.

The file is JSON ``{"format": "pymta-mta-sts-cache 1", "domains":
{domain: {"id": ..., "fetched": ..., "policy": text}}}``; each policy is
parsed again when read (the file is not trusted more than the network).
Logs a warning when the file cannot be read or written.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from pymta.mtasts.policy import Policy, PolicyError, parse_policy

FORMAT = "pymta-mta-sts-cache 1"

_log = Logger()


@dataclass(frozen=True)
class CachedPolicy:
    """A policy with the TXT id it was fetched under and when."""

    policy_id: str
    policy: Policy
    fetched: float

    @property
    def expires(self) -> float:
        return self.fetched + self.policy.max_age

    def fresh(self, now: float) -> bool:
        return now < self.expires


Entries = dict[str, CachedPolicy]


def decode(text: str) -> Entries:
    """The entries of a cache file's text; ValueError when it is not one."""
    try:
        data = json.loads(text)
    except RecursionError:  # deeply nested brackets: not a cache file either
        raise ValueError("not an MTA-STS cache file") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError("not an MTA-STS cache file")
    domains = data.get("domains")
    if not isinstance(domains, dict):
        raise ValueError("no domains")
    found: Entries = {}
    for domain, item in domains.items():
        try:
            found[str(domain)] = CachedPolicy(
                str(item["id"]), parse_policy(str(item["policy"])), float(item["fetched"])
            )
        except (KeyError, TypeError, ValueError, PolicyError):
            continue  # one bad entry costs that domain a fetch, nothing more
    return found


def encode(entries: Entries) -> str:
    domains = {
        domain: {"id": e.policy_id, "fetched": e.fetched, "policy": e.policy.text()}
        for domain, e in sorted(entries.items())
    }
    return json.dumps({"format": FORMAT, "domains": domains}, indent=1) + "\n"


def trim(entries: Entries, size: int) -> Entries:
    """The ``size`` entries that expire last."""
    if len(entries) <= size:
        return entries
    kept = sorted(entries.items(), key=lambda item: item[1].expires, reverse=True)[: max(size, 0)]
    return dict(kept)


def merge(ours: Entries, theirs: Entries) -> Entries:
    """Per domain, the entry fetched last."""
    merged = dict(theirs)
    for domain, entry in ours.items():
        other = merged.get(domain)
        if other is None or entry.fetched >= other.fetched:
            merged[domain] = entry
    return merged


def _read(path: str) -> Entries:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    return decode(text)


def _write(path: str, entries: Entries, size: int) -> Entries:
    """Merge with the file and replace it atomically (in a worker thread)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)  # data_directory may not exist yet
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            on_disk = _read(path)
        except ValueError:
            on_disk = {}
        merged = trim(merge(entries, on_disk), size)
        fd, temporary = tempfile.mkstemp(prefix=".mta_sts.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(encode(merged))
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    return merged


class PolicyCache:
    """The cache of one smtp client (see the module doc)."""

    def __init__(self, path: str, size: int) -> None:
        self.path = path
        self.size = size
        self._entries: Entries = {}
        self._loaded: Deferred[None] | None = None
        self._writing = False
        self._again = False
        #: waiters of flushed()
        self._idle: list[Deferred[None]] = []

    def load(self) -> Deferred[None]:
        """Read the file (once; later calls share the first read)."""
        if self._loaded is None:
            loaded: Deferred[None] = deferToThread(_read, self.path).addCallbacks(
                self._read_done, self._read_failed
            )
            self._loaded = loaded
        waiter: Deferred[None] = Deferred()

        def release(_: None) -> None:
            waiter.callback(None)

        self._loaded.addCallback(release)
        return waiter

    def _read_done(self, entries: Entries) -> None:
        self._entries = trim(merge(self._entries, entries), self.size)

    def _read_failed(self, failure: Any) -> None:
        _log.warn(
            "warning: MTA-STS cache {path} unreadable, starting empty: {reason}",
            path=self.path,
            reason=failure.getErrorMessage(),
        )

    def get(self, domain: str) -> CachedPolicy | None:
        return self._entries.get(domain.lower())

    def put(self, domain: str, entry: CachedPolicy) -> None:
        """Keep ``entry`` for ``domain``, in memory now and in the file soon."""
        self._entries[domain.lower()] = entry
        self._entries = trim(self._entries, self.size)
        if self._writing:
            self._again = True
            return
        self._write()

    def _write(self) -> None:
        self._writing = True
        self._again = False
        d = deferToThread(_write, self.path, dict(self._entries), self.size)
        d.addCallbacks(self._written, self._write_failed)

    def _written(self, merged: Entries) -> None:
        # Other processes' entries come back with the merge.
        self._entries = trim(merge(self._entries, merged), self.size)
        self._write_done()

    def _write_failed(self, failure: Any) -> None:
        _log.warn(
            "warning: cannot write MTA-STS cache {path}: {reason}",
            path=self.path,
            reason=failure.getErrorMessage(),
        )
        self._write_done()

    def _write_done(self) -> None:
        self._writing = False
        if self._again:
            self._write()
            return
        idle, self._idle = self._idle, []
        for d in idle:
            d.callback(None)

    def flushed(self) -> Deferred[None]:
        """Fires when no write is pending (tests wait on it; at shutdown the
        reactor's thread pool finishes a write that has begun)."""
        if not self._writing:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d
