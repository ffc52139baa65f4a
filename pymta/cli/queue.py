"""``pymta mailq``, ``pymta postqueue``, ``pymta flush`` and ``pymta postsuper``.

Mirror Postfix's mailq(1)/postqueue(1) (showq's listing, ``-p``; JSON lines
with ``-j`` as Postfix 3.1+ prints them; ``-f`` and ``pymta flush`` ask the
running queue manager to retry all deferred mail now by writing ``F`` to
its FIFO ``$queue_directory/public/qmgr``, see :mod:`pymta.qmgr.trigger`)
and postsuper(1) (``-d``, ``-h``,
``-H``, ``-r`` with a queue id, ``-`` for ids on stdin, or ``ALL``
optionally followed by a queue name). Each takes ``-c DIR``. ``postqueue
-i ID`` makes one deferred message due now. ``-r`` and ``-H`` put the
message in deferred/, due now, and wake a running queue manager through
the FIFO (``W``), which resolves its recipients again when it takes it;
every postsuper action is a mail log line (``QID: requeued``) in
``maillog_file`` (:mod:`pymta.cli.maillog`).

The queue directory is main.cf's queue_directory; a relative path is taken
relative to the current directory (pymta's embedded default). These
commands read the queue files directly, as Postfix's showq and postsuper
do; a file that vanishes during the scan (delivered meanwhile) or fails
validation is skipped. postsuper on a running system may race with the
queue manager for messages in active/, as in Postfix.

Untrusted input: the command line (queue ids are checked before they
become paths) and the queue files (validated). Writes: the queue
(postsuper). Logs: ``QID: removed`` etc. through maillog, and prints
Postfix's summaries (``postsuper: Deleted: 1 message``) on stderr.
"""

from __future__ import annotations

import datetime
import getopt
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

from pymta.cli.maillog import mail_events_to_log
from pymta.cli.progress import Progress, counted
from pymta.config import Config
from pymta.maillog import maillog
from pymta.qmgr.trigger import FLUSH, WAKEUP, send_trigger
from pymta.queue.interface import QueueFileError
from pymta.queue.qid import is_queue_id
from pymta.queue.store import FileQueueStore
from pymta.sync import ImmediateSyncBarrier

PROG = "pymta"
#: Queues mailq lists, in order, and the mark shown after the id.
LISTED_QUEUES = (("incoming", ""), ("active", "*"), ("deferred", ""), ("hold", "!"))
HEADER = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"


class Fatal(Exception):
    """A command error, printed as ``pymta: fatal: ...``."""


@dataclass
class QueuedMessage:
    """What the listings show of one message."""

    queue_name: str
    queue_id: str
    arrival_time: float
    size: int
    sender: str
    recipients: list[tuple[str, str]]  # (address, delay reason or "")


def open_store(config_dir: str) -> FileQueueStore:
    """The queue store of a configuration (the directory must exist)."""
    config = Config.load(config_dir)
    directory = config.get("queue_directory")
    if not os.path.isdir(directory):
        raise Fatal(f"queue directory {directory}: no such directory")
    return FileQueueStore(directory, ImmediateSyncBarrier())


def scan(store: FileQueueStore) -> Iterator[QueuedMessage]:
    """Every readable message in the listed queues, in Postfix's order."""
    for queue, _mark in LISTED_QUEUES:
        for qid in store.list(queue):
            try:
                envelope, content = store.read(qid, queue)
            except (OSError, QueueFileError):
                continue
            reasons = store.defer_reasons(qid)
            recipients = [
                (r.address, reasons.get(i, ("", ""))[1])
                for i, r in enumerate(envelope.recipients)
                if not r.done
            ]
            yield QueuedMessage(
                queue, qid, envelope.arrival_time, len(content), envelope.sender, recipients
            )


