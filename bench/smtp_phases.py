#!/usr/bin/env python3
"""smtp_phases - where one SMTP connection's time goes, phase by phase.

SYNOPSIS
    python bench/smtp_phases.py [--messages 2000] [--size 1024]
        [--only postfix|pymta] [--warmup 50] [--workdir /var/tmp] [--json]
        [--pymta-main-cf LINE]...

DESCRIPTION
    The one-connection cell of bench/smtp_bench.py (one message per
    connection, one connection at a time), seen from the client: builds
    the same private Postfix and pymta instances (bench_setup,
    bench_postfix, bench_pymta), then sends --messages messages of --size
    bytes to each, one after the other, with a plain blocking socket and
    a timestamp around every exchange:

        connect   connect() until the 220 greeting has arrived
        ehlo      EHLO until its last 250 line
        mail      MAIL FROM until 250
        rcpt      RCPT TO until 250
        data      DATA until 354
        commit    the content and "." until "250 ... queued": the
                  server's content handling, queue file write, durable
                  commit (fsync/syncfs) and the hops around it
        quit      QUIT until 221 (then the client closes, as smtp-source
                  does, without waiting for the server's close)

    The disk's side: the journal commits and the device's writes and
    flushes per message of the file system under --workdir, from the
    kernel's counters (/proc/fs/jbd2/DEVICE-*/info and
    /sys/dev/block/MAJOR:MINOR/stat), over the measured messages: exact
    counts, not timings, but they count whatever else writes to that file
    system meanwhile (give the bench a file system of its own to trust
    them). Printed as n/a where the file system has no journal or its
    device has no such files.

    It prints each phase's median and mean in microseconds, the whole
    message's, the round trips' share (every phase but commit: what a
    server spends on a command and its reply, kernel and loopback
    included), the client's own CPU per message (this process), and the
    server's CPU per message over the run (/proc: the whole process tree,
    and its main threads alone). Deliveries are not waited for: this
    measures the acceptance path a one-connection client waits on; the
    delivery work runs meanwhile and its CPU is in the server's figure.

    pymta's side of the commit: the pymta instance also serves its
    metrics on a loopback port (a master.cf "metrics" line), read before
    and after the measured messages; printed per group-commit barrier
    (queue: the queue files a 250 waits for; mailbox: the deliveries) are
    the syncs, the mean batch and the mean of each batch's phases
    (pymta_sync_seconds): wait (from the oldest writer's call until its
    batch began on the barrier's thread: the batch before it, the
    mailbox's delay, the thread hand-off), work (the file writes),
    sync (syncfs or the fsyncs; with the queue's intake log, its
    fdatasync), and checkpoint (the intake log's: a syncfs and its
    header; its count in ckpts). The commit phase above minus the
    queue's wait, work and sync is the reactor's part and the hops.

    Phases are wall-clock times on a shared machine: compare servers run
    by the same invocation, never figures from different runs.

REQUIREMENTS
    As bench/smtp_bench.py: root, Debian's postfix package, a real disk
    under --workdir.

EXAMPLES
    python bench/smtp_phases.py --messages 2000
    python bench/smtp_phases.py --only pymta --messages 500 --json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pwd
import shutil
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_measure import free_loopback_port, main_thread_cpu_seconds, tree_cpu_seconds
from bench_postfix import PostfixServer, postfix_missing
from bench_pymta import PymtaServer
from bench_setup import DOMAIN, LISTEN_HOST, SENDER, BenchServer, MailSetup

PHASES = ("connect", "ehlo", "mail", "rcpt", "data", "commit", "quit")
BARRIER_PHASES = ("wait", "work", "sync", "checkpoint")


def _width(phase: str) -> int:
    """A phase column's width: its name and " us", and a space."""
    return max(10, len(phase) + 4)


