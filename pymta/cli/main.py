"""The ``pymta`` command: one entry point for the administration commands.

Usage: ``pymta [-c DIR] COMMAND [args]``. Mirrors Postfix's family of admin
commands (postconf, postmap, postalias, newaliases, mailq, postqueue,
postsuper, ``postfix check``, ``postfix start|stop|abort|status|reload``)
behind one console script. The configuration
directory is ``-c DIR``, else $MAIL_CONFIG, else the source checkout's
``etc/``, else /etc/pymta (pymta.config.locate); every command also takes
``-c DIR`` among its own options.

Each command lives in its own module, loaded only when it runs, and has the
signature ``run(args: list[str], config_dir: str) -> int``. Diagnostics go
to stderr as ``pymta: fatal: ...`` / ``pymta: warning: ...``, like Postfix.
Reads the command line and the environment; writes only what the command
writes.
"""

from __future__ import annotations

import getopt
import importlib
import os
import signal
import sys
from collections.abc import Callable

from pymta.config.errors import ConfigError
from pymta.config.locate import config_directory

PROG = "pymta"

#: command name -> "module:function", imported when the command runs.
COMMAND_TABLE: dict[str, str] = {
    "postconf": "pymta.cli.postconf:run",
    "postmap": "pymta.cli.postmap:run_postmap",
    "postalias": "pymta.cli.postmap:run_postalias",
    "newaliases": "pymta.cli.postmap:run_newaliases",
    "mailq": "pymta.cli.queue:run_mailq",
    "postqueue": "pymta.cli.queue:run_postqueue",
    "postsuper": "pymta.cli.queue:run_postsuper",
    "flush": "pymta.cli.queue:run_flush",
    "postcat": "pymta.cli.postcat:run",
    "passwd": "pymta.cli.passwd:run",
    "dkim": "pymta.cli.dkim:run",
    "check": "pymta.cli.main:run_check",
    "set-permissions": "pymta.cli.main:run_set_permissions",
    "sendmail": "pymta.cli.sendmail:run",
    "install-sendmail": "pymta.cli.sendmail:run_install",
    "start": "pymta.cli.control:run_start",
    "stop": "pymta.cli.control:run_stop",
    "abort": "pymta.cli.control:run_abort",
    "status": "pymta.cli.control:run_status",
    "reload": "pymta.cli.control:run_reload",
}

#: one line per command for ``pymta help``.
SUMMARY: dict[str, str] = {
    "postconf": "print or edit main.cf and master.cf parameters",
    "postmap": "build or query a lookup table",
    "postalias": "build or query an aliases table",
    "newaliases": "rebuild the tables in alias_database",
    "mailq": "list the mail queue",
    "postqueue": "list or flush the mail queue",
    "postsuper": "delete, hold, release or requeue queued mail",
    "flush": "retry all deferred mail now (postqueue -f)",
    "postcat": "show a queued message (envelope, header, body)",
    "passwd": "make or update a passwd-file entry",
    "dkim": "dkim keygen DOMAIN SELECTOR: make a DKIM key, print its DNS record",
    "check": "check main.cf, master.cf and the queue's permissions (like 'postfix check')",
    "set-permissions": "give the queue to its owner with Postfix's modes",
    "sendmail": "submit a message (Postfix's sendmail(1) options; also pymta-sendmail)",
    "install-sendmail": "write /usr/sbin/sendmail (a fast launcher), mailq and newaliases",
    "start": "start the mail system in the background (twistd)",
    "stop": "stop the mail system, waiting for deliveries in flight",
    "abort": "stop the mail system at once, without waiting for deliveries",
    "status": "say whether the mail system is running (exit 0) or not (exit 1)",
    "reload": "check the configuration, then make the running system re-read it",
}

