#!/usr/bin/env python3
"""reactor_instructions - instructions per message of pymta's threads, under callgrind.

SYNOPSIS
    python bench/reactor_instructions.py [--messages 300] [--connections 20]
        [--size 1024] [--warmup 50] [--workdir /var/tmp] [--checkout DIR]

DESCRIPTION
    CPU seconds per message on a shared machine swing with the other
    programs' load (caches, frequency, hyperthreads): a 10% change in the
    reactor's work cannot be told from the noise. This bench counts
    instructions instead, which the load does not change.

    It builds the pymta instance of bench/smtp_bench.py (bench_pymta,
    bench_setup) and runs its twistd under

        valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes

    (start-up is not instrumented). After --warmup messages it switches
    the instrumentation on (callgrind_control -i on), sends --messages
    messages of --size bytes with Postfix's smtp-source over
    --connections connections, waits until all are in the Maildir, dumps
    the counts (callgrind_control -d) and prints, for each thread of the
    twistd process, the instructions executed per message: thread 1 is
    the reactor; the others are the queue's and the mailbox's sync
    threads and the thread pool. Kernel work (system calls) is not
    counted: bench/smtp_bench.py's CPU figures hold it.

    Under valgrind everything runs some fifty times slower, so group
    commit batches differ from a real run: compare checkouts with the same
    arguments (--checkout runs another tree's pymta, e.g. an export of
    main), never these counts with CPU times.

REQUIREMENTS
    root; Debian's valgrind (callgrind, callgrind_control) and postfix
    (smtp-source) packages.

EXAMPLES
    python bench/reactor_instructions.py
    python bench/reactor_instructions.py --checkout /tmp/main-export --messages 300
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_measure import count_maildir_new
from bench_pymta import TWISTD, PymtaServer
from bench_setup import DOMAIN, LISTEN_HOST, SENDER, MailSetup

SMTP_SOURCE = "/usr/sbin/smtp-source"


class CallgrindPymta(PymtaServer):
    """The bench's pymta, its twistd under callgrind, instrumentation off."""

    def __init__(self, workdir: Path, setup: MailSetup, checkout: Path, out: Path) -> None:
        super().__init__(workdir, setup, startup_timeout=900.0)
        self.checkout = checkout
        self.out = out

    def spawn(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.checkout)
        self._log_file = open(self.twistd_log, "wb")
        self._proc = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                "--separate-threads=yes",
                "--dump-instr=no",
                f"--callgrind-out-file={self.out}.%p",
                *TWISTD,
                "-n",
                "--pidfile=",
                "pymta",
                "--config",
                str(self.config),
            ],
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self._proc


def send(port: int, connections: int, messages: int, size: int, recipient: str) -> None:
    subprocess.run(
        [
            *(SMTP_SOURCE, "-s", str(connections), "-m", str(messages), "-l", str(size)),
            *("-f", SENDER, "-t", recipient, f"{LISTEN_HOST}:{port}"),
        ],
        stdout=subprocess.DEVNULL,
        check=True,
    )


def wait_delivered(new: Path, count: int, timeout: float) -> None:
    """Poll the Maildir (no event says a file arrived in another process)."""
    deadline = time.monotonic() + timeout
    while count_maildir_new(new) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count_maildir_new(new)}/{count} delivered in {timeout:.0f}s")
        time.sleep(0.2)


def totals(prefix: Path) -> dict[int, int]:
    """thread number -> instructions, from the dump's per-thread files."""
    found: dict[int, int] = {}
    for path in prefix.parent.glob(prefix.name + ".*.1-*"):
        thread = int(path.name.rsplit("-", 1)[1])
        match = re.search(r"^totals:\s+(\d+)", path.read_text(errors="replace"), re.MULTILINE)
        found[thread] = int(match.group(1)) if match else 0
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--messages", type=int, default=300)
    p.add_argument("--connections", type=int, default=20)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    p.add_argument("--checkout", type=Path, default=Path(__file__).resolve().parent.parent)
    p.add_argument("--mailbox-user", default="nobody")
    args = p.parse_args(argv)
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: apt-get install -y valgrind", file=sys.stderr)
            return 2
    if not os.access(SMTP_SOURCE, os.X_OK):
        print(f"{SMTP_SOURCE} not found: apt-get install -y postfix", file=sys.stderr)
        return 2
    owner = pwd.getpwnam(args.mailbox_user)
    recipient = f"run1@{DOMAIN}"
    setup = MailSetup((recipient,), owner.pw_uid, owner.pw_gid)
    args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="reactor-instr.", dir=args.workdir))
    out = workdir / "callgrind.out"
    server = CallgrindPymta(workdir, setup, args.checkout.resolve(), out)
    try:
        server.start()
        pid = str(server.root_pids()[0])
        new = server.maildir_new(recipient)
        send(server.port, args.connections, args.warmup, args.size, recipient)
        wait_delivered(new, args.warmup, 600)
        subprocess.run(
            ["callgrind_control", "-i", "on", pid],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        send(server.port, args.connections, args.messages, args.size, recipient)
        wait_delivered(new, args.warmup + args.messages, 1800)
        subprocess.run(
            ["callgrind_control", "-d", "measured", pid],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        found = totals(out)
    finally:
        server.stop()
    print(
        f"pymta ({args.checkout}): {args.messages} x {args.size} B over"
        f" {args.connections} connection(s), instructions per message by thread"
    )
    for thread in sorted(found):
        role = "reactor" if thread == 1 else "worker"
        print(f"  thread {thread} ({role}): {found[thread] / args.messages:,.0f}")
    print(f"  all threads: {sum(found.values()) / args.messages:,.0f}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
