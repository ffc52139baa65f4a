"""The Config object: main.cf settings over Postfix defaults, expanded lazily.

Every part reads its parameters through typed getters (get_int, get_time,
get_list, ...), so an invalid value is reported with its file and line and
the expected form. master.cf ``-o`` overrides make a derived Config.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping

from pymta.config.defaults import DEFAULTS, Param, service_parameter_default
from pymta.config.errors import ConfigError
from pymta.config.expand import expand
from pymta.config.files import read_config_text
from pymta.config.main_cf import Setting, parse_main_cf
from pymta.config.unimplemented import UNIMPLEMENTED

_TIME = re.compile(r"^\s*(\d+)\s*(ms|[smhdw]?)\s*$")
_TIME_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TRUE = {"yes", "true", "on", "1"}
_FALSE = {"no", "false", "off", "0"}
_LIST_SPLIT = re.compile(r"[\s,]+")


def _system_hostname() -> str:
    # Postfix uses gethostname() without a DNS lookup, and appends
    # ".localdomain" to a name without a dot.
    import socket  # here: sendmail, which rarely needs it, starts faster

    name = socket.gethostname()
    if "." not in name:
        name = f"{name}.localdomain"
    return name


class Config:
    """Parameters from main.cf (and overrides) over the defaults table."""

    def __init__(
        self,
        settings: Mapping[str, str] | None = None,
        *,
        sources: Mapping[str, Setting] | None = None,
        defaults: Mapping[str, Param] = DEFAULTS,
        config_directory: str | None = None,
    ) -> None:
        self._explicit: dict[str, str] = dict(settings or {})
        self._sources: dict[str, Setting] = dict(sources or {})
        self._defaults = defaults
        self._cache: dict[str, str] = {}
        #: Names read through this Config and the copies with_overrides made
        #: of it (a reload asks what the delivery side has read).
        self._reads: set[str] = set()
        if config_directory is not None and "config_directory" not in self._explicit:
            self._explicit["config_directory"] = config_directory

    # construction -------------------------------------------------------

    @classmethod
    def from_text(cls, text: str, filename: str = "main.cf", **kwargs: object) -> Config:
        """A Config from main.cf text (tests and embedding use this)."""
        settings = parse_main_cf(text, filename)
        values = {s.name: s.value for s in settings}
        sources = {s.name: s for s in settings}
        return cls(values, sources=sources, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def load(cls, config_directory: str | os.PathLike[str]) -> Config:
        """Read ``DIR/main.cf``; a missing file, or one that is not UTF-8, is
        an error naming it."""
        from pathlib import Path  # here: sendmail starts faster without it

        directory = Path(config_directory)
        path = directory / "main.cf"
        text = read_config_text(path)
        return cls.from_text(text, str(path), config_directory=str(directory))

    def with_overrides(self, overrides: Mapping[str, str], source: str = "master.cf") -> Config:
        """A Config with master.cf ``-o name=value`` overrides applied."""
        values = dict(self._explicit)
        values.update(overrides)
        sources = dict(self._sources)
        for name, value in overrides.items():
            sources[name] = Setting(name, value, source, 0)
        copy = Config(values, sources=sources, defaults=self._defaults)
        copy._reads = self._reads  # a service's reads are its parent's too
        return copy

    def recording_copy(self) -> Config:
        """A copy whose reads (and its copies' reads) are recorded apart
        from this one's (:meth:`names_read`)."""
        copy = self.with_overrides({})
        copy._reads = set()
        return copy

    # raw access -----------------------------------------------------------

    def raw(self, name: str) -> str | None:
        """The unexpanded value: explicit, else default, else None if unknown."""
        if name in self._explicit:
            return self._explicit[name]
        param = self._param(name)
        if param is None:
            return None
        if name == "myhostname" and not param.default:
            return _system_hostname()
        if name == "mydomain" and not param.default:
            return self._default_mydomain()
        return param.default

    def _default_mydomain(self) -> str:
        """Postfix's default mydomain: $myhostname minus its first component
        (``localdomain`` when nothing is left).

        myhostname is expanded here with mydomain already on the loop stack:
        ``myhostname = mail.$mydomain`` with mydomain unset would otherwise
        expand each from the other forever. Postfix reports that loop; so
        does this, naming where myhostname was set."""
        try:
            host = expand(self.raw("myhostname") or "", self.raw, ("mydomain", "myhostname"))
        except ConfigError as e:
            raise self._error(
                "myhostname",
                f"{e.message} (mydomain defaults to $myhostname minus its first "
                "component: set mydomain, or give myhostname without $mydomain)",
            ) from None
        return host.partition(".")[2] or "localdomain"

    def _param(self, name: str) -> Param | None:
        """The table entry of name; ``<transport>_destination_concurrency_limit``
        and the other service parameters default to their ``default_*`` base;
        a Postfix parameter pymta does not implement keeps Postfix's default."""
        param = self._defaults.get(name)
        if param is None:
            param = service_parameter_default(name)
        if param is None and name in UNIMPLEMENTED:
            # Not acted on (validate says so), but ``$name`` still expands
            # to Postfix's default, as in Postfix.
            entry = UNIMPLEMENTED[name]
            param = Param(name, entry.default, "str", entry.why)
        return param

    def explicit(self) -> dict[str, str]:
        """The explicitly set parameters (``postconf -n``)."""
        return dict(self._explicit)

    def source(self, name: str) -> Setting | None:
        """Where an explicit parameter was set, for error messages."""
        return self._sources.get(name)

    def is_known(self, name: str) -> bool:
        return name in self._defaults

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._explicit or name in self._defaults)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(set(self._defaults) | set(self._explicit)))

    def _error(self, name: str, message: str) -> ConfigError:
        src = self._sources.get(name)
        if src is not None:
            return ConfigError(message, src.filename, src.lineno or None, name)
        return ConfigError(message, parameter=name)

    # typed getters ----------------------------------------------------------

    def get(self, name: str) -> str:
        """The expanded value ('' when unknown and unset)."""
        self._reads.add(name)
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        raw = self.raw(name)
        if raw is None:
            return ""
        try:
            value = expand(raw, self.raw, (name,))
        except ConfigError as e:
            if e.filename:  # already names where it was set (see _default_mydomain)
                raise
            raise self._error(name, e.message) from None
        self._cache[name] = value
        return value

    def get_str(self, name: str) -> str:
        return self.get(name)

    def names_read(self) -> set[str]:
        """The parameters read through this Config and its copies so far (a
        reload asks which ones the running queue manager and delivery agents
        use)."""
        return set(self._reads)

    def get_int(self, name: str) -> int:
        value = self.get(name).strip()
        try:
            return int(value)
        except ValueError:
            raise self._error(name, f"bad value {value!r}: expected a whole number") from None

    def get_bool(self, name: str) -> bool:
        value = self.get(name).strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise self._error(name, f"bad value {value!r}: expected yes or no")

    def get_time(self, name: str) -> float:
        """A time in seconds; a bare number takes the parameter's default unit."""
        value = self.get(name)
        match = _TIME.match(value)
        if not match:
            raise self._error(
                name, f"bad value {value!r}: expected a time like 300s, 10m, 4h, 5d, 1w or 10ms"
            )
        param = self._param(name)
        unit = match.group(2) or (param.time_unit if param else "s")
        return float(int(match.group(1)) * _TIME_UNITS[unit])

    def get_list(self, name: str) -> list[str]:
        """A list split on commas and white space (Postfix's list syntax).

        ``inline:{ a=b, c=d }`` and ``{ ... }`` groups stay whole.
        """
        return split_list(self.get(name))


def split_list(value: str) -> list[str]:
    """Split a Postfix list value, keeping ``{...}`` groups as one item."""
    items: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in value:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth = max(0, depth - 1)
        if depth == 0 and (ch in ", \t\r\n"):
            if current:
                items.append("".join(current))
                current = []
            continue
        current.append(ch)
    if current:
        items.append("".join(current))
    return items