class MeasuredPymta(PymtaServer):
    """pymta with its metrics endpoint on a loopback port of its own."""

    def __init__(self, workdir: Path, setup: MailSetup, extra_main_cf: str = "") -> None:
        super().__init__(workdir, setup, extra_main_cf=extra_main_cf)
        self.metrics_port = free_loopback_port(LISTEN_HOST)

    def write_config(self) -> None:
        super().write_config()
        master_cf = self.config / "master.cf"
        line = f"{LISTEN_HOST}:{self.metrics_port} inet n - n - - metrics\n"
        master_cf.write_text(master_cf.read_text() + line)

    def sync_figures(self) -> dict[str, float]:
        """The barriers' counters: {name{labels}: value} of the sync families."""
        url = f"http://{LISTEN_HOST}:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        figures: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith(("pymta_sync_seconds_", "pymta_sync_batch_size_", "pymta_syncs")):
                name, _, value = line.rpartition(" ")
                if "_bucket" not in name:
                    figures[name] = float(value)
        return figures


class DiskCounters:
    """The kernel's counters of the block device holding a directory:
    journal commits (jbd2's transactions), writes and flushes completed."""

    def __init__(self, directory: Path) -> None:
        device = os.stat(directory).st_dev
        self.stat = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}/stat")
        name = self.stat.parent.resolve().name
        journals = sorted(Path("/proc/fs/jbd2").glob(f"{name}-*/info"))
        self.journal = journals[0] if journals else None

    def read(self) -> dict[str, int] | None:
        try:
            fields = self.stat.read_text().split()
            # Documentation/block/stat.rst: writes completed is the 5th
            # field, flushes completed the 16th (kernels since 5.5).
            counts = {"writes": int(fields[4]), "flushes": int(fields[15])}
            if self.journal is not None:
                counts["commits"] = int(self.journal.read_text().split()[0])
        except (OSError, IndexError, ValueError):
            return None
        return counts


def disk_per_message(
    before: dict[str, int] | None, after: dict[str, int] | None, messages: int
) -> dict[str, float]:
    if before is None or after is None:
        return {}
    return {key: (after[key] - before[key]) / messages for key in after if key in before}


