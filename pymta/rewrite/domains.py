"""Domain lists: mydestination, relay_domains, virtual_*_domains.

Mirrors Postfix's match_list / domain_list: a list of domain names and
lookup tables. An entry is matched as follows:

- ``example.com`` matches that domain (case-insensitively);
- ``.example.com`` matches any subdomain of example.com (Postfix's form when
  parent_domain_matches_subdomains does not list the parameter, the default
  since compatibility_level 2);
- ``type:name`` is a lookup table; a domain matches when the table has a
  value for it (the value itself is ignored), so ``virtual_alias_domains =
  $virtual_alias_maps`` works as in Postfix;
- ``/file/name`` is read as more entries (one or more per line, ``#``
  comments);
- ``!entry`` negates: a match ends the search with "not listed".

The first matching entry decides. Untrusted input: the domain. Writes
nothing. TableError from a table propagates (the caller defers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from pymta.config import split_list
from pymta.tables.interface import TableError


class _Lookup(Protocol):
    def lookup(self, key: str) -> str | None: ...


OpenTable = Callable[[str], _Lookup]


def _is_table(entry: str) -> bool:
    kind, colon, _ = entry.partition(":")
    return bool(colon) and kind.isalnum() and not entry.startswith("[")


class DomainList:
    """One domain-list parameter's entries, with tables opened by ``open_table``."""

    def __init__(self, entries: list[str], open_table: OpenTable) -> None:
        self._names: list[tuple[bool, str, _Lookup | None]] = []
        for entry in self._expand(entries):
            negate = False
            while entry.startswith("!"):
                negate = not negate
                entry = entry[1:]
            if not entry:
                continue
            if _is_table(entry):
                self._names.append((negate, entry, open_table(entry)))
            else:
                self._names.append((negate, entry.lower().rstrip("."), None))

    @staticmethod
    def _expand(entries: list[str]) -> list[str]:
        result: list[str] = []
        for entry in entries:
            if entry.startswith("/"):
                try:
                    with open(entry, encoding="utf-8") as f:
                        text = f.read()
                except OSError as e:
                    raise TableError(f"{entry}: {e.strerror}") from None
                lines = [line.partition("#")[0] for line in text.splitlines()]
                result.extend(split_list(" ".join(lines)))
            else:
                result.append(entry)
        return result

    def __bool__(self) -> bool:
        return bool(self._names)

    def matches(self, domain: str) -> bool:
        """True when domain is listed; TableError when a table lookup failed."""
        domain = domain.lower().rstrip(".")
        for negate, name, table in self._names:
            if table is not None:
                hit = table.lookup(domain) is not None
            elif name.startswith("."):
                hit = domain.endswith(name)
            else:
                hit = domain == name
            if hit:
                return not negate
        return False
