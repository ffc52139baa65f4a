"""feedback: per-destination concurrency windows, dead destinations, rate delay.

Mirrors Postfix qmgr's concurrency scheduler (qmgr_queue.c, SCHEDULER_README
"concurrency scheduling"). Each destination (transport + nexthop) has a
window, the deliveries it may have in progress:

- it starts at ``<transport>_initial_destination_concurrency`` (slow start)
  and never exceeds ``<transport>_destination_concurrency_limit``;
- each delivery that reached the destination adds the positive feedback
  (``..._concurrency_positive_feedback``: a number, or ``1/concurrency``
  for one window's worth per round) to a success counter; each whole unit
  widens the window by one;
- each destination failure (the delivery never got through: connection
  refused, greeting 4xx, timeout) subtracts the negative feedback; each
  whole unit narrows the window by one, never below one, and adds
  ``1/window`` to the failed-cohort count. When that count reaches
  ``..._destination_concurrency_failed_cohort_limit`` the destination is
  *dead*: qmgr defers all its mail with ``delivery temporarily suspended:
  <last reason>`` and sends none there until minimal_backoff_time has
  passed; then it starts again at the initial window. A success clears the
  failed cohorts.
- ``<transport>_destination_rate_delay`` > 0 makes the window one and
  leaves that much time between the start of two deliveries.

State is in memory only (as in Postfix: a restart forgets dead
destinations), for at most 10,000 destinations (live ones are forgotten
first; a forgotten one starts again at the initial window). Time comes
from the injected clock. Writes and logs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from pymta.config import Config


@dataclass(frozen=True)
class Feedback:
    """One feedback parameter: a fixed amount, or ``1/concurrency``."""

    amount: float
    per_window: bool = False

    def value(self, window: int) -> float:
        return 1.0 / max(window, 1) if self.per_window else self.amount

    @classmethod
    def parse(cls, text: str, name: str = "feedback") -> Feedback:
        text = text.strip().replace(" ", "").lower()
        if text in ("1/concurrency", "1/$concurrency"):
            return cls(1.0, per_window=True)
        try:
            if "/" in text:
                num, _, den = text.partition("/")
                amount = float(num) / float(den)
            else:
                amount = float(text)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{name}: bad feedback value {text!r}") from None
        if not 0 < amount <= 1:
            raise ValueError(f"{name}: feedback must be in (0, 1], not {text!r}")
        return cls(amount)


@dataclass(frozen=True)
class DestinationParams:
    """The numbers of one transport's destinations."""

    initial: int = 5
    limit: int = 20  # 0: unlimited
    positive: Feedback = Feedback(1.0)
    negative: Feedback = Feedback(1.0)
    cohort_limit: int = 1  # 0: never dead
    rate_delay: float = 0.0
    dead_time: float = 300.0


def _param(config: Config, transport: str, suffix: str, default: str) -> str:
    name = f"{transport}_{suffix}"
    if config.raw(name) is not None:
        return config.get(name)
    return config.get(default)


def destination_params(config: Config, transport: str) -> DestinationParams:
    """The Postfix parameters for ``transport`` (``default_*`` when not set)."""

    def number(suffix: str, default: str) -> int:
        return int(_param(config, transport, suffix, default))

    positive_name = "destination_concurrency_positive_feedback"
    negative_name = "destination_concurrency_negative_feedback"
    rate_name = f"{transport}_destination_rate_delay"
    rate = (
        config.get_time(rate_name)
        if config.raw(rate_name) is not None
        else config.get_time("default_destination_rate_delay")
    )
    return DestinationParams(
        initial=number("initial_destination_concurrency", "initial_destination_concurrency"),
        limit=number("destination_concurrency_limit", "default_destination_concurrency_limit"),
        positive=Feedback.parse(
            _param(config, transport, positive_name, f"default_{positive_name}"), positive_name
        ),
        negative=Feedback.parse(
            _param(config, transport, negative_name, f"default_{negative_name}"), negative_name
        ),
        cohort_limit=number(
            "destination_concurrency_failed_cohort_limit",
            "default_destination_concurrency_failed_cohort_limit",
        ),
        rate_delay=rate,
        dead_time=config.get_time("minimal_backoff_time"),
    )


_STATE_LIMIT = 10000


class _State:
    __slots__ = (
        "dead_reason",
        "dead_until",
        "fail_cohorts",
        "failure",
        "last_start",
        "success",
        "window",
    )

    def __init__(self, window: int) -> None:
        self.window = window
        self.success = 0.0
        self.failure = 0.0
        self.fail_cohorts = 0.0
        self.dead_until = 0.0
        self.dead_reason = ""
        self.last_start: float | None = None


