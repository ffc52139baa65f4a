"""local: deliver to local recipients through the aliases database.

Mirrors the alias part of Postfix's local(8) (alias.c, dotforward is for a
later issue, and so are the mailboxes of local Unix users). For each
recipient: a ``Delivered-To`` header already naming it is a loop (5.4.6) —
this also cuts alias loops, since each forwarded copy carries that header;
the local part is looked up in alias_maps (with its extension first, then
without, aliases(5)); a failed lookup defers, no alias is ``5.1.1 unknown
user``. The alias values are then delivered:

- addresses: one new message through cleanup (same content with
  ``Delivered-To: <recipient>`` prepended, same sender — or
  ``owner-<alias>@$myorigin`` when owner_request_special is on and that
  alias exists) -> ``forwarded as NEWQID``;
- ``/file`` (``/dir/`` is a Maildir): appended when allow_mail_to_files
  contains ``alias`` (``include`` inside ``:include:`` files);
- ``|command``: run by ``/bin/sh -c`` when allow_mail_to_commands allows it,
  message on stdin, exit status mapped by sysexits
  (:mod:`pymta.delivery.command`);
- ``:include:/file``: its lines are more alias values (nested at most
  :data:`INCLUDE_DEPTH` deep).

One status per recipient: deferred if any destination deferred, else
bounced if any bounced, else sent. Untrusted input: the recipient (a lookup
key) and the message (stdin/content only; envelope values reach commands as
environment variables, never on a command line). Trusted: the aliases and
include files (the administrator's). Commands run as pymta's own user (no
privilege change yet). May write: files named by aliases; new queue files
through cleanup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from pymta.cleanup.interface import CleanupRejected, ICleanup
from pymta.config import Config
from pymta.delivery import mbox
from pymta.delivery.command import command_status, run_command
from pymta.delivery.durable import os_error_status
from pymta.delivery.headers import delivered_to_loop, delivery_headers, header_of
from pymta.delivery.interface import (
    DeliveryRecipient,
    DeliveryRequest,
    IDeliveryAgent,
    RecipientStatus,
)
from pymta.delivery.lookup import Lookup, OpenMaps, default_open_maps
from pymta.mailstore.deliver import MaildirDelivery
from pymta.queue.model import Envelope, Recipient
from pymta.queue.reference import read_content
from pymta.sync import ISyncBarrier
from pymta.tables import TableError, lookup_alias, split_alias_value

INCLUDE_DEPTH = 10

Outcome = tuple[str, str]  # (status, reason)


@dataclass
class _Expansion:
    addresses: list[str]
    files: list[tuple[str, str]]  # (path, class)
    commands: list[tuple[str, str]]  # (command, class)
    error: Outcome | None = None


def _unquote(item: str) -> str:
    item = item.strip()
    if len(item) >= 2 and item[0] == '"' and item[-1] == '"':
        item = item[1:-1]
    return item


@implementer(ISyncBarrier)
class _FsyncBarrier:
    """Used when no group-commit barrier is given: fsync in a thread."""

    def sync(self, files: Sequence[str] = (), dirs: Sequence[str] = ()) -> Deferred[None]:
        from twisted.internet.threads import deferToThread

        from pymta.sync import fsync_paths

        return deferToThread(fsync_paths, list(files), list(dirs))

    def run(
        self,
        work: Callable[[], Any],
        durable: bool = True,
        files: Sequence[str] = (),
        dirs: Sequence[str] = (),
        after: Callable[[], None] | None = None,
        soon: bool = False,
    ) -> Deferred[Any]:
        from twisted.internet.threads import deferToThread

        from pymta.sync import fsync_paths

        def both() -> Any:
            result = work()
            if durable:
                fsync_paths(list(files), list(dirs))
                if after is not None:
                    after()
            return result

        return deferToThread(both)


@implementer(IDeliveryAgent)
class LocalAgent:
    """The local delivery agent (aliases only for now; see module doc)."""

    name = "local"

    def __init__(
        self,
        config: Config,
        cleanup: ICleanup,
        clock: IReactorTime,
        reactor_for_processes: IReactorProcess,
        open_maps: OpenMaps = default_open_maps,
        sync: ISyncBarrier | None = None,
        read_file: Callable[[str], str] | None = None,
    ) -> None:
        self._config = config
        self._cleanup = cleanup
        self._clock = clock
        self._reactor = reactor_for_processes
        self._maps: Lookup = open_maps(config.get_list("alias_maps"), config)
        self._delimiter = config.get("recipient_delimiter")
        self._owner_special = config.get_bool("owner_request_special")
        self._allow_files = set(config.get_list("allow_mail_to_files"))
        self._allow_commands = set(config.get_list("allow_mail_to_commands"))
        self._myorigin = config.get("myorigin")
        self._sync: ISyncBarrier = sync if sync is not None else _FsyncBarrier()
        self._maildir = MaildirDelivery(self._sync, clock, config.get("myhostname"))
        raw_limit = config.raw("command_time_limit")
        self._time_limit = float(config.get_time("command_time_limit")) if raw_limit else 1000.0
        self._read_file = read_file or _read_text

    def deliver(self, request: DeliveryRequest) -> Deferred[list[RecipientStatus]]:
        try:
            header = header_of(request.message)
        except OSError as e:
            return succeed(
                [
                    RecipientStatus(r.index, "4.3.0", f"cannot read queue file: {e}", "local")
                    for r in request.recipients
                ]
            )
        ds = [self._deliver_one(request, header, rcpt) for rcpt in request.recipients]
        if len(ds) == 1:
            return ds[0].addCallback(lambda s: [s])
        done = DeferredList(ds, consumeErrors=True)
        return done.addCallback(lambda results: [s for _ok, s in results])

    # one recipient ------------------------------------------------------

    def _deliver_one(
        self, request: DeliveryRequest, header: bytes, rcpt: DeliveryRecipient
    ) -> Deferred[RecipientStatus]:
        address = rcpt.address

        def status(outcome: Outcome) -> RecipientStatus:
            return RecipientStatus(rcpt.index, outcome[0], outcome[1], relay="local")

        if delivered_to_loop(header, address):
            return succeed(status(("5.4.6", f"mail forwarding loop for {address}")))
        local, _, domain = address.rpartition("@")
        if not _:
            local, domain = address, ""
        local = local.lower()
        try:
            values = lookup_alias(self._maps, local, delimiter=self._delimiter)
        except TableError as e:
            return succeed(status(("4.3.0", f"alias database unavailable: {e}")))
        if values is None:
            return succeed(
                status(
                    (
                        "5.1.1",
                        f'unknown user: "{local}" (pymta delivers local mail only '
                        "through aliases; local mailboxes come later)",
                    )
                )
            )
        expansion = _Expansion([], [], [])
        self._expand(values, "alias", expansion, 0)
        if expansion.error is not None:
            return succeed(status(expansion.error))
        sender = request.envelope.sender
        if self._owner_special and sender and not local.startswith("owner-"):
            try:
                if lookup_alias(self._maps, f"owner-{local}") is not None:
                    sender = f"owner-{local}@{self._myorigin}"
            except TableError as e:
                return succeed(status(("4.3.0", f"alias database unavailable: {e}")))
        outcomes: list[Deferred[Outcome]] = []
        if expansion.addresses:
            outcomes.append(self._forward(request, rcpt, sender, expansion.addresses))
        for path, origin in expansion.files:
            outcomes.append(self._to_file(request, rcpt, sender, path, origin))
        for command, origin in expansion.commands:
            outcomes.append(self._to_command(request, rcpt, sender, command, origin, domain))
        if not outcomes:
            return succeed(status(("5.1.1", f'alias "{local}" expands to nothing')))
        combined = DeferredList(outcomes, consumeErrors=True)

        def combine(results: list[tuple[bool, Any]]) -> RecipientStatus:
            values: list[Outcome] = [
                r if ok else ("4.3.0", f"local delivery failure: {r.getErrorMessage()}")
                for ok, r in results
            ]
            for cls in ("4", "5"):
                for code, reason in values:
                    if code.startswith(cls):
                        return status((code, reason))
            return status(("2.0.0", "; ".join(reason for _, reason in values)))

        return combined.addCallback(combine)

    def _expand(self, values: list[str], origin: str, out: _Expansion, depth: int) -> None:
        for raw in values:
            item = _unquote(raw)
            if not item:
                continue
            if item.startswith("|"):
                out.commands.append((item[1:].strip(), origin))
            elif item.startswith("/"):
                out.files.append((item, origin))
            elif item.lower().startswith(":include:"):
                path = item[len(":include:") :].strip()
                if depth >= INCLUDE_DEPTH:
                    out.error = ("5.4.6", f"include file nesting too deep: {path}")
                    return
                if origin not in self._allow_files and "include" not in self._allow_files:
                    out.error = ("5.7.1", f"mail to file is restricted: :include:{path}")
                    return
                try:
                    text = self._read_file(path)
                except OSError as e:
                    out.error = ("4.3.0", f"cannot open include file {path}: {e.strerror}")
                    return
                lines = [
                    line
                    for line in text.splitlines()
                    if line.strip() and not line.lstrip().startswith("#")
                ]
                self._expand(split_alias_value(", ".join(lines)), "include", out, depth + 1)
                if out.error is not None:
                    return
            else:
                out.addresses.append(item)

    # destinations ---------------------------------------------------------

    def _forward(
        self, request: DeliveryRequest, rcpt: DeliveryRecipient, sender: str, addresses: list[str]
    ) -> Deferred[Outcome]:
        envelope = Envelope(
            sender=sender,
            recipients=[Recipient(a, original=rcpt.original) for a in addresses],
            arrival_time=self._clock.seconds(),
            attributes={"origin": "local", "forwarded_from": request.queue_id},
        )
        headers = delivery_headers(sender, rcpt.address.lower(), return_path=False)
        # cleanup takes a message whole (as smtpd hands it one): the one
        # place a delivery holds the content in memory.
        d = read_content(request.message).addCallback(
            lambda content: self._cleanup.submit(envelope, headers + content)
        )

        def forwarded(new_id: str) -> Outcome:
            return "2.0.0", f"forwarded as {new_id}"

        def refused(failure: Failure) -> Outcome:
            if isinstance(failure.value, CleanupRejected):
                status = failure.value.status.split(" ")[0]
                if status[:1] not in ("4", "5"):
                    status = "4.3.0"
                return status, f"cannot forward: {failure.value.text}"
            return "4.3.0", f"cannot forward: {failure.getErrorMessage()}"

        return d.addCallbacks(forwarded, refused)

    def _to_file(
        self, request: DeliveryRequest, rcpt: DeliveryRecipient, sender: str, path: str, origin: str
    ) -> Deferred[Outcome]:
        if origin not in self._allow_files:
            return succeed(("5.7.1", f"mail to file is restricted: {path}"))
        headers = delivery_headers(sender, rcpt.address.lower())
        try:
            if path.endswith("/"):
                d: Deferred[object] = self._maildir.deliver(path, headers, request.message)  # type: ignore[assignment]
            else:
                now = self._clock.seconds()
                d = mbox.append(  # type: ignore[assignment]
                    path, sender, headers, request.message, self._sync, now, ("fcntl",)
                )
        except OSError as e:
            return succeed(os_error_status(e, f"file {path}"))

        def failed(failure: Failure) -> Outcome | Failure:
            if isinstance(failure.value, mbox.MailboxBusy):
                return ("4.2.0", f"cannot update file {path}: mailbox busy")
            if isinstance(failure.value, OSError):
                return os_error_status(failure.value, f"file {path}")
            return failure

        return d.addCallbacks(lambda _: ("2.0.0", f"delivered to file: {path}"), failed)

    def _to_command(
        self,
        request: DeliveryRequest,
        rcpt: DeliveryRecipient,
        sender: str,
        command: str,
        origin: str,
        domain: str,
    ) -> Deferred[Outcome]:
        if origin not in self._allow_commands:
            return succeed(("5.7.1", f"mail to command is restricted: {command}"))
        local = rcpt.address.rpartition("@")[0] or rcpt.address
        user, _, extension = (
            local.partition(self._delimiter[:1])
            if self._delimiter
            else (
                local,
                "",
                "",
            )
        )
        env = {
            "PATH": "/usr/bin:/bin",
            "SHELL": "/bin/sh",
            "HOME": "/",
            "LOGNAME": user.lower(),
            "USER": user.lower(),
            "LOCAL": local.lower(),
            "EXTENSION": extension,
            "DOMAIN": domain,
            "RECIPIENT": rcpt.address,
            "ORIGINAL_RECIPIENT": rcpt.original,
            "SENDER": sender,
            "QUEUE_ID": request.queue_id,
        }
        for key, name in (
            ("client_address", "CLIENT_ADDRESS"),
            ("client_name", "CLIENT_HOSTNAME"),
            ("helo_name", "CLIENT_HELO"),
            ("protocol", "CLIENT_PROTOCOL"),
            ("sasl_username", "SASL_USERNAME"),
            ("envid", "ENVID"),
        ):
            value = request.envelope.attributes.get(key)
            if value:
                env[name] = value
        now = self._clock.seconds()
        prefix = mbox.from_line(sender, now) + delivery_headers(sender, rcpt.address.lower())
        try:
            d = run_command(
                self._reactor,
                self._clock,
                command,
                prefix,
                env,
                self._time_limit,
                content=request.message,
            )
        except OSError as e:
            return succeed(("4.3.0", f"cannot run command {command}: {e.strerror}"))
        return d.addCallback(lambda result: command_status(command, result))


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()
