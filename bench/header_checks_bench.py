"""What header and body checks cost in cleanup, per message, on the reactor thread.

    PYTHONPATH=. python bench/header_checks_bench.py [--messages 2000] [--rules 50]

Submits the same messages (a plain 4 KB text message and a 3-part MIME
message of about 20 KB) to an in-memory Cleanup without checks, and with
header_checks and body_checks regexp: tables of --rules rules that never
match (the common case: every header and body line is tried against every
rule). Prints microseconds per message for each and the difference, which
is time the reactor spends inside cleanup.
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from pathlib import Path

from twisted.internet.task import Clock

from pymta.cleanup import Cleanup
from pymta.config import Config
from pymta.queue.memory import MemoryQueueStore
from pymta.queue.model import Envelope, Recipient
from pymta.rewrite import Resolver
from pymta.tables import TableCache, open_maps

MAIN_CF = """
myhostname = mx.example.org
mydestination = $myhostname
virtual_mailbox_domains = example.test
virtual_mailbox_maps = inline:{ bob@example.test=b/ }
alias_maps =
"""

PLAIN = (
    b"From: alice@client.example\nTo: bob@example.test\nSubject: plain text\n"
    b"Message-ID: <1@client.example>\nDate: Mon, 7 Dec 2026 12:00:00 +0000\n\n"
    + b"A line of ordinary text that goes on for a while, as text does.\n"
    * 64
)
PART = b"Some text of a part that is long enough to look like mail.\n" * 100
MIME = (
    b"From: alice@client.example\nTo: bob@example.test\nSubject: mime\n"
    b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b1"\n\n'
    + b"".join(
        b"--b1\nContent-Type: text/plain\nContent-Disposition: inline\n\n" + PART for _ in range(3)
    )
    + b"--b1--\n"
)


def cleanup(extra: str) -> Cleanup:
    config = Config.from_text(MAIN_CF + extra)
    clock = Clock()
    clock.advance(1_700_000_000)
    cache = TableCache()
    return Cleanup(
        config,
        MemoryQueueStore(clock),
        Resolver(config),
        clock=clock,
        open_maps=lambda specs, cfg: open_maps(specs, cfg, cache=cache),
        tz=datetime.UTC,
    )


def per_message(service: Cleanup, content: bytes, count: int) -> float:
    envelope = Envelope(
        "alice@client.example",
        [Recipient("bob@example.test")],
        0.0,
        {"client_address": "192.0.2.1", "client_name": "c.example", "protocol": "ESMTP"},
    )
    start = time.perf_counter()
    for _ in range(count):
        service.submit(envelope, content)
    return (time.perf_counter() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rules", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        rules = "".join(f"/^X-Never-{i}: .*spam{i}/ REJECT\n" for i in range(args.rules))
        body = "".join(f"/never-seen-{i} [0-9]+ times/ REJECT\n" for i in range(args.rules))
        (Path(directory) / "hc").write_text(rules)
        (Path(directory) / "bc").write_text(body)
        plain = cleanup("")
        checked = cleanup(
            f"header_checks = regexp:{directory}/hc\nbody_checks = pcre:{directory}/bc\n"
        )
        for name, content in (("plain 4KB", PLAIN), ("MIME 3 parts 20KB", MIME)):
            without = per_message(plain, content, args.messages)
            with_checks = per_message(checked, content, args.messages)
            print(
                f"{name}: {without:.0f} us/msg without checks, {with_checks:.0f} us/msg with"
                f" {args.rules} header + {args.rules} body rules"
                f" (+{with_checks - without:.0f} us)"
            )


if __name__ == "__main__":
    main()
