"""``pymta postconf``: print and edit the configuration, as Postfix's postconf.

Usage::

    pymta postconf [-c DIR] [-d | -n] [-h] [-x] [NAME ...]
    pymta postconf [-c DIR] -e name=value ...     edit main.cf in place
    pymta postconf [-c DIR] -X name ...           remove from main.cf
    pymta postconf [-c DIR] -# name ...           comment out in main.cf
    pymta postconf [-c DIR] -M [service[/type] ...]

Output follows postconf(1): ``name = value`` sorted by name (``name =``
when empty), values as written unless ``-x`` expands them; ``-n`` shows
only what main.cf sets (and uses), ``-d`` the defaults, ``-h`` the values
alone, ``-M`` master.cf services in Postfix's column layout. An unknown
NAME is ``postconf: warning: NAME: unknown parameter``; a main.cf setting
that nothing uses is ``postconf: warning: FILE: unused parameter: name=value``.

Reads main.cf and master.cf from the configuration directory; ``-e``, ``-X``
and ``-#`` rewrite main.cf atomically (a temporary file in the same
directory, fsync'd, renamed over it), keeping comments and layout.
"""

from __future__ import annotations

import getopt
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from pymta.config.config import Config
from pymta.config.defaults import Param
from pymta.config.errors import ConfigError
from pymta.config.expand import expand
from pymta.config.files import decode_config_text
from pymta.config.master_cf import MasterService, format_service, load_master
from pymta.config.validate import known_parameters, referenced_names

PROG = "postconf"
USAGE = (
    "usage: postconf [-c DIR] [-d | -n] [-h] [-x] [NAME ...] | -e name=value ... | "
    "-X name ... | -# name ... | -M [service[/type] ...]"
)
_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class Fatal(Exception):
    """Stops postconf with ``postconf: fatal: message``."""


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def _line(name: str, value: str, values_only: bool) -> str:
    if values_only:
        return value
    return f"{name} = {value}" if value else f"{name} ="


def run(args: list[str], config_dir: str) -> int:
    """Entry point of ``pymta postconf``; returns the exit status."""
    try:
        return _run(args, config_dir)
    except Fatal as e:
        print(f"{PROG}: fatal: {e}", file=sys.stderr)
        return 1
    except ConfigError as e:
        print(f"{PROG}: fatal: {e}", file=sys.stderr)
        return 1


def _run(args: list[str], config_dir: str) -> int:
    try:
        opts, names = getopt.getopt(args, "c:dnhxeXM#")
    except getopt.GetoptError as e:
        raise Fatal(f"{e.msg}; {USAGE}") from None
    flags: set[str] = set()
    for opt, value in opts:
        if opt == "-c":
            config_dir = value
        else:
            flags.add(opt[1])
    edits = flags & {"e", "X", "#"}
    if len(edits) > 1 or (edits and flags & {"d", "n", "M"}):
        raise Fatal("specify only one of -e, -X, -#, -M, or -d/-n")
    if "d" in flags and "n" in flags:
        raise Fatal("specify one of -d -n")
    if "M" in flags:
        return _print_master(config_dir, names)
    if edits:
        return _edit(config_dir, edits.pop(), names)
    return _print_params(
        config_dir,
        names,
        defaults="d" in flags,
        explicit_only="n" in flags,
        values_only="h" in flags,
        expand="x" in flags,
    )


# --- printing parameters ----------------------------------------------------


def _load(config_dir: str) -> tuple[Config, list[MasterService]]:
    config = Config.load(config_dir)
    master: list[MasterService] = []
    if (Path(config_dir) / "master.cf").exists():
        master = load_master(config_dir)
    return config, master


def _used(config: Config, master: list[MasterService]) -> set[str]:
    values = list(config.explicit().values())
    for service in master:
        values.extend(service.overrides.values())
    used = referenced_names(values)
    if "smtpd_restriction_classes" in config.explicit():
        used.update(config.get_list("smtpd_restriction_classes"))
    return used


def _warn_unused(
    config: Config, master: list[MasterService], known: dict[str, Param], used: set[str]
) -> None:
    for name, value in config.explicit().items():
        if name not in known and name not in used:
            src = config.source(name)
            filename = src.filename if src is not None else "main.cf"
            _warn(f"{filename}: unused parameter: {name}={value}")
    for service in master:
        for name, value in service.overrides.items():
            if name not in known and name not in used:
                _warn(f"{service.filename}: unused parameter: {name}={value}")


def _print_params(
    config_dir: str,
    names: list[str],
    *,
    defaults: bool,
    explicit_only: bool,
    values_only: bool,
    expand: bool,
) -> int:
    known: dict[str, Param]
    if defaults:
        # Postfix's -d reads no main.cf; master.cf still names the services.
        master: list[MasterService] = []
        if (Path(config_dir) / "master.cf").exists():
            master = load_master(config_dir)
        config = Config(config_directory=None)
        known = known_parameters(config, master)
        visible = set(known)
        used: set[str] = set()
    else:
        config, master = _load(config_dir)
        known = known_parameters(config, master)
        used = _used(config, master)
        _warn_unused(config, master, known, used)
        explicit = config.explicit()
        if explicit_only:
            visible = {n for n in explicit if n in known or n in used}
        else:
            visible = set(known) | {n for n in explicit if n in used}

    def value_of(name: str) -> str:
        if defaults:
            raw = config.raw(name)
            if raw is None:
                raw = known[name].default
        else:
            raw = config.raw(name)
            if raw is None:
                raw = known[name].default if name in known else ""
        if expand:
            return _expand(config, known, name, raw)
        return raw

    out: list[str] = []
    if names:
        for name in names:
            if name not in visible:
                if name not in known and (defaults or name not in used):
                    _warn(f"{name}: unknown parameter")
                continue  # -n: known, but not set in main.cf
            out.append(_line(name, value_of(name), values_only))
    else:
        out.extend(_line(name, value_of(name), values_only) for name in sorted(visible))
    for line in out:
        print(line)
    return 0


