"""The ``pymta`` command: one entry point for the administration commands.

Usage: ``pymta [-c DIR] COMMAND [args]``. Mirrors Postfix's family of admin
commands (postconf, postmap, postalias, newaliases, mailq, postqueue,
postsuper, ``postfix check``) behind one console script. The configuration
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
import sys
from collections.abc import Callable

from pymta.config.config import Config
from pymta.config.errors import ConfigError
from pymta.config.locate import config_directory
from pymta.config.master_cf import COMMANDS, PARTS, check_master, load_master
from pymta.config.validate import validate

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
    "passwd": "pymta.cli.passwd:run",
    "check": "pymta.cli.main:run_check",
    "sendmail": "pymta.cli.sendmail:run",
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
    "passwd": "make or update a passwd-file entry",
    "check": "check main.cf and master.cf (like 'postfix check')",
    "sendmail": "submit a message (Postfix's sendmail(1) options; also pymta-sendmail)",
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
        print(usage())
        return 0
    runner = load_command(name)
    if runner is None:
        return 1
    try:
        return runner(command_args, config_directory(explicit))
    except ConfigError as e:
        fatal(str(e))
        return 1
    except KeyboardInterrupt:
        return 130


def built_parts() -> set[str]:
    """What the server wires in: ``pymta.service.BUILT_PARTS`` when it says so.

    Without it, every part named in master_cf.PARTS counts as built, so that
    ``check`` warns only about services pymta never needs.
    """
    try:
        service = importlib.import_module("pymta.service")
        built = getattr(service, "BUILT_PARTS", None)
    except Exception:  # a broken server module must not stop the check
        built = None
    if built is not None:
        return set(built)
    return {program for program, status in COMMANDS.items() if status == "pymta"} | set(
        PARTS.values()
    )


def run_check(args: list[str], config_dir: str) -> int:
    """``pymta check``: read main.cf and master.cf, print warnings, 1 on error."""
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
    try:
        config = Config.load(config_dir)
        master = load_master(config_dir)
        problems = validate(config, master)
        problems.extend(check_master(master, built_parts()))
    except ConfigError as e:
        fatal(str(e))
        return 1
    for problem in problems:
        warning(problem)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
