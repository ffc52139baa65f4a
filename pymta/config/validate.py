"""Check a configuration before start: unknown parameters, invalid values.

Mirrors what Postfix reports about main.cf and master.cf (``postfix
check``, ``postconf``'s "unused parameter" warnings, and the fatal errors of
a daemon that reads a bad value). Input is the administrator's files, as
parsed into a Config and a list of MasterService; nothing is written.

A parameter is known when it is in the defaults table, is a service
parameter of a master.cf delivery service (``relay_destination_concurrency_limit``),
is named in ``smtpd_restriction_classes``, or is used as ``$name`` in some
value (Postfix's "user-defined" parameters, such as ``mua_client_restrictions``
referenced from a master.cf ``-o``). A Postfix parameter pymta does not
implement (:mod:`pymta.config.unimplemented`) set to a value that would
matter is a warning ("not implemented by pymta; ignored") or, where
ignoring it would change what mail is accepted, where it goes or how it is
protected, a ConfigError. Anything else is a warning naming file and line.
The first explicitly set value that is not of its parameter's kind
(int, bool, time, size, or one of a fixed set of words), and any expansion
loop, raises ConfigError naming file, line, parameter and the expected form.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pymta.config.config import Config
from pymta.config.defaults import DEFAULTS, Param, service_parameters
from pymta.config.errors import ConfigError
from pymta.config.master_cf import MasterService
from pymta.config.unimplemented import REFUSE, judge, lookup

_REFERENCE = re.compile(r"\$(?:\{|\()?([A-Za-z0-9_]+)")
_INT = re.compile(r"^[+-]?\d+$")
_SIZE = re.compile(r"^\d+$")

#: Parameters whose value is one word of a fixed set ('' allowed where listed).
CHOICES: dict[str, tuple[str, ...]] = {
    "smtpd_forbid_bare_newline": ("no", "normalize", "reject"),
    "pymta_quota_full_action": ("defer", "bounce"),
    "smtpd_tls_security_level": ("", "none", "may", "encrypt"),
    "pop3d_tls_security_level": ("", "none", "may", "encrypt"),
    "imapd_tls_security_level": ("", "none", "may", "encrypt"),
    "smtp_tls_security_level": (
        "",
        "none",
        "may",
        "encrypt",
        "dane",
        "dane-only",
        "fingerprint",
        "verify",
        "secure",
    ),
    "pymta_sync_method": ("syncfs", "fsync"),
    "postscreen_greet_action": ("ignore", "enforce", "drop"),
    "postscreen_dnsbl_action": ("ignore", "enforce", "drop"),
    "postscreen_blacklist_action": ("ignore", "enforce", "drop"),
    "postscreen_denylist_action": ("ignore", "enforce", "drop"),
}

_INET_PROTOCOLS = {"all", "ipv4", "ipv6"}


def referenced_names(values: Iterable[str]) -> set[str]:
    """Every ``$name``, ``${name...}`` and ``$(name)`` used in values."""
    names: set[str] = set()
    for value in values:
        names.update(_REFERENCE.findall(value))
    return names


def known_parameters(config: Config, master: list[MasterService] | None) -> dict[str, Param]:
    """The defaults table plus the service parameters of master.cf's services."""
    table = dict(DEFAULTS)
    if master:
        table.update(service_parameters((s.name, s.program) for s in master))
    return table


def _used_names(config: Config, master: list[MasterService] | None) -> set[str]:
    values = list(config.explicit().values())
    for service in master or ():
        values.extend(service.overrides.values())
    used = referenced_names(values)
    if "smtpd_restriction_classes" in config.explicit():
        used.update(config.get_list("smtpd_restriction_classes"))
    return used


