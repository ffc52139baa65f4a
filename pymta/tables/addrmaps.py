"""Address lookups in Postfix's order, with extension propagation.

Mirrors Postfix's mail_addr_find and mail_addr_map, as virtual(5) and
canonical(5) describe them. For ``user+ext@domain`` the keys tried are:

1. ``user+ext@domain``
2. ``user@domain``                     (only when there is an extension)
3. ``user+ext``, then ``user``         (only when is_local_domain(domain):
                                        $myorigin, $mydestination, ...)
4. ``@domain``

An address without a domain tries ``user+ext`` then ``user``. The extension
is split off at the first of the recipient_delimiter characters; with ``-``
as delimiter, ``owner-list`` and ``list-request`` are not split (Postfix's
split_addr). When the match came from a key without the extension (forms 2,
3b and 4) and propagate_extension is set, the extension is appended to the
local part of every address in the result (virtual(5) "address
extension"); pass propagate_extension=False for results that are not
addresses (mailbox paths, access actions). Untrusted input: the address.
Writes and logs nothing; TableError from a table propagates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class _Lookup(Protocol):
    def lookup(self, key: str) -> str | None: ...


def split_extension(local: str, delimiter: str) -> tuple[str, str, str]:
    """(user, delimiter character, extension) of a local part; ('local', '', '') if none."""
    if not delimiter or not local:
        return local, "", ""
    lowered = local.lower()
    if "-" in delimiter and (lowered.startswith("owner-") or lowered.endswith("-request")):
        return local, "", ""
    for i, ch in enumerate(local):
        if ch in delimiter and i > 0:
            return local[:i], ch, local[i + 1 :]
    return local, "", ""


def split_result(value: str) -> list[str]:
    """Split a table result into items on commas and white space, respecting quotes."""
    items: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for ch in value:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            current.append(ch)
            escaped = True
        elif ch == '"':
            current.append(ch)
            quoted = not quoted
        elif not quoted and ch in ", \t\r\n":
            if current:
                items.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        items.append("".join(current))
    return items


def add_extension(address: str, delim: str, extension: str) -> str:
    """address with ``delim + extension`` appended to its local part."""
    local, at, domain = address.rpartition("@")
    if not at:
        return address + delim + extension
    return f"{local}{delim}{extension}@{domain}"


def lookup_address(
    maps: _Lookup,
    address: str,
    *,
    delimiter: str = "",
    is_local_domain: Callable[[str], bool] | None = None,
    propagate_extension: bool = True,
) -> str | None:
    """The value for address in Postfix's lookup order, or None (see module doc)."""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    user, delim, ext = split_extension(local, delimiter)
    keys: list[tuple[str, bool]] = []  # (key, matched without the extension)
    if domain:
        keys.append((f"{local}@{domain}", False))
        if ext:
            keys.append((f"{user}@{domain}", True))
        if is_local_domain is not None and is_local_domain(domain.lower()):
            keys.append((local, False))
            if ext:
                keys.append((user, True))
        keys.append((f"@{domain}", True))
    else:
        keys.append((local, False))
        if ext:
            keys.append((user, True))
    for key, unextended in keys:
        value = maps.lookup(key)
        if value is None:
            continue
        if unextended and ext and propagate_extension:
            return ", ".join(add_extension(a, delim, ext) for a in split_result(value))
        return value
    return None
