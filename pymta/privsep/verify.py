"""verify: the root helper works out each delivery's target for itself.

The local agent and pipe(8) run as ``mail_owner``: they parse network
input and queue files, so the root helper (:mod:`pymta.privsep.helper`)
treats what they ask as a claim, as Postfix's local(8) keeps its own
set_eugid() decisions. A request carries only what the helper cannot know
(:class:`~pymta.privsep.interface.Grounds`: the recipient and why, the
file or command it names, the message); from the configuration (main.cf
and master.cf of the directory it was started with, read again when they
change), the passwd database and the files themselves the helper derives:

- ``mailbox``: the Unix user of the recipient's local part (without its
  extension) and its mailbox: ``home_mailbox`` under the home directory,
  else ``mail_spool_directory/USER``; the lock kinds and size limit.
- ``forward`` (also a request of its own: the .forward's text for the
  local agent, which runs as ``mail_owner`` and may not read a 0700 home):
  the user's first ``forward_path`` file, read **as the user**
  (:func:`pymta.privsep.child.read_files`, with Postfix's owner and mode
  checks), expanded (its ``:include:`` files read as the user too):
  the ``/file`` or ``|command`` must be in it, with allow_mail_to_files /
  allow_mail_to_commands allowing its class; it runs as the user (root's
  as ``default_privs``).
- ``alias``: the recipient's alias_maps entry, looked up here, its
  ``:include:`` files read as the runner; it runs as the alias database's
  owner, or ``default_privs`` when root owns it.
- ``mailbox_command``: main.cf's command expanded with local(8)'s names
  must be the command asked; it runs as the user (root's as
  ``default_privs``).
- ``pipe``: the master.cf service must be a pipe service; it runs as its
  ``user=`` (never root) and ``argv[0]`` must be its program.

Anything else is refused (:class:`Refused`, which the helper logs): a
path outside the user's mailbox, a user the recipient is not, uid 0 for a
file or command. Commands get only local(8)'s environment names from the
request (``HOME``, ``USER``, ``SHELL``, ``LOGNAME`` and ``PATH`` are set
here), so a request cannot slip ``LD_PRELOAD`` into the user's program.

Untrusted input: the request (validated here), users' .forward and include
files (read by a child as the user, parsed here, never run). Writes
nothing. Logs nothing (the helper logs refusals).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pymta.config import Config
from pymta.config.expand import expand
from pymta.config.master_cf import MasterService, load_master
from pymta.delivery.local_expand import (
    Expansion,
    alias_owner,
    expand_values,
    forward_values,
    split_extension,
)
from pymta.delivery.local_forward import forward_paths
from pymta.privsep.interface import GROUNDS, UnixUser, find_uid, find_user

#: Reads files as a user: (user, child request) -> the child's JSON answer.
ReadAs = Callable[[UnixUser, dict[str, Any]], dict[str, Any]]

#: The environment names of local(8) a request may set for a command
#: (values are envelope data); the rest are set here or left out.
COMMAND_ENVIRONMENT = frozenset(
    {
        "LOCAL",
        "EXTENSION",
        "DOMAIN",
        "RECIPIENT",
        "ORIGINAL_RECIPIENT",
        "SENDER",
        "QUEUE_ID",
        "CLIENT_ADDRESS",
        "CLIENT_HOSTNAME",
        "CLIENT_HELO",
        "CLIENT_PROTOCOL",
        "SASL_USERNAME",
        "ENVID",
        "LANG",
    }
)
_PATH = "/usr/bin:/bin"


class Refused(Exception):
    """The request does not match what the configuration and files say."""


@dataclass(frozen=True)
class Mailbox:
    """Where a recipient's mailbox is, and how it is written."""

    user: UnixUser
    path: str
    locks: list[str]
    size_limit: int


@dataclass(frozen=True)
class Run:
    """Who runs a command or writes a file, and the command's surroundings."""

    runner: UnixUser
    env: dict[str, str]
    cwd: str


@dataclass(frozen=True)
class _Recipient:
    address: str
    local: str
    user: str
    extension: str
    domain: str


