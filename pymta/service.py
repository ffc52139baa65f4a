"""The whole pymta service hierarchy from the configuration (twistd's entry).

Mirrors Postfix's master(8): reads main.cf and master.cf and builds every
part (:mod:`pymta.assemble`) as one ``MultiService`` that twistd runs or
that an existing Twisted application adds to its own hierarchy::

    from pymta.service import makeService
    makeService("/etc/pymta").setServiceParent(application)

Listening ports are bound in privilegedStartService (before twistd drops
privileges). With ``pymta_processes`` above 1 this process is the master: a
:class:`~pymta.master.workers.WorkerPool` started after everything else
spawns the other reactor processes on the same sockets (:mod:`pymta.master`);
each of them builds its parts with :func:`pymta.assemble.build` and
``worker_fds``. This module only adds what the twistd plugin needs (the
signal handlers of :mod:`pymta.master.control`) and names the parts' API
for embedding applications; in pymta only the plugin (pymta.tap), the
command line and pymta.testing import it (the parts and master/ import
:mod:`pymta.assemble`). Writes: the queue, data and mail
directories named by main.cf.
"""

from __future__ import annotations

import os

from twisted.application import service
from twisted.internet.interfaces import IReactorCore

from pymta.assemble import (
    BUILT_PARTS,
    MailSystem,
    StartFailed,
    build,
    check,
    load,
    load_checked,
    resolve_paths,
)
from pymta.config import Config
from pymta.config.master_cf import load_master
from pymta.listeners import (
    DEFAULT_BACKLOG,
    SOMAXCONN_PATH,
    ListenError,
    listen_backlog,
    replace_port_factory,
)
from pymta.master.control import install_signal_handlers
from pymta.privsep.interface import IUserDelivery
from pymta.sessions import (
    LISTENER_COMMANDS,
    UNIX_LISTENER_COMMANDS,
    SessionParts,
    session_factory,
)

__all__ = [
    "BUILT_PARTS",
    "DEFAULT_BACKLOG",
    "LISTENER_COMMANDS",
    "SOMAXCONN_PATH",
    "UNIX_LISTENER_COMMANDS",
    "ListenError",
    "MailSystem",
    "SessionParts",
    "StartFailed",
    "build",
    "check",
    "listen_backlog",
    "load",
    "load_checked",
    "makeService",
    "replace_port_factory",
    "resolve_paths",
    "session_factory",
]


def makeService(
    config: Config | str | os.PathLike[str],
    reactor: IReactorCore | None = None,
    users: IUserDelivery | None = None,
) -> service.IService:
    """The whole mail system as one IService.

    ``config`` is a configuration directory (main.cf + master.cf) or a Config
    whose ``config_directory`` names the directory that holds master.cf.
    Setting the result's ``handle_signals`` (pymta.tap does) makes it obey
    Postfix's signals (SIGHUP reloads, SIGQUIT aborts).
    """
    if isinstance(config, Config):
        directory = config.get("config_directory")
        master = load_master(directory)
        cfg = resolve_paths(config)
    else:
        cfg, master = load(config)
    system = build(cfg, master, reactor, users=users)
    system.signal_handlers = install_signal_handlers
    return system
