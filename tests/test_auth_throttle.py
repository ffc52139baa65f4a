"""The login throttle: penalties before the check, spacing, limits, the shared table.

The fast-guess attack of issue 11 replayed against the checker with a
Clock: parallel connections from one address, each guessing again as soon
as it has an answer (or, impatient, after 0.3 s without one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from pymta.auth.checker import PasswdFileChecker
from pymta.auth.credentials import PasswordCredentials
from pymta.auth.errors import TooManyLoginAttempts
from pymta.auth.passwdfile import PasswdFile
from pymta.auth.penalty import (
    FilePenaltyTable,
    IPenaltyTable,
    MemoryPenaltyTable,
    PenaltyRecord,
    SharedPenaltyTable,
)
from pymta.auth.throttle import LoginThrottle, client_network

MAX_DELAY = 15.0


class Runner:
    """Runs 'thread' work synchronously and counts the password checks."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, f: Callable[[], Any]) -> defer.Deferred[Any]:
        self.calls += 1
        return defer.maybeDeferred(f)


def make_checker(
    tmp_path: Path, clock: Clock, table: IPenaltyTable | None = None, limit: int = 10
) -> tuple[PasswdFileChecker, Runner]:
    path = tmp_path / "passwd"
    if not path.exists():
        path.write_text("pin@example.org:{PLAIN}4711::::::\n")
    runner = Runner()
    throttle = LoginThrottle(clock, base=2.0, cap=MAX_DELAY, table=table, concurrency_limit=limit)
    checker = PasswdFileChecker(
        PasswdFile(str(path), clock), clock, throttle=throttle, run_in_thread=runner
    )
    return checker, runner


@dataclass
class Attack:
    """Parallel connections guessing PINs; what each guess got and when."""

    checker: PasswdFileChecker
    clock: Clock
    connections: int
    give_up_after: float | None  # None: wait for every answer
    guesses: list[str] = field(default_factory=list)
    answered: list[tuple[float, float, str, bool]] = field(default_factory=list)
    refused: int = 0
    stopped: bool = False

    def start(self, pins: list[str]) -> None:
        self.guesses = list(pins)
        for _ in range(self.connections):
            self._next()

    def _next(self) -> None:
        if self.stopped or not self.guesses:
            return
        pin = self.guesses.pop(0)
        sent = self.clock.seconds()
        d = self.checker.requestAvatarId(
            PasswordCredentials("pin@example.org", pin, "198.51.100.9", "pop3")
        )
        timer = None
        if self.give_up_after is not None:
            timer = self.clock.callLater(self.give_up_after, d.cancel)

        def answered(result: Any) -> None:
            if timer is not None and timer.active():
                timer.cancel()
            if isinstance(result, Failure):
                if result.check(defer.CancelledError):
                    pass  # gave up: treated as a wrong guess
                elif result.check(TooManyLoginAttempts):
                    self.refused += 1
                else:
                    result.trap(UnauthorizedLogin)
                    self.answered.append((sent, self.clock.seconds(), pin, False))
            else:
                self.answered.append((sent, self.clock.seconds(), pin, True))
            # The next guess on this connection, in the next turn.
            self.clock.callLater(0, self._next)

        d.addBoth(answered)


def run_for(clock: Clock, seconds: float, step: float = 0.05) -> None:
    for _ in range(int(seconds / step)):
        clock.advance(step)


@pytest.mark.parametrize("give_up_after", [None, 0.3])
def test_fast_guess_attack_gets_one_check_per_max_delay(
    tmp_path: Path, give_up_after: float | None
) -> None:
    """Twenty parallel connections from one address, guessing PINs for 300 s
    (waiting for each answer, or giving up after 0.3 s): after the first
    failures the server checks at most one guess per pymta_auth_failure_max_delay."""
    clock = Clock()
    clock.advance(1_000_000)
    checker, runner = make_checker(tmp_path, clock)
    attack = Attack(checker, clock, connections=20, give_up_after=give_up_after)
    attack.start([f"{n:04d}" for n in range(10_000)])
    run_for(clock, 30.0)
    warmup_checks = runner.calls
    run_for(clock, 300.0)
    attack.stopped = True
    checks = runner.calls - warmup_checks
    assert warmup_checks <= 10 + 30 / 2  # the first failures, then penalised
    assert checks <= 300 / MAX_DELAY + 1
    assert attack.refused > 0  # more than pymta_auth_client_concurrency_limit at once