class Verifier:
    """Derives targets from the configuration in ``config_dir`` (module doc)."""

    def __init__(self, config_dir: str, read_as: ReadAs) -> None:
        self._directory = config_dir
        self._read_as = read_as
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._config: Config | None = None
        self._master: list[MasterService] = []

    # the configuration, read again when main.cf or master.cf changes ----

    def config(self) -> Config:
        with self._lock:
            stamp = (self._mtime("main.cf"), self._mtime("master.cf"))
            if self._config is None or stamp != self._stamp:
                self._config = Config.load(self._directory)
                self._master = load_master(self._directory) if stamp[1] >= 0 else []
                self._stamp = stamp
            return self._config

    def _mtime(self, name: str) -> int:
        try:
            return os.stat(os.path.join(self._directory, name)).st_mtime_ns
        except OSError:
            return -1

    # what a request may be -----------------------------------------------

    def mailbox(self, grounds: Mapping[str, Any]) -> Mailbox:
        """The mailbox of the recipient's user (a ``mailbox`` request)."""
        config = self.config()
        self._reason(grounds, ("mailbox",))
        recipient = self._recipient(grounds, config)
        user = self._user(recipient)
        home_mailbox = config.get("home_mailbox")
        if home_mailbox:
            path = os.path.join(user.home, home_mailbox)
        else:
            spool = config.get("mail_spool_directory").rstrip("/") or "/var/mail"
            path = os.path.join(spool, user.name)
        locks = [lock.lower() for lock in config.get_list("mailbox_delivery_lock")]
        return Mailbox(user, path, locks, config.get_int("mailbox_size_limit"))

    def sieve_settings(self) -> dict[str, object]:
        """The Sieve limits of main.cf for the delivery child (empty with
        ``pymta_sieve_enable = no``: the child writes the mailbox plainly)."""
        from pymta.sieve.filter import SieveSettings

        return SieveSettings.from_config(self.config()).for_child()

    def file(self, grounds: Mapping[str, Any], path: str) -> Run:
        """Who writes the /file of the recipient's .forward or alias."""
        config = self.config()
        reason = self._reason(grounds, ("forward", "alias"))
        recipient = self._recipient(grounds, config)
        runner, expansion = self._expansion(reason, recipient, config)
        allowed = set(config.get_list("allow_mail_to_files"))
        if not any(p == path and origin in allowed for p, origin in expansion.files):
            raise Refused(f"file {path} is not in the {self._where(reason, recipient)}")
        return Run(runner, {}, "/")

    def forward(self, grounds: Mapping[str, Any]) -> dict[str, Any]:
        """The recipient's .forward, read as the user: ``path`` (None when
        there is none), ``text`` and ``warnings`` (a ``forward`` request)."""
        config = self.config()
        self._reason(grounds, ("forward",))
        recipient = self._recipient(grounds, config)
        return self._read_forward(self._user(recipient), recipient, config)

    def _read_forward(
        self, user: UnixUser, recipient: _Recipient, config: Config
    ) -> dict[str, Any]:
        paths = forward_paths(
            config.raw("forward_path") or "",
            user,
            recipient.local,
            recipient.extension,
            recipient.domain,
            config.get("recipient_delimiter"),
        )
        if not paths:
            return {"path": None, "text": "", "warnings": []}
        found = self._read_as(user, {"forward": paths})
        return {
            "path": found.get("path"),
            "text": str(found.get("text", "")),
            "warnings": [str(w) for w in found.get("warnings", [])],
        }

    def command(self, grounds: Mapping[str, Any], command: str, env: Mapping[str, Any]) -> Run:
        """Who runs the |command of a .forward, an alias or mailbox_command."""
        config = self.config()
        reason = self._reason(grounds, ("forward", "alias", "mailbox_command"))
        recipient = self._recipient(grounds, config)
        home_user: UnixUser | None = None
        if reason == "mailbox_command":
            user = self._user(recipient)
            expected = _expand_local(config, config.raw("mailbox_command") or "", recipient, user)
            if not expected or command != expected:
                raise Refused(f"command is not mailbox_command for {recipient.address}")
            runner = user if user.uid != 0 else self._privs(config)
            home_user = user
        else:
            runner, expansion = self._expansion(reason, recipient, config)
            allowed = set(config.get_list("allow_mail_to_commands"))
            if not any(c == command and origin in allowed for c, origin in expansion.commands):
                raise Refused(f"command is not in the {self._where(reason, recipient)}")
        shown = home_user or runner
        clean = {str(k): str(v) for k, v in env.items() if k in COMMAND_ENVIRONMENT}
        clean.update(
            PATH=_PATH,
            HOME=shown.home or "/",
            SHELL=shown.shell or "/bin/sh",
            USER=shown.name,
            LOGNAME=shown.name,
        )
        cwd = runner.home if runner.home and os.path.isdir(runner.home) else "/"
        return Run(runner, clean, cwd)

    def program(self, grounds: Mapping[str, Any], argv: list[str]) -> Run:
        """Who runs a pipe service's program (its user=), from master.cf."""
        from pymta.config.pipe_args import parse_pipe

        config = self.config()
        self._reason(grounds, ("pipe",))
        name = str(grounds.get("service", ""))
        services = [s for s in self._master if s.name == name and s.program == "pipe"]
        if not services:
            raise Refused(f"no pipe service {name!r} in master.cf")
        service = services[0]
        spec = parse_pipe(service.args, (service.filename, service.lineno))
        user = find_user(spec.user)
        if user is None:
            raise Refused(f"pipe service {name}: unknown user {spec.user}")
        if spec.group is not None:
            import grp

            try:
                gid = grp.getgrnam(spec.group).gr_gid
            except KeyError:
                raise Refused(f"pipe service {name}: unknown group {spec.group}") from None
            user = UnixUser(user.name, user.uid, gid, user.home, user.shell)
        if user.uid == 0 or user.gid == 0:
            raise Refused(f"pipe service {name}: user= is root")
        if not argv or not spec.argv or argv[0] != spec.argv[0]:
            raise Refused(f"pipe service {name}: program is not {spec.argv[:1]}")
        directory = spec.directory or config.get("queue_directory")
        cwd = directory if os.path.isdir(directory) else "/"
        return Run(user, {"PATH": _PATH, "LANG": "C"}, cwd)

    # the parts ------------------------------------------------------------

    @staticmethod
    def _reason(grounds: Mapping[str, Any], allowed: tuple[str, ...]) -> str:
        reason = str(grounds.get("reason", ""))
        if reason not in GROUNDS or reason not in allowed:
            raise Refused(f"grounds {reason!r} do not allow this request")
        return reason

    @staticmethod
    def _recipient(grounds: Mapping[str, Any], config: Config) -> _Recipient:
        address = str(grounds.get("recipient", ""))
        local, at, domain = address.rpartition("@")
        if not at:
            local, domain = address, ""
        local = local.lower()
        if not local:
            raise Refused("no recipient")
        user, extension = split_extension(local, config.get("recipient_delimiter"))
        return _Recipient(address, local, user, extension, domain)

    @staticmethod
    def _user(recipient: _Recipient) -> UnixUser:
        user = find_user(recipient.user)
        if user is None:
            raise Refused(f'recipient {recipient.address} is not a Unix user ("{recipient.user}")')
        return user

    @staticmethod
    def _privs(config: Config) -> UnixUser:
        name = config.get("default_privs")
        user = find_user(name)
        if user is None or user.uid == 0:
            raise Refused(f'default_privs "{name}" is not a user other than root')
        return user

    @staticmethod
    def _where(reason: str, recipient: _Recipient) -> str:
        if reason == "forward":
            return f".forward of {recipient.user}"
        return f"alias entry of {recipient.local}"

    def _expansion(
        self, reason: str, recipient: _Recipient, config: Config
    ) -> tuple[UnixUser, Expansion]:
        """The runner and what the .forward or alias entry expands to."""
        from pymta.tables import TableError, lookup_alias, open_maps

        delimiter = config.get("recipient_delimiter")
        allow_files = set(config.get_list("allow_mail_to_files"))
        expansion = Expansion()
        if reason == "forward":
            user = self._user(recipient)
            runner = user if user.uid != 0 else self._privs(config)
            found = self._read_forward(user, recipient, config)
            if not found.get("path"):
                raise Refused(f"{recipient.user} has no usable .forward")
            values = forward_values(str(found.get("text", "")))
            expand_values(values, "forward", self._include_reader(user), allow_files, expansion)
        else:
            specs = config.get_list("alias_maps")
            try:
                maps = open_maps(specs, config)
                aliases = lookup_alias(maps, recipient.local, delimiter=delimiter)
            except TableError as e:
                raise Refused(f"alias database unavailable: {e}") from None
            if aliases is None:
                raise Refused(f"{recipient.local} is not an alias")
            owner = alias_owner(specs)
            found_owner = find_uid(owner) if owner else None
            runner = found_owner or self._privs(config)
            expand_values(aliases, "alias", self._include_reader(runner), allow_files, expansion)
        if expansion.error is not None:
            raise Refused(expansion.error[1])
        return runner, expansion

    def _include_reader(self, user: UnixUser) -> Callable[[str], str]:
        def read(path: str) -> str:
            answer = self._read_as(user, {"include": path})
            if "error" in answer:
                raise OSError(int(answer.get("errno") or 0), str(answer["error"]))
            return str(answer.get("text", ""))

        return read


def _expand_local(config: Config, template: str, recipient: _Recipient, user: UnixUser) -> str:
    """local(8)'s names in mailbox_command (as the local agent expands them)."""
    names = {
        "user": user.name,
        "home": user.home,
        "shell": user.shell,
        "local": recipient.local,
        "extension": recipient.extension,
        "domain": recipient.domain,
        "recipient": recipient.address,
        "recipient_delimiter": config.get("recipient_delimiter"),
    }
    return expand(template, names.get)