def format_mailq(messages: list[QueuedMessage], tz: datetime.tzinfo | None = None) -> str:
    """Postfix's mailq listing of messages."""
    if not messages:
        return "Mail queue is empty\n"
    marks = dict(LISTED_QUEUES)
    width = max(10, *(len(m.queue_id) for m in messages)) + 1
    lines = [HEADER]
    total = 0
    for m in messages:
        total += m.size
        if tz is None:
            moment = datetime.datetime.fromtimestamp(m.arrival_time)
        else:
            moment = datetime.datetime.fromtimestamp(m.arrival_time, tz)
        # Postfix's showq: the day of the month padded with a space ("Dec  7").
        arrival = moment.strftime("%a %b %e %H:%M:%S")
        ident = m.queue_id + marks.get(m.queue_name, "")
        sender = m.sender or "MAILER-DAEMON"
        lines.append(f"{ident:<{width}}{m.size:>8} {arrival:>19}  {sender}")
        last_reason = ""
        for address, reason in m.recipients:
            if reason and reason != last_reason:
                lines.append(f"({reason})")
                last_reason = reason
            lines.append(" " * (width + 30) + address)
        lines.append("")
    count = len(messages)
    kbytes = math.ceil(total / 1024)
    lines.append(f"-- {kbytes} Kbytes in {count} Request{'s' if count != 1 else ''}.")
    return "\n".join(lines) + "\n"


def format_json(messages: list[QueuedMessage]) -> str:
    """Postfix's ``postqueue -j``: one JSON object per message, per line."""
    out = []
    for m in messages:
        record = {
            "queue_name": m.queue_name,
            "queue_id": m.queue_id,
            "arrival_time": int(m.arrival_time),
            "message_size": m.size,
            "forced_expire": False,
            "sender": m.sender,
            "recipients": [
                {"address": a, "delay_reason": r} if r else {"address": a} for a, r in m.recipients
            ],
        }
        out.append(json.dumps(record) + "\n")
    return "".join(out)


def _config_dir(
    args: list[str], config_dir: str, options: str
) -> tuple[list[tuple[str, str]], list[str], str]:
    try:
        opts, rest = getopt.getopt(args, options)
    except getopt.GetoptError as e:
        raise Fatal(e.msg) from None
    kept: list[tuple[str, str]] = []
    for opt, value in opts:
        if opt == "-c":
            config_dir = value
        else:
            kept.append((opt, value))
    return kept, rest, config_dir


def _fail(e: Exception, stream: TextIO) -> int:
    print(f"{PROG}: fatal: {e}", file=stream)
    return 1


def run_mailq(args: list[str], config_dir: str) -> int:
    """``pymta mailq``: the queue listing (same as ``postqueue -p``)."""
    try:
        _, _, config_dir = _config_dir(args, config_dir, "c:")
        store = open_store(config_dir)
        sys.stdout.write(format_mailq(list(scan(store))))
    except Fatal as e:
        return _fail(e, sys.stderr)
    return 0


def flush(config_dir: str) -> None:
    """Ask the running server to retry all deferred mail now (Fatal when it is down)."""
    config = Config.load(config_dir)
    directory = config.get("queue_directory")
    try:
        send_trigger(directory, FLUSH)
    except (ConnectionRefusedError, FileNotFoundError):
        raise Fatal("Cannot flush mail queue - mail system is down") from None
    except OSError as e:
        raise Fatal(f"Cannot flush mail queue: {e.strerror}") from None


def deliver_now(store: FileQueueStore, queue_ids: list[str]) -> None:
    """``postqueue -i``: make these deferred messages due now and wake the
    queue manager (Postfix asks its flush service for the same)."""
    for qid in queue_ids:
        if not is_queue_id(qid):
            raise Fatal(f"invalid mail queue id: {qid}")
        if store.find(qid) != "deferred":
            raise Fatal(f"{qid}: no such message in the deferred queue")
        store.set_next_attempt(qid, time.time())
    try:
        send_trigger(store.directory, WAKEUP)
    except (ConnectionRefusedError, FileNotFoundError):
        raise Fatal("Cannot flush mail queue - mail system is down") from None


def wake_up(queue_directory: str) -> None:
    """Tell a running queue manager that deferred mail is due now; nothing
    when none runs (it scans deferred/ when it starts)."""
    try:
        send_trigger(queue_directory, WAKEUP)
    except OSError:
        pass


def run_flush(args: list[str], config_dir: str) -> int:
    """``pymta flush``: the same as ``postqueue -f``."""
    try:
        _, rest, config_dir = _config_dir(args, config_dir, "c:")
        if rest:
            raise Fatal("usage: flush [-c config_dir]")
        flush(config_dir)
    except Fatal as e:
        return _fail(e, sys.stderr)
    return 0