class DestinationFeedback:
    """The windows of all destinations (see module doc).

    ``params(transport)`` gives each transport's numbers (read once)."""

    def __init__(self, clock: IReactorTime, params: Callable[[str], DestinationParams]) -> None:
        self._clock = clock
        self._params_of = params
        self._params: dict[str, DestinationParams] = {}
        self._states: dict[tuple[str, str], _State] = {}

    def params(self, transport: str) -> DestinationParams:
        p = self._params.get(transport)
        if p is None:
            p = self._params[transport] = self._params_of(transport)
        return p

    def _initial(self, p: DestinationParams) -> int:
        if p.rate_delay > 0:
            return 1
        initial = max(p.initial, 1)
        return min(initial, p.limit) if p.limit > 0 else initial

    def _state(self, transport: str, destination: str) -> _State:
        key = (transport, destination)
        state = self._states.get(key)
        if state is None:
            if len(self._states) >= _STATE_LIMIT:
                # Bounded memory (per-recipient transports make one destination
                # per recipient): forget live destinations, keep the dead ones.
                self._states = {k: v for k, v in self._states.items() if v.dead_reason}
            state = self._states[key] = _State(self._initial(self.params(transport)))
        return state

    # queries ----------------------------------------------------------------

    def window(self, transport: str, destination: str) -> int:
        """Deliveries the destination may have in progress now (0: dead)."""
        if self.dead_reason(transport, destination) is not None:
            return 0
        state = self._states.get((transport, destination))
        if state is None:
            return self._initial(self.params(transport))
        return state.window

    def dead_reason(self, transport: str, destination: str) -> str | None:
        """The last failure reason while the destination is dead, else None."""
        state = self._states.get((transport, destination))
        if state is None or not state.dead_reason:
            return None
        if self._clock.seconds() >= state.dead_until:
            # Postfix's unthrottle: start again at the initial window.
            state.dead_reason = ""
            state.fail_cohorts = 0.0
            state.success = state.failure = 0.0
            state.window = self._initial(self.params(transport))
            return None
        return state.dead_reason

    def wait(self, transport: str, destination: str) -> float:
        """Seconds until the destination may start its next delivery (rate delay)."""
        p = self.params(transport)
        if p.rate_delay <= 0:
            return 0.0
        state = self._states.get((transport, destination))
        if state is None or state.last_start is None:
            return 0.0
        return max(0.0, state.last_start + p.rate_delay - self._clock.seconds())

    # events -----------------------------------------------------------------

    def revive_all(self) -> None:
        """Forget every dead destination (a flush request, as Postfix's)."""
        for state in self._states.values():
            if state.dead_reason:
                state.dead_until = 0.0
        for transport, destination in list(self._states):
            self.dead_reason(transport, destination)

    def started(self, transport: str, destination: str) -> None:
        """A delivery to the destination starts now."""
        if self.params(transport).rate_delay > 0:
            self._state(transport, destination).last_start = self._clock.seconds()

    def success(self, transport: str, destination: str) -> None:
        """A delivery reached the destination: widen the window (slow start)."""
        p = self.params(transport)
        state = self._state(transport, destination)
        state.fail_cohorts = 0.0
        if p.rate_delay > 0:
            return
        if p.limit > 0 and state.window >= p.limit:
            return
        state.success += p.positive.value(state.window)
        while state.success >= 1.0:
            state.success -= 1.0
            state.failure = 0.0
            if p.limit <= 0 or state.window < p.limit:
                state.window += 1

    def failure(self, transport: str, destination: str, reason: str) -> bool:
        """A delivery could not reach the destination: narrow the window;
        True when the destination is now dead (see module doc)."""
        p = self.params(transport)
        state = self._state(transport, destination)
        if state.dead_reason:
            state.dead_reason = reason or state.dead_reason
            return False
        if p.cohort_limit > 0:
            state.fail_cohorts += 1.0 / max(state.window, 1)
            if state.fail_cohorts >= p.cohort_limit:
                state.dead_reason = reason or "destination failure"
                state.dead_until = self._clock.seconds() + p.dead_time
                return True
        state.failure -= p.negative.value(state.window)
        while state.failure <= -1.0:
            state.failure += 1.0
            state.success = 0.0
            state.window = max(1, state.window - 1)
        return False
