"""Helpers shared by the agents that write files: sync through the barrier,
and map OS errors to delivery statuses.

Mirrors the parts of Postfix's mail_copy()/sys_exits that decide between
"try again later" and "give up": a full disk is an operating condition
(defer), never a bounce. Writes nothing itself.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from typing import cast

from twisted.internet.defer import Deferred, fail, succeed

from pymta.queue.interface import ISyncBarrier


def barrier_sync(
    barrier: ISyncBarrier, files: Sequence[str] = (), dirs: Sequence[str] = ()
) -> Deferred[None]:
    """Ask the group-commit barrier to make files and directory entries durable
    (with the default syncfs method the lists only document intent)."""
    return barrier.sync(files=tuple(files), dirs=tuple(dirs))


def barrier_run(
    barrier: ISyncBarrier,
    work: Callable[[], None],
    files: Sequence[str] = (),
    dirs: Sequence[str] = (),
    durable: bool = True,
    after: Callable[[], None] | None = None,
) -> Deferred[None]:
    """Do ``work`` (file-system changes), made durable when ``durable``,
    then ``after`` (durable work only: what publishes it, once synced).

    On the barrier's own thread, in call order, when it offers ``run`` (the
    reactor never waits on the disk); otherwise here, followed by ``sync``.
    """
    run = getattr(barrier, "run", None)
    if run is not None:
        return cast(
            "Deferred[None]",
            run(work, durable=durable, files=tuple(files), dirs=tuple(dirs), after=after),
        )
    try:
        work()
    except Exception:
        return fail()
    if not durable:
        return succeed(None)
    d = barrier_sync(barrier, files, dirs)
    if after is not None:
        d.addCallback(lambda _: after())
    return d


def os_error_status(error: OSError, what: str) -> tuple[str, str]:
    """(status, reason) for a failed mailbox write; always a deferral.

    EDQUOT/EFBIG -> 4.2.2 (mailbox full), ENOSPC -> 4.3.0 (system storage),
    anything else -> 4.2.0 with the system's error text.
    """
    code = error.errno
    text = error.strerror or str(error)
    if code in (errno.EDQUOT, errno.EFBIG):
        return "4.2.2", f"cannot update {what}: mailbox full ({text})"
    if code == errno.ENOSPC:
        return "4.3.0", f"cannot update {what}: insufficient system storage ({text})"
    return "4.2.0", f"cannot update {what}: {text}"
