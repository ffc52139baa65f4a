"""smtp_cache: idle SMTP connections kept per destination for reuse.

Mirrors Postfix's scache(8) as the smtp client uses it: after a message,
a session whose peer is still happy waits idle for
``smtp_connection_cache_time_limit`` so the next message to the same
destination skips DNS, TCP, EHLO, TLS and AUTH (the agent sends RSET
before reusing it). A session is not cached again after
``smtp_connection_reuse_count_limit`` messages (0: no limit) or once it is
older than ``smtp_connection_reuse_time_limit``. A cached connection the
peer closes leaves the cache at once. The clock is injected.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from pymta.delivery.smtp_proto import Session


class ConnectionCache:
    def __init__(
        self,
        clock: IReactorTime,
        close: Callable[[Session], None],
        time_limit: float = 2.0,
        reuse_count_limit: int = 0,
        reuse_time_limit: float = 300.0,
    ) -> None:
        self._clock = clock
        self._close = close
        self.time_limit = time_limit
        self.reuse_count_limit = reuse_count_limit
        self.reuse_time_limit = reuse_time_limit
        self._idle: dict[Hashable, list[tuple[Session, IDelayedCall]]] = {}

    def take(self, key: Hashable) -> Session | None:
        """An idle session for ``key`` (most recently used first), or None."""
        entries = self._idle.get(key)
        while entries:
            session, timer = entries.pop()
            if timer.active():
                timer.cancel()
            session.chat.on_lost = None
            if session.chat.connected and not session.chat.failed:
                if not entries:
                    self._idle.pop(key, None)
                return session
        self._idle.pop(key, None)
        return None

    def put(self, key: Hashable, session: Session) -> None:
        """Keep ``session`` idle, or close it when it may not be reused."""
        chat = session.chat
        expired = self._clock.seconds() - session.opened >= self.reuse_time_limit
        used_up = 0 < self.reuse_count_limit <= session.messages
        if self.time_limit <= 0 or expired or used_up or not chat.connected or chat.failed:
            self._close(session)
            return
        timer = self._clock.callLater(self.time_limit, self._expire, key, session)
        self._idle.setdefault(key, []).append((session, timer))
        chat.on_lost = lambda: self._forget(key, session)

    def _expire(self, key: Hashable, session: Session) -> None:
        self._forget(key, session)
        self._close(session)

    def _forget(self, key: Hashable, session: Session) -> None:
        entries = self._idle.get(key, [])
        for i, (cached, timer) in enumerate(entries):
            if cached is session:
                if timer.active():
                    timer.cancel()
                del entries[i]
                break
        if not entries:
            self._idle.pop(key, None)

    def close_all(self) -> None:
        for key in list(self._idle):
            for session, timer in self._idle.pop(key):
                if timer.active():
                    timer.cancel()
                session.chat.on_lost = None
                self._close(session)

    def __len__(self) -> int:
        return sum(len(v) for v in self._idle.values())
