"""Read master.cf: which services run, where, and with which ``-o`` overrides.

Mirrors Postfix's master(5) file format: eight columns (service, type,
private, unpriv, chroot, wakeup, maxproc, command + args), ``-`` for the
default of a column, a line starting with white space continues the one
before it, ``#`` lines and empty lines are ignored (they do not end a
logical line). Command arguments ``-o name=value`` and (Postfix 3.0)
``-o { name = value with spaces }`` override main.cf for that service.
When two lines name the same service and type, the last one wins, as in
Postfix.

Input is the administrator's file; anything malformed, and any command that
pymta does not recognise, is a ConfigError naming file and line. Postfix's
stock master.cf (Debian's) parses unchanged: :data:`COMMANDS` recognises
every standard command, and :func:`check_master` says, one warning per
service, which ones pymta ignores; a service pymta runs whose chroot
column is ``y`` stops the start (pymta cannot chroot one service of its
process; see :func:`_chroot_refused`), naming the line. Writes nothing,
logs nothing.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pymta.config.errors import ConfigError
from pymta.config.files import read_config_text

if TYPE_CHECKING:
    from pymta.config.config import Config

SERVICE_TYPES = ("inet", "unix", "unix-dgram", "fifo", "pass")

#: Every command pymta recognises: "pymta" when a pymta part does its job
#: (see :data:`PARTS` for which one), "builtin" when pymta needs no separate
#: service for it (the job is done inside another part, or not needed).
COMMANDS: dict[str, str] = {
    # parts of pymta
    "smtpd": "pymta",
    "pop3d": "pymta",
    "imapd": "pymta",
    "lmtpd": "pymta",  # pymta-only: the LMTP server into the mail store (pymta.lmtpd)
    "managesieved": "pymta",  # pymta-only: ManageSieve, RFC 5804 (pymta.managesieve)
    "qmgr": "pymta",
    "oqmgr": "pymta",
    "cleanup": "pymta",
    "trivial-rewrite": "pymta",
    "bounce": "pymta",
    "local": "pymta",
    "virtual": "pymta",
    "discard": "pymta",
    "error": "pymta",
    "smtp": "pymta",
    "lmtp": "pymta",
    "pipe": "pymta",
    "pickup": "pymta",
    "showq": "pymta",
    "flush": "pymta",
    "postscreen": "pymta",
    "qmqpd": "pymta",
    "spawn": "pymta",
    "metrics": "pymta",  # pymta-only: the OpenMetrics endpoint (pymta.metrics)
    # jobs pymta does without a service of their own
    "tlsmgr": "builtin",  # pymta.tls keeps its state in-process
    "tlsproxy": "builtin",  # postscreen's STARTTLS: pymta.tls in smtpd
    "anvil": "builtin",  # client limits are counted inside smtpd
    "scache": "builtin",  # the smtp client keeps its own connection cache
    "proxymap": "builtin",  # tables are opened in-process, no chroot to escape
    "verify": "builtin",  # address verification probes: not offered
    "postlogd": "builtin",  # maillog_file is written by the maillog observer
    "dnsblog": "builtin",  # DNSBL lookups: smtpd and postscreen use twisted.names
}

#: The pymta part that does the job of a "pymta" command.
PARTS: dict[str, str] = {
    "smtpd": "smtpd",
    "pop3d": "pop3d",
    "imapd": "imapd",
    "lmtpd": "lmtpd",
    "managesieved": "managesieved",
    "qmgr": "qmgr",
    "oqmgr": "qmgr",
    "cleanup": "cleanup",
    "trivial-rewrite": "rewrite",
    "bounce": "bounce",  # also runs as defer and trace
    "local": "local",
    "virtual": "virtual",
    "discard": "discard",
    "error": "error",  # also runs as retry
    "smtp": "smtp",  # also runs as relay
    "lmtp": "smtp",
    "pipe": "pipe",
    "pickup": "pickup",
    "showq": "showq",
    "flush": "flush",
    "postscreen": "postscreen",
    "qmqpd": "qmqpd",
    "spawn": "spawn",
    "metrics": "metrics",
}

#: pymta-only commands that only make sense as a listener.
INET_ONLY = frozenset({"metrics", "managesieved"})

# service name -> port, when the system has no /etc/services entry.
_PORTS: dict[str, int] = {
    "smtp": 25,
    "submission": 587,
    "smtps": 465,
    "submissions": 465,
    "pop3": 110,
    "pop3s": 995,
    "imap": 143,
    "imap2": 143,
    "imaps": 993,
    "lmtp": 24,
    "sieve": 4190,
}

_TOKEN_OPEN = "{"
_SERVICE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*\Z")


def _is_number(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts ``²`` and other
    characters that int() refuses."""
    return text.isascii() and text.isdigit()


