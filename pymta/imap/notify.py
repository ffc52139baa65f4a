"""NOTIFY (RFC 5465): the client says which events it wants, unsolicited.

``NOTIFY SET [STATUS] (filter events) ...`` and ``NOTIFY NONE``. Filters:
``selected`` and ``selected-delayed`` (the selected mailbox), ``inboxes``
and ``personal`` (every mailbox of the user: pymta cannot tell which ones
Sieve delivers into, so ``inboxes`` is ``personal``, as in Dovecot),
``subscribed``, ``subtree name(s)``, ``mailboxes name(s)``. Events:
MessageNew (with FETCH attributes for the selected mailbox), MessageExpunge,
FlagChange, MailboxName, SubscriptionChange, and METADATA's (RFC 5464)
MailboxMetadataChange and ServerMetadataChange.

What the client then gets, between its commands as well as in IDLE:

- selected mailbox: ``EXISTS``, ``FETCH (FLAGS)`` and, with ``selected``,
  ``EXPUNGE`` as they happen (``selected-delayed`` keeps expunges for a
  command that may report them, RFC 3501 7.4.1); MessageNew's attributes
  as ``* n FETCH (...)`` after the EXISTS;
- other mailboxes: ``* STATUS name (MESSAGES UIDNEXT UNSEEN)`` after
  new mail or an expunge, ``(UNSEEN)`` after a flag change (with
  ``HIGHESTMODSEQ`` once CONDSTORE is on), ``(UIDVALIDITY ...)`` when a
  mailbox was renumbered; a change is told once however many events made
  it in one reactor turn;
- ``* LIST () "/" name`` for a created mailbox, ``(\\NonExistent)`` for a
  deleted one, ``("OLDNAME" (old))`` after a rename, ``(\\Subscribed)``
  and ``()`` for subscriptions;
- ``* METADATA name /entry ...`` (RFC 5464 4.4.2: the names of the
  entries set, changed or removed; ``""`` for the server's).

``SET STATUS`` first sends the STATUS of every non-selected mailbox the
message events cover (MESSAGES UIDNEXT UIDVALIDITY UNSEEN, and
HIGHESTMODSEQ when FlagChange is asked), before the tagged OK.

How: message events come from the store's ``watch()`` of each folder
(:class:`~pymta.mailstore.asyncstore.IAsyncFolder`: its listeners, fed
for other processes' changes by the Maildir store's inotify watchers,
shared with the selected views); nothing is polled. Mailbox names,
subscriptions and metadata entries are compared with a snapshot when a
session of the user in this process changed them (:class:`NotifyHub`)
and when the store says another process may have (``watch()`` of the
user's mailbox: the Maildir store watches its root; other pymta
processes, a Dovecot beside it); a rename is recognised as one folder
(and its children) gone and one come in the same comparison.

Refusals (RFC 5465 5, 8): AnnotationChange (RFC 5257 per-message
annotations, which pymta does not have) ``NO [BADEVENT (events pymta
supports)]``; more than :data:`MAX_NAMES` names in one
filter or more than :data:`MAX_FOLDERS` mailboxes to watch ``NO
[NOTIFICATIONOVERFLOW]``; syntax and the rules for the selected filter
(MessageNew and MessageExpunge together, FlagChange only with them, no
mailbox events) BAD.

The folder list, the subscriptions, STATUS and MessageNew's FETCH
attributes are read through the store's asynchronous API (a folder
changed on disk is rescanned in the store's threads): what it answers at
once goes out as before; what it answers later goes out with the next
push, and a command's tagged response waits for it (as for updating
searches). IMAP sees no path and no synchronous folder: watching is
the store's.

Untrusted input: the command's arguments. Reads the index (STATUS), the
folder list and the METADATA entries through the store; writes nothing;
logs nothing (the store logs a root it cannot watch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from pymta.imap import metadata
from pymta.imap.fetch import (
    FetchItem,
    MessageData,
    NotLoaded,
    parse_items,
    render,
    sets_seen,
    wants,
)
from pymta.imap.mailbox_commands import mailbox_arg
from pymta.imap.objectid import mailbox_id
from pymta.imap.parser import Atom, ParseError, Token
from pymta.imap.stored import when_stored
from pymta.imap.view import SelectedView
from pymta.imap.wire import mailbox_out
from pymta.mailstore.asyncstore import IAsyncUserMailbox, after_firing
from pymta.mailstore.interface import FolderChange, MailStoreError

if TYPE_CHECKING:
    from pymta.imap.session import IMAPSession

#: RFC 5465 5 events, in the RFC's order.
EVENTS = (
    "MessageNew",
    "MessageExpunge",
    "FlagChange",
    "AnnotationChange",
    "MailboxName",
    "SubscriptionChange",
    "MailboxMetadataChange",
    "ServerMetadataChange",
)
SUPPORTED = (
    "MessageNew",
    "MessageExpunge",
    "FlagChange",
    "MailboxName",
    "SubscriptionChange",
    "MailboxMetadataChange",
    "ServerMetadataChange",
)
METADATA_EVENTS = frozenset({"MailboxMetadataChange", "ServerMetadataChange"})
MESSAGE_EVENTS = frozenset({"MessageNew", "MessageExpunge", "FlagChange", "AnnotationChange"})
MAILBOX_EVENTS = frozenset({"MailboxName", "SubscriptionChange", "MailboxMetadataChange"})

#: Names one filter may list (Dovecot's limit per namespace).
MAX_NAMES = 100

#: Mailboxes one session may watch for message events (each costs three
#: inotify watches, shared by the sessions that watch the same folder).
MAX_FOLDERS = 1000

#: Seconds to wait after the store said the mailbox list may have changed
#: on disk before comparing (a RENAME or DELETE is several events).
ROOT_DELAY = 0.05

_log = Logger(namespace="pymta.imap")

_BY_UPPER = {e.upper(): e for e in EVENTS}
_OTHER_FILTERS = ("INBOXES", "PERSONAL", "SUBSCRIBED", "SUBTREE", "MAILBOXES")


class BadEvent(Exception):
    """An event pymta does not support (NO [BADEVENT ...])."""


class Overflow(Exception):
    """More than pymta watches for one session (NO [NOTIFICATIONOVERFLOW])."""


@dataclass(frozen=True)
class Group:
    """One ``(filter events)`` group for mailboxes other than the selected one."""

    kind: str  # PERSONAL (also INBOXES), SUBSCRIBED, SUBTREE, MAILBOXES
    names: tuple[str, ...]
    events: frozenset[str]

    def covers(self, name: str, subscribed: Callable[[str], bool]) -> bool:
        if self.kind == "PERSONAL":
            return True
        if self.kind == "SUBSCRIBED":
            return subscribed(name)
        if self.kind == "SUBTREE":
            return any(name == n or name.startswith(n + "/") for n in self.names)
        return name in self.names


@dataclass
class NotifySpec:
    """What NOTIFY SET asked for."""

    status: bool = False
    groups: list[Group] = field(default_factory=list)
    #: Events of the selected mailbox (empty: none pushed).
    selected: frozenset[str] = frozenset()
    #: ``selected-delayed``: expunges wait for a command that may report them.
    delayed: bool = False
    #: MessageNew's FETCH attributes for the selected mailbox.
    fetch_items: list[FetchItem] | None = None

    def events_for(self, name: str, subscribed: Callable[[str], bool]) -> frozenset[str]:
        out: set[str] = set()
        for group in self.groups:
            if group.covers(name, subscribed):
                out |= group.events
        return frozenset(out)

    def used(self) -> frozenset[str]:
        out = set(self.selected)
        for group in self.groups:
            out |= group.events
        return frozenset(out)


def parse_notify(args: list[Token], utf8: bool) -> NotifySpec | None:
    """The arguments of NOTIFY: a spec, or None for ``NOTIFY NONE``.
    ParseError (BAD), BadEvent, Overflow."""
    if not args or not isinstance(args[0], Atom):
        raise ParseError("NOTIFY takes SET or NONE.")
    word = args[0].upper()
    if word == "NONE":
        if len(args) != 1:
            raise ParseError("NOTIFY NONE takes no arguments.")
        return None
    if word != "SET":
        raise ParseError("NOTIFY takes SET or NONE.")
    spec = NotifySpec()
    rest = args[1:]
    if rest and isinstance(rest[0], Atom) and rest[0].upper() == "STATUS":
        spec.status = True
        rest = rest[1:]
    if not rest:
        raise ParseError("NOTIFY SET needs event groups.")
    selected_seen = False
    for group in rest:
        if not isinstance(group, list) or not group or not isinstance(group[0], Atom):
            raise ParseError("Expected an event group: (filter events).")
        kind = group[0].upper()
        if kind in ("SELECTED", "SELECTED-DELAYED"):
            if selected_seen:
                raise ParseError("Duplicate selected filter.")
            selected_seen = True
            if len(group) != 2:
                raise ParseError("The selected filter takes events only.")
            spec.delayed = kind == "SELECTED-DELAYED"
            spec.selected, spec.fetch_items = _selected_events(group[1])
            continue
        if kind not in _OTHER_FILTERS:
            raise ParseError("Unknown NOTIFY filter.")
        names: tuple[str, ...] = ()
        body = group[1:]
        if kind in ("SUBTREE", "MAILBOXES"):
            if len(body) != 2:
                raise ParseError(f"{kind.lower()} takes mailbox names and events.")
            raw = body[0] if isinstance(body[0], list) else [body[0]]
            if not raw:
                raise ParseError("Expected mailbox names.")
            if len(raw) > MAX_NAMES:
                raise Overflow("Too many mailbox names")
            names = tuple(dict.fromkeys(mailbox_arg(t, utf8) for t in raw))
            body = body[1:]
        if len(body) != 1:
            raise ParseError("Expected the events of the filter.")
        events = _events(body[0])
        if not events:
            continue  # NONE: the default
        if kind == "INBOXES":
            kind = "PERSONAL"
        spec.groups.append(Group(kind, names, frozenset(events)))
    unsupported = [e for e in EVENTS if e in spec.used() and e not in SUPPORTED]
    if unsupported:
        raise BadEvent(" ".join(unsupported))
    return spec


def _event_name(token: Token) -> str:
    if not isinstance(token, Atom) or token.upper() not in _BY_UPPER:
        raise ParseError("Unknown NOTIFY event.")
    return _BY_UPPER[token.upper()]


def _events(token: Token) -> list[str]:
    if isinstance(token, Atom) and token.upper() == "NONE":
        return []
    if not isinstance(token, list) or not token:
        raise ParseError("Expected a list of events or NONE.")
    out: list[str] = []
    for t in token:
        if isinstance(t, list):
            raise ParseError("FETCH attributes are for the selected mailbox only.")
        out.append(_event_name(t))
    return out


def _selected_events(token: Token) -> tuple[frozenset[str], list[FetchItem] | None]:
    if isinstance(token, Atom) and token.upper() == "NONE":
        return frozenset(), None
    if not isinstance(token, list) or not token:
        raise ParseError("Expected a list of events or NONE.")
    events: set[str] = set()
    items: list[FetchItem] | None = None
    i = 0
    while i < len(token):
        name = _event_name(token[i])
        events.add(name)
        if name == "MessageNew" and i + 1 < len(token) and isinstance(token[i + 1], list):
            items = parse_items([token[i + 1]])
            if sets_seen(items):
                # An unsolicited FETCH must not change the message.
                raise ParseError("MessageNew attributes must not set \\Seen (use BODY.PEEK).")
            i += 1
        i += 1
    new_or_gone = events & {"MessageNew", "MessageExpunge"}
    if new_or_gone and len(new_or_gone) != 2:
        raise ParseError("MessageNew and MessageExpunge must be together (RFC 5465 5).")
    if events & {"FlagChange", "AnnotationChange"} and not new_or_gone:
        raise ParseError("FlagChange needs MessageNew and MessageExpunge (RFC 5465 5).")
    if events & (MAILBOX_EVENTS | {"ServerMetadataChange"}):
        raise ParseError("Mailbox events cannot be asked for the selected mailbox.")
    return frozenset(events), items


class NotifyHub:
    """The sessions of each user in this process that asked for mailbox
    events: a session that created, deleted or renamed a mailbox or
    changed a subscription pokes the others (and itself)."""

    def __init__(self) -> None:
        self._sessions: dict[str, list[Callable[[], None]]] = {}

    def join(self, user: str, poke: Callable[[], None]) -> None:
        self._sessions.setdefault(user, []).append(poke)

    def leave(self, user: str, poke: Callable[[], None]) -> None:
        pokes = self._sessions.get(user)
        if pokes is not None and poke in pokes:
            pokes.remove(poke)
            if not pokes:
                del self._sessions[user]

    def poke(self, user: str) -> None:
        for poke in list(self._sessions.get(user, ())):
            try:
                poke()
            except Exception:
                # One session's trouble must not fail the command of the
                # session that made the change.
                _log.failure("imap({user}): NOTIFY mailbox list check failed", user=user)


#: Commands after which the user's mailbox list or subscriptions may differ.
LIST_COMMANDS = frozenset({"CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "SETMETADATA"})


class Notifier:
    """One session's NOTIFY: the folders it watches and what waits to be sent."""

    def __init__(self, server: IMAPSession, spec: NotifySpec) -> None:
        self.server = server
        self.spec = spec
        assert server.folders is not None
        #: The mailbox through the store's asynchronous API: every read of
        #: the folder list, the subscriptions and the folders' status.
        self.folders = server.folders
        #: Watched folders: the cancel of the store's watch of each.
        self._watched: dict[str, Callable[[], None]] = {}
        self._stopped = False
        self._pending: dict[str, set[str]] = {}  # folder name -> change kinds
        self._lines: list[bytes] = []  # LIST responses waiting
        self._names: set[str] = set()
        self._subscribed: set[str] = set()
        self._flushing: Any = None
        self._hub: NotifyHub | None = None
        self._root_watch: Callable[[], None] | None = None  # the store's watch of the list
        self._list_check: Any = None
        # METADATA (RFC 5464) entries as last seen: mailbox key -> entry -> hash
        # of the value; None when no metadata event was asked for.
        self._metadata: dict[str, dict[str, int]] | None = None
        # Work the store has not answered at once: a list comparison (and
        # whether another was asked for meanwhile), STATUS lines, MessageNew
        # FETCH lines. Its lines go out with the next push or response.
        self._checking: Deferred[None] | None = None
        self._check_again = False
        self._working: list[Deferred[Any]] = []

    # life ----------------------------------------------------------------

    async def start(self, hub: NotifyHub | None) -> None:
        """Take the snapshots (through the store's asynchronous API) and
        watch the folders; Overflow when too many."""
        self._names = {f.name for f in await self.folders.list_folders()}
        self._subscribed = set(await self.folders.subscriptions())
        await self._rewatch()
        if self.spec.used() & METADATA_EVENTS:
            self._metadata = await self._metadata_now()
        if self._wants_list_events():
            if hub is not None:
                self._hub = hub
                hub.join(self.server.user, self.list_changed)
            if not self._stopped:
                # Other processes (pymta's other reactors, a Dovecot beside
                # it) create, delete and rename folders too: the store
                # watches for that (Maildir: its root, by inotify).
                self._root_watch = self.folders.watch(self._root_changed)

    def _root_changed(self) -> None:
        if self._list_check is None or not self._list_check.active():
            # A RENAME or DELETE is several events: compare once they are in.
            self._list_check = self.server.clock.callLater(ROOT_DELAY, self._checked)

    def _checked(self) -> None:
        self._list_check = None
        if self.server.notifier is self:
            self.list_changed()

    def stop(self) -> None:
        self._stopped = True
        for name in list(self._watched):
            self._unwatch(name)
        if self._hub is not None:
            self._hub.leave(self.server.user, self.list_changed)
            self._hub = None
        if self._root_watch is not None:
            self._root_watch()
            self._root_watch = None
        if self._list_check is not None and self._list_check.active():
            self._list_check.cancel()
        self._list_check = None
        if self._flushing is not None and self._flushing.active():
            self._flushing.cancel()
        self._flushing = None

    def _wants_list_events(self) -> bool:
        return bool(self.spec.used() & (MAILBOX_EVENTS | METADATA_EVENTS)) or any(
            g.kind in ("PERSONAL", "SUBTREE", "SUBSCRIBED") for g in self.spec.groups
        )

    def _is_subscribed(self, name: str) -> bool:
        return name in self._subscribed

    def _message_events(self, name: str) -> frozenset[str]:
        return self.spec.events_for(name, self._is_subscribed) & MESSAGE_EVENTS

    async def _rewatch(self) -> None:
        """Watch exactly the existing folders some group wants message events
        of: each opened through the store's asynchronous API and watched
        there (its listeners, and the store's inotify watchers shared with
        the selected views). Overflow when too many."""
        wanted = {n for n in self._names if self._message_events(n)}
        if len(wanted) > MAX_FOLDERS:
            raise Overflow("Too many mailboxes to watch")
        for name in list(self._watched):
            if name not in wanted:
                self._unwatch(name)
        for name in sorted(wanted - set(self._watched)):
            try:
                face = await self.folders.folder(name)
            except MailStoreError:
                continue
            if self._stopped or name in self._watched or not self._message_events(name):
                continue  # stopped, or watched or unwanted since (a list change)

            def heard(change: FolderChange, name: str = name) -> None:
                self._heard(name, change)

            self._watched[name] = face.watch(heard)

    def _unwatch(self, name: str) -> None:
        self._watched.pop(name)()

    # events --------------------------------------------------------------

    def _selected_name(self) -> str | None:
        view = self.server.view
        return view.store.name if view is not None else None

    def _heard(self, name: str, change: FolderChange) -> None:
        if name == self._selected_name():
            return  # the selected mailbox is the selected filter's
        events = self._message_events(name)
        wanted = {
            "append": "MessageNew",
            "expunge": "MessageExpunge",
            "flags": "FlagChange",
        }.get(change.kind)
        if change.kind == "uidvalidity":
            if not events:
                return
        elif wanted is None or wanted not in events:
            return
        self._pending.setdefault(name, set()).add(change.kind)
        self._soon()

    def list_changed(self) -> None:
        """Compare the folder list and the subscriptions with the snapshot
        (read through the store's asynchronous API: at once when it
        answers at once, else the LIST lines come when it has)."""
        if self._checking is not None:
            self._check_again = True  # once the comparison under way is done
            return
        checking = defer.ensureDeferred(self._compare_lists())
        if not _fired(checking):
            self._checking = checking
            checking.addBoth(self._compared)
        else:
            checking.addErrback(self._check_failed)

    def _compared(self, result: object) -> None:
        self._checking = None
        if isinstance(result, Failure):
            self._check_failed(result)
        if self._check_again and self.server.notifier is self:
            self._check_again = False
            self.list_changed()
        if self._lines:
            self._soon()

    def _check_failed(self, failure: Failure) -> None:
        _log.failure("imap({user}): NOTIFY list check", failure, user=self.server.user)

    async def _compare_lists(self) -> None:
        names = {f.name for f in await self.folders.list_folders()}
        subscribed = set(await self.folders.subscriptions())
        utf8 = self.server.utf8_names
        either = subscribed | self._subscribed  # a subscribed filter covers both
        gone, new = self._names - names, names - self._names
        renamed = _renames(gone, new)
        for old, now in sorted(renamed.items()):
            if self._wants(now, "MailboxName", either) or self._wants(old, "MailboxName", either):
                self._lines.append(
                    b'* LIST () "/" '
                    + mailbox_out(now, utf8)
                    + b' ("OLDNAME" ('
                    + mailbox_out(old, utf8)
                    + b"))\r\n"
                )
        for name in sorted(new - set(renamed.values())):
            if self._wants(name, "MailboxName", either):
                self._lines.append(b'* LIST () "/" ' + mailbox_out(name, utf8) + b"\r\n")
        for name in sorted(gone - set(renamed)):
            if self._wants(name, "MailboxName", either):
                line = b'* LIST (\\NonExistent) "/" ' + mailbox_out(name, utf8) + b"\r\n"
                self._lines.append(line)
        for name in sorted(subscribed ^ self._subscribed):
            if self._wants(name, "SubscriptionChange", either):
                attrs = b"(\\Subscribed)" if name in subscribed else b"()"
                line = b"* LIST " + attrs + b' "/" ' + mailbox_out(name, utf8) + b"\r\n"
                self._lines.append(line)
        self._names, self._subscribed = names, subscribed
        try:
            await self._rewatch()
        except Overflow:
            self._overflow()
        if self._metadata is not None:
            await self._metadata_changed(either)
        if self._lines:
            self._soon()

    async def _metadata_now(self) -> dict[str, dict[str, int]]:
        entries = await self.folders.metadata()
        return {
            key: {name: hash(value) for name, value in values.items()}
            for key, values in entries.items()
        }

    async def _metadata_changed(self, subscribed: set[str]) -> None:
        """``* METADATA name entries`` (RFC 5464 4.4.2, names only) for the
        entries set, changed or removed since the last look."""
        assert self._metadata is not None
        now = await self._metadata_now()
        before, self._metadata = self._metadata, now
        changed: dict[str, list[str]] = {}
        for key in set(before) | set(now):
            old, new = before.get(key, {}), now.get(key, {})
            names = sorted(n for n in set(old) | set(new) if old.get(n) != new.get(n))
            if names:
                changed[key] = names
        if not changed:
            return
        utf8 = self.server.utf8_names
        if metadata.SERVER in changed and "ServerMetadataChange" in self.spec.used():
            self._lines.append(_metadata_line(b'""', changed.pop(metadata.SERVER)))
        changed.pop(metadata.SERVER, None)
        if not changed:
            return
        for name in sorted(self._names):
            if not self._wants(name, "MailboxMetadataChange", subscribed):
                continue
            try:
                folder = await self.folders.folder(name)
                key = mailbox_id((await folder.status()).uidvalidity)
            except MailStoreError:
                continue
            if key in changed:
                self._lines.append(_metadata_line(mailbox_out(name, utf8), changed[key]))

    def _overflow(self) -> None:
        """More mailboxes than can be watched (RFC 5465 5.8): say so and
        stop notifying; the client may ask again with fewer."""
        for name in list(self._watched):
            self._unwatch(name)
        self._pending.clear()
        self.spec = NotifySpec()
        self._lines.append(b"* OK [NOTIFICATIONOVERFLOW] Too many mailboxes to watch\r\n")

    def _wants(self, name: str, event: str, subscribed: set[str]) -> bool:
        return event in self.spec.events_for(name, subscribed.__contains__)

    def _soon(self) -> None:
        """Send what is pending once this reactor turn's events are in."""
        if self._flushing is None or not self._flushing.active():
            self._flushing = self.server.clock.callLater(0, self.server.notify_wake)

    # responses -----------------------------------------------------------

    def status_items(self, kinds: set[str]) -> list[str]:
        items: list[str] = []
        if "uidvalidity" in kinds:
            items += ["MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN"]
        elif kinds & {"append", "expunge"}:
            items += ["MESSAGES", "UIDNEXT", "UNSEEN"]
        else:
            items.append("UNSEEN")
        if self.server.condstore:
            items.append("HIGHESTMODSEQ")
        return items

    def take(self) -> list[bytes]:
        """The responses waiting: LIST lines, then STATUS of changed folders
        (read through the store's asynchronous API; one it has not answered
        at once goes out with a later push)."""
        pending, self._pending = self._pending, {}
        wanted = [
            (name, self.status_items(kinds))
            for name, kinds in sorted(pending.items())
            if name in self._watched and name != self._selected_name()
        ]
        if wanted:
            self._later(defer.ensureDeferred(self._status_lines(wanted)))
        out, self._lines = self._lines, []
        return out

    def _later(self, work: Deferred[list[bytes]]) -> None:
        """Lines the store gives: into the waiting lines now when it
        answered at once, else when it does (then pushed)."""
        outcome: list[Any] = []
        work.addBoth(outcome.append)
        if outcome:
            self._keep(outcome[0])
            return
        self._working.append(work)

        def done(_: object) -> None:
            self._working.remove(work)
            self._keep(outcome[0])
            if self._lines:
                self._soon()

        work.addCallback(done)

    def _keep(self, result: object) -> None:
        if isinstance(result, Failure):
            _log.failure("imap({user}): NOTIFY", result, user=self.server.user)
        elif isinstance(result, list):
            self._lines.extend(result)

    async def _status_lines(self, wanted: list[tuple[str, list[str]]]) -> list[bytes]:
        out: list[bytes] = []
        for name, items in wanted:
            line = await status_line(self.folders, name, items, self.server.utf8_names)
            if line is not None:
                out.append(line)
        return out

    def has_pending(self) -> bool:
        return bool(self._lines or self._pending)

    def needs_preparing(self) -> bool:
        """The store is still reading for lines that should go out with the
        next response (a list comparison, STATUS or FETCH lines)."""
        return self._checking is not None or bool(self._working)

    def prepare(self) -> Deferred[None]:
        """Fires once the store has answered what :meth:`needs_preparing`
        waits for (its lines are then waiting in :meth:`take`)."""
        waits: list[Deferred[Any]] = list(self._working)
        if self._checking is not None:
            waits.append(self._checking)
        done: Deferred[None] = Deferred()
        gathered = defer.DeferredList([after_firing(w) for w in waits], consumeErrors=True)
        gathered.addBoth(lambda _: done.callback(None))
        return done

    async def initial_status(self) -> list[bytes]:
        """SET STATUS: the STATUS of each watched non-selected mailbox."""
        items = ["MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN"]
        if "FlagChange" in self.spec.used():
            items.append("HIGHESTMODSEQ")
        selected = self._selected_name()
        wanted = [(name, items) for name in sorted(self._watched) if name != selected]
        return await self._status_lines(wanted)

    def new_message_fetches(self, uids: list[int]) -> list[bytes]:
        """MessageNew's FETCH attributes for new messages of the selected
        mailbox, read through the store's asynchronous API (those it has
        not answered at once go out with a later push)."""
        items = self.spec.fetch_items
        view = self.server.view
        if not items or view is None or "MessageNew" not in self.spec.selected:
            return []
        self._later(defer.ensureDeferred(self._fetch_lines(view, items, uids)))
        out, self._lines = self._lines, []
        return out

    async def _fetch_lines(
        self, view: SelectedView, items: list[FetchItem], uids: list[int]
    ) -> list[bytes]:
        store = view.store
        if any(i.name == "INTERNALDATE" for i in items):
            infos = await store.get_dated(uids)  # dates not read yet: in its threads
        else:
            infos = await store.get_many(uids)
        out: list[bytes] = []
        for u in uids:
            n = view.msn(u)
            info = infos.get(u)
            if n is None or info is None:
                continue
            data = MessageData(None, info, store)
            try:
                for kind in wants(items, info.size, None):
                    await data.load(kind)
                while True:
                    try:
                        pieces = render(data, items, view.flags_of(info), self.server.condstore)
                        break
                    except NotLoaded as missing:
                        await data.load(missing.kind)
            except MailStoreError:
                continue
            except Exception:  # an unknown transfer encoding: no FETCH for it
                continue
            finally:
                data.close()
            body = b"".join(p for p in pieces if isinstance(p, bytes))
            out.append(b"* %d FETCH " % n + body + b"\r\n")
        return out


