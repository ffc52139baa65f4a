"""End to end: ``pymta_processes = 2`` — a real ``twistd pymta`` master and
its worker share the SMTP and POP3 sockets and the queue, driven by Python's
smtplib and poplib over loopback; a worker killed with SIGKILL is restarted
by the master and no acknowledged message is lost."""

from __future__ import annotations

import contextlib
import os
import poplib
import re
import select
import signal
import smtplib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    DEFAULT_MASTER_CF,
    DEFAULT_PASSWD,
    POP3_SERVICE,
    PymtaServer,
    wait_for_file,
)

_TOKEN = re.compile(rb"X-Token: (\S+)")
_SENT = re.compile(r"postfix/virtual\[(\d+)\]: \S+: to=<alice@example\.test>.*status=sent")
_LOGIN = re.compile(r"pop3-login: Login: user=<u\d+@example\.test>.*mpid=(\d+)")
_WORKER = r"worker 1 started, pid (\d+)"


#: POP3 users of the login loop, one per session: a client that reconnects
#: the instant after QUIT may reach the other process before the first one
#: has dropped the session lock, and be told [IN-USE].
USERS = [f"u{n:03d}@example.test" for n in range(400)]


@contextlib.contextmanager
def two_processes(tmp_path: Path, service: str, **options: Any) -> Iterator[PymtaServer]:
    """A running ``twistd pymta`` with ``pymta_processes = 2`` (its worker
    up), master.cf's defaults plus ``service``, a maillog file, and any
    other PymtaServer options."""
    with PymtaServer(
        tmp_path,
        main_cf_extra=f"pymta_processes = 2\nmaillog_file = {tmp_path}/maillog\n",
        master_cf=DEFAULT_MASTER_CF + service,
        **options,
    ) as instance:
        instance.start()
        instance.wait_for_log(r"worker 1 running")
        yield instance
        instance.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PymtaServer]:
    vmailbox = "alice@example.test example.test/alice/\n" + "".join(
        f"{user} example.test/{user.split('@')[0]}/\n" for user in USERS
    )
    passwd = DEFAULT_PASSWD + "".join(f"{user}:{{PLAIN}}pw::::::\n" for user in USERS)
    with two_processes(tmp_path, POP3_SERVICE, vmailbox=vmailbox, passwd=passwd) as instance:
        yield instance


def token_message(token: str) -> bytes:
    """A small message that names its token in the Subject and X-Token."""
    return f"Subject: {token}\r\nX-Token: {token}\r\n\r\nbody of {token}\r\n".encode()


def _delivered_tokens(server: PymtaServer) -> list[str]:
    tokens = []
    for content in server.messages("alice"):
        match = _TOKEN.search(content)
        assert match is not None
        tokens.append(match.group(1).decode())
    return tokens


def _maillog(server: PymtaServer) -> str:
    path = server.root / "maillog"
    return path.read_text() if path.exists() else ""


def _wait_delivered(server: PymtaServer, tokens: set[str], timeout: float = 120.0) -> None:
    new = server.maildir("alice") / "new"
    new.mkdir(parents=True, exist_ok=True)
    wait_for_file(new, lambda: tokens <= set(_delivered_tokens(server)), timeout)


def _worker_pid(server: PymtaServer, count: int = 1) -> int:
    line = server.wait_for_log(_WORKER, count=count)[count - 1]
    match = re.search(_WORKER, line)
    assert match is not None
    return int(match.group(1))


def test_two_processes_share_the_load_and_deliver_each_message_once(
    server: PymtaServer,
) -> None:
    """200 messages from 10 concurrent smtplib clients are all delivered exactly
    once; both processes (two pids in the maillog) deliver; POP3 logins
    succeed in both processes, while the load runs."""
    master_pid = server.process.pid if server.process else 0
    worker_pid = _worker_pid(server)
    assert worker_pid != master_pid
    tokens = [f"m{i:03d}" for i in range(200)]

    def client(batch: list[str]) -> None:
        # One connection per message: 200 accepts for the kernel to spread
        # over the two processes (10 long sessions could all land on one).
        for token in batch:
            with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=60) as smtp:
                smtp.sendmail("sender@client.test", ["alice@example.test"], token_message(token))

    login_pids: set[int] = set()
    done = threading.Event()

    def pop3_logins() -> None:
        # Logins until both processes served one (bounded): each new connection
        # goes to whichever process accepts it first.
        for user in USERS:
            pop = poplib.POP3("127.0.0.1", server.pop3_port, timeout=60)
            pop.user(user)
            pop.pass_("pw")
            assert pop.stat()[0] == 0
            pop.quit()
            login_pids.update(
                int(m.group(1)) for m in map(_LOGIN.search, server.log().splitlines()) if m
            )
            if len(login_pids) == 2 and done.is_set():
                return

    with ThreadPoolExecutor(11) as pool:
        pop3 = pool.submit(pop3_logins)
        sends = [pool.submit(client, tokens[i::10]) for i in range(10)]
        for future in sends:
            future.result()
        done.set()
        pop3.result()
    _wait_delivered(server, set(tokens))
    delivered = _delivered_tokens(server)
    assert sorted(delivered) == tokens  # every one, and none twice
    wait_for_file(server.root / "maillog", lambda: len(_SENT.findall(_maillog(server))) >= 200)
    delivering = {int(pid) for pid in _SENT.findall(_maillog(server))}
    assert delivering == {master_pid, worker_pid}
    assert login_pids == {master_pid, worker_pid}
    # After the load, POP3 in either process sees all of it.
    pop = poplib.POP3("127.0.0.1", server.pop3_port, timeout=60)
    pop.user("alice@example.test")
    pop.pass_("alice-pw")
    assert pop.stat()[0] == 200
    pop.quit()


