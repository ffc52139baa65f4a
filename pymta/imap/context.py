"""CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 section 4): results kept up to date.

``SEARCH RETURN (UPDATE ...)`` answers as any ESEARCH does, then keeps
the result: while the mailbox stays selected, messages that start or stop
matching are announced unsolicited as ``* ESEARCH (TAG "t") [UID] ADDTO
(position set)`` and ``REMOVEFROM (position set)`` (RFC 5267 4.4.1) —
new mail, flag changes by this or any other session, expunges. A search
that asked for MIN, MAX or COUNT without ALL gets those values again when
they change. ``CANCELUPDATE "t" ...`` ends updates (RFC 5267 4.3);
leaving the mailbox ends them all. ``CONTEXT`` (a hint that the client
will narrow the search) is accepted and changes nothing.

How: :class:`SearchContexts` listens to the selected folder (the same
listeners the session's view hears, fed by the store's watchers) and
collects the UIDs each change touched. The search key is tested again on
those messages only, before updates are sent, and the difference with the
kept result is announced. A REMOVEFROM for expunged messages comes before
the ``EXPUNGE`` responses (its sequence numbers are those before the
expunge), an ADDTO after ``EXISTS`` (RFC 5267 4.4.1: the client must know
the message). For SEARCH one pair names the set, at the position of its
first number in the (ascending) result. ``SORT RETURN (UPDATE ...)`` keeps
its result in sort order with each message's keys (a joining message's
keys are read from its cached header, :mod:`pymta.imap.sort`), and sends
one pair per run of neighbouring positions: removals from the last back,
additions from the first on, so that each is right when applied in order;
MIN and MAX are the first and last in sort order.

Off the reactor, through the store's asynchronous API
(:mod:`pymta.imap.matching`): a key that reads whole messages (BODY,
TEXT) is tested again in the store's scan (the scan workers of
:mod:`pymta.imap.scan`, the user's scans one at a time); a header key
first has the store fill a cold header cache in its threads; more than
:data:`SLICE` changed messages are tested in slices, one per reactor
turn. Meanwhile the session holds the tagged response of the command
that made the change (:meth:`SearchContexts.prepare`), so the updates
come before it as imaptest and Dovecot have them. A few changed messages
whose records and headers the store has at hand are tested at once.

Limits: at most :data:`MAX_UPDATING` updating searches per session; one
more is answered but refused updates with an untagged ``NO [NOUPDATE
"t"]`` (RFC 5267 4.2), and so is UPDATE with PARTIAL (pymta does not keep
windows up to date).

Untrusted input: the criteria (parsed by :mod:`pymta.imap.search`), the
messages. Writes nothing; logs failed re-evaluations (the messages stay
pending and are tried again at the next update).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cmp_to_key
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from pymta.imap import matching
from pymta.imap.parser import ParseError, Token
from pymta.imap.results import ordered_set
from pymta.imap.scan import SearchMatch
from pymta.imap.search import Criteria
from pymta.imap.sequence import format_set
from pymta.mailstore.asyncstore import IAsyncFolder
from pymta.mailstore.interface import FolderChange, MessageInfo

if TYPE_CHECKING:
    from pymta.imap.session import IMAPSession

_log = Logger(namespace="pymta.imap")

#: Updating searches one session may keep (RFC 5267 4.2 lets a server
#: refuse more with NOUPDATE; each costs a test of every changed message).
MAX_UPDATING = 10

#: Changed messages tested per reactor turn when many change at once
#: (a STORE 1:* on a big folder).
SLICE = 8192

#: RETURN options of RFC 5267 4 that SEARCH accepts besides RFC 4731's.
CONTEXT_OPTIONS = frozenset({"UPDATE", "CONTEXT"})


@dataclass
class SortOrder:
    """How an updating SORT orders its result: REVERSE of each criterion,
    and the keys of one message (from pymta.imap.sort)."""

    reverse: tuple[bool, ...]
    keys_of: Callable[[IAsyncFolder, list[MessageInfo]], Deferred[dict[int, tuple[Any, ...]]]]

    def compare(self, a: tuple[tuple[Any, ...], int], b: tuple[tuple[Any, ...], int]) -> int:
        """(keys, UID) pairs in sort order; equal keys in UID (sequence)
        order whatever REVERSE says (RFC 5256 3)."""
        for x, y, reverse in zip(a[0], b[0], self.reverse, strict=True):
            if x != y:
                before = x < y
                return (1 if before else -1) if reverse else (-1 if before else 1)
        return (a[1] > b[1]) - (a[1] < b[1])


@dataclass
class SearchContext:
    """One updating search: its criteria, what it asked for, its result."""

    tag: bytes
    uid: bool
    returns: frozenset[str]  # of MIN, MAX, COUNT, ALL
    tokens: list[Token]
    criteria: Criteria
    saved: frozenset[int]
    rev2: bool
    #: The matching UIDs, ascending (in sort order for a SORT); None until
    #: the first answer is sent.
    result: list[int] | None = None
    #: An updating SORT (CONTEXT=SORT): its order, and each result's keys.
    order: SortOrder | None = None
    keys: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    #: UIDs whose match may have changed (new, flags changed).
    pending: set[int] = field(default_factory=set)
    #: Re-tested messages (UID -> matches) not announced yet.
    verdicts: dict[int, bool] = field(default_factory=dict)

    @property
    def reads_files(self) -> bool:
        return self.criteria.uses_content


def split_options(returns: set[str]) -> tuple[set[str], bool]:
    """RETURN options without UPDATE and CONTEXT, and whether UPDATE was
    asked. UPDATE alone reports the whole result first (ALL), which its
    ADDTO and REMOVEFROM then keep up to date."""
    update = "UPDATE" in returns
    rest = returns - CONTEXT_OPTIONS
    if not rest:
        rest = {"ALL"}
    return rest, update


class SearchContexts:
    """The updating searches of one session's selected mailbox."""

    def __init__(self, server: IMAPSession) -> None:
        self.server = server
        view = server.view
        assert view is not None
        self.view = view
        self.searches: dict[bytes, SearchContext] = {}
        self._preparing: Deferred[None] | None = None
        # The store's watch: this session's changes, other sessions' and
        # other processes' (a delivery joins a search that matches it).
        self._unwatch = view.store.watch(self._on_change)

    # life ----------------------------------------------------------------

    def close(self) -> None:
        self._unwatch()
        self.searches.clear()

    def full(self) -> bool:
        return len(self.searches) >= MAX_UPDATING

    def add(self, context: SearchContext) -> None:
        """Start keeping ``context`` (before its search runs: changes made
        meanwhile are tested again at the next update). A search of the
        same tag replaces the old one."""
        self.searches[context.tag] = context

    def found(self, context: SearchContext, uids: list[int]) -> None:
        """The first result of ``context`` was sent: keep it."""
        if self.searches.get(context.tag) is context:
            # One the view has already reported expunged is no longer there.
            context.result = sorted(u for u in uids if self.view.msn(u) is not None)

    def sorted_found(self, context: SearchContext, rows: list[tuple[int, tuple[Any, ...]]]) -> None:
        """The first answer of an updating SORT was sent: (UID, keys) in sort order."""
        if self.searches.get(context.tag) is context:
            present = [(u, k) for u, k in rows if self.view.msn(u) is not None]
            context.result = [u for u, _ in present]
            context.keys = dict(present)

    def drop(self, context: SearchContext) -> None:
        if self.searches.get(context.tag) is context:
            del self.searches[context.tag]

    def cancel(self, tag: bytes) -> bool:
        """CANCELUPDATE of one tag: False when no search has it."""
        return self.searches.pop(tag, None) is not None

    def has_news(self) -> bool:
        """Some search has messages to test again or results to announce."""
        return any(c.pending or c.verdicts for c in self._active())

    def _on_change(self, change: FolderChange) -> None:
        if change.kind in ("append", "flags"):
            for context in self.searches.values():
                context.pending.update(change.uids)
            if self.searches:
                # The view heard first and may have pushed its part already.
                self.server.context_wake()
        elif change.kind == "expunge":
            for context in self.searches.values():
                context.pending.difference_update(change.uids)
                for u in change.uids:
                    context.verdicts.pop(u, None)

    # re-testing ----------------------------------------------------------

    def _active(self) -> Iterator[SearchContext]:
        for context in list(self.searches.values()):
            if context.result is not None:
                yield context

    def needs_preparing(self) -> bool:
        """Some changed messages must be tested off the reactor (or over
        several turns) before the updates can be sent: many of them, a
        key that reads whole messages when the scan workers read them,
        or header keys whose cold header cache the store is reading in
        its threads (asked here: the prefetch starts at once)."""
        if self._preparing is not None:
            return True
        store = self.view.store
        for context in self._active():
            if not context.pending:
                continue
            if len(context.pending) > SLICE or (
                context.reads_files and self.server.scan_in_thread is not None
            ):
                return True
            if context.criteria.uses_header and not context.reads_files:
                if not store.prefetch_headers(context.pending).called:
                    return True
        return False

    def prepare(self) -> Deferred[None]:
        """Test the pending messages of every search off the reactor; fires
        when their verdicts are ready (failures are logged, the messages
        stay pending)."""
        if self._preparing is None:
            # Set before the callback: work that finishes at once clears it.
            work = defer.ensureDeferred(self._prepare())
            self._preparing = work
            work.addBoth(self._prepared)
        d: Deferred[None] = Deferred()
        self._preparing.addBoth(lambda _: d.callback(None))
        return d

    def _prepared(self, result: object) -> None:
        self._preparing = None
        if isinstance(result, Failure):
            _log.failure("imap: re-testing updating searches failed", result)

    async def _prepare(self) -> None:
        waited = False
        for context in self._active():
            if not context.pending:
                continue
            uids = sorted(context.pending)
            for start in range(0, len(uids), SLICE):
                if start:
                    await _next_turn(self.server.clock)
                    waited = True
                if self.server.lost or self.searches.get(context.tag) is not context:
                    return
                testing = defer.ensureDeferred(self._retest(context, uids[start : start + SLICE]))
                waited = waited or not testing.called
                await testing
        if not waited:
            # prepare() answers in a later turn, never within the call
            # (the session holds its response until then).
            await _next_turn(self.server.clock)

    async def _retest(self, context: SearchContext, uids: list[int]) -> None:
        """Test these messages again through the store's asynchronous API
        (:mod:`pymta.imap.matching`): whole messages in the store's scan
        (the scan workers, the user's scans one at a time), else index and
        header keys here."""
        store = self.view.store
        s = self.server
        entries = await self._entries(uids)
        matched: set[int]
        if context.reads_files:
            items = [((n, recent), info.uid) for n, info, recent in entries]
            match = SearchMatch(
                context.tokens,
                context.saved,
                context.rev2,
                self._largest_msn(),
                self._largest_uid(),
            )

            def scan() -> Deferred[Any]:
                return store.scan(items, match, s.scan_in_thread, lambda: s.lost)

            found = await s.scan_gate.run(s.user, scan)
            matched = {info.uid for _, info in found}
        else:
            hits = await matching.header_hits(store, context.criteria, uids)
            hit, _ = await matching.test_part(
                store, entries, context.criteria, self._largest_msn(), self._largest_uid(), hits
            )
            matched = {info.uid for _, info, _ in hit}
        present = {info.uid for _, info, _ in entries}
        if context.order is not None:
            # The keys of messages joining the SORT result, read now (the
            # search has just had the store read their headers).
            joining = [
                info
                for _, info, _ in entries
                if info.uid in matched and info.uid not in context.keys
            ]
            if joining:
                context.keys.update(await context.order.keys_of(store, joining))
        for u in uids:
            if u not in context.pending:
                continue  # expunged meanwhile: its expunge tells
            context.pending.discard(u)
            if u in present:
                context.verdicts[u] = u in matched
            else:
                context.verdicts.pop(u, None)  # gone: its expunge tells

    def _largest_msn(self) -> int:
        return self.view.exists

    def _largest_uid(self) -> int:
        return self.view.uids[-1] if self.view.uids else 0

    async def _entries(self, uids: list[int]) -> list[tuple[int, MessageInfo, bool]]:
        """(sequence number, record, \\Recent) of the messages still there;
        one the view has not announced yet is numbered after the last."""
        view = self.view
        # Dated: a date key, or a SORT's ARRIVAL, may compare them (the
        # store reads those it has not yet, in its threads).
        records = await view.store.get_dated(uids)
        out: list[tuple[int, MessageInfo, bool]] = []
        extra = view.exists
        for u in uids:
            info = records.get(u)
            if info is None:
                continue
            n = view.msn(u)
            if n is None:
                extra += 1
                n = extra
            out.append((n, info, u in view.recent or info.recent))
        return out

    def _test_now(self, context: SearchContext) -> None:
        """Test the pending messages in this call when the store answers at
        once (it mostly does: a few records and cached headers); else
        their verdicts come when it has answered, with a later update."""
        testing = defer.ensureDeferred(self._retest(context, sorted(context.pending)))
        if testing.called:
            testing.addErrback(self._prepared)  # logged; they stay pending
            return
        self._preparing = testing
        testing.addBoth(self._prepared)
        testing.addCallback(lambda _: self.server.context_wake())

    # responses -----------------------------------------------------------

    def before_expunges(self, allow_expunge: bool) -> list[bytes]:
        """REMOVEFROM for the expunged messages the view is about to report,
        numbered as before the expunge."""
        if not allow_expunge:
            return []
        out: list[bytes] = []
        view = self.view
        for context in self._active():
            assert context.result is not None
            gone = [u for u in context.result if view.is_expunged(u) and view.msn(u) is not None]
            if gone:
                out.extend(self._changed(context, [], gone))
        return out

    def after_updates(self) -> list[bytes]:
        """ADDTO and REMOVEFROM for the messages tested again (testing the
        rest here when that needs no file and no turn of its own)."""
        out: list[bytes] = []
        view = self.view
        for context in self._active():
            assert context.result is not None
            if context.pending and not (
                (context.reads_files and self.server.scan_in_thread is not None) or self._preparing
            ):
                self._test_now(context)
            if not context.verdicts:
                continue
            verdicts, context.verdicts = context.verdicts, {}
            kept = set(context.result)
            added: list[int] = []
            removed: list[int] = []
            for u, matches in sorted(verdicts.items()):
                if view.msn(u) is None or view.is_expunged(u):
                    if not view.is_expunged(u) and u > self._largest_uid():
                        context.verdicts[u] = matches  # not announced yet
                    continue
                if matches and u not in kept:
                    added.append(u)
                elif not matches and u in kept:
                    removed.append(u)
            if context.order is not None:
                added = self._keyed(context, added)
            if added or removed:
                out.extend(self._changed(context, added, removed))
        return out

    def _keyed(self, context: SearchContext, added: list[int]) -> list[int]:
        """Those of the messages joining a SORT result whose keys were read
        when they were tested (:meth:`_retest`); one gone meanwhile is left
        out."""
        return [u for u in added if u in context.keys]

    def _changed(self, context: SearchContext, added: list[int], removed: list[int]) -> list[bytes]:
        assert context.result is not None
        old = context.result
        before = _summary(old)
        out: list[bytes] = []
        head = b'* ESEARCH (TAG "' + context.tag + b'")' + (b" UID" if context.uid else b"")
        if context.order is not None:
            out.extend(self._sorted_changes(context, head, added, removed))
        elif removed:
            position = bisect_left(old, removed[0]) + 1
            drop = set(removed)
            context.result = [u for u in old if u not in drop]
            if "ALL" in context.returns:
                numbers = self._set(context, removed)
                out.append(head + b" REMOVEFROM (%d %s)\r\n" % (position, numbers))
        if added and context.order is None:
            merged = sorted(set(context.result) | set(added))
            context.result = merged
            position = bisect_left(merged, added[0]) + 1
            if "ALL" in context.returns:
                out.append(head + b" ADDTO (%d %s)\r\n" % (position, self._set(context, added)))
        after = _summary(context.result)
        wanted = context.returns & {"MIN", "MAX", "COUNT"}
        if wanted and _picked(before, wanted) != _picked(after, wanted):
            # RFC 5267 4.4: MIN, MAX and COUNT are sent again when they change.
            line = head
            low, high, count = after
            if count and "MIN" in wanted:
                line += b" MIN %d" % self._number(context, low)
            if count and "MAX" in wanted:
                line += b" MAX %d" % self._number(context, high)
            if "COUNT" in wanted:
                line += b" COUNT %d" % count
            out.append(line + b"\r\n")
        return out

    def _sorted_changes(
        self, context: SearchContext, head: bytes, added: list[int], removed: list[int]
    ) -> list[bytes]:
        """A SORT result's changes, one ADDTO / REMOVEFROM pair per run of
        neighbouring positions (RFC 5267 4.4.1): removals from the last
        position back, additions from the first on, so that each position
        is right when the client applies the pairs in order."""
        assert context.result is not None and context.order is not None
        out: list[bytes] = []
        report = "ALL" in context.returns
        if removed:
            drop = set(removed)
            old = context.result
            positions = [i for i, u in enumerate(old, 1) if u in drop]
            for first, last in reversed(_runs(positions)):
                if report:
                    numbers = self._ordered(context, old[first - 1 : last])
                    out.append(head + b" REMOVEFROM (%d %s)\r\n" % (first, numbers))
            context.result = [u for u in old if u not in drop]
            for u in removed:
                context.keys.pop(u, None)
        if added:
            order, keys = context.order, context.keys
            rank = cmp_to_key(order.compare)
            merged = context.result + added
            merged.sort(key=lambda u: rank((keys[u], u)))
            context.result = merged
            fresh = set(added)
            positions = [i for i, u in enumerate(merged, 1) if u in fresh]
            for first, last in _runs(positions):
                if report:
                    numbers = self._ordered(context, merged[first - 1 : last])
                    out.append(head + b" ADDTO (%d %s)\r\n" % (first, numbers))
        return out

    def _ordered(self, context: SearchContext, uids: list[int]) -> bytes:
        numbers = uids if context.uid else [self.view.msn(u) or 0 for u in uids]
        return ordered_set(numbers)

    def _number(self, context: SearchContext, uid: int) -> int:
        if context.uid:
            return uid
        return self.view.msn(uid) or 0

    def _set(self, context: SearchContext, uids: list[int]) -> bytes:
        numbers = uids if context.uid else [self.view.msn(u) or 0 for u in uids]
        return format_set(numbers).encode("ascii")