@dataclass
class MasterService:
    """One master.cf service line, with its ``-o`` overrides."""

    name: str
    type: str
    private: bool
    unpriv: bool
    chroot: bool
    wakeup: int | None  # seconds between wake-ups; None: never
    maxproc: int | None  # None: $default_process_limit; 0: no limit
    command: str
    args: list[str]  # arguments other than -o overrides
    overrides: dict[str, str]
    filename: str
    lineno: int
    wakeup_if_used: bool = False  # Postfix's "N?": wake only once used
    fields: tuple[str, ...] = ()  # the first seven columns as written
    tokens: tuple[str, ...] = ()  # every argument as written, for postconf -M
    override_lines: dict[str, int] = field(default_factory=dict)  # -o name -> line

    def where(self) -> str:
        """``FILE, line N`` for messages about this service."""
        return f"{self.filename}, line {self.lineno}"

    @property
    def program(self) -> str:
        """The command's program name (master.cf may give a path)."""
        return os.path.basename(self.command)

    def listen_address(self) -> tuple[str | None, int]:
        """Where an inet service listens: (host or None for all, port).

        Accepts ``port``, ``name``, ``host:port``, ``[host]:port`` and
        ``[v6addr]:port``; a port may be a service name such as ``smtp``.
        """
        if self.type != "inet":
            raise ConfigError(f"service {self.name!r} is not an inet service", *self._at())
        host: str | None
        spec = self.name
        if spec.startswith("["):
            close = spec.find("]")
            if close < 0 or spec[close + 1 : close + 2] != ":":
                raise ConfigError(f"bad inet service {spec!r}: expected [host]:port", *self._at())
            host, port_text = spec[1:close], spec[close + 2 :]
        elif ":" in spec:
            host, _, port_text = spec.rpartition(":")
        else:
            host, port_text = None, spec
        if host in ("", "*"):
            host = None
        return host, self._port(port_text)

    def process_limit(self, config: Config) -> int:
        """maxproc, with ``-`` meaning ``default_process_limit``; 0 is no limit."""
        if self.maxproc is None:
            return config.get_int("default_process_limit")
        return self.maxproc

    def service_config(self, config: Config) -> Config:
        """The main.cf Config with this service's ``-o`` overrides applied.

        ``$service_name`` and ``$process_name`` expand as in Postfix.
        """
        overrides = {"service_name": self.name, "process_name": self.program}
        overrides.update(self.overrides)
        return config.with_overrides(overrides, source=self.filename)

    def _at(self) -> tuple[str, int]:
        return self.filename, self.lineno

    def _port(self, text: str) -> int:
        # pymta extension: port 0 lets the kernel choose a free port (tests,
        # embedding); the listener logs the port it bound.
        if _is_number(text):
            port = int(text)
            if 0 <= port < 65536:
                return port
        elif _SERVICE_NAME.match(text):
            # Only a name /etc/services could hold reaches getservbyname: a
            # NUL byte raised ValueError there, other characters
            # UnicodeEncodeError.
            try:
                return socket.getservbyname(text, "tcp")
            except OSError:
                if text in _PORTS:
                    return _PORTS[text]
        raise ConfigError(f"bad port {text!r} in inet service {self.name!r}", *self._at())


