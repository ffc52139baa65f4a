"""Alias lookups for the local delivery agent, aliases(5).

The aliases file (``name: value, value``; continuation lines start with
white space; ``#`` comments; ``"quoted name": value``) is compiled by
``pymta postalias`` / ``pymta newaliases`` into the same FILE.db format as
``postmap`` (hash:), or read directly as a ``texthash:`` table, which
recognises the aliases syntax by its shape (see pymta.tables.texthash).

:func:`lookup_alias` follows aliases(5) ADDRESS EXTENSION: the local part
is looked up lower-cased with its extension first (``user+foo``), then,
when that finds nothing and recipient_delimiter splits it, without
(``user``). No extension is propagated into the result (alias is not in
Postfix's default propagate_unmatched_extensions). The result is the list
of values as written (addresses, ``|command``, ``/file``,
``:include:/file``); the delivery agent interprets them. Untrusted input:
the local part. Writes and logs nothing; TableError propagates.
"""

from __future__ import annotations

from pymta.tables.addrmaps import _Lookup, split_extension, split_result

__all__ = ["lookup_alias", "split_alias_value"]


def split_alias_value(value: str) -> list[str]:
    """Split an alias value on commas, keeping quoted parts and ``|command args`` whole.

    A value starting with ``|`` runs to the next unquoted comma, since a
    command line contains white space; other items are split on commas and
    white space like any table result.
    """
    items: list[str] = []
    for part in _split_commas(value):
        part = part.strip()
        if not part:
            continue
        if part.startswith(("|", '"|')):
            items.append(part)
        else:
            items.extend(split_result(part))
    return items


def _split_commas(value: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def lookup_alias(maps: _Lookup, local_part: str, *, delimiter: str = "") -> list[str] | None:
    """The alias values for local_part (with extension first, then without), or None."""
    local = local_part.lower()
    value = maps.lookup(local)
    if value is None:
        user, _delim, ext = split_extension(local, delimiter)
        if ext:
            value = maps.lookup(user)
    if value is None:
        return None
    return split_alias_value(value)
