"""The passwd-file checker: schemes, reloads, failure delays, APOP, indistinguishable failures."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from pymta.auth.checker import PasswdFileChecker
from pymta.auth.credentials import APOPCredentials, PasswordCredentials
from pymta.auth.errors import AuthTemporaryError
from pymta.auth.passwdfile import PasswdFile
from pymta.auth.schemes import make_hash
from pymta.auth.throttle import LoginThrottle


class Runner:
    """Runs 'thread' work synchronously and counts it."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, f: Callable[[], Any]) -> defer.Deferred[Any]:
        self.calls += 1
        return defer.maybeDeferred(f)


def write_passwd(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


@pytest.fixture
def setup(tmp_path: Path) -> tuple[PasswdFileChecker, Clock, Runner, Path]:
    argon = make_hash("argonpw", "ARGON2ID", cost=1, memory_cost=64)
    bf = make_hash("bfpw", "BLF-CRYPT", cost=4)
    sha = make_hash("shapw", "SHA512-CRYPT")
    path = tmp_path / "passwd"
    write_passwd(
        path,
        [
            "# users",
            f"alice@example.org:{argon}:1000:1000::/srv/mail/alice::",
            f"bob@example.org:{bf}::::::",
            f"carol@example.org:{sha}",
            "dave@example.org:{PLAIN}davepw",
            "eve@example.org:{PLAIN}evepw::::::nologin",
        ],
    )
    clock = Clock()
    clock.advance(1000)
    runner = Runner()
    checker = PasswdFileChecker(
        PasswdFile(str(path), clock),
        clock,
        throttle=LoginThrottle(clock, base=0.5, cap=4.0),
        run_in_thread=runner,
    )
    return checker, clock, runner, path


def outcome(d: defer.Deferred[Any]) -> list[Any]:
    result: list[Any] = []
    d.addBoth(result.append)
    return result


def login(checker: PasswdFileChecker, user: str, pw: str, ip: str = "192.0.2.1") -> list[Any]:
    return outcome(checker.requestAvatarId(PasswordCredentials(user, pw, ip, "pop3")))


@pytest.mark.parametrize(
    ("user", "pw"),
    [
        ("alice@example.org", "argonpw"),
        ("bob@example.org", "bfpw"),
        ("carol@example.org", "shapw"),
        ("dave@example.org", "davepw"),
        ("ALICE@Example.ORG", "argonpw"),
    ],
)
def test_good_password_every_scheme(setup: Any, user: str, pw: str) -> None:
    """A correct password for each scheme yields the lower-case user as avatar id, at once."""
    checker, _, runner, _ = setup
    result = login(checker, user, pw)
    assert result == [user.lower().encode()]
    assert runner.calls == 1


def test_bad_password_waits_then_fails(setup: Any) -> None:
    """A wrong password fails with UnauthorizedLogin only after the 0.5 s failure delay."""
    checker, clock, _, _ = setup
    result = login(checker, "alice@example.org", "wrong")
    assert result == []
    clock.advance(0.49)
    assert result == []
    clock.advance(0.01)
    assert isinstance(result[0], Failure) and result[0].check(UnauthorizedLogin)


def test_unknown_user_is_indistinguishable(setup: Any) -> None:
    """An unknown user hashes a dummy (same work), waits the same delay, fails the same way."""
    checker, clock, runner, _ = setup
    known = login(checker, "alice@example.org", "wrong", ip="192.0.2.1")
    unknown = login(checker, "nobody@example.org", "wrong", ip="192.0.2.2")
    assert runner.calls == 2
    assert known == [] and unknown == []
    clock.advance(0.5)
    assert known[0].type is unknown[0].type is UnauthorizedLogin
    assert str(known[0].value) == str(unknown[0].value)


def test_dummy_hash_uses_files_most_common_scheme(tmp_path: Path) -> None:
    """The unknown-user dummy hash is of the scheme most users have, so its cost matches."""
    path = tmp_path / "passwd"
    bf = make_hash("x", "BLF-CRYPT", cost=4)
    write_passwd(path, [f"a@x:{bf}", f"b@x:{bf}", "c@x:{PLAIN}x"])
    clock = Clock()
    checker = PasswdFileChecker(PasswdFile(str(path), clock), clock, run_in_thread=Runner())
    login(checker, "zz@x", "pw")
    assert list(checker._dummies) == ["BLF-CRYPT"]


def answer_time(clock: Clock, result: list[Any], step: float = 0.25) -> float:
    """Advance the clock until result holds the answer; the time it took."""
    waited = 0.0
    while not result:
        clock.advance(step)
        waited += step
    return waited


def test_penalty_doubles_per_address_to_cap_before_the_check(setup: Any) -> None:
    """Failures from one address make its next attempts wait before the check
    (0.5, 1, 2, 4 s, capped), plus the 0.5 s failure delay, across users."""
    checker, clock, runner, _ = setup
    times = []
    for i in range(6):
        result = login(checker, f"user{i}@example.org", "bad", ip="198.51.100.7")
        times.append(answer_time(clock, result))
    assert times == [0.5, 1.0, 1.5, 2.5, 4.5, 4.5]
    assert runner.calls == 6


def test_right_password_after_failures_waits_the_penalty(setup: Any) -> None:
    """After failures from an address, a correct password from it is not answered
    sooner than a wrong one would be: the penalty comes before the check."""
    checker, clock, runner, _ = setup
    for _ in range(3):
        answer_time(clock, login(checker, "dave@example.org", "bad", ip="198.51.100.7"))
    calls = runner.calls
    result = login(checker, "dave@example.org", "davepw", ip="198.51.100.7")
    clock.advance(1.99)
    assert result == [] and runner.calls == calls  # not even hashed yet
    clock.advance(0.01)
    assert result == [b"dave@example.org"]


def test_penalty_per_user_across_addresses(setup: Any) -> None:
    """Failures for one user from many addresses delay that user's next check too."""
    checker, clock, _, _ = setup
    for i in range(3):
        answer_time(clock, login(checker, "bob@example.org", "bad", ip=f"203.0.113.{i}"))
    result = login(checker, "bob@example.org", "bfpw", ip="203.0.113.99")
    clock.advance(1.99)
    assert result == []
    clock.advance(0.01)
    assert result == [b"bob@example.org"]


def test_success_clears_user_and_forgives_one_client_failure(setup: Any) -> None:
    """A correct login clears the user's failures but takes only one failure
    off the address: a client cannot wipe its penalty with an account of its own."""
    checker, clock, _, _ = setup
    for _ in range(3):
        answer_time(clock, login(checker, "dave@example.org", "bad"))
    answer_time(clock, login(checker, "dave@example.org", "davepw"))
    assert checker.throttle.failures("user:dave@example.org") == 0
    assert checker.throttle.failures("ip:192.0.2.1/32") == 2


def test_throttle_forgets_after_quiet_period() -> None:
    """Failures older than forget_after no longer count."""
    clock = Clock()
    throttle = LoginThrottle(clock, base=0.5, forget_after=600)
    for _ in range(2):
        throttle.begin("192.0.2.1", "k").failed()
    assert throttle.begin("192.0.2.1", "k").wait == 1.0
    clock.advance(600)
    assert throttle.begin("192.0.2.1", "k").wait == 0.0


def test_reload_on_change(setup: Any) -> None:
    """A changed passwd-file is re-read, but checked at most once a second."""
    checker, clock, _, path = setup
    assert login(checker, "dave@example.org", "davepw") == [b"dave@example.org"]
    write_passwd(path, ["frank@example.org:{PLAIN}frankpw"])
    os.utime(path, ns=(1, 1))
    clock.advance(0.5)
    # within the same second, the old contents still answer
    assert login(checker, "dave@example.org", "davepw") == [b"dave@example.org"]
    clock.advance(1)
    assert login(checker, "frank@example.org", "frankpw") == [b"frank@example.org"]
    result = login(checker, "dave@example.org", "davepw")
    clock.advance(1)
    assert result[0].check(UnauthorizedLogin)


def test_unreadable_file_is_temporary_error(setup: Any) -> None:
    """A missing passwd-file is AuthTemporaryError (a system error), not a bad password."""
    checker, clock, _, path = setup
    path.unlink()
    clock.advance(2)
    result = login(checker, "dave@example.org", "davepw")
    assert result[0].check(AuthTemporaryError)


def test_nologin_refused(setup: Any) -> None:
    """A user with the nologin extra field cannot log in even with the right password."""
    checker, clock, _, _ = setup
    result = login(checker, "eve@example.org", "evepw")
    clock.advance(1)
    assert result[0].check(UnauthorizedLogin)


def test_apop_with_clear_secret(setup: Any) -> None:
    """APOP succeeds for a PLAIN user with the right digest and fails with a wrong one."""
    import hashlib

    checker, clock, _, _ = setup
    stamp = b"<1896.697170952@dbc.mtview.ca.us>"
    digest = hashlib.md5(stamp + b"davepw").hexdigest()
    ok = outcome(checker.requestAvatarId(APOPCredentials("dave@example.org", stamp, digest)))
    assert ok == [b"dave@example.org"]
    bad = outcome(checker.requestAvatarId(APOPCredentials("dave@example.org", stamp, "0" * 32)))
    clock.advance(1)
    assert bad[0].check(UnauthorizedLogin)
    assert checker.has_clear_secret("dave@example.org")
    assert not checker.has_clear_secret("alice@example.org")


def test_apop_refused_for_hashed_password(setup: Any) -> None:
    """APOP cannot succeed for a user whose password is only stored hashed."""
    import hashlib

    checker, clock, _, _ = setup
    stamp = b"<1.2@x>"
    digest = hashlib.md5(stamp + b"argonpw").hexdigest()
    result = outcome(checker.requestAvatarId(APOPCredentials("alice@example.org", stamp, digest)))
    clock.advance(1)
    assert result[0].check(UnauthorizedLogin)


def test_prepare_makes_dummy_in_thread(setup: Any) -> None:
    """prepare() builds the unknown-user dummy hash through the thread runner, once."""
    checker, _, runner, _ = setup
    done = outcome(checker.prepare())
    assert done == [None] and runner.calls == 1
    assert list(checker._dummies) == ["ARGON2ID"]
    login(checker, "nobody@example.org", "x")
    assert list(checker._dummies) == ["ARGON2ID"]


def test_hash_concurrency_is_bounded(tmp_path: Path) -> None:
    """At most hash_concurrency verifications run at once; the rest queue and then run."""
    path = tmp_path / "passwd"
    write_passwd(path, ["a@x:{PLAIN}pw"])
    clock = Clock()
    started: list[defer.Deferred[Any]] = []

    def held(f: Callable[[], Any]) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        d.addCallback(lambda _: f())
        started.append(d)
        return d

    checker = PasswdFileChecker(
        PasswdFile(str(path), clock), clock, run_in_thread=held, hash_concurrency=2
    )
    results = [login(checker, "a@x", "pw") for _ in range(3)]
    assert len(started) == 2
    started[0].callback(None)
    assert results[0] == [b"a@x"] and len(started) == 3
    started[1].callback(None)
    started[2].callback(None)
    assert results == [[b"a@x"]] * 3


def test_pymta_credentials_say_where_the_login_comes_from() -> None:
    """Both kinds of pymta credentials provide IClientCredentials (the
    address, TLS, the protocol), which the checkers adapt to instead of
    reading attributes by name; Twisted's own credentials do not, and a
    checker then has no client address."""
    from twisted.cred.credentials import UsernamePassword
    from zope.interface.verify import verifyObject

    from pymta.auth.credentials import APOPCredentials, IClientCredentials, PasswordCredentials

    for credentials in (
        PasswordCredentials("u", "p", "192.0.2.1", "imap", secured=True),
        APOPCredentials("u", b"<1.2@host>", "00" * 16, "192.0.2.1", "pop3"),
    ):
        assert verifyObject(IClientCredentials, credentials)
        assert IClientCredentials(credentials).client_address == "192.0.2.1"
    assert IClientCredentials(UsernamePassword(b"u", b"p"), None) is None