def _tokens(text: str, filename: str, lineno: int) -> list[tuple[str, bool, int]]:
    """Split a logical line on white space; ``{ ... }`` is one token (braced).

    Each token comes with its offset in text.
    """
    out: list[tuple[str, bool, int]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        if text[i] == _TOKEN_OPEN:
            depth, j = 0, i
            while j < n:
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if j >= n:
                raise ConfigError("missing '}' in master.cf entry", filename, lineno)
            if j + 1 < n and not text[j + 1].isspace():
                raise ConfigError("text after '}' in master.cf entry", filename, lineno)
            out.append((text[i + 1 : j].strip(), True, i))
            i = j + 1
            continue
        j = i
        while j < n and not text[j].isspace():
            j += 1
        out.append((text[i:j], False, i))
        i = j
    return out


def _bool(value: str, default: bool, column: str, filename: str, lineno: int) -> bool:
    if value == "-":
        return default
    if value in ("y", "yes"):
        return True
    if value in ("n", "no"):
        return False
    raise ConfigError(f"bad {column} field {value!r}: expected y, n or -", filename, lineno)


_WAKEUP = re.compile(r"^([0-9]+)(\??)$")


def _entry(
    logical: str, filename: str, lineno: int, starts: list[tuple[int, int]]
) -> MasterService:
    """One service from a logical line; starts maps offsets to physical lines."""
    toks = _tokens(logical, filename, lineno)

    def line_of(offset: int) -> int:
        found = lineno
        for start, physical in starts:
            if start <= offset:
                found = physical
        return found

    if len(toks) < 8:
        raise ConfigError(
            "bad master.cf entry: expected service, type, private, unpriv, chroot, "
            "wakeup, maxproc and command",
            filename,
            lineno,
        )
    fields = tuple(t for t, _, _ in toks[:7])
    name, stype, priv, unpriv, chroot, wakeup, maxproc = fields
    if stype not in SERVICE_TYPES:
        raise ConfigError(
            f"bad type {stype!r} of service {name!r}: expected one of {', '.join(SERVICE_TYPES)}",
            filename,
            lineno,
        )
    private = _bool(priv, True, "private", filename, lineno)
    if stype == "inet" and private:
        # Postfix's master: "inet service cannot be private".
        raise ConfigError(f"inet service {name!r} cannot be private", filename, lineno)
    wake: int | None = None
    wake_if_used = False
    if wakeup != "-":
        m = _WAKEUP.match(wakeup)
        if not m:
            raise ConfigError(
                f"bad wakeup field {wakeup!r}: expected seconds, seconds? or -", filename, lineno
            )
        wake = int(m.group(1)) or None
        wake_if_used = bool(m.group(2))
    limit: int | None = None
    if maxproc != "-":
        if not _is_number(maxproc):
            raise ConfigError(
                f"bad maxproc field {maxproc!r}: expected a number or -", filename, lineno
            )
        limit = int(maxproc)
    command = toks[7][0]
    args: list[str] = []
    overrides: dict[str, str] = {}
    printed: list[str] = []
    override_lines: dict[str, int] = {}
    rest = toks[8:]
    i = 0
    while i < len(rest):
        tok, braced, offset = rest[i]
        if not braced and tok.startswith("-o"):
            if tok == "-o":
                if i + 1 >= len(rest):
                    raise ConfigError("-o without name=value", filename, lineno)
                i += 1
                setting, braced, _ = rest[i]
            else:
                setting = tok[2:]
            pname, sep, value = setting.partition("=")
            pname, value = pname.strip(), value.strip()
            if not sep or not re.match(r"^[A-Za-z0-9_]+$", pname):
                raise ConfigError(
                    f"bad -o {setting!r}: expected name=value or {{ name = value }}",
                    filename,
                    lineno,
                )
            overrides[pname] = value
            override_lines[pname] = line_of(offset)
            shown = f"{pname}={value}"
            printed.append("-o " + (f"{{{shown}}}" if braced or " " in shown else shown))
        else:
            args.append(tok)
            printed.append(f"{{{tok}}}" if braced else tok)
        i += 1
    return MasterService(
        name=name,
        type=stype,
        private=private,
        unpriv=_bool(unpriv, True, "unpriv", filename, lineno),
        chroot=_bool(chroot, False, "chroot", filename, lineno),
        wakeup=wake,
        maxproc=limit,
        command=command,
        args=args,
        overrides=overrides,
        filename=filename,
        lineno=lineno,
        wakeup_if_used=wake_if_used,
        fields=fields,
        tokens=tuple(printed),
        override_lines=override_lines,
    )


def parse_master_cf(text: str, filename: str = "master.cf") -> list[MasterService]:
    """Parse master.cf text into services, in file order; a later duplicate wins."""
    logical: list[tuple[int, list[tuple[int, str]]]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in " \t":
            if not logical:
                raise ConfigError("continuation line without a service before it", filename, lineno)
            logical[-1][1].append((lineno, stripped))
            continue
        logical.append((lineno, [(lineno, stripped)]))
    services: dict[tuple[str, str], MasterService] = {}
    for lineno, parts in logical:
        starts: list[tuple[int, int]] = []
        offset = 0
        for physical, part in parts:
            starts.append((offset, physical))
            offset += len(part) + 1
        text_ = " ".join(part for _, part in parts)
        entry = _entry(text_, filename, lineno, starts)
        key = (entry.name, entry.type)
        services.pop(key, None)
        services[key] = entry
    return list(services.values())


def load_master(config_dir: str | os.PathLike[str]) -> list[MasterService]:
    """Read ``DIR/master.cf``; a missing file, or one that is not UTF-8, is
    an error naming it."""
    path = Path(config_dir) / "master.cf"
    return parse_master_cf(read_config_text(path), str(path))


def check_master(services: list[MasterService], built: set[str]) -> list[str]:
    """One warning per service pymta will not run; ConfigError for an
    unknown command, and for a service it runs whose chroot column is y.

    ``built`` holds what the running pymta wires in: part names (values of
    :data:`PARTS`) or command names (``trivial-rewrite``), either works.
    """
    warnings: list[str] = []
    chrooted: list[MasterService] = []
    for service in services:
        program = service.program
        status = COMMANDS.get(program)
        if status is None:
            raise ConfigError(
                f"service {service.name!r}: unknown command {service.command!r}",
                service.filename,
                service.lineno,
            )
        if program in INET_ONLY and service.type != "inet":
            raise ConfigError(
                f"service {service.name!r}: {program} listens on a TCP port, write it as "
                f"an inet service (127.0.0.1:9154 inet n - n - - {program})",
                service.filename,
                service.lineno,
            )
        label = f"{service.where()}: service '{service.name}' ({program})"
        if program == "pipe":
            from pymta.config.pipe_args import parse_pipe

            parse_pipe(service.args, (service.filename, service.lineno))
        if status == "builtin":
            warnings.append(f"{label}: not needed in pymta, ignored")
        elif program not in built and PARTS[program] not in built:
            warnings.append(f"{label}: not built yet in pymta, ignored")
        elif service.chroot:
            chrooted.append(service)
    if chrooted:
        raise _chroot_refused(chrooted)
    return warnings


def _chroot_refused(chrooted: list[MasterService]) -> ConfigError:
    """The start stops at a service pymta would run whose chroot column is y.

    Postfix chroots each daemon process it forks; pymta runs its services
    in one reactor process (one per CPU with pymta_processes), where local
    and virtual delivery, pop3d, imapd and reloads need the files outside
    queue_directory, so one service cannot be chrooted without the rest.
    Running it unchrooted with a warning would be a configuration that lies.
    """
    first = chrooted[0]
    others = [str(s.lineno) for s in chrooted[1:]]
    also = f" and on line{'s' if len(others) > 1 else ''} {', '.join(others)}" if others else ""
    return ConfigError(
        f"service {first.name!r} ({first.program}): the chroot column (5th) is y, which "
        "pymta cannot do: its services share one process, and local and virtual delivery, "
        "pop3d and imapd need the files outside queue_directory. Write n (or -, the "
        f"default since Postfix 3.0) in that column here{also}; privilege separation "
        "(mail_owner and the root helper) does not depend on it",
        first.filename,
        first.lineno,
    )


def format_service(service: MasterService) -> str:
    """One service as ``postconf -M`` prints it (Postfix's column layout)."""
    columns = (0, 11, 17, 25, 33, 41, 49, 57)
    fields = service.fields or (
        service.name,
        service.type,
        "y" if service.private else "n",
        "y" if service.unpriv else "n",
        "y" if service.chroot else "n",
        "-" if service.wakeup is None else f"{service.wakeup}{'?' * service.wakeup_if_used}",
        "-" if service.maxproc is None else str(service.maxproc),
    )
    line = ""
    for text, column in zip((*fields, service.command), columns, strict=True):
        if line:
            line += " " * max(1, column - len(line))
        line += text
    tokens = service.tokens or tuple(service.args)
    if tokens:
        line += " " + " ".join(tokens)
    return line
