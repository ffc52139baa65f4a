"""What metrics cost: per mail log event on the reactor thread, per scrape.

    PYTHONPATH=. python bench/metrics_bench.py [--queue 100000]

Prints the time the metrics observer adds to each mail log event (classify
and count; it runs on the reactor thread inside every maillog() call), and
the time one scrape takes (in the web resource's thread) with a deferred
queue of --queue files, in single-process mode.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from prometheus_client import CollectorRegistry, generate_latest

from pymta.metrics.events import EventClassifier
from pymta.metrics.families import MailMetrics
from pymta.metrics.queues import QueueCollector

LINES = [
    ("smtpd", "connect from unknown[127.0.0.1]"),
    ("smtpd", "0123456789ABCDEF01234: client=unknown[127.0.0.1]"),
    ("cleanup", "0123456789ABCDEF01234: message-id=<x@example.test>"),
    ("qmgr", "0123456789ABCDEF01234: from=<a@client.test>, size=375, nrcpt=1 (queue active)"),
    (
        "virtual",
        "0123456789ABCDEF01234: to=<alice@example.test>, relay=virtual, delay=0.06, "
        "delays=0.06/0/0/0, dsn=2.0.0, status=sent (delivered to maildir)",
    ),
    ("qmgr", "0123456789ABCDEF01234: removed"),
    ("smtpd", "disconnect from unknown[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5"),
]


def per_event(rounds: int) -> float:
    """Mean seconds per event over the lines of one delivered message."""
    classifier = EventClassifier()
    metrics = MailMetrics(CollectorRegistry())
    events = [{"pymta_maillog": True, "service": s, "text": t} for s, t in LINES]
    start = time.perf_counter()
    for _ in range(rounds):
        for event in events:
            for observation in classifier.classify(event):
                metrics.apply(observation)
    return (time.perf_counter() - start) / (rounds * len(events))


def scrape(queue_size: int, repeats: int = 5) -> float:
    """Median seconds of one full exposition with queue_size deferred files."""
    with tempfile.TemporaryDirectory() as root:
        deferred = os.path.join(root, "deferred")
        os.mkdir(deferred)
        for n in range(queue_size):
            with open(os.path.join(deferred, f"{n:019X}"), "wb"):
                pass
        registry = CollectorRegistry()
        MailMetrics(registry)
        registry.register(QueueCollector(root))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            generate_latest(registry)
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", type=int, default=100000, help="deferred queue files")
    parser.add_argument("--rounds", type=int, default=20000, help="messages' worth of events")
    args = parser.parse_args()
    print(f"observer: {per_event(args.rounds) * 1e6:.1f} us per mail log event (reactor thread)")
    for size in (0, args.queue):
        print(f"scrape: {scrape(size) * 1e3:.1f} ms with {size} deferred files (in a thread)")


if __name__ == "__main__":
    main()