def test_right_pin_is_not_told_apart_early(tmp_path: Path) -> None:
    """After failures, the right PIN is answered no sooner than a wrong one:
    an attacker giving up after 0.3 s learns nothing from the silence."""
    clock = Clock()
    clock.advance(1_000_000)
    checker, _ = make_checker(tmp_path, clock)
    attack = Attack(checker, clock, connections=20, give_up_after=None)
    attack.start([f"{n:04d}" for n in range(10)] + ["4711"])
    run_for(clock, 120.0)
    by_pin = {pin: (answer - sent, ok) for sent, answer, pin, ok in attack.answered}
    waited, ok = by_pin["4711"]
    assert ok and waited >= MAX_DELAY


def test_limit_refuses_extra_attempts_without_a_check(tmp_path: Path) -> None:
    """Beyond pymta_auth_client_concurrency_limit attempts in progress, one more
    from the same address is refused at once, its password never checked."""
    clock = Clock()
    checker, runner = make_checker(tmp_path, clock, limit=2)
    throttle = checker.throttle
    a = throttle.begin("192.0.2.1", "x")
    b = throttle.begin("192.0.2.1", "y")
    with pytest.raises(TooManyLoginAttempts):
        throttle.begin("192.0.2.1", "z")
    throttle.begin("192.0.2.2", "z").abandoned()  # another client is not affected
    result: list[Any] = []
    checker.requestAvatarId(PasswordCredentials("pin@example.org", "4711", "192.0.2.1")).addBoth(
        result.append
    )
    assert result[0].check(TooManyLoginAttempts) and runner.calls == 0
    a.abandoned()
    b.failed()
    assert throttle.in_progress("192.0.2.1") == 0


def test_withdrawn_attempt_gives_its_turn_back(tmp_path: Path) -> None:
    """A client that hangs up while its attempt waits frees its place and its
    turn: the next attempt waits only the penalty again, and nothing is checked."""
    clock = Clock()
    checker, runner = make_checker(tmp_path, clock)
    throttle = checker.throttle
    throttle.begin("192.0.2.1", "u").failed()
    result: list[Any] = []
    d = checker.requestAvatarId(PasswordCredentials("pin@example.org", "4711", "192.0.2.1"))
    d.addBoth(result.append)
    assert throttle.in_progress("192.0.2.1") == 1
    clock.advance(1.0)
    d.cancel()
    assert result[0].check(defer.CancelledError)
    clock.advance(5.0)
    assert runner.calls == 0 and throttle.in_progress("192.0.2.1") == 0
    assert throttle.begin("192.0.2.1", "u").wait == 2.0


def test_cancel_during_the_check_still_counts(tmp_path: Path) -> None:
    """Hanging up after the check started does not undo its failure."""
    clock = Clock()
    checker, _ = make_checker(tmp_path, clock)
    d = checker.requestAvatarId(PasswordCredentials("pin@example.org", "0000", "192.0.2.1"))
    d.addErrback(lambda f: f.trap(defer.CancelledError))
    d.cancel()  # checked at once (no penalty yet): the failure delay is running
    clock.advance(3.0)
    assert checker.throttle.failures("ip:192.0.2.1/32") == 1


@pytest.mark.parametrize(
    ("address", "v4", "v6", "network"),
    [
        ("192.0.2.77", 32, 64, "192.0.2.77/32"),
        ("192.0.2.77", 24, 64, "192.0.2.0/24"),
        ("::ffff:192.0.2.77", 24, 64, "192.0.2.0/24"),
        ("2001:db8:1:2:3:4:5:6", 32, 64, "2001:db8:1:2::/64"),
        ("[2001:db8::1]", 32, 48, "2001:db8::/48"),
        ("not-an-address", 32, 64, "not-an-address"),
    ],
)
def test_client_network(address: str, v4: int, v6: int, network: str) -> None:
    """A client is penalised as its IPv4 /N or IPv6 /N network."""
    assert client_network(address, v4, v6) == network


