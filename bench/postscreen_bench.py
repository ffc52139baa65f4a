#!/usr/bin/env python3
"""postscreen_bench - Postfix's postscreen and pymta's side by side under a
pregreeting bot flood, with good clients in the middle of it.

SYNOPSIS
    python bench/postscreen_bench.py [--seconds 10] [--bot-processes 2]
        [--bot-threads 16] [--good-clients 4] [--greet-wait 6]
        [--pymta-processes 1] [--repeat 1] [--only postfix|pymta]
        [--workdir /var/tmp] [--keep]

DESCRIPTION
    In one run, on loopback only, as root:

    1. builds a private Postfix instance (bench/bench_postfix.py) and pymta
       with the same main.cf (bench/bench_pymta.py) and Postfix's stock
       master.cf shape: "127.0.0.1:PORT inet n - n - 1 postscreen" in
       front of "smtpd pass - - n - - smtpd" (dnsblog and tlsproxy listed
       as in the stock file), with "postscreen_access_list =" (the
       clients are on loopback, which permit_mynetworks would allowlist),
       "postscreen_greet_action = drop", "postscreen_greet_wait =
       --greet-wait s" (Postfix's default 6 s: Postfix's timers count whole
       seconds, so a 1 s wait may end at once and let a slow bot pass), no
       DNSBL sites and "smtpd_peername_lookup = no": no DNS query leaves
       the machine (pymta also gets "pymta_dns_servers = 127.0.0.1:9");
    2. for each server in turn (every other repetition pymta first):
       warms the good clients up (each connects once, waits out the greet
       wait and is allowlisted: PASS NEW), then for --seconds runs
       --bot-processes x --bot-threads bots and --good-clients good clients
       at once. A bot connects from one of 200 addresses of 127.0.2.0/24
       (never allowlisted, since it never passes), talks at once ("EHLO
       bot.example", before the banner) and reads until the server hangs
       up; a connection counts as handled when the answer holds
       postscreen's 521 (anything else is an error). A good client connects from its own address
       in 127.0.1.0/24 and runs smtplib's EHLO, MAIL, RCPT, RSET, QUIT
       (PASS OLD: straight to smtpd), one session after the other;
    3. prints one line per server and repetition: bot connections handled
       per second, the server's CPU milliseconds per connection (bots and
       good sessions; CPU of the whole process tree, /proc), good
       sessions and their latency (median and 95th percentile, connect to
       QUIT's reply); then the medians and the ratios pymta/postfix.

    The clients run on the same cores as the servers: the absolute figures
    include their cost, the ratios compare like with like.

REQUIREMENTS
    root; Debian's postfix package; pymta's twistd plugin in this
    checkout. Nothing leaves loopback; the temporary directory is removed
    unless --keep is given.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import smtplib
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_measure import tree_cpu_seconds
from bench_postfix import PostfixServer, postfix_missing
from bench_pymta import PymtaServer
from bench_setup import DOMAIN, LISTEN_HOST, MailSetup

BOT_ADDRESSES = [f"127.0.2.{i}" for i in range(1, 201)]
RECIPIENT = f"run1@{DOMAIN}"


def postscreen_master_cf(text: str, port: int) -> str:
    """The bench's master.cf with postscreen on the SMTP port, as Postfix's
    stock master.cf has it when postscreen is enabled."""
    listener = f"{LISTEN_HOST}:{port} inet n"
    lines = []
    for line in text.splitlines(keepends=True):
        if line.startswith(listener):
            lines.append(f"{LISTEN_HOST}:{port} inet n - n - 1 postscreen\n")
            lines.append("smtpd     pass  -       -       n       -       -       smtpd\n")
            lines.append("dnsblog   unix  -       -       n       -       0       dnsblog\n")
            lines.append("tlsproxy  unix  -       -       n       -       0       tlsproxy\n")
        else:
            lines.append(line)
    return "".join(lines)


def postscreen_main_cf(greet_wait: float) -> str:
    # The clients' addresses (127.0.1.x, 127.0.2.x) are in no hosts file:
    # smtpd's name lookup would ask the system's DNS server, off this
    # machine. Neither server looks names up here.
    return (
        "postscreen_access_list =\n"
        "postscreen_greet_action = drop\n"
        f"postscreen_greet_wait = {greet_wait:g}s\n"
        "postscreen_dnsbl_sites =\n"
        "smtpd_peername_lookup = no\n"
    )


def merge_main_cf(path: Path, extra: str) -> None:
    """Set extra's parameters in main.cf, replacing the lines that set them."""
    names = {line.partition("=")[0].strip() for line in extra.splitlines() if "=" in line}
    kept = [
        line
        for line in path.read_text().splitlines(keepends=True)
        if line.partition("=")[0].strip() not in names
    ]
    path.write_text("".join(kept) + extra)