#: the synopsis ``pymta COMMAND --help`` (and ``pymta help COMMAND``) prints.
SYNOPSIS: dict[str, str] = {
    "postconf": "postconf [-c DIR] [-d | -n] [-h] [-x] [NAME ...]\n"
    "postconf [-c DIR] -e name=value ... | -X name ... | -# name ...\n"
    "postconf [-c DIR] -M [service[/type] ...]",
    "postmap": "postmap [-c DIR] [type:]FILE ...\n"
    "postmap [-c DIR] -q KEY [type:]NAME ...\n"
    "postmap [-c DIR] -s [type:]NAME ...",
    "postalias": "postalias [-c DIR] [-q KEY | -s] [type:]FILE ...",
    "newaliases": "newaliases [-c DIR]",
    "mailq": "mailq [-c DIR]",
    "postqueue": "postqueue [-c DIR] -p | -j | -f | -i QUEUE_ID",
    "postsuper": "postsuper [-c DIR] -d | -h | -H | -r  QUEUE_ID | - | ALL [QUEUE]",
    "flush": "flush [-c DIR]",
    "postcat": "postcat [-c DIR] [-e] [-h] [-b] -q QUEUE_ID | FILE",
    "passwd": "passwd [-s SCHEME] [--stdin] [-u USER --update FILE]\n"
    "  the password is asked twice on a terminal, or read from the first\n"
    "  line of standard input when that is not a terminal (or with --stdin)",
    "check": "check [-c DIR]",
    "set-permissions": "set-permissions [-c DIR] [-u USER]\n"
    "  USER (default: the owner of queue_directory) is twistd's -u user",
    "start": "start [-c DIR] [TWISTD_OPTION ...]\n"
    "  twistd options such as -u pymta -g pymta or --logfile FILE are passed on",
    "stop": "stop [-c DIR] [-t SECONDS]",
    "abort": "abort [-c DIR]",
    "status": "status [-c DIR]",
    "reload": "reload [-c DIR]",
}

Runner = Callable[[list[str], str], int]


def fatal(message: str) -> None:
    """Print ``pymta: fatal: message`` on stderr."""
    print(f"{PROG}: fatal: {message}", file=sys.stderr)


def warning(message: str) -> None:
    """Print ``pymta: warning: message`` on stderr."""
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def usage() -> str:
    lines = [f"usage: {PROG} [-c DIR] COMMAND [args]", "commands:"]
    lines.extend(f"  {name:<11} {SUMMARY.get(name, '')}" for name in COMMAND_TABLE)
    return "\n".join(lines)


def command_help(name: str) -> str:
    """What ``pymta NAME --help`` prints: the synopsis and the summary line."""
    out: list[str] = []
    for i, line in enumerate(SYNOPSIS.get(name, name).splitlines()):
        if line.startswith("  "):  # an explanation under the synopsis
            out.append(line)
        else:
            out.append(("usage: " if i == 0 else "       ") + f"{PROG} {line}")
    out.append(f"{SUMMARY.get(name, '')} (see docs/admin-guide.md)")
    return "\n".join(out)


def load_command(name: str) -> Runner | None:
    """The run function of a command, or None (after an error message)."""
    target = COMMAND_TABLE.get(name)
    if target is None:
        fatal(f"unknown command: {name!r}; try '{PROG} help'")
        return None
    module_name, _, function = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or "?"
        if missing == module_name or module_name.startswith(missing + "."):
            fatal(f"command {name!r} is not available in this pymta (no module {module_name})")
        else:
            fatal(f"command {name!r} needs the Python module {missing!r}, which is not installed")
        return None
    runner = getattr(module, function, None)
    if runner is None:
        fatal(f"command {name!r} is not available in this pymta (no {target})")
        return None
    return runner


