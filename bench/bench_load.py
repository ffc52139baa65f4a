"""bench_load - one pymta of another tree under a wrapper, loaded by smtp-source.

What bench/reactor_instructions.py (callgrind), bench/syscall_counts.py
(strace) and bench/reactor_calls.py (cProfile) share: the bench's pymta
instance (bench_pymta, bench_setup) run from a given checkout, its twistd
optionally under a wrapper command, and the load Postfix's smtp-source
sends it, with the Maildir polled until the messages are in
(:func:`warmed_up`: start, warm up, then the measured load).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench_measure import count_maildir_new
from bench_pymta import PymtaServer
from bench_setup import DOMAIN, LISTEN_HOST, SENDER, MailSetup

SMTP_SOURCE = "/usr/sbin/smtp-source"
RECIPIENT = f"run1@{DOMAIN}"


class CheckoutPymta(PymtaServer):
    """The bench's pymta from ``checkout``, its twistd run under
    ``wrapper`` (e.g. valgrind's command line; none: as it is): what
    bench_pymta's spawn() runs, with these two set."""

    def __init__(
        self,
        workdir: Path,
        setup: MailSetup,
        checkout: Path,
        wrapper: Sequence[str] = (),
        startup_timeout: float | None = None,
    ) -> None:
        if startup_timeout is None:
            super().__init__(workdir, setup)
        else:
            super().__init__(workdir, setup, startup_timeout=startup_timeout)
        self.checkout = checkout
        self.wrapper = tuple(wrapper)


def load_arguments(description: str, messages: int, warmup: int) -> argparse.ArgumentParser:
    """The options both benches take, with their defaults."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--messages", type=int, default=messages)
    p.add_argument("--connections", type=int, default=20)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--warmup", type=int, default=warmup)
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    p.add_argument("--checkout", type=Path, default=Path(__file__).resolve().parent.parent)
    p.add_argument("--mailbox-user", default="nobody")
    return p


def smtp_source_missing() -> bool:
    """True (and said) when Postfix's smtp-source is not installed."""
    if os.access(SMTP_SOURCE, os.X_OK):
        return False
    print(f"{SMTP_SOURCE} not found: apt-get install -y postfix", file=sys.stderr)
    return True


def mail_setup(mailbox_user: str) -> MailSetup:
    """The bench's one recipient, its Maildir owned by ``mailbox_user``."""
    owner = pwd.getpwnam(mailbox_user)
    return MailSetup((RECIPIENT,), owner.pw_uid, owner.pw_gid)


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


@dataclass
class LoadRun:
    """A started, warmed-up instance (:func:`warmed_up`)."""

    server: CheckoutPymta
    workdir: Path
    #: The twistd (or its wrapper's) process id.
    pid: int
    args: argparse.Namespace

    def measure(self) -> None:
        """Send the measured messages and wait until they are delivered."""
        args = self.args
        send(self.server.port, args.connections, args.messages, args.size, RECIPIENT)
        new = self.server.maildir_new(RECIPIENT)
        wait_delivered(new, args.warmup + args.messages, 1800)


def load_directory(args: argparse.Namespace, prefix: str) -> Path:
    """A new directory under ``--workdir`` for one run (its name starts
    with ``prefix``)."""
    args.workdir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=args.workdir))


@contextlib.contextmanager
def warmed_up(
    args: argparse.Namespace,
    workdir: Path,
    wrapper: Sequence[str] = (),
    startup_timeout: float | None = None,
) -> Iterator[LoadRun]:
    """The checkout's pymta in ``workdir`` (:func:`load_directory`),
    started, the warm-up messages sent and delivered; stopped on leaving,
    and ``workdir`` removed when nothing failed (kept to look at
    otherwise)."""
    server = CheckoutPymta(
        workdir, mail_setup(args.mailbox_user), args.checkout.resolve(), wrapper, startup_timeout
    )
    try:
        server.start()
        send(server.port, args.connections, args.warmup, args.size, RECIPIENT)
        wait_delivered(server.maildir_new(RECIPIENT), args.warmup, 600)
        yield LoadRun(server, workdir, server.root_pids()[0], args)
    finally:
        server.stop()
    shutil.rmtree(workdir, ignore_errors=True)
