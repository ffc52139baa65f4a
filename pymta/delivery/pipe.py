"""pipe: hand a message to a program, as Postfix's pipe(8).

A master.cf ``pipe`` service (``maildrop unix - n n - - pipe flags=DRXhu
user=vmail argv=/usr/bin/maildrop -d ${recipient}``) is one agent. For a
request (one message, the recipients of one job, at most
``<service>_destination_recipient_limit`` of them: the queue manager cuts
the jobs) it runs ``argv`` once, without a shell, as ``user=`` (never root;
a user that does not exist defers), with the message on standard input and
the exit status mapped through sysexits(3) as for local commands
(:mod:`pymta.delivery.command`); every recipient of the request gets that
status.

argv words expand ``$name`` / ``${name}``: ``sender`` (``null_sender`` for
``<>``), ``nexthop``, ``queue_id``, ``size``, ``client_address``,
``client_hostname``, ``client_helo``, ``client_protocol``,
``sasl_username``, and per recipient ``recipient``, ``original_recipient``,
``user``, ``extension``, ``domain``, ``mailbox``: a word with a
per-recipient name becomes one word per recipient, as in pipe(8). Flags:
``F`` a ``From sender date`` line, ``R`` Return-Path, ``D``
Delivered-To, ``O`` X-Original-To (those three name the first recipient),
``.`` SMTP dot-stuffing, ``>`` ``>From `` quoting, ``B`` a blank line at
the end, ``h`` domain parts and nexthop in lower case, ``u`` local parts in
lower case, ``q`` RFC 5322 quoting of local parts that need it, ``X``
final delivery (the status says "delivered" rather than "relayed").
``eol=`` ends each line (default LF); ``size=`` bounces larger messages
(5.2.3).

Untrusted input: the message (copied line by line) and the envelope
addresses, which reach the command only as whole argv words (no shell).
Writes nothing itself. Logs nothing (statuses are values).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from pymta.config import Config
from pymta.config.pipe_args import PipeSpec
from pymta.delivery import mbox
from pymta.delivery.command import CommandResult, command_status
from pymta.delivery.interface import DeliveryRequest, IDeliveryAgent, RecipientStatus
from pymta.privsep.interface import Grounds, IUserDelivery, UnixUser, find_user
from pymta.queue.reference import BLOCK_SIZE, ContentReader, IMessageContent

PER_RECIPIENT = ("recipient", "original_recipient", "user", "extension", "domain", "mailbox")
_MACRO = re.compile(r"\$(?:\{([a-z_]+)\}|([a-z_]+))")
_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")


def _quote_local(local: str) -> str:
    """RFC 5322 quoting of a local part that is not a dot-atom (flag q)."""
    if len(local) >= 2 and local[0] == local[-1] == '"':
        return local  # already in quoted form
    if (
        _ATOM.match(local)
        and ".." not in local
        and not local.startswith(".")
        and not local.endswith(".")
    ):
        return local
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _TransformingReader:
    """Reads a message through pipe(8)'s line transformations."""

    def __init__(self, reader: ContentReader, prefix: bytes, flags: str, eol: bytes) -> None:
        self._reader = reader
        self._pending = prefix
        self._rest = b""
        self._flags = flags
        self._eol = eol
        self._done = False

    def _lines(self, data: bytes) -> bytes:
        out = []
        for line in data.split(b"\n"):
            if "." in self._flags and line.startswith(b"."):
                line = b"." + line
            if ">" in self._flags and line.startswith(b"From "):
                line = b">" + line
            out.append(line)
        return self._eol.join(out) + self._eol

    def read(self, size: int = -1) -> bytes:
        while not self._pending and not self._done:
            block = self._reader.read(BLOCK_SIZE)
            if not block:
                self._done = True
                tail = self._lines(self._rest) if self._rest else b""
                if "B" in self._flags:
                    tail += self._eol
                self._pending = tail
                break
            data = self._rest + block
            cut = data.rfind(b"\n")
            if cut < 0:
                self._rest = data
                continue
            self._rest = data[cut + 1 :]
            self._pending = self._lines(data[:cut])
        if size < 0:
            size = len(self._pending)
        out, self._pending = self._pending[:size], self._pending[size:]
        return out

    def close(self) -> None:
        self._reader.close()


@implementer(IMessageContent)
class PipeContent:
    """A queued message as pipe(8) writes it: prefix lines, transformed body."""

    def __init__(self, message: IMessageContent, prefix: bytes, flags: str, eol: bytes) -> None:
        self._message = message
        self._prefix = prefix
        self._flags = flags
        self._eol = eol
        self.queue = message.queue
        self.queue_id = message.queue_id
        self.offset = message.offset
        self.size = message.size
        self.marked = message.marked
        # The transformed content's header is not the queued one's: readers
        # that want it read it through open().
        self.header: bytes | None = None
        self.lines: int | None = None  # of the transformed content: unknown

    def open(self) -> ContentReader:
        return _TransformingReader(self._message.open(), self._prefix, self._flags, self._eol)

    def mark_done(self, index: int) -> None:
        self._message.mark_done(index)


