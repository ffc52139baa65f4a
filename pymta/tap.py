"""``twistd pymta``: command-line options and makeService.

Mirrors ``postfix start``: read main.cf and master.cf from the configuration
directory (``--config``, else $MAIL_CONFIG, else the sample in ``etc/``) and
start every service master.cf names. twistd's own options go before the
plugin name, pymta's after it::

    twistd -u pymta -g pymta --pidfile /run/pymta/pymta.pid \\
        --logfile /var/log/pymta/twistd.log pymta --config /etc/pymta

Privileges are dropped by twistd's ``-u``/``-g`` after the listening ports
are bound. Started as root with ``-u``, makeService first gives the user
what it will write (:mod:`pymta.ownership`): the directories of the pid and
log files, the state directories and the mail log. A configuration that
cannot start stops twistd with one line, ``pymta: fatal: ...``, naming the
file and line or the parameter, and the cause.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from pymta.config.errors import ConfigError
from pymta.config.locate import config_directory


class Options(usage.Options):
    """Options of ``twistd pymta``."""

    optParameters = [
        [
            "config",
            "c",
            None,
            "Configuration directory holding main.cf and master.cf "
            "(default: $MAIL_CONFIG, else the sample configuration in etc/).",
        ],
    ]

    def postOptions(self) -> None:
        self["config"] = config_directory(self["config"])


def makeService(options: Options) -> IService:
    """Build the whole pymta service hierarchy from the configuration."""
    try:
        return _make(options)
    except ConfigError as e:
        # twistd prints a SystemExit's message and exits 1: one line, no traceback.
        raise SystemExit(f"pymta: fatal: {e}") from None
    except OSError as e:  # a directory pymta cannot make, a file it cannot read
        where = f"{e.filename}: " if e.filename else ""
        raise SystemExit(f"pymta: fatal: {where}{e.strerror or e}") from None


def _make(options: Options) -> IService:
    # twistd pymta owns its process: pymta's reactor, before anything
    # imports Twisted's default one (pymta.reactor; twistd's --reactor wins).
    _install_reactor()
    from pymta.ownership import (
        check_readable,
        give_state_to,
        prepare_twistd_files,
        twistd_run_as,
    )

    main_cf = Path(options["config"]) / "main.cf"
    if not main_cf.is_file():
        raise ConfigError(
            f"no configuration: {main_cf} does not exist. Name a directory with "
            "main.cf and master.cf: twistd pymta --config DIR (or $MAIL_CONFIG), "
            "or run twistd where ./etc/main.cf is (a pymta clone)"
        )
    from pymta.service import MailSystem
    from pymta.service import makeService as make

    twistd_options = getattr(options, "parent", None)
    run_as = twistd_run_as(twistd_options)
    if run_as is not None:
        assert twistd_options is not None
        prepare_twistd_files(twistd_options["pidfile"], twistd_options["logfile"], run_as)
    users = None
    if run_as is not None:
        # DESIGN.md's privileged helper: forked now, while root, it alone
        # keeps root after twistd's switch, to become local recipients.
        from pymta.privsep.client import start_helper

        assert twistd_options is not None
        users = start_helper(options["config"], _helper_log(twistd_options))
    system = make(options["config"], users=users)
    # twistd owns this process: tune its collector once everything is
    # loaded (pymta.gctune; embedding leaves the host's collector alone).
    from twisted.internet import reactor

    from pymta.gctune import tune

    reactor.callWhenRunning(tune)
    if isinstance(system, MailSystem):
        system.handle_signals = True  # SIGHUP reloads, SIGQUIT aborts (pymta.master.control)
        if twistd_options is not None:
            system.pidfile = twistd_options.get("pidfile") or None
            system.daemonised = not twistd_options.get("nodaemon")
        if run_as is not None:
            check_readable(system.config, [svc.program for svc in system.master], run_as)
            give_state_to(system.config, run_as)
    return system


def _install_reactor() -> None:
    try:
        from pymta.reactor import install
    except ImportError:  # no epoll here: Twisted's default reactor
        return
    install()


def _helper_log(twistd_options: Any) -> str | None:
    """Where the root helper logs the requests it refuses: twistd's log
    file (twistd.log in the start directory when daemonised without
    --logfile), or None for twistd's standard error (``-n`` without one)."""
    logfile = twistd_options.get("logfile")
    if logfile == "-":
        return None
    if logfile:
        return str(logfile)
    return None if twistd_options.get("nodaemon") else "twistd.log"