def _runs(positions: list[int]) -> list[tuple[int, int]]:
    """Ascending positions as (first, last) runs of neighbours."""
    runs: list[tuple[int, int]] = []
    for p in positions:
        if runs and runs[-1][1] == p - 1:
            runs[-1] = (runs[-1][0], p)
        else:
            runs.append((p, p))
    return runs


def _picked(summary: tuple[int, int, int], wanted: set[str] | frozenset[str]) -> tuple[int, ...]:
    """The MIN, MAX and COUNT asked for out of a (first, last, count) summary."""
    names = ("MIN", "MAX", "COUNT")
    return tuple(v for name, v in zip(names, summary, strict=True) if name in wanted)


def _summary(result: list[int]) -> tuple[int, int, int]:
    if not result:
        return (0, 0, 0)
    return (result[0], result[-1], len(result))


def _next_turn(clock: Any) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    clock.callLater(0, d.callback, None)
    return d


def cancel_update(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    """``CANCELUPDATE "tag" ...`` (RFC 5267 4.3)."""
    if not args or any(isinstance(a, list) for a in args):
        raise ParseError("CANCELUPDATE takes search tags.")
    tags = [a if isinstance(a, bytes) else str(a).encode("utf-8") for a in args]
    contexts = s.contexts
    unknown = [t for t in tags if contexts is None or t not in contexts.searches]
    if unknown:
        s.bad(tag, b"Unknown search tag.")
        return
    assert contexts is not None
    for t in tags:
        contexts.cancel(t)
    s.ok(tag, b"Cancelupdate completed.")


def start(
    s: IMAPSession,
    tag: bytes,
    uid: bool,
    returns: set[str],
    window: object,
    tokens: list[Token],
    criteria: Criteria,
    order: SortOrder | None = None,
) -> tuple[set[str], SearchContext | None]:
    """A SEARCH with UPDATE or CONTEXT among its RETURN options: the options
    to answer with, and the search to keep up to date (None when refused:
    too many, or with PARTIAL, answered ``* NO [NOUPDATE "tag"]``)."""
    options, update = split_options(returns)
    if not update:
        return options, None
    if s.contexts is None:
        s.contexts = SearchContexts(s)
    contexts = s.contexts
    if window is not None or (contexts.full() and tag not in contexts.searches):
        why = b"Too many updating searches" if window is None else b"PARTIAL is not kept updated"
        s.send(b'* NO [NOUPDATE "' + tag + b'"] ' + why + b"\r\n")
        return options, None
    updating = SearchContext(
        tag,
        uid,
        frozenset(options & {"MIN", "MAX", "COUNT", "ALL"}),
        tokens,
        criteria,
        frozenset(s.saved),
        s.rev2,
        order=order,
    )
    contexts.add(updating)
    return options, updating


def answered(s: IMAPSession, updating: SearchContext, uids: list[int]) -> None:
    """The first answer of an updating search was sent: keep its result."""
    if s.contexts is not None:
        s.contexts.found(updating, uids)


def sort_answered(
    s: IMAPSession, updating: SearchContext, rows: list[tuple[int, tuple[Any, ...]]]
) -> None:
    """The first answer of an updating SORT was sent: (UID, keys) in sort order."""
    if s.contexts is not None:
        s.contexts.sorted_found(updating, rows)