def main(argv: list[str] | None = None) -> int:
    """Run ``pymta [-c DIR] COMMAND [args]``; returns the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        opts, rest = getopt.getopt(args, "c:h", ["help"])
    except getopt.GetoptError as e:
        fatal(f"{e.msg}\n{usage()}")
        return 1
    explicit: str | None = None
    for opt, value in opts:
        if opt == "-c":
            explicit = value
        else:
            print(usage())
            return 0
    if not rest:
        fatal(f"no command given\n{usage()}")
        return 1
    name, command_args = rest[0], rest[1:]
    if name == "help":
        if command_args and command_args[0] in COMMAND_TABLE:
            print(command_help(command_args[0]))
        else:
            print(usage())
        return 0
    # --help before any "--": no command takes a --help of its own (postconf's
    # -h is "values only", as in Postfix, so only the long form asks for help).
    options = command_args[: command_args.index("--")] if "--" in command_args else command_args
    if name in COMMAND_TABLE and "--help" in options:
        print(command_help(name))
        return 0
    runner = load_command(name)
    if runner is None:
        return 1
    try:
        status = runner(command_args, config_directory(explicit))
        sys.stdout.flush()  # here, where a closed pipe is caught below
        return status
    except ConfigError as e:
        fatal(str(e))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `pymta postconf -d | head`: the reader left; stop quietly, as a C
        # program killed by SIGPIPE does (exit status 128 + SIGPIPE).
        _silence_stdout()
        return 128 + signal.SIGPIPE


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush of
    what is still buffered does not fail again on the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


def run_check(args: list[str], config_dir: str) -> int:
    """``pymta check``: what a start would refuse (exit 1, ``pymta: fatal:``)
    or warn about (``pymta: warning:``), found by the start's own code
    (:func:`pymta.service.check`)."""
    try:
        opts, rest = getopt.getopt(args, "c:")
    except getopt.GetoptError as e:
        fatal(f"{e.msg}; usage: {PROG} check [-c DIR]")
        return 1
    for _opt, value in opts:
        config_dir = value
    if rest:
        fatal(f"usage: {PROG} check [-c DIR]")
        return 1
    from pymta.service import check

    try:
        problems = check(config_dir)
    except ConfigError as e:
        fatal(str(e))
        return 1
    except OSError as e:  # as the start reports it (pymta.tap)
        fatal(f"{e.filename}: {e.strerror}" if e.filename else str(e))
        return 1
    for problem in problems:
        warning(problem)
    from pymta.config import Config
    from pymta.privsep.permissions import check_permissions
    from pymta.service import resolve_paths

    queue_directory = resolve_paths(Config.load(config_dir)).get("queue_directory")
    for problem in check_permissions(queue_directory):
        warning(f"{problem} (fix: {PROG} set-permissions)")
    return 0


def run_set_permissions(args: list[str], config_dir: str) -> int:
    """``pymta set-permissions``: as ``postfix set-permissions`` for the queue."""
    import pwd

    usage = f"usage: {PROG} set-permissions [-c DIR] [-u USER]"
    try:
        opts, rest = getopt.getopt(args, "c:u:")
    except getopt.GetoptError as e:
        fatal(f"{e.msg}; {usage}")
        return 1
    user = None
    for opt, value in opts:
        if opt == "-c":
            config_dir = value
        else:
            user = value
    if rest:
        fatal(usage)
        return 1
    from pymta.config import Config
    from pymta.privsep.permissions import set_permissions
    from pymta.service import resolve_paths

    try:
        queue_directory = resolve_paths(Config.load(config_dir)).get("queue_directory")
    except ConfigError as e:
        fatal(str(e))
        return 1
    try:
        if user is None:
            info = os.stat(queue_directory)
            uid, gid = info.st_uid, info.st_gid
        else:
            entry = pwd.getpwnam(user)
            uid, gid = entry.pw_uid, entry.pw_gid
    except KeyError:
        fatal(f"unknown user: {user}")
        return 1
    except OSError as e:
        fatal(f"{queue_directory}: {e.strerror}")
        return 1
    try:
        changed = set_permissions(queue_directory, uid, gid)
    except OSError as e:
        fatal(f"{e.filename}: {e.strerror}" if e.filename else str(e))
        return 1
    for line in changed:
        print(f"{PROG}: {line}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
