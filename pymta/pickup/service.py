"""pickup: feed the files of the maildrop directory to cleanup.

Mirrors Postfix's pickup(8). While the server runs, pickup watches
``$queue_directory/maildrop`` with inotify (a file renamed into place is
seen at once) and scans the whole directory at start and every ``wakeup``
seconds of its master.cf line (60 in Postfix's stock line; the scan is
the only trigger where inotify is unavailable), so mail dropped while the
server was down goes out at the next start.

For each file (names of :func:`pymta.sendmail.postdrop.is_final_name`; ``tmp.``
files are sendmail's unfinished ones, removed after a day), in a pool thread
(:mod:`pymta.pickup.reader`): open without following links, check it is a
regular single-link file within message_size_limit, decode the format of
:mod:`pymta.sendmail.record`, take the uid from the file's owner and check
authorized_submit_users. Then, on the reactor: a bad file is moved to
``$queue_directory/corrupt/`` (``warning: maildrop/NAME: uid=N: REASON:
moved to corrupt``); an unauthorized user's file is removed (``warning:
uid=N: user NAME is not allowed to submit mail``, as Postfix's pickup);
a good one becomes an envelope (sender from ``-f``, else ``LOGIN@$myorigin``
of the kernel's uid; attributes ``uid``, ``login``, ``full_name``,
``protocol=pickup`` and the DSN ones) handed to cleanup, which adds
Received ``(pymta, from userid N)``, From, Date and Message-ID and logs
``QID: uid=N from=<sender>``. The file is removed only after cleanup's
durable answer; a 4xx leaves it for the next scan, a 5xx moves it to
corrupt/ with the reply in the log. A file pickup may not open (it runs
as a user other than root and the file is another user's) stays, with a
warning at each scan. Attributes the file itself claims
beyond the known ones (``uid``...) are ignored with a warning.

At most ``pymta_pickup_concurrency`` files are in flight. When a scan
finds more than ``pymta_maildrop_count_limit`` files, pickup logs a warning
with the biggest submitters and creates ``public/maildrop.full``, which
makes sendmail refuse new mail (EX_TEMPFAIL) until a scan finds the
directory below the limit again (logged too). Untrusted input: everything
in maildrop. Writes: maildrop (removals), corrupt/, the full flag. Logs:
the lines above through pymta.maillog.
"""

from __future__ import annotations

import collections
import os
import stat
import time
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from pymta.cleanup.interface import CleanupRejected, ICleanup
from pymta.config import Config
from pymta.maillog import maillog
from pymta.pickup.reader import Bad, Good, Unauthorized, Unreadable, read_file
from pymta.queue.model import Envelope, Recipient
from pymta.sendmail.authorized import AuthorizationUnavailable, split_entries
from pymta.sendmail.postdrop import (
    MAILDROP_MODE,
    TEMPORARY_PREFIX,
    full_flag_path,
    is_final_name,
    maildrop_directory,
)

_log = Logger(namespace="pymta.pickup")

#: sendmail's unfinished files older than this are removed (seconds).
STALE_TEMPORARY = 86400.0

RunInThread = Callable[..., Deferred[Any]]


def _default_thread_runner(reactor: Any) -> RunInThread:
    from twisted.internet.threads import deferToThreadPool

    def run(function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), function, *args)

    return run


def prepare_maildrop(queue_directory: str) -> str:
    """Create maildrop (mode 1733) and corrupt/ when missing; the maildrop path.

    An existing maildrop keeps its mode (an administrator may narrow it,
    e.g. 1730 with a group); a world-listable one gets a warning."""
    path = maildrop_directory(queue_directory)
    try:
        os.mkdir(path, 0o700)
        os.chmod(path, MAILDROP_MODE)
    except FileExistsError:
        mode = os.stat(path).st_mode
        if mode & stat.S_IROTH or not mode & stat.S_ISVTX:
            _log.warn(
                "maildrop directory {path} has mode {mode:o}: other users may list "
                "or remove queued files; 1733 is expected",
                path=path,
                mode=stat.S_IMODE(mode),
            )
    os.makedirs(os.path.join(queue_directory, "corrupt"), mode=0o700, exist_ok=True)
    os.makedirs(os.path.join(queue_directory, "public"), mode=0o755, exist_ok=True)
    return path


def _scan_directory(directory: str, now: float) -> tuple[list[str], list[str], dict[int, int]]:
    """(final names oldest first, stale temporary names, files per owner uid)."""
    names: list[str] = []
    stale: list[str] = []
    for name in os.listdir(directory):
        if is_final_name(name):
            names.append(name)
        elif name.startswith(TEMPORARY_PREFIX):
            try:
                if now - os.lstat(os.path.join(directory, name)).st_mtime > STALE_TEMPORARY:
                    stale.append(name)
            except OSError:
                pass
    names.sort()
    return names, stale, {}


