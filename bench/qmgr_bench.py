#!/usr/bin/env python3
"""qmgr_bench - the queue manager's CPU per message, without disk or network.

SYNOPSIS
    python bench/qmgr_bench.py [--messages 20000] [--repeat 5]

DESCRIPTION
    Wires a QueueManager as the server does for virtual delivery (the real
    trivial-rewrite Resolver, the bouncer, the concurrency feedback and
    scheduler, maillog lines to a MaillogObserver writing to /dev/null)
    to the memory queue store and an agent that answers ``2.0.0`` at
    once, then hands it --messages new one-recipient messages through
    notify_new, as cleanup does. Each message goes the whole way: queue
    active, resolve, schedule, deliver, feedback, the to= line, done mark,
    removed. Prints the median over --repeat runs of the process CPU time
    per message in microseconds. What it leaves out: queue-file I/O,
    thread hand-offs and the agent's own work (see smtp_bench.py).

EXAMPLES
    python bench/qmgr_bench.py --messages 10000 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from pymta.bounce.bouncer import Bouncer
from pymta.config import Config
from pymta.delivery.interface import DeliveryRequest, RecipientStatus
from pymta.maillog import MaillogObserver, log_to
from pymta.master.appendlog import AppendLineStream
from pymta.qmgr.manager import QueueManager
from pymta.queue.memory import MemoryQueueStore
from pymta.queue.model import Envelope, Recipient
from pymta.rewrite.resolve import Resolver

MAIN_CF = """\
myhostname = mx.bench.test
mydomain = bench.test
virtual_mailbox_domains = bench.test
virtual_mailbox_base = /nonexistent
"""


class InstantAgent:
    """Delivers everything at once (what qmgr sees of a fast agent)."""

    name = "virtual"

    def deliver(self, request: DeliveryRequest) -> Deferred[list[RecipientStatus]]:
        content = request.message
        statuses = []
        for r in request.recipients:
            content.mark_done(r.index)
            statuses.append(RecipientStatus(r.index, "2.0.0", "delivered to maildir", "virtual"))
        return succeed(statuses)


class NoCleanup:
    def submit(self, envelope: Envelope, content: bytes) -> Deferred[str]:
        raise AssertionError("no notice expected")


def run(messages: int) -> float:
    clock = Clock()
    clock.advance(1_800_000_000)
    config = Config.from_text(MAIN_CF)
    store = MemoryQueueStore(clock)
    qmgr = QueueManager(
        config,
        store,
        Resolver(config),
        {"virtual": InstantAgent()},
        Bouncer(config, NoCleanup(), clock),
        clock,
    )
    stream = AppendLineStream(os.devnull)
    observer = MaillogObserver(stream, "mx", flush_later=lambda flush: clock.callLater(0, flush))
    undo = log_to(observer)
    content = b"Subject: bench\n\n" + b"x" * 1000 + b"\n"
    try:
        qmgr.start()
        clock.advance(0)
        elapsed = 0.0
        for n in range(messages):
            envelope = Envelope(
                "sender@bench.test",
                [Recipient(f"run{n % 7}@bench.test", original=f"run{n % 7}@bench.test")],
                arrival_time=clock.seconds(),
            )
            ids: list[str] = []
            store.enqueue(envelope, content).addCallback(ids.append)
            start = time.process_time()
            qmgr.notify_new(ids[0], envelope)
            if n % 4 == 3:
                clock.advance(0)  # a reactor turn: flushes, refills
            elapsed += time.process_time() - start
        clock.advance(0)
        left = [*qmgr.in_flight(), *store.list("deferred"), *store.list("active")]
        if left:
            raise SystemExit(f"messages not delivered: {left[:5]}")
    finally:
        undo()
        stream.close()
    return elapsed / messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    per_message = statistics.median(run(args.messages) for _ in range(args.repeat))
    print(f"qmgr: {per_message * 1e6:.1f} us CPU per message, median of {args.repeat}")


if __name__ == "__main__":
    main()
