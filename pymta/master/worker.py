"""worker: one extra reactor process on the master's listening sockets.

``python -m pymta.master.worker --config DIR --slot N --listen NAME=FD ...``
is what :class:`pymta.master.workers.WorkerPool` runs; nobody else should.
It reads the same main.cf and master.cf as the master, builds the same
parts (:func:`pymta.assemble.build` with ``worker_fds``): smtpd, cleanup, its
own queue manager that delivers the mail this process accepted but never
scans the queue, the delivery agents, pop3d and imapd on the inherited
sockets. It logs to stderr (relayed by the master) and writes its mail
events to ``maillog_file`` itself, with its own pid.

Once it accepts on the sockets it writes ``ready`` to its stdout (the
master throttles the restarts of a worker that dies before). It stops on
SIGTERM (waiting for its deliveries in flight, as the master does), at
once on SIGQUIT (``pymta abort``), and when its stdin reaches end-of-file:
the master died. It ignores SIGHUP: it reloads when the master asks on the
control socket (``--control FD``), a line ``reload KEY ...`` carrying the
master's sockets of the listeners a reload added (pymta.master.reload), or
``reopen`` (the master refused the new configuration: only reopen the
mail log). With ``--helper FD`` (the master runs with the root helper of
:mod:`pymta.privsep`) its local and pipe deliveries go through that
connection to the helper.

Untrusted input: none here (the command line comes from the master). May
write: what the parts write. Logs: what the parts log.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IFileDescriptorReceiver
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.python.failure import Failure
from zope.interface import implementer

from pymta.master.adopt import AdoptedListener

log = Logger(namespace="pymta.master")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The worker's command line (see module doc)."""
    parser = argparse.ArgumentParser(prog="pymta.master.worker")
    parser.add_argument("--config", required=True, help="configuration directory")
    parser.add_argument("--slot", type=int, default=1, help="the worker's number")
    parser.add_argument(
        "--listen", action="append", default=[], metavar="NAME=FD", help="an inherited socket"
    )
    parser.add_argument(
        "--control", type=int, default=None, metavar="FD", help="the control socket"
    )
    parser.add_argument(
        "--helper", type=int, default=None, metavar="FD", help="the root helper's connection"
    )
    return parser.parse_args(list(argv))


@implementer(IFileDescriptorReceiver)
class _Control(protocol.Protocol):
    """The master's control socket: ``reload KEY ...`` lines, each with the
    descriptors of the new listeners KEY ... attached (SCM_RIGHTS)."""

    def __init__(self, system: Any) -> None:
        self._system = system
        self._received: list[int] = []
        self._buffer = b""
        self._chain: Deferred[Any] = succeed(None)

    def fileDescriptorReceived(self, descriptor: int) -> None:
        self._received.append(descriptor)

    def dataReceived(self, data: bytes) -> None:

        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            words = line.decode("ascii", "replace").split()
            if words == ["reopen"]:
                self._system.reopen_maillog()
                continue
            if not words or words[0] != "reload":
                log.warn("control: unknown request {line!r}", line=line)
                continue
            keys = words[1:]
            fds = dict(zip(keys, self._received[: len(keys)], strict=False))
            del self._received[: len(keys)]
            # One at a time, in the order the master asked.
            self._chain.addBoth(self._reload, fds)
            self._chain.addCallback(self._close_unused, fds)
            self._chain.addErrback(_reload_failed)

    def _reload(self, _: object, fds: dict[str, int]) -> Deferred[bool]:
        from pymta.master.reload import reload

        return reload(self._system, worker_fds=fds)

    def _close_unused(self, _: object, fds: dict[str, int]) -> None:
        for key, fd in fds.items():
            # An adopted socket's descriptor was closed by its listener;
            # close the ones no listener took.
            listener = self._system.ports.get(key)
            if not (isinstance(listener, AdoptedListener) and listener.inherited_fd == fd):
                with contextlib.suppress(OSError):
                    os.close(fd)


class _MasterWatch(protocol.Protocol):
    """stdin from the master: end-of-file means the master is gone."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._reactor.running:
            log.info("master closed the pipe: stopping")
            self._reactor.stop()


def _reload_failed(failure: Failure) -> None:
    log.failure("reload: failed (a bug: please report it)", failure)


def global_reactor() -> Any:
    """The process's reactor: pymta's (:mod:`pymta.reactor`), installed
    now unless one already is; the worker owns its process, as twistd
    pymta does."""
    with contextlib.suppress(ImportError):
        from pymta.reactor import install

        install()
    from twisted.internet import reactor

    return reactor


def main(argv: Sequence[str] | None = None, reactor: Any = None) -> int:
    """Run one worker until SIGTERM or the master's death; the exit status."""
    from pymta.assemble import build, load
    from pymta.config import ConfigError
    from pymta.master.workers import READY, parse_listen

    args = parse_args(sys.argv[1:] if argv is None else argv)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    if reactor is None:
        reactor = global_reactor()
    try:
        fds = parse_listen(args.listen)
        config, master = load(args.config)
        users = None
        if args.helper is not None:
            from pymta.privsep.client import HelperUserDelivery

            users = HelperUserDelivery.inherited(args.helper)
        system = build(config, master, reactor, worker_fds=fds, users=users)
    except (ConfigError, ValueError, KeyError, OSError) as e:
        log.critical("fatal: {error}", error=e)
        return 1

    def start() -> None:
        from twisted.internet import stdio

        system.privilegedStartService()
        system.startService()
        from pymta.master.control import install_signal_handlers

        install_signal_handlers(system, worker=True)
        if args.control is not None:
            factory = protocol.Factory.forProtocol(lambda: _Control(system))
            reactor.adoptStreamConnection(args.control, socket.AF_UNIX, factory)
            os.close(args.control)  # the reactor holds its own duplicate
        standard_io: Any = stdio.StandardIO
        pipe = standard_io(_MasterWatch(reactor), stdin=0, stdout=1, reactor=reactor)
        pipe.write(READY + b"\n")  # no startup throttling from now on
        log.info("worker {slot} running", slot=args.slot)

    reactor.callWhenRunning(start)
    # The worker owns its process, as twistd pymta does (pymta.gctune).
    from pymta.gctune import tune

    reactor.callWhenRunning(tune)
    reactor.addSystemEventTrigger("before", "shutdown", system.stopService)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
