"""cidr: tables — client addresses matched against networks, first match wins.

Mirrors Postfix's cidr_table(5): each line is ``network/prefix result`` or
``address result`` (IPv6 with or without brackets: ``2001:db8::/32``,
``[2001:db8::1]``), and ``!network result`` matches addresses outside the
network. Lines are tried in file order; the first that matches gives the
result. A key that is not an IP address matches nothing. Comment lines,
empty lines and continuation lines (leading white space) as in every
Postfix table file; ``if``/``endif`` blocks are not supported (a warning
naming the line, which is then skipped).

The file is re-read when it changes (checked at most once a second on the
injected clock), as pymta's other file tables; a re-read that fails keeps
the previous contents. Untrusted input: the file's syntax (problems are
warnings naming file and line) and the lookup key (a client address from
the network). Writes nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from twisted.logger import Logger
from zope.interface import implementer

from pymta.tables.interface import ILookupTable, TableError
from pymta.tables.source import Problem, logical_lines, read_rules
from pymta.tables.watch import FileWatch, stamp

_log = Logger(namespace="pymta.tables")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Rule = tuple[bool, Network, str]  # (negated, network, result)


def _network(text: str) -> Network:
    """``1.2.3.0/24``, ``1.2.3.4``, ``[::1]/128``, ``2001:db8::/32``;
    ValueError otherwise. Host bits set under the prefix are an error, as
    in Postfix (``1.2.3.4/24`` is a typo for 1.2.3.0/24 or 1.2.3.4/32)."""
    address, slash, prefix = text.partition("/")
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    return ipaddress.ip_network(address + slash + prefix, strict=True)


def parse_cidr(text: str, filename: str) -> tuple[list[Rule], list[Problem]]:
    """The rules of a cidr table file, and the problems found on the way."""
    rules: list[Rule] = []
    problems: list[Problem] = []
    for lineno, line in logical_lines(text):
        pattern, _, result = line.partition(" ")
        if "\t" in pattern:
            pattern, _, rest = pattern.partition("\t")
            result = f"{rest} {result}".strip()
        result = result.strip()
        negate = pattern.startswith("!")
        if negate:
            pattern = pattern[1:]
        if pattern.lower() in ("if", "endif"):
            problems.append(Problem(filename, lineno, "if/endif blocks are not supported"))
            continue
        if not result:
            problems.append(Problem(filename, lineno, f"no result after {pattern!r}"))
            continue
        try:
            network = _network(pattern)
        except ValueError:
            problems.append(
                Problem(
                    filename,
                    lineno,
                    f"bad network {pattern!r}: expected address or address/prefix "
                    "with no host bits set",
                )
            )
            continue
        rules.append((negate, network, result))
    return rules, problems


def _address(key: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(key.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


@implementer(ILookupTable)
class CidrTable:
    """A cidr: table loaded from its file, re-read when it changes."""

    def __init__(
        self, name: str, path: str, clock: Callable[[], float], strict: bool = False
    ) -> None:
        self.name = name
        self.path = path
        self._watch = FileWatch(path, clock)
        self._rules: list[Rule] = []
        try:
            current = stamp(path)
        except OSError as e:
            raise TableError(f"open {path}: {e.strerror}") from None
        self._load(current, strict)

    def _load(self, current: tuple[int, int, int, int], strict: bool = False) -> None:
        self._rules = read_rules(self.path, self.name, parse_cidr, strict)
        self._watch.accept(current)

    def _refresh(self) -> None:
        current = self._watch.changed()
        if current is None:
            return
        try:
            self._load(current)
        except TableError as e:
            _log.warn("{table}: reload failed, keeping old contents: {e}", table=self.name, e=e)

    def lookup(self, key: str) -> str | None:
        self._refresh()
        address = _address(key)
        if address is None:
            return None
        for negate, network, result in self._rules:
            if address.version != network.version:
                continue
            if (address in network) != negate:
                return result
        return None
