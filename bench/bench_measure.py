"""bench_measure - the measuring instruments of the SMTP benchmark.

SYNOPSIS
    from bench_measure import (tree_cpu_seconds, tree_pss_kib, free_loopback_port,
                               wait_for_banner, count_maildir_new,
                               disk_fsync_rate, run_load)

DESCRIPTION
    Small, independent helpers used by smtp_bench.py:

    tree_cpu_seconds(roots, proc)
        CPU time (user + system, in seconds) of the given processes and
        all their descendants, read from /proc/PID/stat.  Each process
        contributes utime + stime + cutime + cstime, so the time of a
        child that exited and was reaped by a process of the tree (a
        Postfix smtpd that reached max_use, a pymta worker) is still
        counted, in its parent's cutime/cstime.  The difference between
        two readings is the CPU the server spent in between.

    free_loopback_port(host)
        A TCP port that is free on the loopback address right now.

    wait_for_banner(host, port, deadline, alive)
        Connects until the server's 220 greeting arrives; gives up at the
        deadline or when alive() says the server process has died.

    tree_pss_kib(roots, proc)
        Proportional set size (kB) of the given processes and all their
        descendants, summed from /proc/PID/smaps_rollup: memory shared by
        several processes (the Python interpreter, libc, Postfix's
        libraries) counts once in all, so the sum is the tree's share of
        the machine's memory.

    count_maildir_new(path)
        Number of messages in a Maildir new/ directory (0 when absent).

    disk_fsync_rate(directory, count, threads)
        Reference figure: fsync'd 1 KiB file creations per second.

    run_load(argv, maildir_new, messages, timeout, stdout)
        Runs a load generator (smtp-source) and times it from its start
        until it exits (accept) and until every message is in new/
        (accept + deliver), polling every 20 ms - the directory only once
        the generator has exited, as no run can be complete before.

TRUST
    Everything here reads only /proc, loopback sockets and the bench's
    own temporary directory.  Nothing here is part of pymta.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POLL_INTERVAL = 0.02
#: How often run_load calls its ``sample`` (reading smaps_rollup of some
#: thirty processes costs the bench a few ms of CPU).
SAMPLE_INTERVAL = 0.5


@dataclass(frozen=True)
class ProcStat:
    """The fields of one /proc/PID/stat line that the bench uses."""

    pid: int
    ppid: int
    ticks: int  # utime + stime + cutime + cstime


def parse_proc_stat(pid: int, line: str) -> ProcStat:
    """Parse one /proc/PID/stat line (the comm field may hold spaces)."""
    rest = line[line.rindex(")") + 2 :].split()
    # After "pid (comm) ": state ppid pgrp session tty tpgid flags minflt
    # cminflt majflt cmajflt utime stime cutime cstime ... (proc(5)).
    ppid = int(rest[1])
    ticks = sum(int(field) for field in rest[11:15])
    return ProcStat(pid=pid, ppid=ppid, ticks=ticks)


def read_proc_table(proc: Path = Path("/proc")) -> dict[int, ProcStat]:
    """Every process visible in /proc (races with exits are ignored)."""
    table: dict[int, ProcStat] = {}
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            with open(os.path.join(entry.path, "stat")) as f:
                line = f.read()
        except OSError:
            continue  # exited between scandir and open
        table[int(entry.name)] = parse_proc_stat(int(entry.name), line)
    return table


def descendants(table: Mapping[int, ProcStat], roots: Iterable[int]) -> set[int]:
    """The roots that still exist and all their descendants."""
    children: dict[int, list[int]] = {}
    for stat in table.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found: set[int] = set()
    todo = [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(children.get(pid, ()))
    return found


def tree_cpu_seconds(roots: Iterable[int], proc: Path = Path("/proc")) -> float:
    """CPU seconds consumed so far by the process trees under roots."""
    table = read_proc_table(proc)
    return sum(table[pid].ticks for pid in descendants(table, roots)) / CLOCK_TICKS


def main_thread_ticks(roots: Iterable[int], proc: Path = Path("/proc")) -> dict[int, int]:
    """{pid: clock ticks (user + system)} of the main thread alone of every
    process in the trees under roots: for pymta each process's reactor
    thread, without the worker threads (queue and Maildir writes, their
    fsyncs and syncfs, whose kernel time follows the whole disk's load,
    other processes' included)."""
    table = read_proc_table(proc)
    ticks: dict[int, int] = {}
    for pid in descendants(table, roots):
        try:
            with open(proc / str(pid) / "task" / str(pid) / "stat") as f:
                line = f.read()
        except OSError:
            continue  # exited meanwhile
        rest = line[line.rindex(")") + 2 :].split()
        ticks[pid] = int(rest[11]) + int(rest[12])  # utime stime (proc(5))
    return ticks


def main_thread_cpu_seconds(roots: Iterable[int], proc: Path = Path("/proc")) -> float:
    """CPU seconds of the main threads alone of the process trees under
    roots (see main_thread_ticks)."""
    return sum(main_thread_ticks(roots, proc).values()) / CLOCK_TICKS


def main_thread_cpu_between(before: Mapping[int, int], after: Mapping[int, int]) -> float:
    """CPU seconds the main threads spent between two main_thread_ticks
    readings, process by process: one that exited meanwhile (a Postfix
    smtpd at max_idle) counts nothing instead of taking its whole past
    off the sum; one that started meanwhile counts all of its time."""
    ticks = sum(max(0, now - before.get(pid, 0)) for pid, now in after.items())
    return ticks / CLOCK_TICKS


def tree_pss_kib(roots: Iterable[int], proc: Path = Path("/proc")) -> int:
    """The proportional set size (PSS, kB) of the process trees under
    roots, summed: each process's /proc/PID/smaps_rollup ``Pss:`` (shared
    pages count once over all the processes that map them, proc(5))."""
    table = read_proc_table(proc)
    total = 0
    for pid in descendants(table, roots):
        try:
            with open(proc / str(pid) / "smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError):
            continue  # exited meanwhile, or a kernel thread
    return total


def stop_session(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    """Stop a server started in a session of its own: SIGTERM, wait, then
    SIGKILL whatever is left in its process group (only that group)."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def free_loopback_port(host: str = "127.0.0.1") -> int:
    """A port that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_banner(
    host: str,
    port: int,
    deadline: float,
    alive: Callable[[], bool],
    now: Callable[[], float] = time.monotonic,
) -> bytes:
    """Connect until a 220 greeting arrives; return it.

    Raises TimeoutError at the deadline, RuntimeError when alive() turns
    false (the server exited while we waited).
    """
    delay = 0.01
    last_error: Exception | None = None
    while now() < deadline:
        if not alive():
            raise RuntimeError(f"server exited before greeting on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=5) as s:
                banner = s.recv(512)
                if banner.startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return banner
                last_error = RuntimeError(f"unexpected greeting {banner!r}")
        except OSError as e:
            last_error = e
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    raise TimeoutError(f"no SMTP greeting on {host}:{port}: {last_error}")


def count_maildir_new(path: Path) -> int:
    """Messages in a Maildir new/ directory; 0 when it does not exist yet."""
    try:
        with os.scandir(path) as it:
            return sum(1 for e in it if not e.name.startswith("."))
    except FileNotFoundError:
        return 0


def disk_fsync_rate(directory: Path, count: int = 500, threads: int = 1) -> float:
    """fsync'd 1 KiB file creations per second, spread over threads.

    Each creation is open(O_CREAT|O_EXCL), write 1 KiB, fsync, close - the
    cost a queue file or a Maildir delivery pays at least once.
    """
    directory.mkdir(parents=True, exist_ok=True)
    payload = b"x" * 1024
    per_thread = max(1, count // threads)

    def work(tid: int) -> None:
        for i in range(per_thread):
            name = directory / f"f{tid}.{i}"
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    start = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - start
    for entry in os.scandir(directory):
        os.unlink(entry.path)
    return per_thread * threads / elapsed


@dataclass(frozen=True)
class LoadResult:
    """Timing of one load-generator run; times in seconds since its start."""

    accepted_after: float  # the generator exited: every DATA answered
    delivered_after: float | None  # every message in new/ (None: timed out)
    delivered: int  # files found in new/ at the end
    returncode: int


def run_load(
    argv: list[str],
    maildir_new: Path,
    messages: int,
    timeout: float,
    stdout: IO[bytes],
    sample: Callable[[], object] | None = None,
) -> LoadResult:
    """Run the load generator; time acceptance and delivery of messages.
    ``sample`` (e.g. a memory reading) is called every SAMPLE_INTERVAL
    while it runs."""
    start = time.monotonic()
    sampled = start
    proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.STDOUT)
    accepted_after: float | None = None
    delivered_after: float | None = None
    count = 0
    try:
        while True:
            elapsed = time.monotonic() - start
            if accepted_after is None and proc.poll() is not None:
                accepted_after = elapsed
            if accepted_after is not None:
                # Reading a directory of thousands of entries costs ~2 ms of
                # CPU that the servers would miss; before the generator has
                # exited not all messages can be delivered, so only count now.
                count = count_maildir_new(maildir_new)
                if count >= messages and delivered_after is None:
                    delivered_after = elapsed
            if accepted_after is not None and (delivered_after is not None or proc.returncode != 0):
                break
            if elapsed > timeout:
                break
            if sample is not None and time.monotonic() - sampled >= SAMPLE_INTERVAL:
                sample()
                sampled = time.monotonic()
            time.sleep(POLL_INTERVAL)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if accepted_after is None:
        accepted_after = time.monotonic() - start
    count = count_maildir_new(maildir_new)
    return LoadResult(
        accepted_after=accepted_after,
        delivered_after=delivered_after,
        delivered=count,
        returncode=proc.returncode,
    )
