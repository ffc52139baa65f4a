"""retrieval_run - run concurrent POP3/IMAP clients and measure the server.

SYNOPSIS
    from retrieval_run import (run_clients, SessionResult, RunFigures,
                               wait_for_greeting, tree_rss_bytes, vm_hwm_bytes)

DESCRIPTION
    run_clients(session, clients, roots, timeout)
        Forks one process per client (a real process each: no client
        shares an interpreter lock with another, and every server gets
        the very same client code).  Each child signals that it is ready
        and waits; once all are, the server's CPU time is read (the
        process trees under roots, /proc/PID/stat, reaped children
        included - bench_measure.tree_cpu_seconds), the clock starts and
        all are released at once.  Each child runs session(client) and
        sends back a SessionResult with the time it finished and its own
        CPU time.  The run lasts from the release until the last client
        finished; the server's CPU is read again then.  While it runs, a
        thread samples the resident memory of the server's process trees
        (VmRSS summed over the tree) every 100 ms and keeps the peak.

    wait_for_greeting(host, port, prefix, deadline, alive)
        Connects until a greeting starting with prefix arrives ("+OK" for
        POP3, "* OK" for IMAP).

    vm_hwm_bytes(pid)
        The peak resident set size of one process (VmHWM).

    median_of(runs)
        The run of median rate (the lower median with an even count).

TRUST
    Reads only /proc and loopback sockets.  Not part of pymta.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from bench_measure import descendants, read_proc_table, tree_cpu_seconds

LISTEN_HOST = "127.0.0.1"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
RSS_INTERVAL = 0.1


def wait_for_greeting(
    host: str,
    port: int,
    prefix: bytes,
    deadline: float,
    alive: Callable[[], bool],
) -> bytes:
    """Connect until a greeting that starts with prefix arrives; return it."""
    delay = 0.01
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"server exited before greeting on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=5) as s:
                banner = s.recv(512)
                if banner.startswith(prefix):
                    return banner
                last_error = RuntimeError(f"unexpected greeting {banner!r}")
        except OSError as e:
            last_error = e
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    raise TimeoutError(f"no greeting on {host}:{port}: {last_error}")


def tree_rss_bytes(roots: Iterable[int]) -> int:
    """Resident memory now of the process trees under roots (VmRSS summed)."""
    total = 0
    for pid in descendants(read_proc_table(), roots):
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_SIZE
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
    return total


def vm_hwm_bytes(pid: int) -> int | None:
    """Peak resident set size (VmHWM) of one process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass
class SessionResult:
    """What one client did in one run."""

    client: int
    operations: int = 0  # protocol commands sent (each answered)
    messages: int = 0  # messages downloaded in full and verified
    bytes: int = 0  # message bytes downloaded
    errors: list[str] = field(default_factory=list)
    finished: float = 0.0  # time.monotonic() when the client was done
    cpu_seconds: float = 0.0  # the client process's own CPU time


@dataclass
class RunFigures:
    """One server, one repetition."""

    server: str
    rep: int
    clients: int
    seconds: float
    operations: int
    messages: int
    bytes: int
    server_cpu_seconds: float
    client_cpu_seconds: float
    peak_rss_bytes: int
    errors: list[str]

    @property
    def message_rate(self) -> float:
        """Messages downloaded per second."""
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def operation_rate(self) -> float:
        """Protocol commands per second."""
        return self.operations / self.seconds if self.seconds > 0 else 0.0

    def cpu_ms_per(self, count: int) -> float:
        """Server CPU milliseconds per unit of count."""
        return 1000 * self.server_cpu_seconds / max(1, count)


class _RssSampler(threading.Thread):
    """Samples a server's tree RSS until stopped; keeps the peak."""

    def __init__(self, roots: Sequence[int]) -> None:
        super().__init__(daemon=True)
        self.roots = list(roots)
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while True:
            self.peak = max(self.peak, tree_rss_bytes(self.roots))
            if self._stop_event.wait(RSS_INTERVAL):
                break

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, tree_rss_bytes(self.roots))
        return self.peak


def _child(
    session: Callable[[int], SessionResult],
    client: int,
    ready: multiprocessing.synchronize.Semaphore,
    go: multiprocessing.synchronize.Event,
    results: multiprocessing.Queue[SessionResult],
) -> None:
    ready.release()
    go.wait()
    try:
        result = session(client)
    except Exception as e:  # a client's failure is a figure, not a crash
        result = SessionResult(client=client, errors=[f"client {client}: {e!r}"])
    result.finished = time.monotonic()
    t = os.times()
    result.cpu_seconds = t.user + t.system
    results.put(result)


def run_clients(
    server: str,
    rep: int,
    session: Callable[[int], SessionResult],
    clients: int,
    roots: Sequence[int],
    timeout: float,
) -> RunFigures:
    """Run session(0..clients-1) in parallel processes; measure (see above)."""
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Semaphore(0)
    go = ctx.Event()
    results: multiprocessing.Queue[SessionResult] = ctx.Queue()
    procs = [
        ctx.Process(target=_child, args=(session, c, ready, go, results), daemon=True)
        for c in range(clients)
    ]
    for p in procs:
        p.start()
    collected: list[SessionResult] = []
    try:
        for _ in procs:
            if not ready.acquire(timeout=60):
                raise RuntimeError("client processes did not start")
        sampler = _RssSampler(roots)
        sampler.start()
        cpu_before = tree_cpu_seconds(roots)
        start = time.monotonic()
        go.set()
        deadline = start + timeout
        while len(collected) < clients:
            try:
                collected.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                break
        end = max((r.finished for r in collected), default=time.monotonic())
        cpu = tree_cpu_seconds(roots) - cpu_before
        peak = sampler.stop()
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    errors = [e for r in collected for e in r.errors]
    if len(collected) < clients:
        errors.append(f"timeout: {clients - len(collected)} clients unfinished after {timeout}s")
    return RunFigures(
        server=server,
        rep=rep,
        clients=clients,
        seconds=end - start,
        operations=sum(r.operations for r in collected),
        messages=sum(r.messages for r in collected),
        bytes=sum(r.bytes for r in collected),
        server_cpu_seconds=cpu,
        client_cpu_seconds=sum(r.cpu_seconds for r in collected),
        peak_rss_bytes=peak,
        errors=errors,
    )


def median_of(runs: Sequence[RunFigures], rate: Callable[[RunFigures], float]) -> RunFigures:
    """The run of median rate (lower median); a failed run wins if there is one."""
    failed = [r for r in runs if r.errors]
    if failed:
        return failed[0]
    ordered = sorted(runs, key=rate)
    return ordered[(len(ordered) - 1) // 2]
