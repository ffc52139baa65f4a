#!/usr/bin/env python3
"""sendmail_bench - Postfix and pymta side by side: sendmail + pickup.

SYNOPSIS
    python bench/sendmail_bench.py [--messages 1000] [--size 1024]
        [--only postfix|pymta] [--python PATH] [--parallel 1]
        [--workdir /var/tmp] [--keep] [--json]

DESCRIPTION
    In one run, on loopback only, as root, with the private Postfix and
    pymta instances of bench/smtp_bench.py (same main.cf, master.cf with
    "pickup unix n - n 60 1 pickup", virtual Maildirs, fsync on):

    1. start-up: the mean wall time of "PYTHON -c pass" and of a
       PYTHON that imports what one sendmail run imports, over 30 runs each;
    2. live: with the server running, MESSAGES invocations of sendmail,
       one process per message (--parallel at a time), each
       "sendmail -C DIR -i -f sender@bench.test live@bench.test" with a
       SIZE-byte message on stdin: Postfix's /usr/sbin/sendmail (postdrop)
       and pymta's "PYTHON -m pymta.sendmail".  Measured: the time until
       the last sendmail exited ("submit") and until every message is a
       file in the Maildir new/ (polled every 20 ms, "deliver");
    pymta's package is byte-compiled first (python -m compileall), as an
    installed one is.

    3. backlog (pickup -> delivery throughput): the server is stopped,
       MESSAGES more are submitted the same way (they wait in maildrop),
       the server is started, and the time from the start command until
       all of them are delivered is measured ("drain").

    It prints msg/s for each phase and server and the ratio pymta/postfix,
    or with --json every figure.  The temporary directory is removed
    unless --keep.  A system Postfix (port 25) is never touched.

REQUIREMENTS
    root; Debian's postfix package.  Keep --workdir on a real disk.

EXAMPLES
    python bench/sendmail_bench.py --messages 1000
    python bench/sendmail_bench.py --messages 200 --only pymta --python /usr/bin/python3
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_measure import count_maildir_new
from bench_postfix import PostfixServer, postfix_missing
from bench_pymta import CHECKOUT, PymtaServer
from bench_setup import DOMAIN, SENDER, MailSetup

POSTFIX_SENDMAIL = "/usr/sbin/sendmail"
RECIPIENTS = ("warmup", "live", "backlog")
#: What one sendmail run imports when main.cf's parameters are literal.
SENDMAIL_IMPORTS = (
    "import pymta.sendmail.command, pymta.sendmail.options, pymta.sendmail.params, "
    "pymta.sendmail.message, pymta.sendmail.authorized, pymta.sendmail.record, "
    "pymta.sendmail.postdrop"
)


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def message_bytes(size: int) -> bytes:
    head = f"From: {SENDER}\nTo: live@{DOMAIN}\nSubject: sendmail bench\n\n".encode()
    line = b"x" * 71 + b"\n"
    body = (line * (size // len(line) + 1))[: max(0, size - len(head))]
    return head + body


#: pymta's sendmail as installed by "pymta install-sendmail" (a python -S
#: launcher), or None for "PYTHON -m pymta.sendmail".
LAUNCHER: Path | None = None


def sendmail_command(server: Any, python: str, recipient: str) -> list[str]:
    args = ["-C", str(server.config), "-i", "-f", SENDER, recipient]
    if server.name == "postfix":
        return [POSTFIX_SENDMAIL, *args]
    if LAUNCHER is not None:
        return [str(LAUNCHER), *args]
    return [python, "-m", "pymta.sendmail", *args]


def submit(
    command: list[str], data: bytes, count: int, parallel: int, cpu: list[float] | None = None
) -> float:
    """Run command count times (one process per message); seconds until the
    last exits. cpu, when given, gets the CPU seconds the processes used
    (user + system, their children included: Postfix's postdrop)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(CHECKOUT)
    env.pop("PYTHONDONTWRITEBYTECODE", None)

    def one(_: int) -> None:
        result = subprocess.run(command, input=data, capture_output=True, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} exited {result.returncode}: {result.stderr!r}")

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    if parallel <= 1:
        for i in range(count):
            one(i)
    else:
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(one, range(count)))
    elapsed = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cpu is not None:
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return elapsed


def wait_count(directory: Path, count: int, start: float, timeout: float = 600.0) -> float:
    """Seconds from start until directory holds count messages (polled every 20 ms)."""
    deadline = time.monotonic() + timeout
    while count_maildir_new(directory) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{directory}: {count_maildir_new(directory)} of {count}")
        time.sleep(0.02)
    return time.monotonic() - start


def mean_wall(command: list[str], runs: int = 30) -> float:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(CHECKOUT)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    times = []
    for _ in range(runs):
        start = time.monotonic()
        subprocess.run(command, check=True, env=env, capture_output=True)
        times.append(time.monotonic() - start)
    return statistics.mean(times)