def test_ipv6_neighbours_share_a_penalty() -> None:
    """Two addresses of one IPv6 /64 count as one client."""
    clock = Clock()
    throttle = LoginThrottle(clock, base=2.0)
    throttle.begin("2001:db8::1", "a").failed()
    assert throttle.begin("2001:db8::ffff:2", "b").wait == 2.0
    assert throttle.begin("2001:db8:0:1::1", "c").wait == 0.0


# the tables: one contract, and the file shared between processes ------------


@pytest.fixture(params=["memory", "file"])
def table(request: Any, tmp_path: Path) -> IPenaltyTable:
    if request.param == "memory":
        return MemoryPenaltyTable()
    return FilePenaltyTable(str(tmp_path / "auth_penalty"), slots=64)


def test_table_contract(table: IPenaltyTable) -> None:
    """A table gives back what was put, an empty record for an unknown key,
    and forgets a key whose record became empty."""
    with table.locked():
        assert table.get("ip:a") == PenaltyRecord()
        rec = PenaltyRecord(3, 10.0, 20.0, 1, 130.0)
        table.put("ip:a", rec)
        assert table.get("ip:a") == rec
        assert table.get("ip:b") == PenaltyRecord()
        table.put("ip:a", PenaltyRecord())
        assert table.get("ip:a") == PenaltyRecord()


def test_file_table_is_bounded(tmp_path: Path) -> None:
    """A flood of keys overwrites the least recently used, the file never grows."""
    path = tmp_path / "auth_penalty"
    table = FilePenaltyTable(str(path), slots=16)
    size = path.stat().st_size
    with table.locked():
        for i in range(1000):
            table.put(f"ip:{i}", PenaltyRecord(1, float(i)))
        assert table.get("ip:999").failures == 1
    assert path.stat().st_size == size


def test_penalty_holds_across_processes(tmp_path: Path) -> None:
    """Two processes (two checkers, each mapping the table file): failures
    seen by one make the other wait before it checks, and their checks of
    one client are spaced as one."""
    clock = Clock()
    clock.advance(1_000_000)
    path = str(tmp_path / "auth_penalty")
    first, runs_first = make_checker(tmp_path, clock, FilePenaltyTable(path))
    second, runs_second = make_checker(tmp_path, clock, FilePenaltyTable(path))
    for _ in range(3):
        first.throttle.begin("192.0.2.1", "pin@example.org").failed()
    result: list[Any] = []
    second.requestAvatarId(PasswordCredentials("pin@example.org", "4711", "192.0.2.1")).addBoth(
        result.append
    )
    other: list[Any] = []
    first.requestAvatarId(PasswordCredentials("pin@example.org", "4711", "192.0.2.1")).addBoth(
        other.append
    )
    clock.advance(7.99)
    assert result == [] and runs_second.calls == 0
    clock.advance(0.01)
    assert result == [b"pin@example.org"]
    # the first process's attempt was queued behind the second's turn
    assert other == [] and runs_first.calls == 0
    clock.advance(8.0)
    assert other == [b"pin@example.org"]


def test_shared_table_opens_the_file_at_first_use(tmp_path: Path) -> None:
    """The service's table makes its file (and directory) only when first used,
    so the unprivileged reactor processes own it."""
    path = tmp_path / "lib" / "auth_penalty"
    table = SharedPenaltyTable(str(path))
    assert not path.exists() and not table.shared
    with table.locked():
        table.put("ip:a", PenaltyRecord(1, 5.0))
    assert path.exists() and table.shared
    assert FilePenaltyTable(str(path)).get("ip:a").failures == 1


def test_shared_table_falls_back_to_memory(tmp_path: Path) -> None:
    """A table file that cannot be made leaves the process with penalties in
    memory (logged), never without them."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    table = SharedPenaltyTable(str(blocker / "auth_penalty"))
    with table.locked():
        table.put("ip:a", PenaltyRecord(2, 5.0))
        assert table.get("ip:a").failures == 2
    assert not table.shared