def _owners(directory: str, names: list[str]) -> dict[int, int]:
    counts: collections.Counter[int] = collections.Counter()
    for name in names:
        try:
            counts[os.lstat(os.path.join(directory, name)).st_uid] += 1
        except OSError:
            pass
    return dict(counts)


class PickupService(service.Service):
    """pickup(8) in the server process (see the module docstring)."""

    name = "pickup"

    def __init__(
        self,
        config: Config,
        cleanup: ICleanup,
        reactor: Any,
        *,
        wakeup: float | None = 60.0,
        run_in_thread: RunInThread | None = None,
        use_inotify: bool = True,
    ) -> None:
        self._config = config
        self._cleanup = cleanup
        self._reactor = reactor
        self._wakeup = wakeup
        self._run = run_in_thread or _default_thread_runner(reactor)
        self._use_inotify = use_inotify
        self.queue_directory = config.get("queue_directory")
        self.directory = maildrop_directory(self.queue_directory)
        self._corrupt = os.path.join(self.queue_directory, "corrupt")
        self._myorigin = config.get("myorigin")
        self._size_limit = config.get_int("message_size_limit")
        self._count_limit = config.get_int("pymta_maildrop_count_limit")
        self._concurrency = max(1, config.get_int("pymta_pickup_concurrency"))
        self._authorized = split_entries(config.get("authorized_submit_users"))
        self._waiting: collections.deque[str] = collections.deque()
        self._known: set[str] = set()  # waiting or in flight
        self._in_flight = 0
        self._scanning = False
        self._rescan = False
        self._full = False
        self._loop: task.LoopingCall | None = None
        self._notifier: Any = None
        self._idle: list[Deferred[None]] = []

    # life cycle -----------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        prepare_maildrop(self.queue_directory)
        if self._use_inotify:
            self._start_inotify()
        self._loop = task.LoopingCall(self.scan)
        self._loop.clock = self._reactor
        if self._wakeup:
            self._loop.start(self._wakeup, now=True)
        else:
            self.scan()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._notifier is not None:
            self._notifier.loseConnection()
            self._notifier = None
        self._waiting.clear()
        if self._in_flight:
            # Let the files in flight reach cleanup's answer (their removal).
            done: Deferred[None] = Deferred()
            self._idle.append(done)
            return done
        return None

    def _start_inotify(self) -> None:
        try:
            from twisted.internet import inotify
            from twisted.python.filepath import FilePath

            notifier = inotify.INotify(self._reactor)
            notifier.startReading()
            notifier.watch(
                FilePath(self.directory),
                mask=inotify.IN_MOVED_TO,
                callbacks=[self._notified],
            )
        except Exception as e:  # no inotify here: the periodic scan still runs
            _log.warn(
                "pickup: no inotify on {path} ({error}): scanning every {wakeup}s",
                path=self.directory,
                error=e,
                wakeup=self._wakeup,
            )
            return
        self._notifier = notifier

    def _notified(self, _watch: object, path: Any, _mask: int) -> None:
        name = path.basename()
        if isinstance(name, bytes):
            name = name.decode("utf-8", "surrogateescape")
        if is_final_name(name):
            self._enqueue([name])

    # scanning ---------------------------------------------------------------

    def scan(self) -> Deferred[None] | None:
        """List maildrop (in a thread) and take every file found."""
        if self._scanning:
            self._rescan = True
            return None
        self._scanning = True
        d = self._run(_scan_directory, self.directory, time.time())
        d.addCallback(self._scanned)
        d.addErrback(self._scan_failed)

        def finished(_: object) -> None:
            self._scanning = False
            if self._rescan and self.running:
                self._rescan = False
                self.scan()

        d.addBoth(finished)
        return d

    def _scan_failed(self, failure: Failure) -> None:
        _log.warn(
            "pickup: cannot scan {path}: {error}",
            path=self.directory,
            error=failure.getErrorMessage(),
        )

    def _scanned(
        self, result: tuple[list[str], list[str], dict[int, int]]
    ) -> Deferred[None] | None:
        names, stale, _ = result
        for name in stale:
            maillog(
                "pickup",
                f"warning: maildrop/{name}: unfinished file older than a day, removed",
                LogLevel.warn,
            )
            self._run(_unlink, os.path.join(self.directory, name))
        self._enqueue(names)
        if self._count_limit and len(names) > self._count_limit:
            return self._run(_owners, self.directory, names).addCallback(
                self._over_limit, len(names)
            )
        if self._full:
            self._full = False
            maillog("pickup", f"maildrop holds {len(names)} files again, accepting mail")
            self._run(_unlink, full_flag_path(self.queue_directory))
        return None

    def _over_limit(self, owners: dict[int, int], count: int) -> None:
        top = sorted(owners.items(), key=lambda item: -item[1])[:3]
        who = ", ".join(f"uid={uid} ({n} files)" for uid, n in top)
        maillog(
            "pickup",
            f"warning: maildrop holds {count} files, more than pymta_maildrop_count_limit "
            f"({self._count_limit}); sendmail refuses new mail until it drains; "
            f"biggest submitters: {who}",
            LogLevel.warn,
        )
        if not self._full:
            self._full = True
            self._run(_touch, full_flag_path(self.queue_directory))

    def _enqueue(self, names: list[str]) -> None:
        for name in names:
            if name not in self._known:
                self._known.add(name)
                self._waiting.append(name)
        self._next()

    def _next(self) -> None:
        while self.running and self._waiting and self._in_flight < self._concurrency:
            name = self._waiting.popleft()
            self._in_flight += 1
            d = self._run(
                read_file,
                os.path.join(self.directory, name),
                self._size_limit,
                self._authorized,
            )
            d.addCallback(self._read, name)
            d.addErrback(self._failed, name)
            d.addBoth(self._done, name)

    def _done(self, _: object, name: str) -> None:
        self._in_flight -= 1
        self._known.discard(name)
        if self._in_flight == 0 and self._idle:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)
        self._next()

    # one file -----------------------------------------------------------------

    def _read(
        self, result: Good | Bad | Unauthorized | Unreadable | None, name: str
    ) -> Deferred[Any] | None:
        path = os.path.join(self.directory, name)
        if result is None:
            return None  # gone (taken by another scan, or its owner removed it)
        if isinstance(result, Unreadable):
            # Not the file's fault: pickup runs as a user who may not read
            # other users' files. Leave it; the next scan tries again.
            maillog(
                "pickup",
                f"warning: maildrop/{name}: cannot open: {result.reason}: left in place "
                "(pickup must run as root to read other users' files)",
                LogLevel.warn,
            )
            return None
        if isinstance(result, Bad):
            return self._to_corrupt(name, result.uid, result.reason)
        if isinstance(result, Unauthorized):
            maillog(
                "pickup",
                f"warning: uid={result.uid}: user {result.login} is not allowed to submit "
                f"mail (authorized_submit_users): maildrop/{name} removed",
                LogLevel.warn,
            )
            return self._run(_unlink, path)
        return self._submit(name, result)

    def _submit(self, name: str, good: Good) -> Deferred[Any]:
        message = good.message
        for ignored in message.ignored:
            maillog(
                "pickup",
                f"warning: maildrop/{name}: uid={good.uid}: ignoring attribute "
                f"{ignored!r} claimed by the file",
                LogLevel.warn,
            )
        sender = message.sender
        if sender is None:
            sender = f"{good.login}@{self._myorigin}"
        attributes = {"protocol": "pickup", "uid": str(good.uid), "login": good.login}
        if message.full_name:
            attributes["full_name"] = message.full_name
        attributes.update(message.attributes)
        envelope = Envelope(
            sender,
            [Recipient(a, original=a, notify=n or None) for a, n in message.recipients],
            attributes=attributes,
        )
        d = self._cleanup.submit(envelope, message.content)

        def queued(_qid: str) -> Deferred[Any]:
            # cleanup's answer is durable: only now may the file go.
            return self._run(_unlink, os.path.join(self.directory, name))

        def rejected(failure: Failure) -> Deferred[Any] | None:
            failure.trap(CleanupRejected)
            error = failure.value
            assert isinstance(error, CleanupRejected)
            reply = f"{error.code} {error.status} {error.text}"
            if error.code < 500:
                maillog(
                    "pickup",
                    f"warning: maildrop/{name}: uid={good.uid}: {reply}: will try again",
                    LogLevel.warn,
                )
                return None
            return self._to_corrupt(name, good.uid, reply)

        return d.addCallbacks(queued, rejected)

    def _to_corrupt(self, name: str, uid: int | None, reason: str) -> Deferred[Any]:
        who = f"uid={uid}: " if uid is not None else ""
        maillog(
            "pickup", f"warning: maildrop/{name}: {who}{reason}: moved to corrupt", LogLevel.warn
        )
        return self._run(
            _rename, os.path.join(self.directory, name), os.path.join(self._corrupt, name)
        )

    def _failed(self, failure: Failure, name: str) -> None:
        if failure.check(AuthorizationUnavailable):
            maillog(
                "pickup",
                f"warning: maildrop/{name}: authorized_submit_users: "
                f"{failure.getErrorMessage()}: will try again",
                LogLevel.warn,
            )
            return
        # A bug or an I/O error: the file stays for the next scan.
        _log.failure("pickup: maildrop/{name} failed", failure, name=name)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _rename(source: str, target: str) -> None:
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    os.rename(source, target)


def _touch(path: str) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    with open(path, "a"):
        pass