def barrier_breakdown(before: dict[str, float], after: dict[str, float]) -> dict[str, object]:
    """Per barrier, over the measured messages: syncs, mean batch, and the
    mean microseconds of each phase of a batch."""

    def grew(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    result: dict[str, object] = {}
    for barrier in ("queue", "mailbox"):
        label = f'barrier="{barrier}"'
        syncs = grew(f"pymta_syncs_total{{{label}}}")
        batches = grew(f"pymta_sync_batch_size_count{{{label}}}")
        pieces = grew(f"pymta_sync_batch_size_sum{{{label}}}")
        row: dict[str, float] = {
            "syncs": syncs,
            "mean_batch": pieces / batches if batches else 0.0,
        }
        for phase in BARRIER_PHASES:
            labels = f'{label},phase="{phase}"'
            count = grew(f"pymta_sync_seconds_count{{{labels}}}")
            total = grew(f"pymta_sync_seconds_sum{{{labels}}}")
            row[f"{phase}_us"] = 1e6 * total / count if count else 0.0
            if phase == "checkpoint":
                row["checkpoints"] = count
        result[barrier] = row
    return result


class Conversation:
    """One SMTP session over a blocking socket, reading whole replies."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((LISTEN_HOST, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending = b""

    def reply(self) -> bytes:
        """Read until a reply's last line (``NNN `` at the start of a line)."""
        while True:
            end = self.pending.find(b"\r\n")
            while end >= 0:
                line, self.pending = self.pending[:end], self.pending[end + 2 :]
                if len(line) < 4 or line[3:4] != b"-":
                    return line
                end = self.pending.find(b"\r\n")
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.pending += data

    def command(self, data: bytes, expect: bytes) -> None:
        self.sock.sendall(data)
        line = self.reply()
        if not line.startswith(expect):
            raise RuntimeError(f"{data[:20]!r} answered {line!r}")

    def close(self) -> None:
        self.sock.close()


def message_text(size: int, number: int) -> bytes:
    """A message of about size bytes, dot-stuffing-free, ending with CRLF."""
    head = f"From: <{SENDER}>\r\nTo: <bench@{DOMAIN}>\r\nSubject: phases {number}\r\n\r\n"
    body_len = max(0, size - len(head))
    line = b"x" * 78 + b"\r\n"
    body = (line * (body_len // len(line) + 1))[:body_len]
    if body and not body.endswith(b"\r\n"):
        body = body[:-2] + b"\r\n" if len(body) >= 2 else b"\r\n"
    return head.encode() + body


def one_message(port: int, recipient: str, content: bytes) -> list[float]:
    """The phase durations (seconds) of one message on a new connection."""
    stamps = [time.perf_counter()]
    talk = Conversation(port)
    try:
        line = talk.reply()
        if not line.startswith(b"220"):
            raise RuntimeError(f"greeting {line!r}")
        stamps.append(time.perf_counter())
        talk.command(b"EHLO phases.bench.test\r\n", b"250")
        stamps.append(time.perf_counter())
        talk.command(f"MAIL FROM:<{SENDER}>\r\n".encode(), b"250")
        stamps.append(time.perf_counter())
        talk.command(f"RCPT TO:<{recipient}>\r\n".encode(), b"250")
        stamps.append(time.perf_counter())
        talk.command(b"DATA\r\n", b"354")
        stamps.append(time.perf_counter())
        talk.command(content + b".\r\n", b"250")
        stamps.append(time.perf_counter())
        talk.command(b"QUIT\r\n", b"221")
        stamps.append(time.perf_counter())
    finally:
        talk.close()
    return [b - a for a, b in itertools.pairwise(stamps)]


def measure(
    server: BenchServer, recipient: str, messages: int, size: int, disk: DiskCounters | None = None
) -> dict[str, object]:
    """Send messages one connection at a time; the phases' figures."""
    roots = server.root_pids()
    disk_before = disk.read() if disk is not None else None
    sync_before = server.sync_figures() if isinstance(server, MeasuredPymta) else {}
    cpu_before = tree_cpu_seconds(roots)
    main_before = main_thread_cpu_seconds(roots)
    own_before = time.process_time()
    rows = [one_message(server.port, recipient, message_text(size, n)) for n in range(messages)]
    own = time.process_time() - own_before
    cpu = tree_cpu_seconds(roots) - cpu_before
    main_cpu = main_thread_cpu_seconds(roots) - main_before
    disk_after = disk.read() if disk is not None else None
    barriers = (
        barrier_breakdown(sync_before, server.sync_figures())
        if isinstance(server, MeasuredPymta)
        else {}
    )
    columns = list(zip(*rows, strict=True))
    totals = [sum(row) for row in rows]
    trips = [sum(row) - row[PHASES.index("commit")] for row in rows]
    return {
        "server": server.name,
        "messages": messages,
        "size": size,
        "median_us": {p: 1e6 * statistics.median(c) for p, c in zip(PHASES, columns, strict=True)},
        "mean_us": {p: 1e6 * statistics.fmean(c) for p, c in zip(PHASES, columns, strict=True)},
        "total_median_us": 1e6 * statistics.median(totals),
        "total_mean_us": 1e6 * statistics.fmean(totals),
        "round_trips_median_us": 1e6 * statistics.median(trips),
        "client_cpu_us": 1e6 * own / messages,
        "server_cpu_ms": 1000 * cpu / messages,
        "server_main_thread_cpu_ms": 1000 * main_cpu / messages,
        "barriers": barriers,
        "disk_per_message": disk_per_message(disk_before, disk_after, messages),
    }


def render(results: list[dict[str, object]]) -> str:
    names = [str(r["server"]) for r in results]
    head = f"{'phase (us)':<22}" + "".join(f"{n + ' med':>14}{n + ' mean':>14}" for n in names)
    lines = [head, "-" * len(head)]
    for phase in PHASES:
        cells = ""
        for r in results:
            med = r["median_us"]
            mean = r["mean_us"]
            assert isinstance(med, dict) and isinstance(mean, dict)
            cells += f"{med[phase]:>14.0f}{mean[phase]:>14.0f}"
        lines.append(f"{phase:<22}{cells}")
    for label, key, spec in (
        ("whole message", "total", "{:>14.0f}"),
        ("round trips (median)", "round_trips_median_us", "{:>14.0f}"),
        ("client CPU (us)", "client_cpu_us", "{:>14.0f}"),
        ("server CPU (ms)", "server_cpu_ms", "{:>14.3f}"),
        ("server main thr. (ms)", "server_main_thread_cpu_ms", "{:>14.3f}"),
    ):
        cells = ""
        for r in results:
            if key == "total":
                cells += f"{r['total_median_us']:>14.0f}{r['total_mean_us']:>14.0f}"
            else:
                cells += spec.format(r[key]) + " " * 14
        lines.append(f"{label:<22}{cells}")
    for r in results:
        disk = r.get("disk_per_message")
        keys = ("commits", "writes", "flushes")
        figures = "n/a"
        if isinstance(disk, dict) and disk:
            figures = ", ".join(f"{key} {disk[key]:.2f}" for key in keys if key in disk)
        lines.append(f"{r['server']}: per message on the disk: {figures}")
    for r in results:
        rate = 1e6 / float(r["total_mean_us"])  # type: ignore[arg-type]
        lines.append(f"{r['server']}: {rate:.0f} messages/s over one connection at a time")
    for r in results:
        barriers = r.get("barriers")
        if not isinstance(barriers, dict) or not barriers:
            continue
        lines.append(
            f"{r['server']} group commit (means) {'syncs':>8} {'batch':>6}"
            + "".join(f"{phase + ' us':>{_width(phase)}}" for phase in BARRIER_PHASES)
            + f"{'ckpts':>7}"
        )
        for name, row in barriers.items():
            lines.append(
                f"  {name:<28} {row['syncs']:>8.0f} {row['mean_batch']:>6.1f}"
                + "".join(f"{row[phase + '_us']:>{_width(phase)}.0f}" for phase in BARRIER_PHASES)
                + f"{row.get('checkpoints', 0):>7.0f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--only", choices=("postfix", "pymta"))
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    p.add_argument("--mailbox-user", default="nobody")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--pymta-main-cf",
        action="append",
        default=[],
        metavar="LINE",
        help="a main.cf line for pymta only (repeatable), e.g. 'pymta_sync_method = fsync'",
    )
    args = p.parse_args(argv)
    wanted = [args.only] if args.only else ["postfix", "pymta"]
    if "postfix" in wanted and (why := postfix_missing()):
        print(why, file=sys.stderr)
        return 2
    owner = pwd.getpwnam(args.mailbox_user)
    recipient = f"run1@{DOMAIN}"
    setup = MailSetup((f"warmup@{DOMAIN}", recipient), owner.pw_uid, owner.pw_gid)
    args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="smtp-phases.", dir=args.workdir))
    results: list[dict[str, object]] = []
    servers: list[BenchServer] = []
    try:
        for name in wanted:
            extra = "".join(f"{line}\n" for line in args.pymta_main_cf)
            server: BenchServer = (
                PostfixServer(workdir, setup)
                if name == "postfix"
                else MeasuredPymta(workdir, setup, extra_main_cf=extra)
            )
            servers.append(server)
            print(f"starting {name} on {LISTEN_HOST}:{server.port}", file=sys.stderr)
            server.start()
            measure(server, f"warmup@{DOMAIN}", args.warmup, args.size)
            disk = DiskCounters(workdir)
            results.append(measure(server, recipient, args.messages, args.size, disk))
            server.stop()
    finally:
        for server in servers:
            server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results, indent=2) if args.json else render(results))
    return 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("smtp_phases: run as root (the Postfix instance needs it)", file=sys.stderr)
    sys.exit(main())
