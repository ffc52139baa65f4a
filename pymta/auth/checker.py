"""The passwd-file credentials checker (twisted.cred), shared by all protocols.

Mirrors Dovecot's ``passdb { driver = passwd-file }``: checks a user name and
password (IUsernamePassword: POP3 USER/PASS, SASL PLAIN) or an APOP digest
(IUsernameHashedPassword, only for users whose password is stored PLAIN or
CLEAR) against a :class:`~pymta.auth.passwdfile.PasswdFile`. The avatar id is
the user name as written in the file, lower-cased, UTF-8 encoded
(twisted.cred avatar ids are bytes).

Untrusted input: user names, passwords and digests from the network.
Hashing runs off the reactor thread (``run_in_thread``, deferToThread by
default), at most ``hash_concurrency`` at a time. An unknown user is checked
against a dummy hash of the file's most common scheme, and every failure
waits the same delay, so a client cannot tell an unknown user from a bad
password by the reply or by its timing. An unreadable file is
:class:`~pymta.auth.errors.AuthTemporaryError`.

Every attempt first passes the :class:`~pymta.auth.throttle.LoginThrottle`
(Dovecot's auth penalty): a client or user that failed recently waits
before its password is even looked at, right or wrong, and a client with
too many attempts in progress is refused
(:class:`~pymta.auth.errors.TooManyLoginAttempts`). One checker serves all
protocols of a process (:func:`pymta.auth.passdb.shared_checker`), and its
throttle's table is shared by all processes, so the penalty holds across
both. Cancelling the Deferred of :meth:`requestAvatarId` (the client hung
up) withdraws an attempt that still waits; a check already running
finishes and counts.

Logs: a warning for a password field that cannot be understood (naming the
user, never the hash); failures are logged by the protocol (Dovecot style).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pymta.auth.credentials import IClientCredentials
from pymta.auth.errors import AuthTemporaryError, TooManyLoginAttempts
from pymta.auth.passwdfile import PasswdEntry, PasswdFile, PasswdFileError
from pymta.auth.schemes import (
    DEFAULT_SCHEME,
    HASH_SCHEMES,
    SchemeError,
    StoredPassword,
    make_hash,
    verify,
)
from pymta.auth.throttle import LoginAttempt, LoginThrottle

_log = Logger(namespace="pymta.auth")

RunInThread = Callable[[Callable[[], Any]], "defer.Deferred[Any]"]

# Arbitrary text the dummy hash is made of; never a real user's password.
_DUMMY_SECRET = "pymta dummy password for unknown users"


def _defer_to_thread(f: Callable[[], Any]) -> defer.Deferred[Any]:
    from twisted.internet.threads import deferToThread

    return deferToThread(f)


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


@implementer(ICredentialsChecker)
class PasswdFileChecker:
    """Checks passwords against a Dovecot passwd-file, with failure delays."""

    credentialInterfaces = (IUsernamePassword, IUsernameHashedPassword)

    def __init__(
        self,
        passwd: PasswdFile,
        clock: IReactorTime,
        throttle: LoginThrottle | None = None,
        run_in_thread: RunInThread | None = None,
        hash_concurrency: int = 2,
    ) -> None:
        self.passwd = passwd
        self._clock = clock
        self.throttle = throttle if throttle is not None else LoginThrottle(clock)
        self._run_in_thread = run_in_thread or _defer_to_thread
        # argon2 takes 64 MiB per verification: bound how many run at once so
        # a burst of logins queues instead of exhausting memory and threads.
        self._hashing = defer.DeferredSemaphore(max(1, hash_concurrency))
        self._dummies: dict[str, StoredPassword] = {}

    # the dummy hash for unknown users -------------------------------------

    def _dummy_scheme(self) -> str:
        try:
            schemes = [s for s in self.passwd.schemes() if s in HASH_SCHEMES]
        except PasswdFileError:
            schemes = []
        return schemes[0] if schemes else DEFAULT_SCHEME

    def _dummy(self, scheme: str) -> StoredPassword:
        """A hash of the given scheme, made once (in the worker thread)."""
        dummy = self._dummies.get(scheme)
        if dummy is None:
            dummy = make_hash(_DUMMY_SECRET, scheme)
            self._dummies[scheme] = dummy
        return dummy

    def _run(self, work: Callable[[], Any]) -> defer.Deferred[Any]:
        return self._hashing.run(self._run_in_thread, work)

    def prepare(self) -> defer.Deferred[None]:
        """Make the unknown-user dummy hash now (in a thread), so that even the
        first unknown user costs what a known one does. Call at service start."""
        scheme = self._dummy_scheme()
        return self._run(lambda: self._dummy(scheme)).addCallback(lambda _: None)

    # ICredentialsChecker ---------------------------------------------------

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[bytes | tuple[()]]:
        try:
            username = _text(credentials.username)
        except UnicodeDecodeError:
            username = ""
        where = IClientCredentials(credentials, None)
        client = where.client_address if where is not None else None
        try:
            attempt = self.throttle.begin(client, username)
        except TooManyLoginAttempts as e:
            return defer.fail(e)

        def check(_: object) -> defer.Deferred[tuple[bool, PasswdEntry | None]]:
            try:
                entry = self.passwd.lookup(username) if username else None
            except PasswdFileError as e:
                raise AuthTemporaryError(str(e)) from e
            if IUsernamePassword.providedBy(credentials):
                d = self._check_password(entry, credentials)
            elif IUsernameHashedPassword.providedBy(credentials):
                d = self._check_hashed(entry, credentials)
            else:
                raise UnauthorizedLogin("unsupported credentials")
            return d.addCallback(lambda ok: (ok, entry))

        def done(result: tuple[bool, PasswdEntry | None]) -> Any:
            ok, entry = result
            if ok and entry is not None and "nologin" not in entry.extra:
                attempt.succeeded()
                return entry.user.encode("utf-8")
            delay = attempt.failed()
            return task.deferLater(self._clock, delay, _unauthorized)

        def errored(failure: Failure) -> Failure:
            attempt.abandoned()
            return failure

        inner = attempt.ready()
        inner.addCallback(check)
        inner.addCallbacks(done, errored)
        # The caller may cancel (its client hung up): that withdraws an
        # attempt still waiting for its penalty; a check already running
        # finishes and counts, its result dropped.
        outer: defer.Deferred[Any] = defer.Deferred(lambda _: _withdraw(attempt))

        def relay(result: Any) -> None:
            if outer.called:
                return  # cancelled meanwhile: nobody waits for the answer
            if isinstance(result, Failure):
                outer.errback(result)
            else:
                outer.callback(result)

        inner.addBoth(relay)
        return outer

    def _check_password(self, entry: PasswdEntry | None, credentials: Any) -> defer.Deferred[bool]:
        try:
            password = _text(credentials.password)
        except UnicodeDecodeError:
            password = ""
        stored = entry.password if entry is not None else None
        known = stored is not None
        scheme = self._dummy_scheme() if stored is None else None

        def work() -> bool:
            target = stored if stored is not None else self._dummy(scheme or DEFAULT_SCHEME)
            try:
                ok = verify(password, target)
            except SchemeError as e:
                _log.warn(
                    "passwd-file {file}: user {user}: {error}",
                    file=self.passwd.path,
                    user=entry.user if entry else "?",
                    error=str(e).split(":")[0],
                )
                return False
            return ok and known

        return self._run(work)

    def _check_hashed(self, entry: PasswdEntry | None, credentials: Any) -> defer.Deferred[bool]:
        stored = entry.password if entry is not None else None
        if stored is None or not stored.is_clear:
            return defer.succeed(False)
        return defer.succeed(bool(credentials.checkPassword(stored.value)))

    def has_clear_secret(self, username: str) -> bool:
        """True when username's password is stored PLAIN/CLEAR (APOP possible)."""
        try:
            entry = self.passwd.lookup(username)
        except PasswdFileError:
            return False
        return bool(entry and entry.password and entry.password.is_clear)


def _withdraw(attempt: LoginAttempt) -> None:
    attempt.cancel_wait()


def _unauthorized() -> bytes:
    raise UnauthorizedLogin("authentication failed")
