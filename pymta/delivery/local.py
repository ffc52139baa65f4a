"""local: deliver to local recipients: aliases, .forward, Unix users' mailboxes.

Mirrors Postfix's local(8). For each recipient: a ``Delivered-To`` header
already naming it is a loop (5.4.6) — this also cuts alias loops, since
each forwarded copy carries that header. Then, in local(8)'s order:

1. alias_maps (the local part with its extension first, then without,
   aliases(5)); a failed lookup defers. Files and commands of an alias run
   as the alias database's owner, or as ``default_privs`` when root owns
   it (or it has no file) — never as root (a ``default_privs`` of root is
   refused, 4.3.5). ``owner-ALIAS`` becomes the sender when
   owner_request_special is on and that alias exists.
2. A Unix user (Python's pwd, the local part without its extension): the
   first ``forward_path`` file that exists and passes Postfix's checks
   (:mod:`pymta.delivery.local_forward`) is expanded like an alias, its
   files and commands run as the user (root's as ``default_privs``); the
   user's own name (or ``\\user``) in it also delivers to the mailbox.
   Without one: ``mailbox_command`` (as the user; root's as
   ``default_privs``), else ``mailbox_transport`` (the recipient is handed
   to that master.cf transport), else ``home_mailbox`` (``Maildir/`` ends in
   ``/``: a Maildir; else an mbox) under the home directory, else an mbox in
   ``mail_spool_directory/USER`` locked by ``mailbox_delivery_lock``.
3. Otherwise ``luser_relay`` (forwarded, local(8)'s ``$names`` expanded),
   else ``fallback_transport``, else ``5.1.1 unknown user``.

The values of aliases and .forward files are delivered as:

- addresses: one new message through cleanup (same content with
  ``Delivered-To: <recipient>`` prepended, same sender) -> ``forwarded as
  NEWQID``;
- ``/file`` (``/dir/`` is a Maildir): appended when allow_mail_to_files
  contains the origin (``alias``, ``forward``, ``include``);
- ``|command``: ``/bin/sh -c`` when allow_mail_to_commands allows it,
  message on stdin with local(8)'s environment ($HOME, $USER, $SHELL,
  $LOCAL, $EXTENSION, $DOMAIN, $RECIPIENT, $SENDER...), exit status mapped
  by sysexits (:mod:`pymta.delivery.command`);
- ``:include:/file``: its lines are more values (at most
  :data:`INCLUDE_DEPTH` deep).

Every mailbox write and command goes through one seam,
:class:`pymta.privsep.interface.IUserDelivery`: the agent never changes its
own identity. When pymta does not run as root, only its own user can be
delivered to; others are deferred, and the start log says so once.

One status per recipient: deferred if any destination deferred, else
bounced if any bounced, else sent. Untrusted input: the recipient (a lookup
key), the message (stdin/content only; envelope values reach commands as
environment variables, never on a command line) and users' .forward files
(run as their users). Trusted: the aliases and include files (the
administrator's). May write: new queue files through cleanup (the rest is
written by the user's child process). Logs: .forward files ignored.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from pymta.cleanup.interface import CleanupRejected, ICleanup
from pymta.config import Config
from pymta.config.expand import expand
from pymta.delivery import mbox
from pymta.delivery.command import command_status
from pymta.delivery.headers import delivered_to_loop, delivery_headers, header_of
from pymta.delivery.interface import (
    DeliveryRecipient,
    DeliveryRequest,
    IDeliveryAgent,
    RecipientStatus,
)
from pymta.delivery.local_expand import (
    Expansion,
    alias_owner,
    expand_values,
    forward_values,
    split_extension,
)
from pymta.delivery.local_forward import ForwardFile, forward_paths
from pymta.delivery.lookup import Lookup, OpenMaps, default_open_maps
from pymta.maillog import maillog
from pymta.privsep.interface import (
    Grounds,
    IUserDelivery,
    SieveResult,
    UnixUser,
    find_uid,
    find_user,
)
from pymta.privsep.spawn import SpawningUserDelivery
from pymta.queue.model import Envelope, Recipient
from pymta.queue.reference import read_content
from pymta.sieve.filter import SieveSettings
from pymta.tables import TableError, lookup_alias

_log = Logger(namespace="pymta.delivery.local")

Outcome = tuple[str, str]  # (status, reason)


@implementer(IDeliveryAgent)
class LocalAgent:
    """The local delivery agent (see module doc)."""

    name = "local"

    def __init__(
        self,
        config: Config,
        cleanup: ICleanup,
        clock: IReactorTime,
        reactor_for_processes: IReactorProcess,
        open_maps: OpenMaps = default_open_maps,
        read_file: Callable[[str], str] | None = None,
        users: IUserDelivery | None = None,
        find_user: Callable[[str], UnixUser | None] = find_user,
        transports: Callable[[str], IDeliveryAgent | None] | None = None,
        read_forward: Callable[[list[str], UnixUser], Deferred[ForwardFile]] | None = None,
        run_in_thread: Callable[[Callable[[], Expansion]], Deferred[Expansion]] | None = None,
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
        raw_limit = config.raw("command_time_limit")
        self._time_limit = float(config.get_time("command_time_limit")) if raw_limit else 1000.0
        self._read_file = read_file or _read_text
        #: Where :include: files are read (tests: at once).
        self._run_in_thread = run_in_thread or _in_thread
        self._users: IUserDelivery = users or SpawningUserDelivery(reactor_for_processes, clock)
        self._find_user = find_user
        self._transports = transports or (lambda name: None)
        #: Tests give their own reader; else the seam reads it (as the user).
        self._read_forward = read_forward
        self._forward_path = config.raw("forward_path") or ""
        self._spool = config.get("mail_spool_directory").rstrip("/") or "/var/mail"
        self._home_mailbox = config.get("home_mailbox")
        self._mailbox_command = config.raw("mailbox_command") or ""
        self._mailbox_transport = config.get("mailbox_transport").strip()
        self._fallback_transport = config.get("fallback_transport").strip()
        self._luser_relay = config.raw("luser_relay") or ""
        self._locks = [lock.lower() for lock in config.get_list("mailbox_delivery_lock")]
        self._size_limit = config.get_int("mailbox_size_limit")
        self._default_privs = config.get("default_privs")
        self._alias_owner = alias_owner(config.get_list("alias_maps"))
        #: The Sieve limits for the delivery child; empty when Sieve is off.
        self._sieve = SieveSettings.from_config(config).for_child()
        self._self: UnixUser | None = None
        euid = os.geteuid()
        if not self._users.privileged:
            self._self = find_uid(euid)
            # Said once, at start: the deliveries it limits are deferred.
            _log.info(
                "local: pymta runs as uid {uid}, not root: local delivery is limited to "
                "that user (others are deferred)",
                uid=euid,
            )

    def close(self) -> None:
        """Nothing is kept between deliveries (IDeliveryAgent.close)."""

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
        user_part, extension = split_extension(local, self._delimiter)
        target = _Target(request, rcpt, local, user_part, extension, domain)
        try:
            values = lookup_alias(self._maps, local, delimiter=self._delimiter)
        except TableError as e:
            return succeed(status(("4.3.0", f"alias database unavailable: {e}")))
        if values is not None:
            d = self._alias(target, values)
        else:
            user = self._find_user(user_part)
            if user is not None:
                d = self._unix_user(target, user)
            else:
                d = self._unknown(target)
        return d.addCallback(status)

    def _alias(self, target: _Target, values: list[str]) -> Deferred[Outcome]:
        return self._expand(values, "alias").addCallback(self._alias_expanded, target)

    def _alias_expanded(self, expansion: Expansion, target: _Target) -> Deferred[Outcome]:
        if expansion.error is not None:
            return succeed(expansion.error)
        sender = target.request.envelope.sender
        local = target.local
        if self._owner_special and sender and not local.startswith("owner-"):
            try:
                if lookup_alias(self._maps, f"owner-{local}") is not None:
                    sender = f"owner-{local}@{self._myorigin}"
            except TableError as e:
                return succeed(("4.3.0", f"alias database unavailable: {e}"))
        if not (expansion.addresses or expansion.files or expansion.commands):
            return succeed(("5.1.1", f'alias "{local}" expands to nothing'))
        # aliases(5): files and commands run as the alias database's owner,
        # or as default_privs when root owns it — never as root.
        runner = self._alias_owner_user()
        return self._destinations(target, sender, expansion, runner, "alias")

    def _unix_user(self, target: _Target, user: UnixUser) -> Deferred[Outcome]:
        if not self._users.can_become(user):
            return succeed(
                (
                    "4.3.0",
                    f'cannot deliver to Unix user "{user.name}": pymta does not run as root '
                    "(local delivery is limited to its own user)",
                )
            )
        paths = forward_paths(
            self._forward_path,
            user,
            target.local,
            target.extension,
            target.domain,
            self._delimiter,
        )
        if not paths:
            return self._mailbox(target, user)
        if self._read_forward is not None:
            d = self._read_forward(paths, user)
        else:
            grounds = Grounds("forward", target.rcpt.address)
            d = self._users.read_forward(user, paths, grounds)

        def got(forward: ForwardFile) -> Deferred[Outcome]:
            for warning in forward.warnings:
                _log.warn(
                    "{queue_id}: warning: {warning}",
                    queue_id=target.request.queue_id,
                    warning=warning,
                )
            if forward.path is None:
                return self._mailbox(target, user)
            return self._forward_file(target, user, forward)

        def failed(failure: Failure) -> Outcome:
            return "4.3.0", f"cannot read .forward of {user.name}: {failure.getErrorMessage()}"

        return d.addCallback(got).addErrback(failed)

    def _forward_file(
        self, target: _Target, user: UnixUser, forward: ForwardFile
    ) -> Deferred[Outcome]:
        d = self._expand(forward_values(forward.text), "forward")
        return d.addCallback(self._forward_expanded, target, user, forward)

    def _forward_expanded(
        self, expansion: Expansion, target: _Target, user: UnixUser, forward: ForwardFile
    ) -> Deferred[Outcome]:
        if expansion.error is not None:
            return succeed(expansion.error)
        # local(8): the user's own name (or \\user) in .forward means "also
        # deliver to my mailbox", not a forward that would loop.
        own = {user.name.lower(), target.local, f"{target.local}@{target.domain}".lower()}
        to_mailbox = False
        addresses = []
        for item in expansion.addresses:
            bare = item[1:] if item.startswith("\\") else item
            if bare.lower() in own:
                to_mailbox = True
            else:
                addresses.append(item)
        expansion.addresses = addresses
        sender = target.request.envelope.sender
        outcomes: list[Deferred[Outcome]] = []
        if expansion.addresses or expansion.files or expansion.commands:
            # Postfix runs root's files and commands as default_privs.
            runner = user if user.uid != 0 else self._privs_user()
            outcomes.append(self._destinations(target, sender, expansion, runner, "forward"))
        if to_mailbox:
            outcomes.append(self._mailbox(target, user))
        if not outcomes:
            return succeed(("5.1.1", f"{forward.path} forwards to nothing"))
        return _combine(outcomes)

    def _unknown(self, target: _Target) -> Deferred[Outcome]:
        if self._luser_relay:
            relay = self._expand_local(self._luser_relay, target, None).strip()
            if relay:
                return self._forward(
                    target.request, target.rcpt, target.request.envelope.sender, [relay]
                )
        if self._fallback_transport:
            return self._delegate(target, self._fallback_transport, "fallback_transport")
        return succeed(("5.1.1", f'unknown user: "{target.local}"'))

    # mailboxes ------------------------------------------------------------

    def _mailbox(self, target: _Target, user: UnixUser) -> Deferred[Outcome]:
        request, rcpt = target.request, target.rcpt
        sender = request.envelope.sender
        if self._mailbox_command:
            command = self._expand_local(self._mailbox_command, target, user)
            # postconf(5) mailbox_command: root's runs as default_privs.
            runner = user if user.uid != 0 else self._privs_user()
            if runner is None:
                return succeed(_no_privs(self._default_privs))
            return self._run(target, sender, command, runner, user, "mailbox_command")
        if self._mailbox_transport:
            return self._delegate(target, self._mailbox_transport, "mailbox_transport")
        headers = delivery_headers(sender, rcpt.address.lower())
        if self._home_mailbox:
            path = os.path.join(user.home, self._home_mailbox)
        else:
            path = os.path.join(self._spool, user.name)
        if self._sieve:
            # Through the user's active Sieve script, run as the user (the
            # plain write when there is none): pymta.sieve.local.
            d = self._users.deliver_sieve(
                user,
                path,
                sender,
                headers,
                request.message,
                self._clock.seconds(),
                self._locks,
                self._size_limit,
                self._sieve,
                Grounds("mailbox", rcpt.address),
            )
            return d.addCallback(self._sieve_done, target, user, sender)
        if path.endswith("/"):
            return self._users.deliver_maildir(
                user, path, headers, request.message, grounds=Grounds("mailbox", rcpt.address)
            )
        return self._users.append_mbox(
            user,
            path,
            sender,
            headers,
            request.message,
            self._clock.seconds(),
            self._locks,
            self._size_limit,
            grounds=Grounds("mailbox", rcpt.address),
        )

    def _sieve_done(
        self, result: SieveResult, target: _Target, user: UnixUser, sender: str
    ) -> Deferred[Outcome] | Outcome:
        """What a user's Sieve script left to ``mail_owner``: its warnings
        logged, redirects resubmitted through cleanup with the original
        sender (and the Delivered-To that stops a loop back here), vacation
        replies queued with the null sender (one that fails is logged; the
        delivery stands, as for virtual users)."""
        queue_id = target.request.queue_id
        # The child ran as the user, who could have altered its answer: one
        # log line per warning, and no line breaks in a reply's addresses.
        for warning in result.warnings:
            text = " ".join(warning.split())[:1000]
            maillog("sieve", f"{queue_id}: warning: {user.name}: {text}", LogLevel.warn)
        if not result.status.startswith("2"):
            return result.status, result.text
        for vacation in result.vacations:
            self._vacation(target, user, vacation)
        if not result.redirects:
            return result.status, result.text
        outcomes = [self._redirect(target, sender, address) for address in result.redirects]

        def combined(outcome: Outcome) -> Outcome:
            if outcome[0].startswith("2"):
                return result.status, result.text
            return outcome

        return _combine(outcomes).addCallback(combined)

    def _redirect(self, target: _Target, sender: str, address: str) -> Deferred[Outcome]:
        envelope = Envelope(
            sender=sender,
            recipients=[Recipient(address, original=address)],
            arrival_time=self._clock.seconds(),
            attributes={"origin": "sieve", "forwarded_from": target.request.queue_id},
        )
        headers = delivery_headers(sender, target.rcpt.address.lower(), return_path=False)
        d = read_content(target.request.message).addCallback(
            lambda content: self._cleanup.submit(envelope, headers + content)
        )

        def refused(failure: Failure) -> Outcome:
            why = failure.value.text if isinstance(failure.value, CleanupRejected) else None
            return "4.3.0", f"cannot redirect: {why or failure.getErrorMessage()}"

        return d.addCallbacks(lambda _: ("2.0.0", f"redirected to {address}"), refused)

    def _vacation(self, target: _Target, user: UnixUser, vacation: dict[str, Any]) -> None:
        from pymta.sieve.filter import vacation_reply

        to = str(vacation.get("to", ""))
        params = vacation.get("params")
        params = dict(params) if isinstance(params, dict) else {}
        if any(c in f"{to}{params.get('from') or ''}" for c in "\r\n") or not to:
            return
        now = self._clock.seconds()
        sender_from = str(params.get("from") or target.rcpt.address)
        reply = vacation_reply(params, to, sender_from, str(vacation.get("reason", "")), now)
        envelope = Envelope(
            sender="",
            recipients=[Recipient(to, original=to)],
            arrival_time=now,
            attributes={"origin": "sieve-vacation"},
        )
        queue_id = target.request.queue_id
        self._cleanup.submit(envelope, reply).addCallbacks(
            lambda new_id: maillog(
                "sieve", f"{queue_id}: {user.name}: vacation reply to <{to}> queued as {new_id}"
            ),
            lambda f: maillog(
                "sieve",
                f"{queue_id}: warning: {user.name}: vacation reply to <{to}> failed: {f.value}",
                LogLevel.warn,
            ),
        )

    def _delegate(self, target: _Target, spec: str, parameter: str) -> Deferred[Outcome]:
        """Hand the recipient to another master.cf transport (Postfix's deliver_pass)."""
        transport, _, nexthop = spec.partition(":")
        agent = self._transports(transport)
        if agent is None or agent is self:
            return succeed(("4.3.5", f"{parameter} {spec}: no such delivery service in master.cf"))
        request = target.request
        delegated = DeliveryRequest(
            request.queue_id,
            request.envelope,
            request.message,
            transport,
            nexthop or request.nexthop,
            [target.rcpt],
            dict(request.attributes),
        )

        def first(statuses: list[RecipientStatus]) -> Outcome:
            for status in statuses:
                if status.index == target.rcpt.index:
                    return status.status, status.reason
            return "4.3.0", f"{parameter} {spec}: no status for the recipient"

        return agent.deliver(delegated).addCallback(first)

    # who runs it ------------------------------------------------------------

    def _privs_user(self) -> UnixUser | None:
        """default_privs (never root); when not root: pymta's own user."""
        if self._self is not None:
            return self._self
        user = self._find_user(self._default_privs)
        if user is None or user.uid == 0:
            return None
        return user

    def _alias_owner_user(self) -> UnixUser | None:
        if self._self is not None:
            return self._self
        if self._alias_owner:
            owner = find_uid(self._alias_owner)
            if owner is not None:
                return owner
        return self._privs_user()

    # expansion ------------------------------------------------------------

    def _expand(self, values: list[str], origin: str) -> Deferred[Expansion]:
        """What values expand to; with an ``:include:`` among them the
        expansion (which reads the files, maybe from a slow disk) runs in a
        thread, never on the reactor."""

        def expand() -> Expansion:
            out = Expansion()
            expand_values(values, origin, self._read_file, self._allow_files, out)
            return out

        if not any(":include:" in value.lower() for value in values):
            return succeed(expand())
        return self._run_in_thread(expand)

    def _expand_local(self, template: str, target: _Target, user: UnixUser | None) -> str:
        """local(8)'s names in mailbox_command and luser_relay."""
        names = {
            "user": user.name if user else target.user,
            "home": user.home if user else "",
            "shell": user.shell if user else "",
            "local": target.local,
            "extension": target.extension,
            "domain": target.domain,
            "recipient": target.rcpt.address,
            "recipient_delimiter": self._delimiter,
        }
        return expand(template, names.get)

    # destinations ---------------------------------------------------------

    def _destinations(
        self,
        target: _Target,
        sender: str,
        expansion: Expansion,
        runner: UnixUser | None,
        source: str,
    ) -> Deferred[Outcome]:
        """The expansion of the recipient's alias entry or .forward (source)."""
        outcomes: list[Deferred[Outcome]] = []
        if expansion.addresses:
            outcomes.append(self._forward(target.request, target.rcpt, sender, expansion.addresses))
        for path, origin in expansion.files:
            outcomes.append(self._to_file(target, sender, path, origin, runner, source))
        for command, origin in expansion.commands:
            if origin not in self._allow_commands:
                outcomes.append(succeed(("5.7.1", f"mail to command is restricted: {command}")))
            elif runner is None:
                outcomes.append(succeed(_no_privs(self._default_privs)))
            else:
                outcomes.append(self._run(target, sender, command, runner, None, source))
        return _combine(outcomes)

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
        self,
        target: _Target,
        sender: str,
        path: str,
        origin: str,
        runner: UnixUser | None,
        source: str,
    ) -> Deferred[Outcome]:
        if origin not in self._allow_files:
            return succeed(("5.7.1", f"mail to file is restricted: {path}"))
        if runner is None:
            return succeed(_no_privs(self._default_privs))
        headers = delivery_headers(sender, target.rcpt.address.lower())
        message = target.request.message
        grounds = Grounds(source, target.rcpt.address)
        if path.endswith("/"):
            d = self._users.deliver_maildir(runner, path, headers, message, grounds=grounds)
        else:
            d = self._users.append_mbox(
                runner,
                path,
                sender,
                headers,
                message,
                self._clock.seconds(),
                ("fcntl",),
                0,
                grounds=grounds,
            )

        def worded(outcome: Outcome) -> Outcome:
            if outcome[0].startswith("2"):
                return "2.0.0", f"delivered to file: {path}"
            return outcome

        return d.addCallback(worded)

    def _run(
        self,
        target: _Target,
        sender: str,
        command: str,
        runner: UnixUser,
        recipient_user: UnixUser | None,
        source: str,
    ) -> Deferred[Outcome]:
        request, rcpt = target.request, target.rcpt
        home_user = recipient_user or runner
        env = {
            "PATH": "/usr/bin:/bin",
            "SHELL": home_user.shell or "/bin/sh",
            "HOME": home_user.home or "/",
            "LOGNAME": runner.name if recipient_user is None else recipient_user.name,
            "USER": runner.name if recipient_user is None else recipient_user.name,
            "LOCAL": target.local,
            "EXTENSION": target.extension,
            "DOMAIN": target.domain,
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
        cwd = runner.home if runner.home and os.path.isdir(runner.home) else "/"
        try:
            d = self._users.run_command(
                runner,
                command,
                prefix,
                request.message,
                env,
                self._time_limit,
                cwd,
                grounds=Grounds(source, rcpt.address),
            )
        except OSError as e:
            return succeed(("4.3.0", f"cannot run command {command}: {e.strerror}"))
        return d.addCallback(lambda result: command_status(command, result))


@dataclass(frozen=True)
class _Target:
    """One recipient being delivered, with its address split as local(8) does."""

    request: DeliveryRequest
    rcpt: DeliveryRecipient
    local: str
    user: str
    extension: str
    domain: str


def _combine(outcomes: list[Deferred[Outcome]]) -> Deferred[Outcome]:
    """One status of several: deferred if any deferred, else bounced if any
    bounced, else sent."""
    combined = DeferredList(outcomes, consumeErrors=True)

    def combine(results: list[tuple[bool, Any]]) -> Outcome:
        values: list[Outcome] = [
            r if ok else ("4.3.0", f"local delivery failure: {r.getErrorMessage()}")
            for ok, r in results
        ]
        for cls in ("4", "5"):
            for code, reason in values:
                if code.startswith(cls):
                    return code, reason
        return "2.0.0", "; ".join(reason for _, reason in values)

    return combined.addCallback(combine)


def _no_privs(name: str) -> Outcome:
    return "4.3.5", f'default_privs "{name}" is not a user other than root: refusing to run as root'


def _in_thread(work: Callable[[], Expansion]) -> Deferred[Expansion]:
    from twisted.internet.threads import deferToThread

    return deferToThread(work)


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()
