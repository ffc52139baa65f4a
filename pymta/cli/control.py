"""``pymta start|stop|abort|status|reload``: control a running pymta.

Mirrors ``postfix start``/``stop``/``abort``/``status``/``reload``
(postfix-script). The instance is the configuration directory's (``-c DIR``,
$MAIL_CONFIG, ...): its pid file is ``$data_directory/pid/pymta.pid``.

- ``start [-c DIR] [TWISTD_OPTION ...]``: refuses when that instance runs,
  else runs ``twistd --pidfile $data_directory/pid/pymta.pid --logfile
  $data_directory/twistd.log [TWISTD_OPTION ...] pymta --config DIR``,
  which daemonises and exits once the listeners are bound (twistd's status
  pipe). TWISTD_OPTIONs (``-u pymta -g pymta``, ``--logfile FILE``) go to
  twistd.
- ``stop [-c DIR] [-t SECONDS]``: SIGTERM: pymta stops listening, waits for
  the deliveries in flight, ends the sessions, removes its pid file and
  exits; the command waits for the exit (60 seconds unless ``-t``) and
  says so. Exit status 1 when it was not running or is still running.
- ``abort [-c DIR]``: SIGQUIT: stop at once, without waiting for the
  deliveries in flight (the queue keeps them for the next start).
- ``status [-c DIR]``: ``the mail system is running: PID: N`` (exit 0) or
  ``the mail system is not running`` (exit 1), as postfix-script prints.
- ``reload [-c DIR]``: checks the configuration as ``pymta check`` does
  (a broken one is refused here, exit 1) and sends SIGHUP
  (pymta.master.reload; the server validates again and logs the outcome).

Reads the pid file and /proc; signals only the pid the pid file names, and
only when that process is a twistd (a stale pid file is ignored).
"""

from __future__ import annotations

import contextlib
import getopt
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from pymta.cli.main import PROG, fatal, warning

#: The pid file under data_directory. In a directory of its own: started
#: as root with -u, pymta makes it owned by that user (pymta.ownership), who
#: must be able to remove the pid file at the stop.
PID_FILE = "pid/pymta.pid"

#: twistd's log file's name under data_directory, unless --logfile is given.
TWISTD_LOG = "twistd.log"

#: How long ``stop`` waits for the exit unless -t says otherwise (seconds).
STOP_TIMEOUT = 60.0

#: How long ``abort`` waits for the exit.
ABORT_TIMEOUT = 30.0


def _data_directory(config_dir: str) -> Path:
    from pymta.config import Config
    from pymta.service import resolve_paths

    config = resolve_paths(Config.load(config_dir))
    return Path(config.get("data_directory"))


def pid_file(config_dir: str) -> Path:
    """Where the instance of ``config_dir`` keeps its pid."""
    return _data_directory(config_dir) / PID_FILE


def running_pid(path: Path) -> int | None:
    """The pid of the running twistd named by the pid file, else None."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it exists, owned by another user (pymta run by root)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid  # no /proc: trust the pid file
    if b"twistd" not in cmdline and b"pymta" not in cmdline:
        return None  # a stale pid file naming a reused pid
    return pid


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait until process ``pid`` is gone; False after ``timeout`` seconds.

    Linux tells through a pidfd when a process ends (no child of ours, so no
    wait()); elsewhere the process is looked at ten times a second."""
    deadline = time.monotonic() + timeout
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = -1
    try:
        while True:
            if not _alive(pid):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if fd >= 0:
                select.select([fd], [], [], remaining)
            else:
                time.sleep(min(remaining, 0.1))
    finally:
        if fd >= 0:
            os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (a child of the caller, e.g. in tests) has exited too.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return False
    return True


def _parse(
    args: list[str], name: str, spec: str = "c:"
) -> tuple[list[tuple[str, str]], list[str]] | None:
    try:
        return getopt.getopt(args, spec)
    except getopt.GetoptError as e:
        _usage_error(name, e.msg)
        return None


def _only_config_dir(args: list[str], name: str, config_dir: str) -> str | None:
    """The configuration directory of a command that takes only ``-c DIR``
    (None after a usage error, already printed)."""
    parsed = _parse(args, name)
    if parsed is None:
        return None
    opts, rest = parsed
    for _opt, value in opts:
        config_dir = value
    if rest:
        _usage_error(name, "unexpected arguments")
        return None
    return config_dir


def _usage_error(name: str, message: str) -> int:
    fatal(f"{message}; usage: {PROG} {name} [-c DIR]")
    return 1


