"""``pymta postcat``: show a queued message, as Postfix's postcat(1).

``pymta postcat [-c DIR] [-e] [-h] [-b] -q QUEUE_ID`` (or a queue file's
path instead of ``-q``) prints the envelope (``-e``), the header (``-h``)
and the body (``-b``) of one message; without any of the three, all of
them. The layout is Postfix's: ``*** ENVELOPE RECORDS deferred/ID ***``,
one ``name: value`` line per envelope record (arrival time, sender,
attributes, each recipient with its original address, DSN parameters and
whether it is done), ``*** MESSAGE CONTENTS deferred/ID ***``, the
message, then ``*** MESSAGE FILE END deferred/ID ***``.

Untrusted input: the queue id (checked before it becomes a path) and the
queue file (validated by the store's decoder; a bad one is an error, not
a traceback). Writes nothing.
"""

from __future__ import annotations

import getopt
import os
import sys
import time

from pymta.cli.queue import Fatal, _fail, open_store
from pymta.queue import record
from pymta.queue.interface import QueueFileError
from pymta.queue.model import Envelope
from pymta.queue.qid import is_queue_id

USAGE = "usage: postcat [-c config_dir] [-e] [-h] [-b] -q queue_id | file"


def _envelope_lines(envelope: Envelope) -> list[str]:
    arrival = time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(envelope.arrival_time))
    lines = [f"message_arrival_time: {arrival}", f"sender: {envelope.sender}"]
    lines += [f"named_attribute: {k}={v}" for k, v in sorted(envelope.attributes.items())]
    for rcpt in envelope.recipients:
        if rcpt.original and rcpt.original != rcpt.address:
            lines.append(f"original_recipient: {rcpt.original}")
        if rcpt.orcpt:
            lines.append(f"dsn_orig_rcpt: {rcpt.orcpt}")
        if rcpt.notify:
            lines.append(f"dsn_notify_flags: {rcpt.notify}")
        # Postfix marks a delivered recipient by changing its record type.
        lines.append(f"{'done_recipient' if rcpt.done else 'recipient'}: {rcpt.address}")
    return lines


def render(envelope: Envelope, content: bytes, where: str, show: set[str]) -> str:
    """The postcat listing of one message (``show``: of e, h, b)."""
    out: list[str] = []
    if "e" in show:
        out.append(f"*** ENVELOPE RECORDS {where} ***")
        out += _envelope_lines(envelope)
    header, sep, body = content.partition(b"\n\n")
    if "h" in show or "b" in show:
        out.append(f"*** MESSAGE CONTENTS {where} ***")
    text_header = header.decode("utf-8", "replace")
    if "h" in show:
        out.append(text_header)
    if "b" in show and sep:
        if "h" in show:
            out.append("")
        out.append(body.decode("utf-8", "replace").rstrip("\n"))
    out.append(f"*** MESSAGE FILE END {where} ***")
    return "\n".join(out) + "\n"


def run(args: list[str], config_dir: str) -> int:
    try:
        try:
            opts, rest = getopt.getopt(args, "c:ehbq:")
        except getopt.GetoptError as e:
            raise Fatal(f"{e.msg}; {USAGE}") from None
        show: set[str] = set()
        queue_id = ""
        for opt, value in opts:
            if opt == "-c":
                config_dir = value
            elif opt == "-q":
                queue_id = value
            else:
                show.add(opt[1])
        show = show or {"e", "h", "b"}
        if bool(queue_id) == bool(rest) or len(rest) > 1:
            raise Fatal(USAGE)
        if queue_id:
            if not is_queue_id(queue_id):
                raise Fatal(f"invalid mail queue id: {queue_id}")
            store = open_store(config_dir)
            queue = store.find(queue_id)
            if queue is None:
                raise Fatal(f"open queue file {queue_id}: No such file or directory")
            try:
                envelope, content = store.read(queue_id, queue)
            except FileNotFoundError:
                raise Fatal(f"open queue file {queue_id}: No such file or directory") from None
            where = f"{queue}/{queue_id}"
        else:
            path = rest[0]
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise Fatal(f"open {path}: {e.strerror}") from None
            envelope, content, _flags = record.decode(data)
            where = os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path))
        sys.stdout.write(render(envelope, content, where, show))
    except QueueFileError as e:
        return _fail(Fatal(f"corrupt queue file: {e}"), sys.stderr)
    except Fatal as e:
        return _fail(e, sys.stderr)
    return 0
