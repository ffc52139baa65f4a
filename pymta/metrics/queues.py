"""Queue sizes, counted in the queue directories at scrape time.

The queue on disk is the only state the parts share (DESIGN.md), so its
size is read from there, as ``mailq`` and ``qshape`` do: the number of
queue files in each of incoming, active, deferred, hold and corrupt, and
the files in maildrop when that directory exists. Only names that are
queue ids count, and in incoming only the files marked ready (a file
being written does not: the owner's execute bit, pymta.queue.store), as
the queue manager counts them.

Collection lists directories, which is slow on a big queue: it runs where
prometheus-client collects, in the web resource's thread
(:mod:`pymta.metrics.web`), never on the reactor thread. Writes nothing;
logs nothing (a missing directory counts as empty).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pymta.queue.interface import QUEUE_NAMES
from pymta.queue.qid import is_queue_id
from pymta.queue.store import ready_queue_files

MAILDROP = "maildrop"


def count_queue(directory: str, queue: str) -> int:
    """Queue files in ``directory/queue`` (0 when it does not exist)."""
    path = os.path.join(directory, queue)
    try:
        if queue == "incoming":
            return sum(1 for _ in ready_queue_files(path))
        with os.scandir(path) as entries:
            if queue == MAILDROP:
                return sum(1 for entry in entries if entry.is_file(follow_symlinks=False))
            return sum(1 for entry in entries if is_queue_id(entry.name))
    except FileNotFoundError:
        return 0


class QueueCollector(Collector):
    """``pymta_queue_messages{queue}``: messages in each queue directory."""

    def __init__(self, queue_directory: str) -> None:
        self._directory = queue_directory

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "pymta_queue_messages", "Messages in each queue directory", labels=["queue"]
        )
        queues = list(QUEUE_NAMES)
        if os.path.isdir(os.path.join(self._directory, MAILDROP)):
            queues.append(MAILDROP)
        for queue in queues:
            family.add_metric([queue], count_queue(self._directory, queue))
        yield family
