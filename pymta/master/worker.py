"""worker: one extra reactor process on the master's listening sockets.

``python -m pymta.master.worker --config DIR --slot N --listen NAME=FD ...``
is what :class:`pymta.master.workers.WorkerPool` runs; nobody else should.
It reads the same main.cf and master.cf as the master, builds the same
parts (:func:`pymta.service.build` with ``worker_fds``): smtpd, cleanup, its
own queue manager that delivers the mail this process accepted but never
scans the queue, the delivery agents, pop3d and imapd on the inherited
sockets. It logs to stderr (relayed by the master) and writes its mail
events to ``maillog_file`` itself, with its own pid.

Once it accepts on the sockets it writes ``ready`` to its stdout (the
master throttles the restarts of a worker that dies before). It stops on
SIGTERM (waiting for its deliveries in flight, as the master does) and
when its stdin reaches end-of-file: the master died.

Untrusted input: none here (the command line comes from the master). May
write: what the parts write. Logs: what the parts log.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet import protocol
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.python.failure import Failure

log = Logger(namespace="pymta.master")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The worker's command line (see module doc)."""
    parser = argparse.ArgumentParser(prog="pymta.master.worker")
    parser.add_argument("--config", required=True, help="configuration directory")
    parser.add_argument("--slot", type=int, default=1, help="the worker's number")
    parser.add_argument(
        "--listen", action="append", default=[], metavar="NAME=FD", help="an inherited socket"
    )
    return parser.parse_args(list(argv))


class _MasterWatch(protocol.Protocol):
    """stdin from the master: end-of-file means the master is gone."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._reactor.running:
            log.info("master closed the pipe: stopping")
            self._reactor.stop()


def main(argv: Sequence[str] | None = None, reactor: Any = None) -> int:
    """Run one worker until SIGTERM or the master's death; the exit status."""
    from pymta.config import ConfigError
    from pymta.master.workers import READY, parse_listen
    from pymta.service import build, load

    args = parse_args(sys.argv[1:] if argv is None else argv)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    try:
        fds = parse_listen(args.listen)
        config, master = load(args.config)
        system = build(config, master, reactor, worker_fds=fds)
    except (ConfigError, ValueError, KeyError, OSError) as e:
        log.critical("fatal: {error}", error=e)
        return 1

    def start() -> None:
        from twisted.internet import stdio

        system.privilegedStartService()
        system.startService()
        standard_io: Any = stdio.StandardIO
        pipe = standard_io(_MasterWatch(reactor), stdin=0, stdout=1, reactor=reactor)
        pipe.write(READY + b"\n")  # no startup throttling from now on
        log.info("worker {slot} running", slot=args.slot)

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", system.stopService)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
