#!/usr/bin/env python3
"""smtp_bench - Postfix and pymta side by side: SMTP accept + Maildir delivery.

SYNOPSIS
    python bench/smtp_bench.py [--messages 5000] [--sizes 1024,10240]
        [--connections 1,20] [--only postfix|pymta] [--json]
        [--pymta-processes 1] [--pymta-main-cf LINE] [--repeat 1]
        [--warmup 50] [--timeout 600] [--workdir /var/tmp] [--keep]

DESCRIPTION
    In one run, on loopback only, as root:

    1. builds a private Postfix instance in a temporary directory (its own
       config, queue and data directories, a virtual mailbox domain
       bench.test delivered to Maildirs, smtpd on a free 127.0.0.1 port,
       no chroot, fsync on, maillog_file in the directory) and starts it
       with "postfix -c DIR start";
    2. builds pymta with the same main.cf/master.cf, plus
       "pymta_processes = N" (--pymta-processes: reactor processes sharing
       the listening socket and the queue) and any --pymta-main-cf lines,
       and runs it as "twistd -n --pidfile= pymta --config DIR";
    3. for every message size and connection count, and for each server
       in turn, runs Postfix's load generator

           smtp-source -s CONNECTIONS -m MESSAGES -l SIZE -c
               -f sender@bench.test -t runN@bench.test 127.0.0.1:PORT

       (one message per connection: smtp-source reuses a connection only
       with -d) and measures, from its start, the time until it exits
       (every DATA answered: "accept") and until every message is a file
       in the recipient's Maildir new/ (polled every 20 ms: "deliver"),
       and the CPU time the server's processes spent (/proc/PID/stat of
       the server's process tree, reaped children included), and of that
       the processes' main threads alone (/proc/PID/task/PID/stat: for
       pymta its reactors, without the worker threads whose fsync and
       syncfs kernel time follows the whole disk's load, other
       processes' writes included; printed with each run), and the
       most memory the server's process tree held meanwhile (the PSS of
       every process summed, /proc/PID/smaps_rollup, sampled every half
       second: Postfix's master, smtpd, cleanup, qmgr, virtual...
       against pymta's reactor processes);
    4. prints a table - size, connections, msg/s for each server, the
       ratio pymta/postfix, CPU ms per message for each, the accept
       rate alone, and the peak PSS of each server's processes in MiB -
       and a summary line, or with --json every run's
       figures as one JSON document.  --repeat N runs the whole grid N
       times (servers interleaved, every other repetition pymta first)
       and the table shows each cell's run of median rate: the figures
       of a shared 2-core machine are noisy;
    5. measures the disk as a reference: fsync'd 1 KiB file creations
       per second from 1 thread and from 20 threads.

    Each run sends to its own recipient, so runs never mix and a
    duplicate delivery would show as more files than messages.  Before
    the measured runs each server gets --warmup messages (not counted).
    Both servers are always stopped at the end, also on error or ^C; the
    temporary directory is removed unless --keep is given.  A system
    Postfix (port 25) is never touched.

REQUIREMENTS
    root; Debian's postfix package for postfix and smtp-source
    (apt-get install -y postfix); pymta's twistd plugin in this checkout.
    Keep the temporary directory on a real disk (--workdir): on tmpfs
    fsync is free and the figures mean nothing. Keep it off ext4 without
    a journal too (the bench warns): there each file creation walks the
    inodes deleted in the last minutes, so both servers' CPU per message
    follows the recent deletions of everything on the disk (a queue file
    per message: hundreds of microseconds a creation at these rates).
    A journaled ext4 in a file will do: truncate -s 4G img; mkfs.ext4 -q
    img; mount -o loop img DIR; --workdir DIR.

EXAMPLES
    python bench/smtp_bench.py --only postfix --messages 500
    python bench/smtp_bench.py --messages 5000 --json > bench.json
    python bench/smtp_bench.py --messages 2000 --connections 20 --pymta-processes 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_measure import (
    count_maildir_new,
    disk_fsync_rate,
    main_thread_cpu_between,
    main_thread_ticks,
    run_load,
    tree_cpu_seconds,
    tree_pss_kib,
)
from bench_postfix import PostfixServer, postfix_missing
from bench_pymta import PymtaServer
from bench_setup import DOMAIN, LISTEN_HOST, SENDER, BenchServer, MailSetup

SMTP_SOURCE = "/usr/sbin/smtp-source"
SERVERS = ("postfix", "pymta")


@dataclass
class RunResult:
    """One server, one size, one connection count."""

    server: str
    recipient: str
    size: int
    connections: int
    messages: int
    delivered: int
    accept_seconds: float
    deliver_seconds: float | None
    accept_rate: float
    rate: float | None  # accept + deliver, messages per second
    cpu_seconds: float
    cpu_ms_per_message: float
    # The servers' main threads alone (pymta: the reactors; see
    # bench_measure.main_thread_ticks; processes that exited during the
    # run, as Postfix's idle smtpd processes do, are left out).
    main_thread_ms_per_message: float
    # The most memory the server's process tree held while the run went on
    # (PSS summed over every process, sampled every half second).
    peak_pss_mib: float
    error: str | None


def parse_int_list(text: str) -> list[int]:
    """ "1024,10240" -> [1024, 10240]; every item must be positive."""
    values = [int(item) for item in text.split(",") if item.strip()]
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive integers: {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(
        description="Postfix and pymta side by side: SMTP accept + Maildir delivery."
    )
    p.add_argument("--messages", type=int, default=5000, help="messages per run")
    p.add_argument(
        "--sizes", type=parse_int_list, default=[1024, 10240], help="message bytes, e.g. 1024,10240"
    )
    p.add_argument(
        "--connections", type=parse_int_list, default=[1, 20], help="parallel sessions, e.g. 1,20"
    )
    p.add_argument("--only", choices=SERVERS, help="benchmark one server only")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--pymta-processes",
        type=int,
        default=1,
        help="pymta_processes in pymta's main.cf (0: one per CPU; default 1)",
    )
    p.add_argument(
        "--pymta-main-cf",
        action="append",
        default=[],
        metavar="LINE",
        help="an extra main.cf line for pymta (repeatable)",
    )
    p.add_argument("--repeat", type=int, default=1, help="runs per cell (table: median)")
    p.add_argument("--warmup", type=int, default=50, help="unmeasured messages first")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    p.add_argument("--disk-files", type=int, default=1000, help="files for the disk figure")
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"), help="temp dir parent")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--mailbox-user", default="nobody", help="owner of the Maildirs")
    args = p.parse_args(argv)
    for name in ("messages", "repeat", "disk_files"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.pymta_processes < 0:
        p.error("--pymta-processes must be 0 (one per CPU) or more")
    return args


def ext4_without_journal(path: Path) -> bool:
    """Whether path is on an ext4 file system mounted without a journal
    (/sys/fs/ext4/DEV/journal_task reads "<none>")."""
    best = ""
    device = ""
    try:
        with open("/proc/self/mountinfo") as mounts:
            for line in mounts:
                fields = line.split()
                point = fields[4]
                tail = fields[fields.index("-") + 1 :]
                inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best = point
                    device = tail[1] if tail[0] == "ext4" else ""
        if not device:
            return False
        task = Path("/sys/fs/ext4") / Path(os.path.realpath(device)).name / "journal_task"
        return task.read_text().strip() == "<none>"
    except (OSError, ValueError, IndexError):
        return False


#: Why a journal-less ext4 skews the figures (printed when found).
NO_JOURNAL_WARNING = (
    "warning: {path} is on ext4 without a journal: there the kernel's inode"
    " allocator skips every inode deleted in the last 60 s (360 s while its"
    " inode table block is dirty), so each file creation costs CPU in"
    " proportion to the recent deletions of both servers and of every other"
    " program on the disk (hundreds of microseconds per queue or Maildir file"
    " at these rates); for CPU figures use --workdir on a journaled file system"
)


def progress(text: str) -> None:
    """Progress goes to stderr, so that --json output stays clean."""
    print(text, file=sys.stderr, flush=True)


def smtp_source_argv(port: int, connections: int, messages: int, size: int, rcpt: str) -> list[str]:
    """The smtp-source command line for one run."""
    return [
        SMTP_SOURCE,
        "-s", str(connections),
        "-m", str(messages),
        "-l", str(size),
        "-c",
        "-f", SENDER,
        "-t", rcpt,
        f"{LISTEN_HOST}:{port}",
    ]  # fmt: skip


def measure(
    server: BenchServer,
    *,
    size: int,
    connections: int,
    messages: int,
    recipient: str,
    timeout: float,
    scratch: Path,
) -> RunResult:
    """One smtp-source run against server, timed until all is delivered."""
    argv = smtp_source_argv(server.port, connections, messages, size, recipient)
    roots = server.root_pids()
    cpu_before = tree_cpu_seconds(roots)
    main_before = main_thread_ticks(roots)
    output = scratch / f"smtp-source.{server.name}.{recipient}.out"
    peak = [tree_pss_kib(roots)]

    def sample_memory() -> None:
        peak[0] = max(peak[0], tree_pss_kib(roots))

    with open(output, "wb") as out:
        load = run_load(
            argv, server.maildir_new(recipient), messages, timeout, out, sample=sample_memory
        )
    sample_memory()
    cpu = tree_cpu_seconds(roots) - cpu_before
    main_cpu = main_thread_cpu_between(main_before, main_thread_ticks(roots))
    error = None
    if load.returncode != 0:
        tail = output.read_text(errors="replace").strip().splitlines()[-3:]
        error = f"smtp-source exit {load.returncode}: {' | '.join(tail)}"
    elif load.delivered_after is None:
        error = f"timeout: {load.delivered}/{messages} delivered after {timeout:.0f}s"
    elif load.delivered != messages:
        error = f"{load.delivered} files for {messages} messages (duplicates)"
    return RunResult(
        server=server.name,
        recipient=recipient,
        size=size,
        connections=connections,
        messages=messages,
        delivered=load.delivered,
        accept_seconds=load.accepted_after,
        deliver_seconds=load.delivered_after,
        accept_rate=messages / load.accepted_after,
        rate=None if load.delivered_after is None else messages / load.delivered_after,
        cpu_seconds=cpu,
        cpu_ms_per_message=1000 * cpu / max(1, load.delivered),
        main_thread_ms_per_message=1000 * main_cpu / max(1, load.delivered),
        peak_pss_mib=peak[0] / 1024,
        error=error,
    )


def fmt(value: float | None, spec: str) -> str:
    """A number, or '-' (right-aligned to the spec's width) when missing."""
    if value is None:
        width = spec.split(".")[0]
        return format("-", f">{width or 0}")
    return format(value, spec)


def get(run: RunResult | None, name: str) -> float | None:
    """A figure of a run that may be missing."""
    return None if run is None else getattr(run, name)


def ratio(a: RunResult | None, b: RunResult | None) -> float | None:
    """pymta rate / postfix rate, when both runs succeeded."""
    if a is None or b is None or a.error or b.error or not a.rate or not b.rate:
        return None
    return b.rate / a.rate


def median_run(runs: list[RunResult]) -> RunResult | None:
    """The run of median rate (lower median); a failed run if there is one."""
    if not runs:
        return None
    failed = [r for r in runs if r.error or r.rate is None]
    if failed:
        return failed[0]
    ordered = sorted(runs, key=lambda r: r.rate or 0.0)
    return ordered[(len(ordered) - 1) // 2]


def render_table(results: list[RunResult], disk: dict[str, float]) -> str:
    """The human-readable report: one line per size x connections.

    With --repeat, each cell shows the run of median rate among the
    repetitions (its CPU and accept figures too); all runs are in --json.
    """
    by_key: dict[tuple[str, int, int], list[RunResult]] = {}
    for run in results:
        by_key.setdefault((run.server, run.size, run.connections), []).append(run)
    combos = sorted({(r.size, r.connections) for r in results})
    head = (
        f"{'size':>6} {'conns':>5} | {'postfix/s':>9} {'pymta/s':>9} {'ratio':>6}"
        f" | {'pf cpu ms':>9} {'py cpu ms':>9} | {'pf acc/s':>8} {'py acc/s':>8}"
        f" | {'pf MiB':>6} {'py MiB':>6}"
    )
    lines = [head, "-" * len(head)]
    ratios: list[float] = []
    errors: list[str] = []
    for size, conns in combos:
        pf = median_run(by_key.get(("postfix", size, conns), []))
        py = median_run(by_key.get(("pymta", size, conns), []))
        r = ratio(pf, py)
        if r is not None:
            ratios.append(r)
        for name in SERVERS:
            for run in by_key.get((name, size, conns), []):
                if run.error:
                    errors.append(f"  {run.server} {size} B x {conns}: {run.error}")
        cells = [
            fmt(get(pf, "rate"), "9.0f"),
            fmt(get(py, "rate"), "9.0f"),
            fmt(r, "6.2f"),
            "|",
            fmt(get(pf, "cpu_ms_per_message"), "9.2f"),
            fmt(get(py, "cpu_ms_per_message"), "9.2f"),
            "|",
            fmt(get(pf, "accept_rate"), "8.0f"),
            fmt(get(py, "accept_rate"), "8.0f"),
            "|",
            fmt(get(pf, "peak_pss_mib"), "6.1f"),
            fmt(get(py, "peak_pss_mib"), "6.1f"),
        ]
        lines.append(f"{size:>6} {conns:>5} | " + " ".join(cells))
    lines.extend(errors)
    lines.append(summary(results, ratios, disk))
    return "\n".join(lines)


def summary(results: list[RunResult], ratios: list[float], disk: dict[str, float]) -> str:
    """The one-line verdict."""
    disk_text = ", ".join(f"{v:.0f}/s ({k})" for k, v in disk.items())
    ok = sum(1 for r in results if not r.error)
    head = f"{ok}/{len(results)} runs complete"
    if ratios:
        gmean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        head += (
            f"; pymta/postfix accept+deliver rate: geometric mean {gmean:.2f},"
            f" min {min(ratios):.2f}, max {max(ratios):.2f}"
        )
    return f"summary: {head}; disk fsync'd 1 KiB creations: {disk_text}"


def recount(servers: list[BenchServer], results: list[RunResult]) -> None:
    """Count every run's Maildir again at the end: late duplicates show now."""
    by_name = {server.name: server for server in servers}
    for run in results:
        count = count_maildir_new(by_name[run.server].maildir_new(run.recipient))
        if count != run.delivered and not run.error:
            run.error = f"{count} files for {run.messages} messages at the end"
        run.delivered = count


class Interrupted(Exception):
    """SIGTERM/SIGHUP: unwind through the finally blocks that stop servers."""


def on_signal(signum: int, frame: FrameType | None) -> None:
    """Turn a termination signal into an exception (cleanup runs)."""
    raise Interrupted(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the process exit status."""
    args = parse_args(argv)
    wanted = [args.only] if args.only else list(SERVERS)
    if not os.access(SMTP_SOURCE, os.X_OK):  # smtp-source comes with postfix
        progress(f"{SMTP_SOURCE} not found: apt-get install -y postfix")
        return 2
    if "postfix" in wanted:
        why = postfix_missing()
        if why:
            progress(why)
            return 2
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    combos = [(s, c) for _ in range(args.repeat) for s in args.sizes for c in args.connections]
    recipients = ["warmup@" + DOMAIN] + [f"run{i}@{DOMAIN}" for i in range(1, len(combos) + 1)]
    owner = pwd.getpwnam(args.mailbox_user)
    setup = MailSetup(tuple(recipients), owner.pw_uid, owner.pw_gid)
    args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="smtp-bench.", dir=args.workdir))
    fs = subprocess.run(
        ["stat", "-f", "-c", "%T", str(workdir)], capture_output=True, text=True
    ).stdout.strip()
    progress(f"working in {workdir} ({fs})")
    if ext4_without_journal(workdir):
        progress(NO_JOURNAL_WARNING.format(path=args.workdir))
    servers: list[BenchServer] = []
    results: list[RunResult] = []
    disk: dict[str, float] = {}
    try:
        disk["1 thread"] = disk_fsync_rate(workdir / "disk", args.disk_files, 1)
        disk["20 threads"] = disk_fsync_rate(workdir / "disk", args.disk_files, 20)
        progress("disk: " + ", ".join(f"{v:.0f}/s ({k})" for k, v in disk.items()))
        for name in wanted:
            server: BenchServer
            if name == "postfix":
                server = PostfixServer(workdir, setup)
            else:
                extra = [f"pymta_processes = {args.pymta_processes}", *args.pymta_main_cf]
                server = PymtaServer(
                    workdir, setup, extra_main_cf="".join(f"{line}\n" for line in extra)
                )
            servers.append(server)
            progress(f"starting {name} on {LISTEN_HOST}:{server.port}")
            server.start()
            if args.warmup:
                warm = measure(
                    server,
                    size=1024,
                    connections=min(args.connections),
                    messages=args.warmup,
                    recipient=recipients[0],
                    timeout=args.timeout,
                    scratch=workdir,
                )
                if warm.error:
                    raise RuntimeError(f"{name} warm-up failed: {warm.error}")
        cells = len(args.sizes) * len(args.connections)
        for n, (size, conns) in enumerate(combos, start=1):
            # Repetitions alternate which server goes first: the second of a
            # pair runs while the disk still writes back what the first left.
            repetition = (n - 1) // cells
            for server in servers[::-1] if repetition % 2 else servers:
                progress(f"{server.name}: {args.messages} x {size} B over {conns} connection(s)")
                run = measure(
                    server,
                    size=size,
                    connections=conns,
                    messages=args.messages,
                    recipient=recipients[n],
                    timeout=args.timeout,
                    scratch=workdir,
                )
                progress(
                    f"  {fmt(run.rate, '.0f')} msg/s, {run.cpu_ms_per_message:.2f} ms CPU/msg"
                    f" ({run.main_thread_ms_per_message:.2f} in main threads),"
                    f" {run.peak_pss_mib:.1f} MiB PSS at most"
                    + (f"  ERROR {run.error}" if run.error else "")
                )
                results.append(run)
        recount(servers, results)
    except (KeyboardInterrupt, Interrupted) as e:
        progress(f"interrupted ({e or 'SIGINT'}); stopping servers")
        return 130
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        progress(f"benchmark failed: {e}")
        return 1
    finally:
        for server in reversed(servers):
            try:
                server.stop()
            except Exception as e:  # keep stopping the others
                progress(f"stopping {server.name} failed: {e}")
        if args.keep:
            progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        document = {
            "command": sys.argv,
            "messages": args.messages,
            "pymta_processes": args.pymta_processes,
            "pymta_main_cf": args.pymta_main_cf,
            "repeat": args.repeat,
            "disk_fsync_creations_per_second": disk,
            "runs": [asdict(r) for r in results],
        }
        print(json.dumps(document, indent=2))
    else:
        print(render_table(results, disk))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
