"""config: the milter parameters, and the milters they name.

Mirrors Postfix's MILTER_README settings. ``smtpd_milters`` and
``non_smtpd_milters`` are lists of ``inet:HOST:PORT`` (``inet:[::1]:PORT``
for IPv6), ``unix:PATH`` or ``local:PATH``, each optionally in Postfix 3's
braces with its own settings: ``{ inet:127.0.0.1:8891,
connect_timeout=10s, command_timeout=10s, content_timeout=300s,
default_action=accept, protocol=6 }``. The global settings are
``milter_connect_timeout``, ``milter_command_timeout``,
``milter_content_timeout``, ``milter_default_action`` (accept, reject,
tempfail, quarantine), ``milter_protocol`` (2, 3, 4 or 6) and
``milter_*_macros``. A bad entry stops the start naming the parameter.

:class:`MilterClients` opens the connections (TCP or UNIX socket, through
the reactor's endpoints) and makes one :class:`~pymta.milter.chain.Milters`
per SMTP session or message. Writes nothing; logs through the caller.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
    connectProtocol,
)
from twisted.internet.interfaces import IReactorTime

from pymta.config import Config, ConfigError, split_list
from pymta.config.validate import config_error
from pymta.milter import wire
from pymta.milter.chain import Milters
from pymta.milter.protocol import MilterProtocol
from pymta.milter.session import (
    DEFAULT_ACTIONS,
    PROTOCOL_VERSIONS,
    Connector,
    Log,
    MilterSession,
    MilterSpec,
)

MACRO_PARAMETERS = {
    wire.SMFIM_CONNECT: "milter_connect_macros",
    wire.SMFIM_HELO: "milter_helo_macros",
    wire.SMFIM_ENVFROM: "milter_mail_macros",
    wire.SMFIM_ENVRCPT: "milter_rcpt_macros",
    wire.SMFIM_DATA: "milter_data_macros",
    wire.SMFIM_EOH: "milter_end_of_header_macros",
    wire.SMFIM_EOM: "milter_end_of_data_macros",
}

_TIME = re.compile(r"\A(\d+)(ms|s|m|h|d|w)?\Z")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _seconds(value: str, parameter: str) -> float:
    match = _TIME.match(value.strip())
    if not match:
        raise ConfigError(f"bad time {value!r}: expected e.g. 30s", parameter=parameter)
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


def _version(value: str, parameter: str) -> int:
    if not value.strip().isdigit() or int(value) not in PROTOCOL_VERSIONS:
        raise ConfigError(
            f"bad protocol {value!r}: expected one of 2, 3, 4, 6", parameter=parameter
        )
    return int(value)


def _action(value: str, parameter: str) -> str:
    action = value.strip().lower()
    if action not in DEFAULT_ACTIONS:
        raise ConfigError(
            f"bad default action {value!r}: expected accept, reject, tempfail or quarantine",
            parameter=parameter,
        )
    return action


def parse_address(address: str, parameter: str) -> tuple[str, str, int]:
    """``inet:HOST:PORT`` / ``unix:PATH`` -> (kind, host or path, port)."""
    kind, _, rest = address.partition(":")
    kind = kind.lower()
    if kind in ("unix", "local") and rest:
        return "unix", rest, 0
    if kind == "inet" and rest:
        host, _, port = rest.rpartition(":")
        host = host.strip("[]")
        if host and port.isdigit() and 0 < int(port) < 65536:
            return "inet", host, int(port)
    raise ConfigError(
        f"bad milter address {address!r}: expected inet:HOST:PORT or unix:PATH",
        parameter=parameter,
    )


def parse_milters(config: Config, parameter: str) -> list[MilterSpec]:
    """The milters of ``parameter`` with their settings; a bad entry is a
    ConfigError naming the file and line it was set on."""
    try:
        return _parse_milters(config, parameter)
    except ConfigError as e:
        if e.filename or not e.parameter:
            raise
        raise config_error(config, e.parameter, e.message) from None


def _parse_milters(config: Config, parameter: str) -> list[MilterSpec]:
    defaults: dict[str, Any] = {
        "connect_timeout": config.get_time("milter_connect_timeout"),
        "command_timeout": config.get_time("milter_command_timeout"),
        "content_timeout": config.get_time("milter_content_timeout"),
        "default_action": _action(config.get("milter_default_action"), "milter_default_action"),
        "protocol": _version(config.get("milter_protocol"), "milter_protocol"),
    }
    macros = {stage: config.get(name).split() for stage, name in MACRO_PARAMETERS.items()}
    specs: list[MilterSpec] = []
    for item in config.get_list(parameter):
        settings = dict(defaults)
        if item.startswith("{"):
            inner = split_list(item.strip()[1:-1])
            if not inner:
                raise ConfigError("empty milter {...}", parameter=parameter)
            item, options = inner[0], inner[1:]
            for option in options:
                key, sep, value = option.partition("=")
                key = key.strip()
                if not sep or key not in settings:
                    raise ConfigError(f"bad milter setting {option!r}", parameter=parameter)
                if key.endswith("_timeout"):
                    settings[key] = _seconds(value, parameter)
                elif key == "protocol":
                    settings[key] = _version(value, parameter)
                else:
                    settings[key] = _action(value, parameter)
        parse_address(item, parameter)
        specs.append(
            MilterSpec(
                name=item,
                connect_timeout=float(settings["connect_timeout"]),
                command_timeout=float(settings["command_timeout"]),
                content_timeout=float(settings["content_timeout"]),
                default_action=str(settings["default_action"]),
                version=int(settings["protocol"]),
                macros=macros,
            )
        )
    return specs


def endpoint_connector(reactor: Any, address: str, edit_limit: int) -> Connector:
    """Opens ``address`` through the reactor: fires with a connected protocol."""
    kind, host, port = parse_address(address, "smtpd_milters")

    def connect(timeout: float) -> Deferred[MilterProtocol]:
        if kind == "unix":
            endpoint: Any = UNIXClientEndpoint(reactor, host, timeout=timeout)
        elif ":" in host:
            endpoint = TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
        else:
            endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
        return connectProtocol(endpoint, MilterProtocol(reactor, edit_limit))

    return connect


class MilterClients:
    """The configured milters of one service; :meth:`session` starts a set."""

    def __init__(
        self,
        specs: list[MilterSpec],
        connector: Callable[[str], Connector],
        static_macros: dict[str, str],
    ) -> None:
        self.specs = specs
        self._connector = connector
        self._static = static_macros

    @classmethod
    def from_config(
        cls, config: Config, parameter: str, reactor: IReactorTime
    ) -> MilterClients | None:
        specs = parse_milters(config, parameter)
        if not specs:
            return None
        static = {
            "j": config.get("myhostname"),
            "{daemon_name}": config.get("milter_macro_daemon_name"),
            "v": config.get("milter_macro_v"),
        }
        # A milter's edits may make the message at most twice the size limit.
        size_limit = config.get_int("message_size_limit")
        edit_limit = 2 * size_limit if size_limit > 0 else 1 << 30
        return cls(specs, lambda address: endpoint_connector(reactor, address, edit_limit), static)

    def session(self, log: Log) -> Milters:
        sessions = [MilterSession(spec, self._connector(spec.name), log) for spec in self.specs]
        return Milters(sessions, self._static)
