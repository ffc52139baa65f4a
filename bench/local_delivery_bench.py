"""local_delivery_bench - how fast pymta delivers as Unix users.

SYNOPSIS
    python bench/local_delivery_bench.py [--messages N] [--parallel P]

DESCRIPTION
    Delivers N messages of 1 KiB to a throw-away Unix user (made with
    useradd, removed after; needs root) through each way pymta becomes a
    recipient (pymta.privsep): the child per delivery started by the
    server itself (SpawningUserDelivery) and the root helper used after
    twistd's -u switch (HelperUserDelivery), each for an mbox in a
    Debian-style spool (root:mail 2775, fcntl + dotlock) and for
    ~/Maildir, with P deliveries in flight. Each delivery starts one
    process that takes the user's identity and fsyncs before it reports.
    Prints one line per case: messages per second and milliseconds per
    delivery, and the start-up time of the child's interpreter alone
    (``python -I -S -c pass``), which bounds the rate. Then the Maildir
    case through the Sieve path (deliver_sieve, what local delivery uses
    with pymta_sieve_enable = yes): without a script (one lstat more),
    and with an active ``fileinto :create`` script (N/10 messages: the
    child then loads pymta's Sieve code and the Maildir writer).
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twisted.internet import defer, task

from pymta.privsep.client import start_helper
from pymta.privsep.interface import Grounds, IUserDelivery, UnixUser
from pymta.privsep.spawn import SpawningUserDelivery
from pymta.queue.reference import BytesContent
from pymta.sieve.filter import SieveSettings

MESSAGE = b"Subject: bench\n\n" + b"x" * 1000 + b"\n"
SCRIPT = 'require ["fileinto", "mailbox"];\nfileinto :create "Bench";\n'


def python_startup(count: int = 20) -> float:
    start = time.perf_counter()
    for _ in range(count):
        subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], check=True)
    return (time.perf_counter() - start) / count


@defer.inlineCallbacks
def run_case(
    users: IUserDelivery, user: UnixUser, kind: str, target: str, count: int, parallel: int
) -> Generator[defer.Deferred[Any], Any, float]:
    from twisted.internet import reactor

    semaphore = defer.DeferredSemaphore(parallel)

    # The helper works the mailbox out from its main.cf and the recipient.
    grounds = Grounds("mailbox", f"{user.name}@localhost")

    def one(_: int) -> defer.Deferred[tuple[str, str]]:
        if kind == "sieve":
            d = users.deliver_sieve(
                user, target, "a@example.org", b"", BytesContent(MESSAGE), time.time(),
                ["fcntl", "dotlock"], 0, SieveSettings().for_child(), grounds,
            )  # fmt: skip
            return d.addCallback(lambda result: (result.status, result.text))
        if kind == "mbox":
            return users.append_mbox(
                user, target, "a@example.org", b"", BytesContent(MESSAGE), time.time(),
                ["fcntl", "dotlock"], 0, grounds=grounds,
            )  # fmt: skip
        return users.deliver_maildir(user, target, b"", BytesContent(MESSAGE), grounds=grounds)

    start = reactor.seconds()
    results = yield defer.gatherResults([semaphore.run(one, i) for i in range(count)])
    elapsed: float = reactor.seconds() - start
    bad = [r for r in results if not r[0].startswith("2")]
    if bad:
        raise RuntimeError(f"{len(bad)} deliveries failed: {bad[0]}")
    return elapsed


@defer.inlineCallbacks
def main(reactor: Any, count: int, parallel: int) -> Generator[defer.Deferred[Any], Any, None]:
    root = Path(tempfile.mkdtemp(prefix="pymta-bench-local-", dir="/tmp"))
    root.chmod(0o755)
    name = f"pymtab{os.getpid() % 100000}"
    subprocess.run(
        ["useradd", "-m", "-d", str(root / "home"), "-s", "/bin/sh", "-U", name],
        check=True,
        capture_output=True,
    )
    etc = root / "etc"
    etc.mkdir()
    main_cf = etc / "main.cf"
    main_cf.write_text(f"mail_spool_directory = {root}/mail\n")
    helper = start_helper(str(etc))
    try:
        user = UnixUser.from_pwd(pwd.getpwnam(name))
        spool = root / "mail"
        spool.mkdir()
        os.chown(spool, 0, grp.getgrnam("mail").gr_gid)
        spool.chmod(0o2775)
        print(f"child interpreter start-up: {python_startup() * 1000:.1f} ms")
        ways = [("child", SpawningUserDelivery(reactor, reactor)), ("helper", helper)]
        for way, users in ways:
            for kind, target in (("mbox", str(spool / name)), ("maildir", f"{user.home}/Maildir/")):
                home_mailbox = "Maildir/" if kind == "maildir" else ""
                main_cf.write_text(
                    f"mail_spool_directory = {root}/mail\nhome_mailbox = {home_mailbox}\n"
                )
                elapsed = yield run_case(users, user, kind, target, count, parallel)
                print(
                    f"{way:6} {kind:7} {count} messages, {parallel} in flight: "
                    f"{count / elapsed:.0f} msg/s, {elapsed / count * 1000:.1f} ms each"
                )
        home = Path(user.home)
        main_cf.write_text(f"mail_spool_directory = {root}/mail\nhome_mailbox = Maildir/\n")
        for label, script, n in (("no script", None, count), ("fileinto", SCRIPT, count // 10)):
            if script is not None:
                (home / "sieve").mkdir(exist_ok=True)
                (home / "sieve" / "main.sieve").write_text(script)
                (home / ".dovecot.sieve").symlink_to("sieve/main.sieve")
                for path in (
                    home / "sieve",
                    home / "sieve" / "main.sieve",
                    home / ".dovecot.sieve",
                ):
                    os.lchown(path, user.uid, user.gid)
            for way, users in ways:
                elapsed = yield run_case(users, user, "sieve", f"{user.home}/Maildir/", n, parallel)
                print(
                    f"{way:6} sieve, {label}: {n} messages, {parallel} in flight: "
                    f"{n / elapsed:.0f} msg/s, {elapsed / n * 1000:.1f} ms each"
                )
    finally:
        helper.close()
        subprocess.run(["userdel", "-r", name], check=False, capture_output=True)
        subprocess.run(["groupdel", name], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--parallel", type=int, default=4)
    options = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("local_delivery_bench: needs root (useradd, becoming the user)")
    task.react(main, (options.messages, options.parallel))
