"""Login penalties: a client or user that failed recently waits before its check.

Mirrors Dovecot's auth penalty (anvil) and auth_failure_delay, made strict
enough that passwords cannot be guessed at line rate (DESIGN.md invariant
8). Every login attempt passes :meth:`LoginThrottle.begin` before its
credentials are looked at, so the time of the answer does not depend on
whether the password is right:

- **Penalty before the check.** A key with ``n`` recent failures waits
  ``base * 2**(n-1)`` seconds, at most ``cap`` (2, 4, 8, 15 s with the
  defaults ``pymta_auth_failure_delay`` and ``pymta_auth_failure_max_delay``),
  before its credentials are checked, right or wrong. The keys are the
  client's network (its IPv4 address, or the ``/N`` of
  ``pymta_auth_client_ipv4_prefix_length``; the ``/64`` of an IPv6 address,
  ``pymta_auth_client_ipv6_prefix_length``) and the user name tried; the
  larger penalty applies.
- **One check at a time per penalised client.** A penalised client's
  checks are spaced: each starts at least its penalty after the previous
  one started, whatever the number of connections it opened, so after its
  first failures a client gets at most one answer per
  ``pymta_auth_failure_max_delay``. (The user's key delays but does not
  queue: a crowd of addresses guessing one user cannot push that user's own
  login into a long queue.)
- **Few attempts per client.** At most ``pymta_auth_client_concurrency_limit``
  attempts of one client are in progress (waiting or being checked); one
  more is refused at once (:class:`~pymta.auth.errors.TooManyLoginAttempts`)
  without a check, so nothing is learnt from it.
- **After a failure** the reply waits ``base`` (Dovecot's auth_failure_delay)
  and both keys count one more failure. A success clears the user's
  failures but takes only one off the client's: a client cannot wipe its
  penalty by logging into an account of its own between guesses.
  Failures are forgotten ``forget_after`` seconds (600) after the last one.

Counts are kept in an :class:`~pymta.auth.penalty.IPenaltyTable`: in
memory, or in a file shared by all reactor processes
(:mod:`pymta.auth.penalty`), so the penalty holds across processes and
across protocols (every protocol checks through the one checker of its
process, which holds this throttle).

Untrusted input: the client address and user name (only keys here). Time
comes from the injected clock. Writes: the penalty table.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from pymta.auth.errors import TooManyLoginAttempts
from pymta.auth.penalty import IPenaltyTable, MemoryPenaltyTable, PenaltyRecord

#: Failures counted at most (the delay is capped long before).
MAX_FAILURES = 32

#: How long an attempt may take after its start before the table stops
#: counting it as in progress (a process that died while checking).
CHECK_TIMEOUT = 120.0


def client_network(address: str, ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> str:
    """The network a client address is penalised as (``192.0.2.0/24``...).

    IPv4-mapped IPv6 addresses count as IPv4; a value that is no address
    (a UNIX socket peer) is its own key."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = ipv4_prefix if ip.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


class LoginAttempt:
    """One login attempt admitted by the throttle; report how it ended once."""

    def __init__(
        self,
        throttle: LoginThrottle,
        client_key: str | None,
        user_key: str,
        wait: float,
    ) -> None:
        self._throttle = throttle
        self.client_key = client_key
        self.user_key = user_key
        self.wait = wait
        self._open = True
        # The client's next_slot before and after this attempt reserved its
        # turn, to give the turn back if it is withdrawn while waiting.
        self.slot_before: float | None = None
        self.slot_after: float | None = None
        self._call: IDelayedCall | None = None
        self._ready: Deferred[None] | None = None

    def ready(self) -> Deferred[None]:
        """Fires when the check may start (after the penalty); cancelling it
        while it waits abandons the attempt."""
        if self.wait <= 0:
            return succeed(None)

        def cancel(d: Deferred[None]) -> None:
            if self._call is not None and self._call.active():
                self._call.cancel()
            if self._open:
                self._open = False
                self._throttle._release(self, withdrawn=True)

        d: Deferred[None] = Deferred(cancel)
        self._ready = d
        self._call = self._throttle.clock.callLater(self.wait, d.callback, None)
        return d

    def cancel_wait(self) -> bool:
        """Abandon the attempt if it is still waiting; True when it was."""
        if self._ready is not None and not self._ready.called:
            self._ready.cancel()
            return True
        return False

    def succeeded(self) -> None:
        if self._open:
            self._open = False
            self._throttle._succeeded(self)

    def failed(self) -> float:
        """Count the failure; the delay before the failure reply."""
        if self._open:
            self._open = False
            self._throttle._failed(self)
        return self._throttle.base

    def abandoned(self) -> None:
        """No answer came out of this attempt (cancelled, or a system error)."""
        if self._open:
            self._open = False
            self._throttle._release(self)