def _fired(d: Deferred[Any]) -> bool:
    """Whether ``d`` has its result (a Deferred waiting on another one is
    "called" without it)."""
    outcome: list[object] = []

    def seen(result: object) -> object:
        outcome.append(True)
        return result

    d.addBoth(seen)
    return bool(outcome)


def _metadata_line(mailbox: bytes, entries: list[str]) -> bytes:
    return b"* METADATA " + mailbox + b" " + " ".join(entries).encode("ascii") + b"\r\n"


async def status_line(
    folders: IAsyncUserMailbox, name: str, items: list[str], utf8: bool
) -> bytes | None:
    """``* STATUS name (...)`` from the index, through the store's
    asynchronous API (a folder changed on disk rescanned in its threads),
    or None when the folder is gone."""
    try:
        folder = await folders.folder(name)
        if await folder.changed_on_disk():
            await folder.refresh()
        st = await folder.status()
    except MailStoreError:
        return None
    values = {
        "MESSAGES": st.messages,
        "UIDNEXT": st.uidnext,
        "UIDVALIDITY": st.uidvalidity,
        "UNSEEN": st.unseen,
        "HIGHESTMODSEQ": st.highest_modseq,
    }
    body = b" ".join(b"%s %d" % (i.encode("ascii"), values[i]) for i in items)
    return b"* STATUS " + mailbox_out(name, utf8) + b" (" + body + b")\r\n"


