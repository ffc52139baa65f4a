"""policy: the numbers qmgr schedules by, read from main.cf the Postfix way.

- Backoff (qmgr_active.c): after an attempt that left recipients deferred,
  the next attempt is ``now + clamp(now - arrival, minimal_backoff_time,
  maximal_backoff_time)``. Retrying on time this doubles the wait each
  round (300, 300, 600, 1200, 2400, 4000, 4000 ... with the defaults), and it
  needs no state beyond the arrival time, so it survives restarts.
- Lifetime: maximal_queue_lifetime, or bounce_queue_lifetime for a
  null-sender message; 0 means "try once".
- Per transport: ``<transport>_destination_recipient_limit`` and
  ``<transport>_destination_concurrency_limit`` (falling back to the
  ``default_destination_*`` parameters), and the master.cf process limit
  (falling back to default_process_limit). A transport whose recipient
  limit is 1 is per-recipient: its destination is the recipient.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pymta.config import Config


def backoff_delay(now: float, arrival: float, minimal: float, maximal: float) -> float:
    """Seconds until the next attempt (see module doc)."""
    delay = now - arrival
    if delay > maximal:
        delay = maximal
    if delay < minimal:
        delay = minimal
    return delay


def queue_lifetime(config: Config, sender: str) -> float:
    name = "maximal_queue_lifetime" if sender else "bounce_queue_lifetime"
    return config.get_time(name)


@dataclass(frozen=True)
class TransportLimits:
    recipient_limit: int
    destination_concurrency: int
    process_limit: int

    @property
    def per_recipient(self) -> bool:
        return self.recipient_limit == 1


def _transport_int(config: Config, transport: str, suffix: str) -> int:
    name = f"{transport}_{suffix}"
    if config.raw(name) is not None:
        return config.get_int(name)
    return config.get_int(f"default_{suffix}")


def transport_limits(
    config: Config, transport: str, process_limits: Mapping[str, int] | None = None
) -> TransportLimits:
    """The limits of one transport (see module doc)."""
    if process_limits is not None and transport in process_limits:
        process_limit = process_limits[transport]
    else:
        process_limit = config.get_int("default_process_limit")
    return TransportLimits(
        recipient_limit=_transport_int(config, transport, "destination_recipient_limit"),
        destination_concurrency=_transport_int(config, transport, "destination_concurrency_limit"),
        process_limit=process_limit,
    )