def run_server(
    server: Any, python: str, data: bytes, messages: int, parallel: int
) -> dict[str, float]:
    figures: dict[str, float] = {}
    server.start()
    try:
        warm = sendmail_command(server, python, f"warmup@{DOMAIN}")
        submit(warm, data, 5, 1)
        wait_count(server.maildir_new(f"warmup@{DOMAIN}"), 5, time.monotonic())
        start = time.monotonic()
        live = sendmail_command(server, python, f"live@{DOMAIN}")
        figures["submit_s"] = submit(live, data, messages, parallel)
        figures["deliver_s"] = wait_count(server.maildir_new(f"live@{DOMAIN}"), messages, start)
    finally:
        server.stop()
    backlog = sendmail_command(server, python, f"backlog@{DOMAIN}")
    cpu: list[float] = []
    figures["submit_down_s"] = submit(backlog, data, messages, parallel, cpu)
    figures["submit_cpu_ms"] = 1000 * cpu[0] / messages
    start = time.monotonic()
    server.start()
    try:
        figures["drain_s"] = wait_count(server.maildir_new(f"backlog@{DOMAIN}"), messages, start)
    finally:
        server.stop()
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="sendmail + pickup: Postfix and pymta")
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--only", choices=("postfix", "pymta"))
    p.add_argument("--python", default=sys.executable, help="interpreter for pymta's sendmail")
    p.add_argument(
        "--pymta-sendmail",
        choices=("launcher", "module"),
        default="launcher",
        help="pymta's sendmail as 'pymta install-sendmail' writes it (python -S), "
        "or 'PYTHON -m pymta.sendmail'",
    )
    p.add_argument("--parallel", type=int, default=1, help="sendmail processes at a time")
    p.add_argument("--mailbox-user", default="nobody")
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    wanted = [args.only] if args.only else ["postfix", "pymta"]
    if "postfix" in wanted and (why := postfix_missing()):
        progress(why)
        return 2
    owner = pwd.getpwnam(args.mailbox_user)
    setup = MailSetup(tuple(f"{r}@{DOMAIN}" for r in RECIPIENTS), owner.pw_uid, owner.pw_gid)
    args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="sendmail-bench.", dir=args.workdir))
    data = message_bytes(args.size)
    results: dict[str, Any] = {"messages": args.messages, "size": len(data), "python": args.python}
    # An installed pymta has its byte code compiled (pip does it); a checkout
    # run with PYTHONDONTWRITEBYTECODE would compile every module per message.
    subprocess.run([args.python, "-m", "compileall", "-q", str(CHECKOUT / "pymta")], check=False)
    global LAUNCHER
    if args.pymta_sendmail == "launcher":
        sys.path.insert(0, str(CHECKOUT))
        from pymta.sendmail.launcher import install

        install(str(workdir / "sbin"), str(workdir / "bin"), args.python)
        LAUNCHER = workdir / "sbin" / "sendmail"
    try:
        progress("measuring start-up")
        flags = ["-S"] if LAUNCHER is not None else []
        results["python_startup_ms"] = 1000 * mean_wall([args.python, *flags, "-c", "pass"])
        imports = f"import sys; sys.path.insert(0, {str(CHECKOUT)!r}); {SENDMAIL_IMPORTS}"
        results["sendmail_import_ms"] = 1000 * mean_wall([args.python, *flags, "-c", imports])
        makers: dict[str, Callable[[], Any]] = {
            "postfix": lambda: PostfixServer(workdir, setup),
            "pymta": lambda: PymtaServer(workdir, setup),
        }
        for name in wanted:
            progress(f"{name}: {args.messages} sendmail processes, live then backlog")
            results[name] = run_server(
                makers[name](), args.python, data, args.messages, args.parallel
            )
    finally:
        if args.keep:
            progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    n = args.messages
    print(
        f"sendmail bench: {n} messages of {len(data)} bytes, one sendmail process each "
        f"(parallel {args.parallel}); pymta's sendmail runs {args.python}"
        + (" -S (pymta install-sendmail's launcher)" if LAUNCHER is not None else " -m")
    )
    print(
        f"python start-up {results['python_startup_ms']:.1f} ms; "
        f"with the imports of one sendmail run "
        f"{results['sendmail_import_ms']:.1f} ms"
    )
    rows = [
        ("submit, server up (msg/s)", "submit_s"),
        ("submit -> delivered, server up (msg/s)", "deliver_s"),
        ("submit, server down (msg/s)", "submit_down_s"),
        ("start -> backlog delivered (msg/s)", "drain_s"),
    ]
    print(f"{'phase':<42}{'postfix':>10}{'pymta':>10}{'ratio':>8}")
    for label, key in rows:
        rates = {s: n / results[s][key] for s in wanted}
        ratio = rates["pymta"] / rates["postfix"] if len(rates) == 2 else float("nan")
        cells = "".join(
            f"{rates[s]:>10.1f}" if s in rates else f"{'-':>10}" for s in ("postfix", "pymta")
        )
        print(f"{label:<42}{cells}{ratio:>8.2f}")
    cpu = {s: results[s]["submit_cpu_ms"] for s in wanted}
    cells = "".join(f"{cpu[s]:>10.1f}" if s in cpu else f"{'-':>10}" for s in ("postfix", "pymta"))
    # Lower is better here: the ratio is postfix/pymta, > 1 when pymta uses less.
    ratio = cpu["postfix"] / cpu["pymta"] if len(cpu) == 2 else float("nan")
    print(f"{'CPU per submission, ms (ratio pf/pymta)':<42}{cells}{ratio:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