def _renames(gone: set[str], new: set[str]) -> dict[str, str]:
    """Old name -> new name for what looks like one RENAME (with its
    children): the shortest name gone and the shortest new one, when every
    other change is a child of the one moved to the other."""
    if not gone or len(gone) != len(new):
        return {}
    old_top = min(gone, key=len)
    new_top = min(new, key=len)
    out = {old_top: new_top}
    for name in gone - {old_top}:
        if not name.startswith(old_top + "/"):
            return {}
        moved = new_top + name[len(old_top) :]
        if moved not in new:
            return {}
        out[name] = moved
    return out


def notify(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    """The NOTIFY command."""
    try:
        spec = parse_notify(args, s.utf8_names)
    except BadEvent:
        s.no(tag, b"[BADEVENT (" + " ".join(SUPPORTED).encode() + b")] Unsupported NOTIFY events.")
        return
    except Overflow as e:
        s.no(tag, b"[NOTIFICATIONOVERFLOW] " + str(e).encode())
        return
    s.stop_notify()
    if spec is None:
        s.ok(tag, b"NOTIFY completed.")
        return
    notifier = Notifier(s, spec)
    starting = defer.ensureDeferred(_start(s, notifier, spec))

    def started(lines: list[bytes] | None) -> None:
        if lines is None:
            return  # refused (NOTIFICATIONOVERFLOW) or the session is gone
        for line in lines:
            s.send(line)
        s.ok(tag, b"NOTIFY completed.")

    def overflow(failure: Failure) -> None:
        failure.trap(Overflow)
        notifier.stop()
        s.no(tag, b"[NOTIFICATIONOVERFLOW] " + str(failure.value).encode())

    when_stored(s, tag, "NOTIFY", starting.addCallbacks(started, overflow), lambda _: None)


async def _start(s: IMAPSession, notifier: Notifier, spec: NotifySpec) -> list[bytes] | None:
    """Start ``notifier`` (its snapshots through the store's asynchronous
    API) and read SET STATUS's lines; None when the session went away
    meanwhile."""
    await notifier.start(s.notify_hub)
    if s.lost:
        notifier.stop()
        return None
    s.start_notify(notifier)
    return await notifier.initial_status() if spec.status else []
