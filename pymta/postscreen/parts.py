"""parts: what a postscreen session uses of its listener's factory.

A typing Protocol that :class:`pymta.postscreen.factory.PostscreenFactory`
satisfies, so that the session modules (protocol, engine) are typed
without importing the factory that builds them.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime

from pymta.dns.interface import IDNSResolver
from pymta.postscreen.cache import PostscreenCache
from pymta.postscreen.settings import PostscreenSettings

__all__ = ["ScreeningParts"]


class ScreeningParts(Protocol):
    """The listener's settings, its smtpd, DNS, cache, clock and the open
    connections per client address."""

    settings: PostscreenSettings
    smtpd: Any
    dns: IDNSResolver
    cache: PostscreenCache
    clock: IReactorTime
    connections: dict[str, int]
