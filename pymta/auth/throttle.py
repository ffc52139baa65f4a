"""Growing delays after failed logins, per client address and per user.

Mirrors Dovecot's auth_failure_delay and anvil's auth penalty: each failure
doubles the delay for the client address and for the user name tried
(0.5 s, 1 s, 2 s ... up to a cap), the larger of the two applies, and a
success clears both. Entries are forgotten after ``forget_after`` seconds
without failures, and the table is bounded so that a flood of addresses
cannot exhaust memory.

Untrusted input: the keys (client address, user name) come from the network;
they are only dictionary keys here. Time comes from the injected clock.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet.interfaces import IReactorTime

MAX_ENTRIES = 100_000


class LoginThrottle:
    """Failure counts per key; the delay the next failure must wait."""

    def __init__(
        self,
        clock: IReactorTime,
        base: float = 0.5,
        cap: float = 15.0,
        forget_after: float = 600.0,
    ) -> None:
        self._clock = clock
        self.base = base
        self.cap = cap
        self.forget_after = forget_after
        self._failures: dict[str, tuple[int, float]] = {}

    def _count(self, key: str, now: float) -> int:
        entry = self._failures.get(key)
        if entry is None:
            return 0
        count, last = entry
        if now - last >= self.forget_after:
            del self._failures[key]
            return 0
        return count

    def _sweep(self, now: float) -> None:
        for key in [
            k for k, (_, last) in self._failures.items() if now - last >= self.forget_after
        ]:
            del self._failures[key]
        while len(self._failures) >= MAX_ENTRIES:
            # drop the oldest entries: dicts keep insertion order
            del self._failures[next(iter(self._failures))]

    def delay_for(self, count: int) -> float:
        """The delay after count failures: base doubled each time, capped."""
        if count <= 0:
            return 0.0
        return float(min(self.cap, self.base * (2 ** min(count - 1, 32))))

    def failed(self, keys: Iterable[str]) -> float:
        """Record one failure for every key; returns the delay to wait before replying."""
        now = self._clock.seconds()
        if len(self._failures) >= MAX_ENTRIES:
            self._sweep(now)
        worst = 0
        for key in keys:
            count = self._count(key, now) + 1
            self._failures.pop(key, None)
            self._failures[key] = (count, now)
            worst = max(worst, count)
        return self.delay_for(worst)

    def succeeded(self, keys: Iterable[str]) -> None:
        """Forget the failures of every key (a correct password was given)."""
        for key in keys:
            self._failures.pop(key, None)

    def failures(self, key: str) -> int:
        """How many recent failures key has (for tests and logs)."""
        return self._count(key, self._clock.seconds())