@implementer(IDeliveryAgent)
class PipeAgent:
    """One master.cf pipe service (see module doc)."""

    def __init__(
        self,
        name: str,
        spec: PipeSpec,
        config: Config,
        clock: IReactorTime,
        users: IUserDelivery,
        find_user: Callable[[str], UnixUser | None] = find_user,
        find_group: Callable[[str], int | None] | None = None,
    ) -> None:
        self.name = name
        self._spec = spec
        self._clock = clock
        self._users = users
        self._find_user = find_user
        self._find_group = find_group or _find_group
        self._delimiter = config.get("recipient_delimiter")
        self._directory = spec.directory or config.get("queue_directory")
        self._time_limit = _time_limit(config, name)

    def close(self) -> None:
        """Nothing is kept between deliveries (IDeliveryAgent.close)."""

    def deliver(self, request: DeliveryRequest) -> Deferred[list[RecipientStatus]]:
        def every(status: str, reason: str) -> list[RecipientStatus]:
            return [
                RecipientStatus(r.index, status, reason, relay=self.name)
                for r in request.recipients
            ]

        spec = self._spec
        user = self._find_user(spec.user)
        if user is None:
            return succeed(
                every("4.3.5", f"pipe service {self.name}: unknown user name: {spec.user}")
            )
        if spec.group is not None:
            gid = self._find_group(spec.group)
            if gid is None:
                return succeed(
                    every("4.3.5", f"pipe service {self.name}: unknown group: {spec.group}")
                )
            user = UnixUser(user.name, user.uid, gid, user.home, user.shell)
        if user.uid == 0 or user.gid == 0:
            return succeed(every("4.3.5", f"pipe service {self.name}: user= must not be root"))
        if not self._users.can_become(user):
            return succeed(
                every(
                    "4.3.0",
                    f"pipe service {self.name}: cannot run as {user.name}: "
                    "pymta does not run as root",
                )
            )
        if spec.size_limit and request.message.size > spec.size_limit:
            return succeed(every("5.2.3", "message file too big"))
        argv = self._argv(request)
        content = PipeContent(request.message, self._prefix(request), spec.flags, spec.eol.encode())
        cwd = self._directory if os.path.isdir(self._directory) else "/"
        env = {"PATH": "/usr/bin:/bin", "LANG": "C"}
        try:
            d = self._users.run_program(
                user,
                argv,
                b"",
                content,
                env,
                self._time_limit,
                cwd,
                grounds=Grounds("pipe", service=self.name),
            )
        except OSError as e:
            return succeed(every("4.3.0", f"cannot run {argv[0]}: {e.strerror}"))

        def done(result: CommandResult) -> list[RecipientStatus]:
            status, reason = command_status(argv[0], result)
            if status.startswith("2"):
                verb = "delivered" if "X" in spec.flags else "relayed"
                reason = f"{verb} via {self.name} service"
            return every(status, reason)

        return d.addCallback(done)

    # the command line -------------------------------------------------------

    def _addresses(self, request: DeliveryRequest) -> list[dict[str, str]]:
        flags = self._spec.flags
        out = []
        for rcpt in request.recipients:
            values = {}
            for key, address in (
                ("recipient", rcpt.address),
                ("original_recipient", rcpt.original),
            ):
                local, at, domain = address.rpartition("@")
                if not at:
                    local, domain = address, ""
                if "u" in flags:
                    local = local.lower()
                if "h" in flags:
                    domain = domain.lower()
                if "q" in flags:
                    local = _quote_local(local)
                values[key] = f"{local}@{domain}" if domain else local
                if key == "recipient":
                    user, extension = local, ""
                    if self._delimiter:
                        for index, char in enumerate(local):
                            if char in self._delimiter:
                                user, extension = local[:index], local[index + 1 :]
                                break
                    values.update(user=user, extension=extension, domain=domain, mailbox=local)
            out.append(values)
        return out

    def _argv(self, request: DeliveryRequest) -> list[str]:
        attributes = request.envelope.attributes
        sender = request.envelope.sender or self._spec.null_sender
        if "q" in self._spec.flags and "@" in sender:
            local, _, domain = sender.rpartition("@")
            sender = f"{_quote_local(local)}@{domain}"
        nexthop = request.nexthop.lower() if "h" in self._spec.flags else request.nexthop
        common = {
            "sender": sender,
            "nexthop": nexthop,
            "queue_id": request.queue_id,
            "size": str(request.message.size),
            "client_address": attributes.get("client_address", ""),
            "client_hostname": attributes.get("client_name", ""),
            "client_helo": attributes.get("helo_name", ""),
            "client_protocol": attributes.get("protocol", ""),
            "sasl_username": attributes.get("sasl_username", ""),
            "sasl_method": attributes.get("sasl_method", ""),
        }
        recipients = self._addresses(request)
        argv: list[str] = []
        for word in self._spec.argv:
            names = {m.group(1) or m.group(2) for m in _MACRO.finditer(word)}
            if names & set(PER_RECIPIENT):
                for values in recipients:
                    argv.append(_expand(word, {**common, **values}))
            else:
                argv.append(_expand(word, common))
        return argv

    def _prefix(self, request: DeliveryRequest) -> bytes:
        flags = self._spec.flags
        eol = self._spec.eol
        first = request.recipients[0]
        sender = request.envelope.sender
        lines = []
        if "F" in flags:
            lines.append(mbox.from_line(sender, self._clock.seconds()).decode().rstrip("\n"))
        if "R" in flags:
            lines.append(f"Return-Path: <{sender}>")
        if "D" in flags:
            lines.append(f"Delivered-To: {first.address}")
        if "O" in flags:
            lines.append(f"X-Original-To: {first.original}")
        return "".join(line + eol for line in lines).encode("utf-8", "surrogateescape")


def _expand(word: str, values: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    return _MACRO.sub(replace, word)


def _find_group(name: str) -> int | None:
    import grp

    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def _time_limit(config: Config, service: str) -> float:
    """``<service>_time_limit`` (default $command_time_limit), as pipe(8)."""
    return float(config.get_time(f"{service}_time_limit"))