def run_start(args: list[str], config_dir: str) -> int:
    """``pymta start [-c DIR] [TWISTD_OPTION ...]``."""
    while args[:1] == ["-c"] and len(args) > 1:
        config_dir, args = args[1], args[2:]
    try:
        data = _data_directory(config_dir)
    except Exception as e:  # ConfigError, OSError: as the start would say it
        fatal(str(e))
        return 1
    pidfile = data / PID_FILE
    pid = running_pid(pidfile)
    if pid is not None:
        fatal(f"the mail system is already running: PID: {pid}")
        return 1
    data.mkdir(parents=True, exist_ok=True)
    twistd_options = list(args)
    if not any(o == "-u" or o.startswith(("-u", "--uid")) for o in twistd_options):
        pidfile.parent.mkdir(exist_ok=True)  # with -u pymta makes it, owned by the user
    if not any(o == "--logfile" or o.startswith(("--logfile=", "-l")) for o in twistd_options):
        twistd_options = ["--logfile", str(data / TWISTD_LOG), *twistd_options]
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env.pop("MAIL_CONFIG", None)  # --config names it
    argv = [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "--pidfile",
        str(pidfile),
        *twistd_options,
        "pymta",
        "--config",
        os.path.abspath(config_dir),
    ]
    logfile = _logfile(twistd_options)
    try:
        log_offset = os.path.getsize(logfile)
    except OSError:
        log_offset = 0
    # twistd daemonises; its first process exits when the daemon has bound
    # its ports (or failed to). A configuration error is its one stderr line;
    # a failure after daemonising is a "pymta: fatal:" line in its log
    # (twistd's own report of it is cut at 100 bytes).
    result = subprocess.run(
        argv, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False
    )
    if result.returncode != 0:
        reasons = _fatal_lines(logfile, log_offset)
        if reasons:
            for reason in reasons:
                print(reason, file=sys.stderr)
        else:
            sys.stderr.write(result.stderr)
        fatal(f"the mail system did not start (see {logfile})")
        return 1
    pid = running_pid(pidfile)
    if pid is None:
        fatal(f"the mail system did not start (see {logfile})")
        return 1
    print(f"{PROG}: starting the mail system: PID: {pid}")
    return 0


def _logfile(twistd_options: list[str]) -> str:
    for i, option in enumerate(twistd_options):
        if option in ("--logfile", "-l") and i + 1 < len(twistd_options):
            return twistd_options[i + 1]
        if option.startswith("--logfile="):
            return option.split("=", 1)[1]
        if option.startswith("-l") and len(option) > 2:
            return option[2:]
    return "twistd.log"


def _fatal_lines(logfile: str, offset: int) -> list[str]:
    """The ``pymta: fatal: ...`` lines twistd's log got after offset."""
    try:
        with open(logfile, encoding="utf-8", errors="replace") as f:
            f.seek(offset)
            text = f.read()
    except OSError:
        return []
    marker = f"{PROG}: fatal: "
    return sorted(
        {line[line.index(marker) :] for line in text.splitlines() if marker in line},
        key=text.index,
    )


def _signal_running(config_dir: str, number: int) -> int | None:
    pid = running_pid(pid_file(config_dir))
    if pid is None:
        fatal("the mail system is not running")
        return None
    try:
        os.kill(pid, number)
    except PermissionError:
        fatal(f"cannot signal PID {pid}: permission denied (run as its user or root)")
        return None
    except ProcessLookupError:
        fatal("the mail system is not running")
        return None
    return pid


def run_stop(args: list[str], config_dir: str) -> int:
    """``pymta stop [-c DIR] [-t SECONDS]``: graceful stop, waited for."""
    parsed = _parse(args, "stop", "c:t:")
    if parsed is None:
        return 1
    opts, rest = parsed
    timeout = STOP_TIMEOUT
    for opt, value in opts:
        if opt == "-c":
            config_dir = value
        else:
            try:
                timeout = float(value)
            except ValueError:
                return _usage_error("stop", f"bad -t {value!r}: expected seconds")
    if rest:
        return _usage_error("stop", "unexpected arguments")
    pid = _signal_running(config_dir, signal.SIGTERM)
    if pid is None:
        return 1
    print(f"{PROG}: stopping the mail system: PID: {pid}")
    if not wait_exit(pid, timeout):
        warning(
            f"the mail system is still running after {timeout:g}s (PID: {pid}); "
            f"'{PROG} abort' stops it without waiting for deliveries"
        )
        return 1
    print(f"{PROG}: the mail system has stopped")
    return 0


def run_abort(args: list[str], config_dir: str) -> int:
    """``pymta abort [-c DIR]``: stop without waiting for deliveries."""
    chosen = _only_config_dir(args, "abort", config_dir)
    if chosen is None:
        return 1
    config_dir = chosen
    pid = _signal_running(config_dir, signal.SIGQUIT)
    if pid is None:
        return 1
    print(f"{PROG}: aborting the mail system: PID: {pid}")
    if not wait_exit(pid, ABORT_TIMEOUT):
        warning(f"the mail system is still running after {ABORT_TIMEOUT:g}s (PID: {pid})")
        return 1
    print(f"{PROG}: the mail system has stopped")
    return 0


def run_status(args: list[str], config_dir: str) -> int:
    """``pymta status [-c DIR]``: exit 0 when running, 1 when not."""
    chosen = _only_config_dir(args, "status", config_dir)
    if chosen is None:
        return 1
    config_dir = chosen
    pid = running_pid(pid_file(config_dir))
    if pid is None:
        print(f"{PROG}: the mail system is not running")
        return 1
    print(f"{PROG}: the mail system is running: PID: {pid}")
    return 0


def run_reload(args: list[str], config_dir: str) -> int:
    """``pymta reload [-c DIR]``: check, then SIGHUP."""
    chosen = _only_config_dir(args, "reload", config_dir)
    if chosen is None:
        return 1
    config_dir = chosen
    from pymta.config import ConfigError
    from pymta.service import check

    if running_pid(pid_file(config_dir)) is None:
        fatal("the mail system is not running")
        return 1
    try:
        for problem in check(config_dir):
            warning(problem)
    except ConfigError as e:
        fatal(f"{e}; not reloaded")
        return 1
    except OSError as e:
        fatal(f"{e.filename}: {e.strerror}; not reloaded" if e.filename else f"{e}; not reloaded")
        return 1
    pid = _signal_running(config_dir, signal.SIGHUP)
    if pid is None:
        return 1
    print(f"{PROG}: refreshing the mail system: PID: {pid}")
    return 0