def run_postqueue(args: list[str], config_dir: str) -> int:
    """``pymta postqueue -p`` (listing), ``-j`` (JSON lines) or ``-f`` (flush)."""
    try:
        opts, _, config_dir = _config_dir(args, config_dir, "c:pjfi:")
        modes = {opt for opt, _ in opts}
        if len(modes) != 1:
            raise Fatal("usage: postqueue [-c config_dir] -p | -j | -f | -i queue_id")
        if "-f" in modes:
            flush(config_dir)
            return 0
        if "-i" in modes:
            deliver_now(open_store(config_dir), [v for o, v in opts if o == "-i"])
            return 0
        store = open_store(config_dir)
        messages = list(scan(store))
        if "-j" in modes:
            sys.stdout.write(format_json(messages))
        else:
            sys.stdout.write(format_mailq(messages))
    except Fatal as e:
        return _fail(e, sys.stderr)
    return 0


# postsuper ------------------------------------------------------------------

_ACTIONS = {
    "-d": ("Deleted", ("incoming", "active", "deferred", "hold", "corrupt")),
    "-h": ("Placed on hold", ("incoming", "active", "deferred")),
    "-H": ("Released from hold", ("hold",)),
    "-r": ("Requeued", ("incoming", "active", "deferred", "hold")),
}
_ALL_QUEUES = ("incoming", "active", "deferred", "hold", "corrupt")


def _targets(
    store: FileQueueStore, value: str, queue: str | None, sources: tuple[str, ...]
) -> list[tuple[str, str]]:
    """(queue id, queue) pairs an action applies to."""
    if queue is not None and queue not in _ALL_QUEUES:
        raise Fatal(f"invalid directory name: {queue}")
    queues = [q for q in sources if queue is None or q == queue]
    if value == "ALL":
        return [(qid, q) for q in queues for qid in store.list(q)]
    ids = sys.stdin.read().split() if value == "-" else [value]
    found = []
    for qid in ids:
        if not is_queue_id(qid):
            print(f"{PROG}: warning: invalid mail queue id: {qid}", file=sys.stderr)
            continue
        where = store.find(qid)
        if where is not None and where in queues:
            found.append((qid, where))
    return found


def _apply(store: FileQueueStore, action: str, qid: str, queue: str, now: float) -> bool:
    try:
        if action == "-d":
            store.remove(qid, queue)
            maillog("postsuper", f"{qid}: removed")
        elif action == "-h":
            store.move(qid, queue, "hold")
            maillog("postsuper", f"{qid}: placed on hold")
        elif action == "-H":
            store.move(qid, queue, "deferred")
            store.set_next_attempt(qid, now)
            maillog("postsuper", f"{qid}: released from hold")
        else:
            # Due now in deferred/: a running queue manager takes it at the
            # wake-up postsuper sends (or its next scan), a stopped one at
            # its start. Recipients are resolved again when it is taken.
            if queue != "deferred":
                store.move(qid, queue, "deferred")
            store.set_next_attempt(qid, now)
            maillog("postsuper", f"{qid}: requeued")
    except FileNotFoundError:
        return False  # gone meanwhile (delivered or moved by qmgr)
    return True


def run_postsuper(args: list[str], config_dir: str) -> int:
    """``pymta postsuper -d|-h|-H|-r QID|-|ALL [queue]`` (options may repeat)."""
    try:
        opts, rest, config_dir = _config_dir(args, config_dir, "c:d:h:H:r:")
        if not opts:
            raise Fatal("usage: postsuper [-c config_dir] [-d|-h|-H|-r queue_id|-|ALL [queue]]")
        if len(rest) > 1:
            raise Fatal(f"unexpected arguments: {' '.join(rest[1:])}")
        queue = rest[0] if rest else None
        store = open_store(config_dir)
        now = time.time()
        counts: dict[str, int] = {}
        with mail_events_to_log(Config.load(config_dir)):
            for action, value in opts:
                label, sources = _ACTIONS[action]
                targets = _targets(store, value, queue, sources)
                with Progress(f"postsuper: {label}", len(targets)) as progress:
                    for qid, where in counted(targets, progress):
                        if _apply(store, action, qid, where, now):
                            counts[label] = counts.get(label, 0) + 1
        for action in _ACTIONS:
            label = _ACTIONS[action][0]
            n = counts.get(label, 0)
            if n:
                print(f"postsuper: {label}: {n} message{'s' if n != 1 else ''}", file=sys.stderr)
        if counts.get("Requeued") or counts.get("Released from hold"):
            wake_up(store.directory)
    except Fatal as e:
        return _fail(e, sys.stderr)
    return 0
