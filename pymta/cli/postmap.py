"""``pymta postmap``, ``pymta postalias`` and ``pymta newaliases``.

Mirrors Postfix's postmap(1), postalias(1) and newaliases(1):

    pymta postmap [-c DIR] [type:]FILE ...        compile FILE into FILE.db
    pymta postmap [-c DIR] -q KEY [type:]NAME ... query (KEY ``-``: keys on stdin)
    pymta postmap [-c DIR] -s [type:]NAME ...     dump every entry
    pymta postalias [-c DIR] [-q KEY | -s] [type:]FILE ...   same, aliases(5) syntax
    pymta newaliases [-c DIR]                     rebuild every table in alias_database

The type defaults to ``default_database_type`` (hash). ``hash:``,
``btree:`` and ``lmdb:`` sources are compiled into FILE.db, written
atomically; ``texthash:``, ``regexp:`` and ``pcre:`` files need no compiling
and are checked for syntax instead. ``-q`` works on every table type and
exits 0 when the key is found, 1 when it is not. Syntax problems are
warnings ``pymta: warning: FILE, line N: ...`` on stderr; a file or table
that cannot be read is ``pymta: fatal: ...`` and exit status 1. Untrusted
input: the table files. Writes only FILE.db (and its temporary file).
"""

from __future__ import annotations

import getopt
import os
import sqlite3
import sys

from pymta.cli.progress import Progress, counted
from pymta.config import Config, ConfigError
from pymta.tables.hashdb import compile_db, db_path
from pymta.tables.interface import IIterableTable, TableError
from pymta.tables.regexp import parse_rules
from pymta.tables.registry import COMPILED_TYPES, open_table, split_spec
from pymta.tables.source import Parsed
from pymta.tables.texthash import parse_table_text

PROG = "pymta"


class _Fatal(Exception):
    """Stops the command with ``pymta: fatal: message`` and exit status 1."""


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def _load_config(config_dir: str, required: bool) -> Config:
    if os.path.exists(os.path.join(config_dir, "main.cf")) or required:
        try:
            return Config.load(config_dir)
        except ConfigError as e:
            raise _Fatal(str(e)) from None
    return Config(config_directory=config_dir)


def _with_type(spec: str, config: Config) -> tuple[str, str, str]:
    """(full spec, type, name), adding default_database_type when spec has no type."""
    kind, colon, name = spec.partition(":")
    # A bare path (possibly containing ':' later on) gets the default type.
    if not colon or "/" in kind:
        default = config.get("default_database_type") or "hash"
        spec = f"{default}:{spec}"
    try:
        kind, name = split_spec(spec)
    except TableError as e:
        raise _Fatal(str(e)) from None
    return spec, kind, name


def _read_source(path: str, syntax: str) -> Parsed:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as e:
        raise _Fatal(f"open {path}: {e.strerror}") from None
    parsed = parse_table_text(text, path, syntax)
    for problem in parsed.problems:
        _warn(str(problem))
    return parsed