def validate(config: Config, master: list[MasterService] | None = None) -> list[str]:
    """Warnings about unknown parameters; ConfigError for the first invalid value."""
    known = known_parameters(config, master)
    used = _used_names(config, master)
    warnings: list[str] = []
    explicit = config.explicit()
    ordered = sorted(explicit, key=lambda n: _sort_key(config, n))
    for name in ordered:
        src = config.source(name)
        where = f"{src.filename}, line {src.lineno}: " if src is not None else ""
        if name not in known and lookup(name) is not None:
            message = _unimplemented(name, explicit[name])
            if message is not None and _refused(name):
                raise config_error(config, name, message)
            if message is not None:
                warnings.append(f"{where}{message}")
        elif name not in known and name not in used:
            warnings.append(f"{where}unknown parameter {name}")
    for name in ordered:
        check_value(config, name, known.get(name))
    warnings += _size_warnings(config)
    for service in master or ():
        derived = service.service_config(config)
        for name in service.overrides:
            line = service.override_lines.get(name, service.lineno)
            if name not in known and lookup(name) is not None:
                message = _unimplemented(name, service.overrides[name])
                if message is not None and _refused(name):
                    raise ConfigError(
                        f"service {service.name}: {message}", service.filename, line, name
                    )
                if message is not None:
                    warnings.append(
                        f"{service.filename}, line {line}: service {service.name}: {message}"
                    )
            elif name not in known and name not in used:
                warnings.append(
                    f"{service.filename}, line {line}: service {service.name}: "
                    f"unknown parameter {name}"
                )
            try:
                check_value(derived, name, known.get(name))
            except ConfigError as e:
                raise ConfigError(
                    f"service {service.name}: {e.message}", service.filename, line, name
                ) from None
    return warnings


def _unimplemented(name: str, value: str) -> str | None:
    """What to say about a setting of a parameter pymta does not implement
    (None: the value changes nothing)."""
    entry = judge(name, value)
    if entry is None:
        return None
    if entry.action == REFUSE:
        return f"not implemented by pymta (set to {value.strip()!r}): {entry.why}"
    return f"{name} is not implemented by pymta; ignored ({entry.why})"


def _refused(name: str) -> bool:
    entry = lookup(name)
    return entry is not None and entry.action == REFUSE


def _size_warnings(config: Config) -> list[str]:
    """Postfix smtpd's start-up warning: queue_minfree, when set, should
    leave room for at least 1.5 messages of the largest size."""
    try:
        minfree = config.get_int("queue_minfree")
        limit = config.get_int("message_size_limit")
    except ConfigError:
        return []  # reported by check_value
    if minfree and limit and minfree < 1.5 * limit:
        return [f"queue_minfree({minfree}) should be at least 1.5*message_size_limit({limit})"]
    return []


def _sort_key(config: Config, name: str) -> tuple[str, int, str]:
    src = config.source(name)
    if src is None:
        return ("", 0, name)
    return (src.filename, src.lineno, name)


def check_value(config: Config, name: str, param: Param | None) -> None:
    """Raise ConfigError when name's expanded value is not of its kind."""
    value = config.get(name)  # expansion loops raise here, naming the parameter
    if param is None:
        return
    kind = param.kind
    if kind == "int":
        if not _INT.match(value.strip()):
            config.get_int(name)  # raises with file, line and expected form
    elif kind == "size":
        if not _SIZE.match(value.strip()):
            raise config_error(
                config, name, f"bad value {value!r}: expected a size in bytes (a whole number)"
            )
    elif kind == "bool":
        config.get_bool(name)
    elif kind == "time":
        config.get_time(name)
    choices = CHOICES.get(name)
    if choices is not None and value.strip().lower() not in choices:
        shown = ", ".join(c or "''" for c in choices)
        raise config_error(config, name, f"bad value {value!r}: expected one of {shown}")
    if name == "pymta_queue_intake_log_size":
        from pymta.queue.intake import MINIMUM_SIZE

        size = int(value.strip())
        if 0 < size < MINIMUM_SIZE:
            raise config_error(
                config, name, f"bad value {value!r}: expected 0 (off) or at least {MINIMUM_SIZE}"
            )
    if name == "inet_protocols":
        words = set(config.get_list(name))
        if not words or not words <= _INET_PROTOCOLS:
            raise config_error(config, name, f"bad value {value!r}: expected all, ipv4 or ipv6")


def config_error(config: Config, name: str, message: str) -> ConfigError:
    """A ConfigError naming where name was set."""
    src = config.source(name)
    if src is None:
        return ConfigError(message, parameter=name)
    return ConfigError(message, src.filename, src.lineno or None, name)