class LoginThrottle:
    """Penalties per client network and per user, shared through a table."""

    def __init__(
        self,
        clock: IReactorTime,
        base: float = 2.0,
        cap: float = 15.0,
        forget_after: float = 600.0,
        *,
        table: IPenaltyTable | None = None,
        concurrency_limit: int = 10,
        ipv4_prefix: int = 32,
        ipv6_prefix: int = 64,
    ) -> None:
        self.clock = clock
        self.base = base
        self.cap = max(base, cap)
        self.forget_after = forget_after
        self.table: IPenaltyTable = table if table is not None else MemoryPenaltyTable()
        self.concurrency_limit = max(1, concurrency_limit)
        self.ipv4_prefix = ipv4_prefix
        self.ipv6_prefix = ipv6_prefix

    # keys and delays ---------------------------------------------------------

    def client_key(self, address: str) -> str:
        return "ip:" + client_network(address, self.ipv4_prefix, self.ipv6_prefix)

    @staticmethod
    def user_key(user: str) -> str:
        return "user:" + user.lower()

    def delay_for(self, count: int) -> float:
        """The penalty after count recent failures: base doubled each time, capped."""
        if count <= 0:
            return 0.0
        return float(min(self.cap, self.base * (2 ** min(count - 1, MAX_FAILURES))))

    def _load(self, key: str, now: float) -> PenaltyRecord:
        record = self.table.get(key)
        if record.failures and now - record.last_failure >= self.forget_after:
            record.failures = 0
            record.next_slot = 0.0
        if record.in_progress and now >= record.busy_until:
            record.in_progress = 0  # its process died or forgot it
        return record

    def failures(self, key: str) -> int:
        """Recent failures of a key (``ip:NET`` or ``user:NAME``; tests, logs)."""
        with self.table.locked():
            return self._load(key, self.clock.seconds()).failures

    def in_progress(self, client: str) -> int:
        """Attempts of a client address in progress (tests, logs)."""
        with self.table.locked():
            return self._load(self.client_key(client), self.clock.seconds()).in_progress

    # the attempt ---------------------------------------------------------------

    def begin(self, client: str | None, user: str) -> LoginAttempt:
        """Admit one attempt; TooManyLoginAttempts when the client has its
        limit in progress. The attempt's ready() fires after the penalty."""
        now = self.clock.seconds()
        client_key = self.client_key(client) if client else None
        user_key = self.user_key(user)
        with self.table.locked():
            user_rec = self._load(user_key, now)
            client_rec = self._load(client_key, now) if client_key else None
            if client_rec is not None and client_rec.in_progress >= self.concurrency_limit:
                raise TooManyLoginAttempts(
                    f"{client_rec.in_progress} login attempts in progress from {client}"
                )
            user_delay = self.delay_for(user_rec.failures)
            client_delay = self.delay_for(client_rec.failures) if client_rec else 0.0
            start = now + max(user_delay, client_delay)
            slots: tuple[float, float] | None = None
            if client_rec is not None and client_key is not None:
                if client_delay > 0:
                    # Space this client's checks: this one after the one
                    # reserved before, the next one after this.
                    start = max(start, client_rec.next_slot)
                    slots = (client_rec.next_slot, start + client_delay)
                    client_rec.next_slot = start + client_delay
                client_rec.in_progress += 1
                client_rec.busy_until = max(client_rec.busy_until, start + CHECK_TIMEOUT)
                self.table.put(client_key, client_rec)
        attempt = LoginAttempt(self, client_key, user_key, start - now)
        if slots is not None:
            attempt.slot_before, attempt.slot_after = slots
        return attempt

    def _update(self, keys: list[str], change: Callable[[str, PenaltyRecord], None]) -> None:
        now = self.clock.seconds()
        with self.table.locked():
            for key in keys:
                record = self._load(key, now)
                change(key, record)
                self.table.put(key, record)

    def _failed(self, attempt: LoginAttempt) -> None:
        now = self.clock.seconds()

        def change(key: str, record: PenaltyRecord) -> None:
            record.failures = min(record.failures + 1, MAX_FAILURES)
            record.last_failure = now
            if key == attempt.client_key:
                record.in_progress = max(0, record.in_progress - 1)

        self._update(self._keys(attempt), change)

    def _succeeded(self, attempt: LoginAttempt) -> None:
        def change(key: str, record: PenaltyRecord) -> None:
            if key == attempt.user_key:
                record.failures = 0
            if key == attempt.client_key:
                record.failures = max(0, record.failures - 1)
                record.in_progress = max(0, record.in_progress - 1)
            if record.failures == 0:
                record.next_slot = 0.0

        self._update(self._keys(attempt), change)

    def _release(self, attempt: LoginAttempt, withdrawn: bool = False) -> None:
        if attempt.client_key is None:
            return

        def change(key: str, record: PenaltyRecord) -> None:
            record.in_progress = max(0, record.in_progress - 1)
            if withdrawn and attempt.slot_before is not None:
                # Withdrawn before its check: give its turn back when no
                # later attempt reserved the one after it.
                if record.next_slot == attempt.slot_after:
                    record.next_slot = attempt.slot_before

        self._update([attempt.client_key], change)

    @staticmethod
    def _keys(attempt: LoginAttempt) -> list[str]:
        return [attempt.user_key] + ([attempt.client_key] if attempt.client_key else [])