def _build(spec: str, config: Config, syntax: str) -> None:
    """Compile (or, for uncompiled file types, check) one table."""
    spec, kind, name = _with_type(spec, config)
    if kind in COMPILED_TYPES:
        parsed = _read_source(name, syntax)
        entries = parsed.entries.items()
        try:
            with Progress(f"{name}: entries", len(entries)) as progress:
                compile_db(db_path(name), counted(entries, progress), syntax)
        except (OSError, sqlite3.Error) as e:
            raise _Fatal(f"cannot write {db_path(name)}: {e}") from None
    elif kind == "texthash":
        _read_source(name, syntax)
    elif kind in ("regexp", "pcre"):
        try:
            with open(name, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except OSError as e:
            raise _Fatal(f"open {name}: {e.strerror}") from None
        _rules, problems = parse_rules(text, name, kind)
        if problems:
            raise _Fatal(str(problems[0]))
    else:
        raise _Fatal(f"{spec}: cannot build a table of type {kind}")


def _query(keys: list[str], specs: list[str], config: Config, with_keys: bool) -> int:
    """Print the value of each key from the first table that has it (postmap -q)."""
    tables = []
    for spec in specs:
        full, _kind, _name = _with_type(spec, config)
        try:
            tables.append(open_table(full, config, strict=True))
        except TableError as e:
            raise _Fatal(str(e)) from None
    found_any = False
    for key in keys:
        for table in tables:
            try:
                value = table.lookup(key)
            except TableError as e:
                raise _Fatal(f"table {table.name}: query error for {key!r}: {e}") from None
            if value is not None:
                print(f"{key}\t{value}" if with_keys else value)
                found_any = True
                break
    return 0 if found_any else 1


def _dump(specs: list[str], config: Config) -> int:
    for spec in specs:
        full, kind, _name = _with_type(spec, config)
        try:
            table = open_table(full, config, strict=True)
            if not IIterableTable.providedBy(table):
                raise _Fatal(f"table {full}: sequential access is not supported for {kind}")
            for key, value in table.items():
                print(f"{key}\t{value}")
        except TableError as e:
            raise _Fatal(str(e)) from None
    return 0


def _run(args: list[str], config_dir: str, syntax: str, usage: str) -> int:
    try:
        opts, specs = getopt.getopt(args, "c:q:svNnfiw")
    except getopt.GetoptError as e:
        print(f"{PROG}: fatal: {e}; usage: {usage}", file=sys.stderr)
        return 1
    query: str | None = None
    dump = False
    for opt, value in opts:
        if opt == "-c":
            config_dir = value
        elif opt == "-q":
            query = value
        elif opt == "-s":
            dump = True
    if not specs:
        print(f"{PROG}: fatal: usage: {usage}", file=sys.stderr)
        return 1
    try:
        config = _load_config(config_dir, required=False)
        if query is not None:
            keys = [line.rstrip("\n") for line in sys.stdin] if query == "-" else [query]
            return _query(keys, specs, config, with_keys=query == "-")
        if dump:
            return _dump(specs, config)
        for spec in specs:
            _build(spec, config, syntax)
        return 0
    except _Fatal as e:
        print(f"{PROG}: fatal: {e}", file=sys.stderr)
        return 1


def run_postmap(args: list[str], config_dir: str) -> int:
    """``pymta postmap``: compile, query (-q) or dump (-s) lookup tables."""
    return _run(args, config_dir, "map", "postmap [-c DIR] [-q KEY | -s] [type:]file ...")


def run_postalias(args: list[str], config_dir: str) -> int:
    """``pymta postalias``: the same for files in aliases(5) syntax."""
    return _run(args, config_dir, "aliases", "postalias [-c DIR] [-q KEY | -s] [type:]file ...")


def run_newaliases(args: list[str], config_dir: str) -> int:
    """``pymta newaliases``: rebuild every file table named in alias_database."""
    try:
        opts, rest = getopt.getopt(args, "c:v")
    except getopt.GetoptError as e:
        print(f"{PROG}: fatal: {e}; usage: newaliases [-c DIR]", file=sys.stderr)
        return 1
    for opt, value in opts:
        if opt == "-c":
            config_dir = value
    if rest:
        print(f"{PROG}: fatal: usage: newaliases [-c DIR]", file=sys.stderr)
        return 1
    try:
        config = _load_config(config_dir, required=True)
        try:
            specs = config.get_list("alias_database")
        except ConfigError as e:
            raise _Fatal(str(e)) from None
        for spec in specs:
            full, kind, _name = _with_type(spec, config)
            if kind in ("inline", "static", "fail"):
                _warn(f"{full}: not a file table; nothing to rebuild")
                continue
            _build(full, config, "aliases")
        return 0
    except _Fatal as e:
        print(f"{PROG}: fatal: {e}", file=sys.stderr)
        return 1
