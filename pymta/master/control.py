"""control: the signals a running pymta obeys, as Postfix's master(8) does.

- SIGHUP: reload (:mod:`pymta.master.reload`); the master then tells each
  worker to reload through its control socket, handing it the sockets of
  new listeners (:meth:`pymta.master.workers.WorkerPool.reload`).
- SIGTERM, SIGINT: twistd's graceful stop (``pymta stop``): stop listening,
  wait for the deliveries in flight, end the sessions, exit.
- SIGQUIT: abort (``pymta abort``): stop at once, without waiting for the
  deliveries in flight; the queue keeps every message whose delivery had not
  been recorded, and the next start delivers it (at least once, as after
  Postfix's ``postfix abort``). Forwarded to the workers.
- SIGUSR1: twistd's own: rotate twistd's log file.

Handlers run in the main thread (where signal.signal must be called) and
only hand the work to the reactor with ``callFromThread``: nothing runs in
the middle of whatever the signal interrupted. Workers install only
SIGQUIT and ignore SIGHUP (a terminal's hangup reaches the whole process
group; the master's pipe tells them when it is gone).

Untrusted input: none. May write: nothing. Logs: ``reload: ...`` (see
pymta.master.reload) and ``abort: stopping without waiting for deliveries``.
"""

from __future__ import annotations

import contextlib
import signal
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from pymta.assemble import MailSystem

log = Logger(namespace="pymta.master")

#: The signal ``pymta abort`` sends.
ABORT_SIGNAL = signal.SIGQUIT

#: The signal ``pymta reload`` sends.
RELOAD_SIGNAL = signal.SIGHUP


def install_signal_handlers(system: MailSystem, *, worker: bool = False) -> None:
    """Install pymta's SIGHUP and SIGQUIT handlers for ``system`` (a running
    MailSystem; ``worker=True`` in a worker process)."""
    reactor = system.sessions.reactor if system.sessions is not None else _reactor()

    def on_reload(signum: int, frame: object) -> None:
        reactor.callFromThread(reload_all, system)

    def on_abort(signum: int, frame: object) -> None:
        reactor.callFromThread(abort, system, reactor)

    if worker:
        signal.signal(RELOAD_SIGNAL, signal.SIG_IGN)
    else:
        signal.signal(RELOAD_SIGNAL, on_reload)
    signal.signal(ABORT_SIGNAL, on_abort)


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def reload_all(system: MailSystem) -> Deferred[bool]:
    """Reload this process, then every worker; fires with whether the new
    configuration was applied."""
    from pymta.master.reload import reload

    log.info("reload: reading the configuration again")

    def tell_workers(applied: bool) -> bool:
        if system.workers is not None:
            # A refused configuration is refused by the workers too: they
            # are only told to reopen the mail log.
            system.workers.reload("reload" if applied else "reopen")
        return applied

    # One reload at a time: a second SIGHUP waits for the first to finish.
    previous = system.reload_chain
    start: Deferred[object] = previous if previous is not None else succeed(None)
    done = start.addBoth(lambda _: reload(system)).addCallback(tell_workers)
    done.addErrback(_failed)
    system.reload_chain = done
    return done


def _failed(failure: Failure) -> bool:
    log.failure("reload: failed (a bug: please report it)", failure)
    return False


def abort(system: MailSystem, reactor: Any) -> None:
    """Stop without waiting for the deliveries in flight."""
    if system.aborting:
        return
    log.warn("abort: stopping without waiting for deliveries")
    system.abort_stop_waits()  # also ends the wait of a graceful stop under way
    if system.workers is not None:
        system.workers.signal_all(ABORT_SIGNAL)
    with contextlib.suppress(ReactorNotRunning):  # a stop may be under way
        reactor.stop()
