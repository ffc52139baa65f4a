"""A group-commit barrier for tests whose syncs complete when the test says so."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed


class ManualBarrier:
    """A barrier whose syncs complete only when the test says so."""

    def __init__(self) -> None:
        self.waiting: list[tuple[tuple[str, ...], tuple[str, ...], Deferred[None]]] = []

    def sync(self, files: tuple[str, ...] = (), dirs: tuple[str, ...] = ()) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.waiting.append((tuple(files), tuple(dirs), d))
        return d

    def run(
        self,
        work: Callable[[], Any],
        durable: bool = True,
        files: tuple[str, ...] = (),
        dirs: tuple[str, ...] = (),
        after: Callable[[], None] | None = None,
        soon: bool = False,
    ) -> Deferred[Any]:
        """The work at once; its sync (and then ``after``) when released."""
        try:
            result = work()
        except Exception:
            return fail()
        if not durable:
            return succeed(result)
        d = self.sync(files, dirs)
        if after is not None:
            d.addCallback(lambda _: after())
        return d.addCallback(lambda _: result)

    def release(self) -> None:
        waiting, self.waiting = self.waiting, []
        for _, _, d in waiting:
            d.callback(None)
