"""Open a lookup table by its ``type:name``, Postfix's dict_open.

Types: ``texthash:FILE``, ``hash:FILE`` (FILE.db compiled by ``pymta
postmap``; ``btree:`` and ``lmdb:`` are accepted as aliases of ``hash:`` with
a warning), ``regexp:FILE``, ``pcre:FILE``, ``cidr:FILE`` (client networks),
``inline:{ key=value, ... }``, ``static:value``, ``fail:name``, ``unix:passwd.byname`` and
``unix:group.byname`` (the system's users and groups). ``proxy:type:name`` opens ``type:name``
directly (pymta is one process; there is no proxymap(8) between).

Postfix's rule for open failures: the failure is logged as a warning and the
table is replaced by a surrogate that fails every lookup with the saved
reason, so the daemon keeps running and mail that needs the table is
deferred. ``strict=True`` (postmap, configuration checks) raises TableError
instead, and also turns syntax warnings in the file into errors. Untrusted
input: the spec (main.cf). Writes nothing; logs open failures through
twisted.logger (namespace ``pymta.tables``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from twisted.logger import Logger

from pymta.config import Config
from pymta.tables.hashdb import HashTable
from pymta.tables.interface import ILookupTable, TableError
from pymta.tables.regexp import RegexpTable
from pymta.tables.simple import (
    FailTable,
    InlineTable,
    StaticTable,
    SurrogateTable,
    parse_inline,
    parse_static,
)
from pymta.tables.texthash import TextHashTable

_log = Logger(namespace="pymta.tables")

Clock = Callable[[], float]

#: Types that name a file and are rebuilt by postmap/newaliases.
FILE_TYPES = ("hash", "btree", "lmdb", "texthash", "regexp", "pcre", "cidr")
#: Types whose file postmap compiles into FILE.db.
COMPILED_TYPES = ("hash", "btree", "lmdb")
TYPES = (*FILE_TYPES, "inline", "static", "fail", "proxy", "unix")


def split_spec(spec: str) -> tuple[str, str]:
    """(type, name) of ``type:name``; TableError when there is no type."""
    kind, colon, name = spec.strip().partition(":")
    if not colon or not kind:
        raise TableError(f"{spec}: need dictionary type:name")
    return kind.lower(), name


def _open(spec: str, config: Config | None, strict: bool, clock: Clock) -> ILookupTable:
    kind, name = split_spec(spec)
    if kind == "proxy":
        # One process: there is no proxymap(8) to go through; open the table itself.
        return _open(name, config, strict, clock)
    if kind in ("btree", "lmdb"):
        _log.warn("{spec}: {kind}: is implemented as hash:", spec=spec, kind=kind)
    if kind in FILE_TYPES and not name:
        raise TableError(f"{spec}: missing file name")
    if kind in COMPILED_TYPES:
        return HashTable(spec, name, clock)
    if kind == "texthash":
        return TextHashTable(spec, name, clock, strict=strict)
    if kind in ("regexp", "pcre"):
        return RegexpTable(spec, name, kind, clock, strict=strict)
    if kind == "cidr":
        from pymta.tables.cidr import CidrTable

        return CidrTable(spec, name, clock, strict=strict)
    if kind == "inline":
        return InlineTable(spec, parse_inline(name))
    if kind == "static":
        return StaticTable(spec, parse_static(name))
    if kind == "fail":
        return FailTable(spec)
    if kind == "unix":
        from pymta.tables.unix import UnixTable

        return UnixTable(spec, name)
    raise TableError(f"{spec}: unsupported dictionary type: {kind}")


def open_table(
    spec: str,
    config: Config | None = None,
    *,
    strict: bool = False,
    clock: Clock | None = None,
) -> ILookupTable:
    """Open ``type:name``: a working table, a surrogate, or (strict) TableError.

    clock (default time.monotonic) paces the change checks of file tables.
    config is accepted for table types that read parameters; none do yet.
    """
    try:
        return _open(spec, config, strict, clock or time.monotonic)
    except TableError as e:
        if strict:
            raise
        reason = str(e)
        kind, _, name = spec.strip().partition(":")
        if (
            kind.lower() in COMPILED_TYPES
            and os.path.exists(name)
            and not os.path.exists(f"{name}.db")
        ):
            reason += (
                f" (compile it: pymta postmap {spec.strip()},"
                " or pymta postalias for an aliases file)"
            )
        # Postfix's words (dict_surrogate.c); the surrogate says it again,
        # in the mail log, at each lookup it fails.
        _log.warn("{spec} is unavailable. {reason}", spec=spec.strip(), reason=reason)
        return SurrogateTable(spec.strip(), reason)