class ScreenedPostfix(PostfixServer):
    extra_main_cf = ""

    def write_config(self) -> None:
        super().write_config()
        merge_main_cf(self.config / "main.cf", self.extra_main_cf)
        master = self.config / "master.cf"
        master.write_text(postscreen_master_cf(master.read_text(), self.port))


class ScreenedPymta(PymtaServer):
    def write_config(self) -> None:
        super().write_config()
        master = self.config / "master.cf"
        master.write_text(postscreen_master_cf(master.read_text(), self.port))


def _bot_thread(port: int, index: int, stop_at: float, counts: list[int]) -> None:
    done = errors = 0
    n = index
    while time.monotonic() < stop_at:
        source = BOT_ADDRESSES[n % len(BOT_ADDRESSES)]
        n += 7
        try:
            with socket.create_connection(
                (LISTEN_HOST, port), timeout=10, source_address=(source, 0)
            ) as sock:
                # A bot talks at once, without waiting for the banner.
                sock.sendall(b"EHLO bot.example\r\n")
                answer = b""
                try:
                    while data := sock.recv(512):
                        answer += data
                except ConnectionResetError:
                    # Postfix's postscreen only peeked at the EHLO: closing
                    # with it unread makes the kernel send a reset.
                    pass
                if b"521 " not in answer:
                    errors += 1
                    continue
            done += 1
        except OSError:
            errors += 1
    counts[0] += done
    counts[1] += errors


