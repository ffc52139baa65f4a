"""End to end: ``pymta start|status|reload|stop|abort`` (pymta.cli.control)
drive a real daemonised twistd in a temporary directory: start refuses a
second start, status answers 0/1 as postfix-script does, reload refuses a
broken configuration before signalling and applies a good one, stop waits
for the exit and leaves no pid file, abort stops at once."""

from __future__ import annotations

import pwd
import re
import smtplib
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from pymta.cli.control import running_pid
from tests.harness import DEFAULT_MASTER_CF, REPO, PymtaServer, wait_for_file
from tests.test_deploy_root import needs_root
from tests.test_deploy_root import shared_dir as shared_dir  # the fixture
from tests.test_e2e_relay import free_port
from tests.test_e2e_reload import _SlowRelay, send


def pymta(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the pymta command on the instance under root."""
    return subprocess.run(
        [sys.executable, "-m", "pymta.cli.main", "-c", str(root / "etc"), *args],
        cwd=root,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_log(log: Path, pattern: str, count: int = 1) -> list[str]:
    """Wait until twistd's log file has ``count`` lines matching pattern."""
    regex = re.compile(pattern)

    def found() -> list[str]:
        text = log.read_text() if log.exists() else ""
        return [line for line in text.splitlines() if regex.search(line)]

    wait_for_file(log, lambda: len(found()) >= count, timeout=30)
    return found()


def kill_if_running(root: Path) -> None:
    """SIGKILL the instance a failed test left running (its pid file's twistd)."""
    pid = running_pid(root / "lib" / "pid" / "pymta.pid")
    if pid is not None:
        subprocess.run(["kill", "-KILL", str(pid)], check=False, capture_output=True)


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    PymtaServer(tmp_path)  # writes etc/ (main.cf, master.cf, tables)
    return tmp_path


def test_start_status_reload_stop_round_trip(instance: Path) -> None:
    """start daemonises with the pid file under data_directory and refuses a
    second start; status says running (0) or not (1); reload refuses a
    broken main.cf without signalling and applies a good one; stop waits
    for the exit and the pid file is gone."""
    pidfile = instance / "lib" / "pid" / "pymta.pid"
    log = instance / "lib" / "twistd.log"
    status = pymta(instance, "status")
    assert status.returncode == 1 and "not running" in status.stdout

    started = pymta(instance, "start")
    assert started.returncode == 0, started.stderr
    pid = int(pidfile.read_text())
    assert f"PID: {pid}" in started.stdout
    try:
        status = pymta(instance, "status")
        assert status.returncode == 0 and f"is running: PID: {pid}" in status.stdout
        again = pymta(instance, "start")
        assert again.returncode == 1 and "already running" in again.stderr

        port = int(wait_log(log, r"listening on 127\.0\.0\.1:(\d+)")[0].rsplit(":", 1)[1])
        main_cf = instance / "etc" / "main.cf"
        good = main_cf.read_text()
        main_cf.write_text(good + "smtpd_relay_restrictions = no_such_restriction\n")
        refused = pymta(instance, "reload")
        assert refused.returncode == 1 and "not reloaded" in refused.stderr
        assert "reload:" not in log.read_text()  # never signalled

        main_cf.write_text(good + "smtpd_banner = $myhostname ESMTP via reload\n")
        reloaded = pymta(instance, "reload")
        assert reloaded.returncode == 0, reloaded.stderr
        wait_log(log, r"reload: done")
        client = smtplib.SMTP(timeout=30)
        _code, text = client.connect("127.0.0.1", port)
        client.quit()
        assert text.decode() == "mx.example.test ESMTP via reload"

        stopped = pymta(instance, "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert "has stopped" in stopped.stdout
        assert not pidfile.exists()
        status = pymta(instance, "status")
        assert status.returncode == 1
        stop_again = pymta(instance, "stop")
        assert stop_again.returncode == 1 and "not running" in stop_again.stderr
    finally:
        kill_if_running(instance)


def test_abort_stops_at_once(instance: Path) -> None:
    """abort (SIGQUIT) stops the daemon without waiting for deliveries: the
    command returns once the process is gone, and it logs why."""
    started = pymta(instance, "start")
    assert started.returncode == 0, started.stderr
    assert (instance / "lib" / "pid" / "pymta.pid").exists()
    try:
        aborted = pymta(instance, "abort")
        assert aborted.returncode == 0, aborted.stderr
        assert "abort: stopping without waiting" in (instance / "lib" / "twistd.log").read_text()
        assert pymta(instance, "status").returncode == 1
    finally:
        kill_if_running(instance)


def test_stop_drains_deliveries_abort_does_not(tmp_path: Path) -> None:
    """stop waits for a delivery in flight (held by a slow relay): with a
    short -t it reports the system still running; abort then stops it at
    once; the message stays queued and the next start delivers it."""
    handler = _SlowRelay()
    relay_port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=relay_port)
    controller.start()
    PymtaServer(
        tmp_path,
        main_cf_extra=(
            f"relayhost = [127.0.0.1]:{relay_port}\nminimal_backoff_time = 1s\n"
            "maximal_backoff_time = 1s\nqueue_run_delay = 1s\n"
        ),
        master_cf=DEFAULT_MASTER_CF + "smtp unix - - n - - smtp\nrelay unix - - n - - smtp\n",
    )
    log = tmp_path / "lib" / "twistd.log"
    try:
        assert pymta(tmp_path, "start").returncode == 0
        port = int(wait_log(log, r"listening on 127\.0\.0\.1:(\d+)")[0].rsplit(":", 1)[1])
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            send(client, "someone@remote.test")
        assert handler.arrived.wait(30)

        stopping = pymta(tmp_path, "stop", "-t", "2")
        assert stopping.returncode == 1 and "still running" in stopping.stderr
        assert pymta(tmp_path, "status").returncode == 0
        aborted = pymta(tmp_path, "abort")
        assert aborted.returncode == 0, aborted.stderr
        assert pymta(tmp_path, "status").returncode == 1

        handler.arrived.clear()
        handler.release.set()  # the next start's delivery goes through
        assert pymta(tmp_path, "start").returncode == 0
        wait_log(log, r"to=<someone@remote\.test>.*status=sent")
        assert pymta(tmp_path, "stop").returncode == 0
        assert len(handler.messages) >= 1
    finally:
        handler.release.set()
        kill_if_running(tmp_path)
        controller.stop()


def test_start_that_cannot_bind_says_why(tmp_path: Path) -> None:
    """A daemonised start whose port is taken fails (exit 1) with the
    one-line cause naming the master.cf line, not twistd's cut report; no
    pid file is left."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        PymtaServer(tmp_path, master_cf=f"127.0.0.1:{port} inet n - n - - smtpd\n")
        try:
            result = pymta(tmp_path, "start")
        finally:
            kill_if_running(tmp_path)
    assert result.returncode == 1
    first = result.stderr.splitlines()[0]
    assert first.startswith("pymta: fatal: ") and "master.cf, line 1" in first
    assert "Address already in use" in first
    assert not (tmp_path / "lib" / "pid" / "pymta.pid").exists()


@needs_root
def test_start_as_root_with_u_reload_and_stop(shared_dir: Path) -> None:
    """``pymta start -u nobody -g nogroup`` as root: the daemon runs as
    nobody with its pid file under data_directory; after the switch a
    reload still reads the configuration and opens a new (unprivileged)
    listener; stop leaves no pid file behind."""
    server = PymtaServer(shared_dir)
    for path in server.config_dir.iterdir():
        path.chmod(0o644)
    pidfile = shared_dir / "lib" / "pid" / "pymta.pid"
    log = shared_dir / "lib" / "twistd.log"
    try:
        started = pymta(shared_dir, "start", "-u", "nobody", "-g", "nogroup")
        assert started.returncode == 0, started.stderr
        pid = int(pidfile.read_text())
        status = Path(f"/proc/{pid}/status").read_text()
        uids = re.search(r"^Uid:\s+(\d+)", status, re.M)
        assert uids and int(uids.group(1)) == pwd.getpwnam("nobody").pw_uid
        (server.config_dir / "master.cf").write_text(
            DEFAULT_MASTER_CF + "[127.0.0.1]:0 inet n - n - - smtpd\n"
        )
        assert pymta(shared_dir, "reload").returncode == 0
        wait_log(log, r"\[127\.0\.0\.1\]:0 listening on")
        wait_log(log, r"reload: done")
        stopped = pymta(shared_dir, "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert not pidfile.exists()
        assert "No permission to delete pid file" not in log.read_text()
    finally:
        kill_if_running(shared_dir)