def _expand(config: Config, known: dict[str, Param], name: str, raw: str) -> str:
    """Expand raw with config, using service-parameter defaults from known."""

    def lookup(ref: str) -> str | None:
        value = config.raw(ref)
        if value is None and ref in known:
            return known[ref].default
        return value

    try:
        return expand(raw, lookup, (name,))
    except ConfigError as e:
        src = config.source(name)
        if src is not None:
            raise ConfigError(e.message, src.filename, src.lineno, name) from None
        raise


# --- master.cf ------------------------------------------------------------


def _print_master(config_dir: str, selectors: list[str]) -> int:
    services = load_master(config_dir)
    if not selectors:
        for service in services:
            print(format_service(service))
        return 0
    wanted = [selector.partition("/")[::2] for selector in selectors]

    def selected(service: MasterService, name: str, stype: str) -> bool:
        return service.name == name and (not stype or service.type == stype)

    # Postfix prints the selected services in master.cf order.
    for service in services:
        if any(selected(service, name, stype) for name, stype in wanted):
            print(format_service(service))
    for selector, (name, stype) in zip(selectors, wanted, strict=True):
        if not any(selected(service, name, stype) for service in services):
            _warn(f'unmatched request: "{selector}"')
    return 0


# --- editing main.cf ----------------------------------------------------------


def parse_assignment(arg: str) -> tuple[str, str]:
    """``name=value`` or ``name = value`` from a -e argument."""
    name, sep, value = arg.partition("=")
    name = name.strip()
    if not sep:
        raise Fatal(f"missing '=' after attribute name: \"{arg}\"")
    if not _NAME.match(name):
        raise Fatal(f'bad parameter name in "{arg}"')
    return name, value.strip()


def edit_main_cf(
    text: str,
    assignments: dict[str, str] | None = None,
    *,
    remove: Iterable[str] = (),
    comment: Iterable[str] = (),
) -> str:
    """main.cf text with parameters set, removed or commented out.

    Every definition of a set parameter becomes ``name = value`` (its
    continuation lines go, comments and blank lines stay), as Postfix's
    ``postconf -e`` does; a parameter not yet defined is appended at the end
    (after a newline, which Postfix forgets when the file lacks one).
    """
    assignments = dict(assignments or {})
    removed, commented = set(remove), set(comment)
    done: set[str] = set()
    out: list[str] = []
    skipping = False  # inside the continuation lines of a replaced definition
    commenting = False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        is_comment_or_blank = not stripped or stripped.startswith("#")
        if line[:1] in (" ", "\t") and not is_comment_or_blank:
            if skipping:
                continue
            if commenting:
                out.append("#" + line)
                continue
            out.append(line)
            continue
        if is_comment_or_blank:
            out.append(line)
            continue
        skipping = commenting = False
        name = line.partition("=")[0].strip()
        if name in assignments:
            skipping = True
            done.add(name)
            out.append(f"{_line(name, assignments[name], False)}\n")
            continue
        if name in removed:
            skipping = True
            continue
        if name in commented:
            commenting = True
            out.append("#" + line)
            continue
        out.append(line)
    missing = [n for n in assignments if n not in done]
    if missing and out and not out[-1].endswith("\n"):
        out[-1] += "\n"
    out.extend(f"{_line(n, assignments[n], False)}\n" for n in missing)
    return "".join(out)


def write_atomically(path: Path, text: str) -> None:
    """Replace path's content: temp file in the same directory, fsync, rename."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _edit(config_dir: str, mode: str, args: list[str]) -> int:
    if not args:
        raise Fatal(f"-{mode} needs at least one argument; {USAGE}")
    path = Path(config_dir) / "main.cf"
    try:
        # Not UTF-8: a ConfigError naming the line (postconf -e must not
        # rewrite bytes it could not read).
        text = decode_config_text(path.read_bytes(), str(path))
    except FileNotFoundError:
        if mode != "e":
            raise Fatal(f"open {path}: No such file or directory") from None
        text = ""
    except OSError as e:
        raise Fatal(f"open {path}: {e.strerror}") from None
    if mode == "e":
        assignments = dict(parse_assignment(arg) for arg in args)
        new = edit_main_cf(text, assignments)
    else:
        for name in args:
            if not _NAME.match(name):
                raise Fatal(f"bad parameter name: {name!r}")
        if mode == "X":
            new = edit_main_cf(text, remove=args)
        else:
            new = edit_main_cf(text, comment=args)
    if new != text:
        write_atomically(path, new)
    return 0