def bot_process(port: int, threads: int, offset: int, start_at: float, seconds: float, out: Any):
    """One process of bots; sends (connections, errors) when done."""
    while time.monotonic() < start_at:
        time.sleep(0.001)
    counts = [0, 0]
    workers = [
        threading.Thread(target=_bot_thread, args=(port, offset + i, start_at + seconds, counts))
        for i in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put(("bots", counts[0], counts[1]))


def good_session(port: int, source: str) -> float:
    """One good client's session; its duration in seconds."""
    began = time.monotonic()
    with smtplib.SMTP(LISTEN_HOST, port, source_address=(source, 0), timeout=30) as client:
        client.ehlo("good.example")
        client.mail(f"sender@{DOMAIN}")
        code, _ = client.rcpt(RECIPIENT)
        if code != 250:
            raise RuntimeError(f"RCPT answered {code}")
        client.rset()
    return time.monotonic() - began


def good_process(port: int, clients: int, start_at: float, seconds: float, out: Any) -> None:
    """The good clients, one thread each; sends their latencies."""
    while time.monotonic() < start_at:
        time.sleep(0.001)
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()

    def loop(n: int) -> None:
        source = f"127.0.1.{n + 1}"
        while time.monotonic() < start_at + seconds:
            try:
                took = good_session(port, source)
            except (OSError, smtplib.SMTPException, RuntimeError):
                with lock:
                    failures[0] += 1
                continue
            with lock:
                latencies.append(took)

    workers = [threading.Thread(target=loop, args=(n,)) for n in range(clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put(("good", latencies, failures[0]))


def warm_up(port: int, clients: int) -> None:
    """Each good client passes postscreen once (the greet wait, PASS NEW)."""
    workers = [
        threading.Thread(target=good_session, args=(port, f"127.0.1.{n + 1}"))
        for n in range(clients)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def run_flood(server: Any, args: argparse.Namespace) -> dict[str, float]:
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    start_at = time.monotonic() + 0.5
    procs = [
        context.Process(
            target=bot_process,
            args=(server.port, args.bot_threads, p * args.bot_threads, start_at, args.seconds, out),
        )
        for p in range(args.bot_processes)
    ]
    procs.append(
        context.Process(
            target=good_process,
            args=(server.port, args.good_clients, start_at, args.seconds, out),
        )
    )
    for p in procs:
        p.start()
    while time.monotonic() < start_at:
        time.sleep(0.001)
    before = tree_cpu_seconds(server.root_pids())
    bots = bot_errors = good_failures = 0
    latencies: list[float] = []
    for _ in procs:
        kind, *rest = out.get(timeout=args.seconds + 120)
        if kind == "bots":
            bots += rest[0]
            bot_errors += rest[1]
        else:
            latencies, good_failures = rest
    elapsed = time.monotonic() - start_at
    used = tree_cpu_seconds(server.root_pids()) - before
    for p in procs:
        p.join(30)
    connections = bots + len(latencies)
    ordered = sorted(latencies) or [float("nan")]
    return {
        "bots_per_s": bots / elapsed,
        "bot_errors": bot_errors,
        "cpu_ms_per_conn": used * 1000 / max(connections, 1),
        "good": len(latencies),
        "good_failures": good_failures,
        "good_median_ms": statistics.median(ordered) * 1000,
        "good_p95_ms": ordered[int(0.95 * (len(ordered) - 1))] * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--bot-processes", type=int, default=2)
    parser.add_argument("--bot-threads", type=int, default=16)
    parser.add_argument("--good-clients", type=int, default=4)
    parser.add_argument("--greet-wait", type=float, default=6.0)
    parser.add_argument("--pymta-processes", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--only", choices=("postfix", "pymta"))
    parser.add_argument("--workdir", default="/var/tmp")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    why = postfix_missing() if args.only != "pymta" else None
    if why:
        print(f"postscreen_bench: {why}", file=sys.stderr)
        return 2
    setup = MailSetup((RECIPIENT,), 65534, 65534)
    work = Path(tempfile.mkdtemp(prefix="postscreen-bench-", dir=args.workdir))
    work.chmod(0o711)
    extra = postscreen_main_cf(args.greet_wait)
    postfix = ScreenedPostfix(work, setup)
    postfix.extra_main_cf = extra
    pymta = ScreenedPymta(
        work,
        setup,
        # No DNS server at all for pymta: a loopback port nobody serves.
        extra_main_cf=extra
        + f"pymta_processes = {args.pymta_processes}\npymta_dns_servers = 127.0.0.1:9\n",
    )
    servers: list[Any] = [s for s in (postfix, pymta) if args.only in (None, s.name)]
    results: dict[str, list[dict[str, float]]] = {s.name: [] for s in servers}
    try:
        for server in servers:
            server.start()
            warm_up(server.port, args.good_clients)
        for rep in range(args.repeat):
            order = servers if rep % 2 == 0 else servers[::-1]
            for server in order:
                r = run_flood(server, args)
                results[server.name].append(r)
                print(
                    f"rep {rep + 1} {server.name:8} bots {r['bots_per_s']:8.1f} conn/s "
                    f"({int(r['bot_errors'])} errors), server CPU "
                    f"{r['cpu_ms_per_conn']:.3f} ms/conn, good sessions {int(r['good'])} "
                    f"({int(r['good_failures'])} failed), latency median "
                    f"{r['good_median_ms']:.1f} ms p95 {r['good_p95_ms']:.1f} ms",
                    flush=True,
                )
    finally:
        for server in servers:
            try:
                server.stop()
            except Exception as e:  # keep stopping the others
                print(f"stopping {server.name}: {e}", file=sys.stderr)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    medians: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        if not runs:
            continue
        medians[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        m = medians[name]
        print(
            f"{name}: median {m['bots_per_s']:.1f} bot conn/s, {m['cpu_ms_per_conn']:.3f} "
            f"ms CPU/conn, good latency median {m['good_median_ms']:.1f} ms "
            f"p95 {m['good_p95_ms']:.1f} ms"
        )
    if "postfix" in medians and "pymta" in medians:
        p, f = medians["pymta"], medians["postfix"]
        latency = (
            f", good latency median {p['good_median_ms'] / f['good_median_ms']:.2f}"
            if args.good_clients
            else ""
        )
        print(
            f"ratio pymta/postfix: bot conn/s {p['bots_per_s'] / f['bots_per_s']:.2f}, "
            f"CPU/conn {p['cpu_ms_per_conn'] / f['cpu_ms_per_conn']:.2f}{latency}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