def test_a_killed_worker_is_restarted_and_no_acknowledged_mail_is_lost(
    server: PymtaServer,
) -> None:
    """SIGKILL of the worker in the middle of a load: the master logs Postfix's
    "process ... killed by signal 9" warning, starts a new worker, and every
    message that got its 250 is delivered (the dead worker's queue files are
    recovered by the master); the new worker serves connections too."""
    worker_pid = _worker_pid(server)
    acknowledged: set[str] = set()
    lock = threading.Lock()
    enough = threading.Event()

    def client(name: str) -> None:
        smtp: smtplib.SMTP | None = None
        for i in range(40):
            token = f"{name}-{i:02d}"
            try:
                if smtp is None:
                    smtp = smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=60)
                smtp.sendmail("sender@client.test", ["alice@example.test"], token_message(token))
            except (smtplib.SMTPException, OSError):
                smtp = None  # the process holding this connection died: reconnect
                continue
            with lock:
                acknowledged.add(token)
                if len(acknowledged) >= 60:
                    enough.set()
        if smtp is not None:
            smtp.quit()

    with ThreadPoolExecutor(6) as pool:
        sends = [pool.submit(client, f"c{n}") for n in range(6)]
        assert enough.wait(120)
        os.kill(worker_pid, signal.SIGKILL)
        for future in sends:
            future.result()
    warning = f"warning: process pymta/worker pid {worker_pid} killed by signal 9"
    wait_for_file(server.root / "maillog", lambda: warning in _maillog(server))
    new_pid = _worker_pid(server, count=2)
    assert new_pid != worker_pid
    assert len(acknowledged) > 60
    _wait_delivered(server, acknowledged)
    # After the restart both processes accept again: more mail gets through.
    server.wait_for_log(r"worker 1 running", count=2)
    later = {f"after-{i:02d}" for i in range(20)}
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=60) as smtp:
        for token in sorted(later):
            smtp.sendmail("sender@client.test", ["alice@example.test"], token_message(token))
    _wait_delivered(server, acknowledged | later)
    spool = server.root / "spool"

    def queued(name: str) -> list[str]:
        # A worker killed in the middle of writing leaves ``ID.tmp`` behind:
        # never renamed, never acknowledged, so not mail (the master removes
        # such leftovers at its next start, as postsuper does).
        return [f for f in os.listdir(spool / name) if not f.endswith(".tmp")]

    try:
        wait_for_file(spool / "active", lambda: not queued("active") and not queued("incoming"))
    except TimeoutError:
        pytest.fail(
            f"left in the queue: active={queued('active')} incoming={queued('incoming')}\n"
            + _maillog(server)[-4000:]
        )


def test_workers_exit_when_the_master_is_killed(tmp_path: Path) -> None:
    """With pymta_processes = 3 the master runs two workers; a SIGKILL of the
    master (no chance to stop them) still ends both: their stdin pipe from
    the master reaches end-of-file, so no orphan keeps the sockets."""
    with PymtaServer(tmp_path, main_cf_extra="pymta_processes = 3\n") as server:
        server.start()
        server.wait_for_log(r"worker 2 running")
        pids = [int(p) for p in re.findall(r"worker \d started, pid (\d+)", server.log())]
        assert len(set(pids)) == 2
        pidfds = [os.pidfd_open(pid) for pid in pids]
        try:
            server.kill()
            for pidfd in pidfds:
                readable, _, _ = select.select([pidfd], [], [], 30)
                assert readable, "a worker outlived its master"
        finally:
            for pidfd in pidfds:
                os.close(pidfd)
