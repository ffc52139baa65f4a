"""The IMAP commands of the selected state: messages of the selected mailbox.

CHECK, CLOSE, UNSELECT (RFC 3691), EXPUNGE and UID EXPUNGE (RFC 4315),
SEARCH, FETCH (RFC 7162 CHANGEDSINCE and VANISHED), STORE (FLAGS, +FLAGS,
-FLAGS, .SILENT, UNCHANGEDSINCE), COPY (COPYUID), MOVE (RFC 6851), each
also as a UID command. Each is a function ``(server, tag, args, uid)``.

Sequence numbers are the session's own (:class:`pymta.imap.view.SelectedView`);
FETCH, STORE and SEARCH by number never send EXPUNGE (RFC 3501 7.4.1),
their UID forms may. FETCH 1:* (FLAGS UID) reads the index only; body
items read the file once per message. Responses are written in chunks of
about :data:`CHUNK` bytes.

FETCH, STORE, EXPUNGE, CLOSE, CHECK, COPY and MOVE call the mail store's
asynchronous API (:attr:`SelectedView.store`); an answer that is not
there at once comes later, with later commands waiting
(:meth:`IMAPSession.later`). So does SEARCH (:mod:`pymta.imap.matching`).

Untrusted input: the arguments. Writes: flags, expunges, copies through
the mail store. Logs store errors.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, cast

from twisted.internet import defer
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from pymta.imap import context, matching
from pymta.imap.fetch import (
    HEADER,
    STREAM_MIN,
    FetchItem,
    FileLiteral,
    MessageData,
    NotLoaded,
    UnknownCTE,
    index_renderer,
    needs_file,
    parse_items,
    render,
    sets_seen,
    wants,
)
from pymta.imap.mailbox_commands import _flag_name, mailbox_arg, session_guard
from pymta.imap.parser import Atom, ParseError, Token
from pymta.imap.results import SEARCH_OPTIONS, Partial, parse_return, partial_item
from pymta.imap.scan import SearchMatch
from pymta.imap.search import BadCharset, Criteria, parse_search
from pymta.imap.sequence import SequenceSet, format_pairs, format_set, parse_sequence_set
from pymta.imap.stored import when_stored as _when_stored
from pymta.imap.view import InvalidSet, SelectedView
from pymta.imap.wire import flag_list
from pymta.mailstore.asyncstore import IAsyncUserMailbox
from pymta.mailstore.interface import (
    FlagMode,
    MailStoreError,
    MessageInfo,
    NoSuchFolder,
)

if TYPE_CHECKING:
    from pymta.imap.session import IMAPSession

T = TypeVar("T")

CHUNK = 256 * 1024
#: Messages a SEARCH tests per reactor turn: a search of a huge folder
#: (0.24 s of CPU for 100,000 messages) lets other sessions in between.
SEARCH_SLICE = 8192


def _view(s: IMAPSession) -> SelectedView:
    assert s.view is not None
    return s.view


def _seqset(token: Token) -> SequenceSet:
    if not isinstance(token, Atom):
        raise ParseError("Expected a sequence set.")
    try:
        return parse_sequence_set(token)
    except ValueError as e:
        raise ParseError(f"Invalid messageset: {e}") from None


def _pairs(s: IMAPSession, tag: bytes, token: Token, uid: bool) -> list[tuple[int, int]] | None:
    if token == "$" and isinstance(token, Atom):
        # RFC 5182: the saved result, by UID (expunged messages drop out).
        view = _view(s)
        pairs = []
        for u in s.saved:
            n = view.msn(u)
            if n is not None:
                pairs.append((n, u))
        return pairs
    try:
        return _view(s).resolve(_seqset(token), uid)
    except InvalidSet:
        s.bad(tag, b"Error in IMAP command: Invalid messageset.")
        return None


def check(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    store = _view(s).store

    def refresh(changed: bool) -> Deferred[Any] | None:
        # A scan of the folder's directories: the store's threads.
        return store.refresh() if changed else None

    checking: Deferred[Any] = store.changed_on_disk().addCallback(refresh)
    _when_stored(s, tag, "CHECK", checking, lambda _: s.ok(tag, b"Check completed."))


def close(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    view = _view(s)
    if view.readonly:
        s.unselect()
        s.ok(tag, b"Close completed.")
        return

    def not_expunged(failure: Failure) -> None:
        # An expunge that fails does not fail CLOSE: the mailbox is closed
        # all the same.
        failure.trap(MailStoreError)
        s.log.error("imap({user}): CLOSE expunge: {error}", user=s.user, error=failure.value)

    def expunged(removed: list[int] | None) -> None:
        if removed is not None:
            s.counters.expunged += len(removed)
        s.unselect()
        s.ok(tag, b"Close completed.")

    expunging: Deferred[list[int] | None] = view.store.expunge().addErrback(not_expunged)
    _when_stored(s, tag, "CLOSE", expunging, expunged)


def unselect(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    s.unselect()
    s.ok(tag, b"Unselect completed.")


def expunge(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    view = _view(s)
    if view.readonly:
        s.no(tag, b"[READ-ONLY] Mailbox is read-only.")
        return
    if uid:
        if len(args) != 1:
            raise ParseError("UID EXPUNGE takes a UID set.")
        pairs = _pairs(s, tag, args[0], True)
        if pairs is None:
            return
        store = view.store

        def deleted(infos: dict[int, MessageInfo]) -> Deferred[list[int]]:
            targets = [u for u, m in infos.items() if "\\Deleted" in m.flags]
            return store.expunge(targets) if targets else succeed([])

        expunging = store.get_many([u for _, u in pairs]).addCallback(deleted)
    elif args:
        raise ParseError("EXPUNGE takes no arguments.")
    else:
        expunging = view.store.expunge()

    def expunged(removed: list[int]) -> None:
        s.counters.expunged += len(removed)
        s.ok(tag, b"Expunge completed.")

    _when_stored(s, tag, "EXPUNGE", expunging, expunged)


def _search_return(args: list[Token]) -> tuple[set[str] | None, Partial | None, list[Token]]:
    """RFC 4731 ``RETURN (options)`` at the start of SEARCH: the options
    (``()`` means ALL), or None when absent; RFC 9394's PARTIAL window; and
    the remaining tokens."""
    returns, rest = parse_return(args, SEARCH_OPTIONS | context.CONTEXT_OPTIONS)
    if returns is None:
        return None, None, rest
    return set(returns.options), returns.partial, rest


def search(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    returns, window, args = _search_return(args)
    if returns is None and s.rev2:
        returns = {"ALL"}  # RFC 9051 6.4.4: SEARCH answers with ESEARCH
    saving = returns is not None and "SAVE" in returns
    try:
        criteria = parse_search(args, saved=set(s.saved), rev2=s.rev2)
    except BadCharset:
        if saving:
            s.saved = []  # RFC 5182 2.1: a failed SEARCH empties $
        s.no(tag, b"[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset.", expunge=uid)
        return
    if criteria.uses_modseq:
        _enable_condstore(s)
    updating = None
    if returns is not None and returns & context.CONTEXT_OPTIONS:
        # RFC 5267 CONTEXT=SEARCH (pymta.imap.context).
        returns, updating = context.start(s, tag, uid, returns, window, args, criteria)

    def answer(found: Found) -> None:
        _search_answer(s, tag, uid, criteria, returns, window, found, updating)

    find(s, tag, uid, args, criteria, answer)


def find(
    s: IMAPSession,
    tag: bytes,
    uid: bool,
    tokens: list[Token],
    criteria: Criteria,
    answer: Callable[[Found], Deferred[None] | None],
    command: str = "SEARCH",
) -> None:
    """Find the messages that match ``criteria`` (parsed from ``tokens``)
    and call ``answer`` with them, which answers the command (SEARCH, and
    SORT and THREAD of pymta.imap.sort and pymta.imap.thread). Through the
    store's asynchronous API (:mod:`pymta.imap.matching`): body searches
    in the store's scan (the scan workers, a user's scans one after
    another), a cold header cache filled in the store's threads, big
    folders tested in slices; later commands wait meanwhile. An answer
    that is there at once is sent before this returns. An unexpected
    error is answered NO [SERVERBUG]."""
    view = _view(s)
    whole = len(tokens) == 1 and isinstance(tokens[0], Atom) and tokens[0].upper() == "ALL"
    if whole and command != "SEARCH":
        # Every message of the view, without testing each (SORT and THREAD
        # of a whole folder).
        found = Found()
        if not view.has_expunged():
            # Nothing to leave out: no test per message (100,000 of them).
            found.uids = list(view.uids)
            found.numbers = list(found.uids) if uid else list(range(1, len(found.uids) + 1))
        else:
            for msn, u in enumerate(view.uids, 1):
                if not view.is_expunged(u):
                    found.numbers.append(u if uid else msn)
                    found.uids.append(u)
        answering = answer(found)
        if answering is not None:
            s.later(answering, lambda: None, tag, command)
        return
    if criteria.uses_content:
        # Every message file is read: in the store's scan, a user's scans
        # one after another (pymta.imap.scan).
        finding = s.scan_gate.run(s.user, lambda: _scan(s, uid, tokens, criteria, answer))
    else:
        finding = defer.ensureDeferred(_search(s, uid, criteria, answer))
    finding.addErrback(partial(search_failed, s, tag, command))
    # (Not finding.called: a Deferred waiting on another one is "called".)
    finished: list[object] = []
    finding.addBoth(finished.append)
    if not finished:
        s.later(finding, lambda: None, tag, command)


def _snapshot(view: SelectedView) -> list[tuple[int, int, bool]]:
    """(sequence number, UID, \\Recent) of each message of the view."""
    recent = view.recent
    return [(msn, u, u in recent) for msn, u in enumerate(view.uids, 1)]


async def _search(
    s: IMAPSession,
    uid: bool,
    criteria: Criteria,
    answer: Callable[[Found], Deferred[None] | None],
) -> None:
    """Test every message (criteria that read no whole message) and
    answer. A folder of more than :data:`SEARCH_SLICE` messages is tested
    that many per reactor turn, so other sessions are served in between."""
    view = _view(s)
    store = view.store
    uids = view.uids.tolist()  # as the search began (the view only grows in place)
    count = len(uids)
    largest_uid = uids[-1] if uids else 0
    recent = view.recent
    hits = None
    if criteria.uses_header:
        hits = await matching.header_hits(store, criteria, uids)
        if s.lost:
            return
    if criteria.uses_date:
        # Dates the store has not read yet (a folder's first scan does
        # not stat its files) are read in its threads first.
        get = (await store.get_dated(uids)).get
    else:
        get = {m.uid: m for m in await store.messages()}.get
    entries = [
        (msn, info, u in recent) for msn, u in enumerate(uids, 1) if (info := get(u)) is not None
    ]
    found = Found()
    for start in range(0, len(entries), SEARCH_SLICE):
        if start:
            await _next_turn(s)
            if s.lost:
                return
        part = entries[start : start + SEARCH_SLICE]
        matched, _ = await matching.test_part(store, part, criteria, count, largest_uid, hits)
        for msn, info, _ in matched:
            found.add(msn, info, uid)
    if s.lost:
        return
    answering = answer(found)
    if answering is not None:
        await answering


def _next_turn(s: IMAPSession) -> Deferred[None]:
    """Fires in the next reactor turn (other sessions are served meanwhile)."""
    d: Deferred[None] = Deferred()
    s.clock.callLater(0, d.callback, None)
    return d


def _scan(
    s: IMAPSession,
    uid: bool,
    tokens: list[Token],
    criteria: Criteria,
    answer: Callable[[Found], Deferred[None] | None],
) -> Deferred[None]:
    """A body SEARCH in the store's scan: snapshot the view when the
    user's turn comes, test the files where the store reads them (the
    scan workers: the criteria go there as the client sent them), answer
    here."""
    if s.lost or s.view is None:
        return succeed(None)  # gone while waiting for the user's turn
    view = s.view
    items = [((msn, recent), u) for msn, u, recent in _snapshot(view)]
    match = SearchMatch(
        tokens, frozenset(s.saved), s.rev2, view.exists, view.uids[-1] if view.uids else 0
    )
    store = view.store
    if criteria.uses_date:
        # The scan's records carry dates: those not read yet first.
        d = store.get_dated([u for _, u in items]).addCallback(
            lambda _: store.scan(items, match, s.scan_in_thread, lambda: s.lost)
        )
    else:
        d = store.scan(items, match, s.scan_in_thread, lambda: s.lost)

    def matched(result: list[tuple[tuple[int, bool], MessageInfo]]) -> Deferred[None] | None:
        if s.lost:
            return None
        found = Found()
        for (msn, _), info in result:
            found.add(msn, info, uid)
        return answer(found)

    return d.addCallback(matched)


def search_failed(s: IMAPSession, tag: bytes, command: str, failure: Failure) -> None:
    """An unexpected error in a SEARCH (SORT, THREAD) that went on after its
    command call: logged with its traceback, answered NO [SERVERBUG]."""
    s.log.failure(
        "imap({user}): unexpected error in {command}", failure, user=s.user, command=command
    )
    if not s.lost:
        s.no(tag, b"[SERVERBUG] Internal error occurred. Refer to server log for more information.")


@dataclass
class Found:
    """What a SEARCH has matched so far."""

    numbers: list[int] = field(default_factory=list)  # UIDs or sequence numbers
    uids: list[int] = field(default_factory=list)
    top_modseq: int = 0
    #: The MODSEQ of the first and of the last match (ESEARCH's MIN and MAX).
    first_modseq: int = 0
    last_modseq: int = 0

    def add(self, msn: int, info: MessageInfo, uid: bool) -> None:
        """One more match (numbered by UID with ``uid``), in ascending order."""
        self.numbers.append(info.uid if uid else msn)
        self.uids.append(info.uid)
        modseq = self.last_modseq = info.modseq
        if not self.first_modseq:
            self.first_modseq = modseq
        if modseq > self.top_modseq:
            self.top_modseq = modseq


def _enable_condstore(s: IMAPSession) -> None:
    """A CONDSTORE-enabling command (FETCH MODSEQ, SEARCH MODSEQ, STORE
    UNCHANGEDSINCE...): the first one in a selected mailbox also reports
    its HIGHESTMODSEQ (RFC 7162 3.1, as Dovecot)."""
    if s.condstore:
        return
    s.condstore = True
    if s.view is not None:
        s.send(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % s.view.highest_modseq)


def _returned_modseq(returns: set[str], found: Found) -> int:
    """The MODSEQ of an ESEARCH answer (RFC 7162 3.1.5): the highest of the
    messages it returns, which with only MIN and/or MAX are those two."""
    if not found.uids or returns & {"ALL", "COUNT"} or not returns & {"MIN", "MAX"}:
        return found.top_modseq
    picked = []
    if "MIN" in returns:
        picked.append(found.first_modseq)
    if "MAX" in returns:
        picked.append(found.last_modseq)
    return max(picked)


def _search_answer(
    s: IMAPSession,
    tag: bytes,
    uid: bool,
    criteria: Criteria,
    returns: set[str] | None,
    window: Partial | None,
    matched: Found,
    updating: context.SearchContext | None = None,
) -> None:
    saving = returns is not None and "SAVE" in returns
    found, found_uids, top_modseq = matched.numbers, matched.uids, matched.top_modseq
    if returns is None:
        line = b"* SEARCH"
        if found:
            line += b" " + b" ".join(b"%d" % n for n in found)
            if criteria.uses_modseq:
                line += b" (MODSEQ %d)" % top_modseq
        s.send(line + b"\r\n")
    else:
        if saving:
            s.saved = _saved_result(returns, found_uids)
        if returns != {"SAVE"}:  # RFC 5182 2.1: SAVE alone sends no ESEARCH
            modseq = _returned_modseq(returns, matched) if criteria.uses_modseq else 0
            s.send(_esearch(tag, uid, returns, found, modseq, window))
        if updating is not None:
            context.answered(s, updating, found_uids)
    s.ok(tag, b"Search completed.", expunge=uid)


def _saved_result(returns: set[str], uids: list[int]) -> list[int]:
    """What SAVE keeps (RFC 5182 2.4): with MIN and/or MAX but neither ALL nor
    COUNT only those messages, else every match."""
    if not uids or returns & {"ALL", "COUNT"} or not returns & {"MIN", "MAX"}:
        return uids
    kept = []
    if "MIN" in returns:
        kept.append(uids[0])
    if "MAX" in returns and uids[-1] not in kept:
        kept.append(uids[-1])
    return kept


def _esearch(
    tag: bytes,
    uid: bool,
    returns: set[str],
    found: list[int],
    modseq: int,
    window: Partial | None = None,
) -> bytes:
    """``* ESEARCH (TAG "a") UID MIN 1 MAX 9 COUNT 3 ALL 1,4,9`` (RFC 4731 3.1;
    MIN, MAX and ALL are left out when nothing matched, COUNT 0 is not)."""
    line = b'* ESEARCH (TAG "' + tag + b'")'
    if uid:
        line += b" UID"
    if found:
        if "MIN" in returns:
            line += b" MIN %d" % found[0]
        if "MAX" in returns:
            line += b" MAX %d" % found[-1]
    if "COUNT" in returns:
        line += b" COUNT %d" % len(found)
    if found and "ALL" in returns:
        line += b" ALL " + format_set(found).encode("ascii")
    if window is not None:
        line += partial_item(found, window)  # RFC 9394 3.1: also when empty
    if found and modseq:
        line += b" MODSEQ %d" % modseq  # RFC 7162 3.1.5
    return line + b"\r\n"


def _fetch_modifiers(s: IMAPSession, token: Token) -> tuple[int | None, bool]:
    if not isinstance(token, list):
        raise ParseError("Invalid FETCH modifiers.")
    changed: int | None = None
    vanished = False
    i = 0
    while i < len(token):
        word = token[i].upper() if isinstance(token[i], Atom) else ""  # type: ignore[union-attr]
        if word == "CHANGEDSINCE" and i + 1 < len(token):
            value = token[i + 1]
            if not isinstance(value, Atom) or not value.isdigit():
                raise ParseError("CHANGEDSINCE takes a number.")
            changed = int(value)
            i += 2
        elif word == "VANISHED":
            vanished = True
            i += 1
        else:
            raise ParseError("Unknown FETCH modifier.")
    return changed, vanished


def fetch(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    view = _view(s)
    if len(args) not in (2, 3):
        raise ParseError("FETCH takes a sequence set and items.")
    items = parse_items([args[1]])
    changed_since: int | None = None
    vanished = False
    if len(args) == 3:
        changed_since, vanished = _fetch_modifiers(s, args[2])
        _enable_condstore(s)
        if vanished and not (uid and s.qresync and changed_since is not None):
            raise ParseError("VANISHED needs UID FETCH, QRESYNC and CHANGEDSINCE.")
    pairs = _pairs(s, tag, args[0], uid)
    if pairs is None:
        return
    if uid and not any(i.name == "UID" for i in items):
        items.insert(0, FetchItem("UID"))
    if any(i.name == "MODSEQ" for i in items):
        _enable_condstore(s)
    dated = any(i.name == "INTERNALDATE" for i in items)
    loading = defer.ensureDeferred(
        _fetch_reads(view, pairs, changed_since if vanished else None, dated)
    )

    def loaded(got: tuple[list[int], dict[int, MessageInfo]]) -> None:
        gone, infos = got
        _fetch_loaded(s, tag, uid, args[0], items, pairs, infos, gone, changed_since)

    _when_stored(s, tag, "FETCH", loading, loaded)


async def _fetch_reads(
    view: SelectedView,
    pairs: list[tuple[int, int]],
    vanished_since: int | None,
    dated: bool = False,
) -> tuple[list[int], dict[int, MessageInfo]]:
    """What FETCH reads of the index through the store's asynchronous API
    (answered at once when nothing of the folder waits): the UIDs expunged
    since ``vanished_since`` (VANISHED), and the records of ``pairs``,
    with their dates when ``dated`` (INTERNALDATE: those the store has not
    read yet are read in its threads)."""
    store = view.store
    gone = await store.expunged_since(vanished_since) if vanished_since is not None else []
    uids = [u for _, u in pairs]
    infos = await (store.get_dated(uids) if dated else store.get_many(uids))
    return gone, infos


def _fetch_loaded(
    s: IMAPSession,
    tag: bytes,
    uid: bool,
    sequence: Token,
    items: list[FetchItem],
    pairs: list[tuple[int, int]],
    infos: dict[int, MessageInfo],
    gone: list[int],
    changed_since: int | None,
) -> None:
    view = _view(s)
    if gone:
        seqset = _seqset(sequence)
        largest = max(gone[-1], view.uids[-1] if view.uids else 0)
        gone = [u for u in gone if seqset.contains(u, largest) and view.msn(u) is None]
        if gone:
            s.send(b"* VANISHED (EARLIER) " + format_set(gone).encode() + b"\r\n")
    mark_seen = sets_seen(items) and not view.readonly
    missing = False
    returned = 0
    wants_flags = any(i.name == "FLAGS" for i in items)
    with_modseq = s.condstore
    if wants_flags or mark_seen:
        # Keywords another session made since our last update: FLAGS first.
        keywords = {k for i in infos.values() if i.keywords for k in i.keywords}
        for line in view.new_keywords(keywords):
            s.send(line)
    fast = None if mark_seen else index_renderer(items, with_modseq)
    if fast is not None and changed_since is None:
        out: list[bytes] = []
        flags_of = view.flags_of
        for msn, u in pairs:
            info = infos.get(u)
            if info is None or view.is_expunged(u):
                missing = True
                continue
            out.append(b"* %d FETCH %s\r\n" % (msn, fast(info, flags_of(info))))
        for start in range(0, len(out), 4096):
            s.send(b"".join(out[start : start + 4096]))
        returned = len(out)
        pairs = []
    if not pairs:
        _fetch_done(s, tag, uid, returned, missing, False)
        return
    s.stream(
        _fetch_answers(
            s, tag, uid, pairs, infos, items, mark_seen, wants_flags, with_modseq, changed_since
        )
    )


def _fetch_answers(
    s: IMAPSession,
    tag: bytes,
    uid: bool,
    pairs: list[tuple[int, int]],
    infos: dict[int, MessageInfo],
    items: list[FetchItem],
    mark_seen: bool,
    wants_flags: bool,
    with_modseq: bool,
    changed_since: int | None,
) -> Generator[bytes | Deferred[Any], Any, None]:
    """The FETCH responses one message at a time (a large message's body in
    pieces from its file), then the tagged response: the session pulls them
    as the client reads (pymta.stream), so memory does not grow with the
    answer, and a message is read from the store (a Deferred yielded) only
    when the client has taken the ones before."""
    view = _view(s)
    store = view.store
    body_items = needs_file(items)
    missing = unknown_cte = False
    returned = 0
    # What to load, by (items with FLAGS added, streamed): one guess per
    # FETCH, not one per message.
    guesses: dict[tuple[bool, bool], list[str]] = {}
    # Header blocks asked for a run of messages at once (one store call,
    # one Deferred, for up to HEADER_RUN of them).
    headers: dict[int, bytes] = {}
    for position, (msn, u) in enumerate(pairs):
        info = infos.get(u)
        if info is None or view.is_expunged(u):
            missing = True
            continue
        if changed_since is not None and info.modseq <= changed_since:
            continue
        line_items = items
        if mark_seen and "\\Seen" not in info.flags:
            view.mute([u])
            try:
                info = (yield from _settled(store.set_flags(u, ["\\Seen"], FlagMode.ADD))) or info
            except MailStoreError:
                pass
            finally:
                view.mute(None)
            if not wants_flags:
                line_items = [*items, FetchItem("FLAGS")]
        # What the items need is read through the store's asynchronous API,
        # one message at a time, as the client takes the answer (pymta.stream).
        data = MessageData(None, info, store)
        try:
            key = (line_items is not items, info.size >= STREAM_MIN)
            kinds = guesses.get(key)
            if kinds is None:
                kinds = guesses[key] = wants(line_items, info.size, STREAM_MIN)
            for kind in kinds:
                if kind == HEADER:
                    if u not in headers:
                        run = _header_run(view, pairs, position, infos, changed_since)
                        headers = yield from _settled(store.headers(run))
                    header = headers.pop(u, None)
                    if header is not None:
                        data.given_header(header)
                        continue
                yield from _settled(data.load(kind))
            while True:
                data.rewind()
                try:
                    pieces = render(
                        data, line_items, view.flags_of(info), with_modseq, stream_min=STREAM_MIN
                    )
                    break
                except NotLoaded as wanted:
                    yield from _settled(data.load(wanted.kind))
        except MailStoreError:
            data.close()
            missing = True
            continue
        except UnknownCTE:
            data.close()
            unknown_cte = True
            continue
        except BaseException:
            data.close()  # the session ends (or the stream was stopped)
            raise
        data.close(handed_out=False)
        if body_items:
            s.counters.body_count += 1
            s.counters.body_bytes += info.rfc822_size
        returned += 1
        if len(pieces) == 1:
            yield b"* %d FETCH " % msn + cast(bytes, pieces[0]) + b"\r\n"
            continue
        yield b"* %d FETCH " % msn
        for piece in pieces:
            if isinstance(piece, FileLiteral):
                yield from piece.chunks()
            else:
                yield piece
        yield b"\r\n"
    _fetch_done(s, tag, uid, returned, missing, unknown_cte)


#: Header blocks FETCH asks the store for at once: at most this many
#: messages, and at most HEADER_RUN_BYTES of them (a header is no bigger
#: than its message), so the answer still streams with little memory.
HEADER_RUN = 64
HEADER_RUN_BYTES = 256 * 1024


def _header_run(
    view: SelectedView,
    pairs: list[tuple[int, int]],
    start: int,
    infos: dict[int, MessageInfo],
    changed_since: int | None,
) -> list[int]:
    """The UIDs whose header blocks to ask for together, from ``start`` on:
    the messages FETCH will answer next (those gone or unchanged since
    CHANGEDSINCE are skipped)."""
    run: list[int] = []
    size = 0
    for _, u in pairs[start:]:
        info = infos.get(u)
        if info is None or view.is_expunged(u):
            continue
        if changed_since is not None and info.modseq <= changed_since:
            continue
        if run and (len(run) >= HEADER_RUN or size + info.size > HEADER_RUN_BYTES):
            break
        run.append(u)
        size += info.size
    return run


def _settled(d: Deferred[T]) -> Generator[Deferred[T], Any, T]:
    """``d``'s result in a FETCH generator: at once when the store answered
    at once (no trip through the Streamer: most reads), else by yielding
    ``d`` to wait for it. A failure is raised."""
    outcome: list[T | Failure] = []

    def keep(result: T | Failure) -> T | Failure:
        outcome.append(result)
        return result

    d.addBoth(keep)
    if not outcome:
        return (yield d)
    result = outcome[0]
    if isinstance(result, Failure):
        d.addErrback(lambda _: None)  # raised here instead
        result.raiseException()
    return cast(T, result)


def _fetch_done(
    s: IMAPSession, tag: bytes, uid: bool, returned: int, missing: bool, unknown_cte: bool
) -> None:
    if unknown_cte:
        s.no(tag, b"[UNKNOWN-CTE] Unknown Content-Transfer-Encoding.", expunge=uid)
    elif missing:
        # RFC 5530: OK when some data came back, NO when every message was
        # gone; Dovecot's texts, which clients (and imaptest) look for.
        if returned:
            s.ok(tag, b"[EXPUNGEISSUED] Some messages were already expunged.", expunge=uid)
        else:
            s.no(
                tag,
                b"[EXPUNGEISSUED] Some of the requested messages no longer exist.",
                expunge=uid,
            )
    else:
        s.ok(tag, b"Fetch completed.", expunge=uid)


def store(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    view = _view(s)
    rest = list(args[1:])
    if len(args) < 3:
        raise ParseError("STORE takes a sequence set, an item and flags.")
    unchanged: int | None = None
    if isinstance(rest[0], list):
        mods = rest.pop(0)
        if (
            len(mods) != 2
            or not isinstance(mods[0], Atom)
            or mods[0].upper() != "UNCHANGEDSINCE"
            or not isinstance(mods[1], Atom)
            or not mods[1].isdigit()
        ):
            raise ParseError("Invalid STORE modifier.")
        unchanged = int(mods[1])
        _enable_condstore(s)
    if len(rest) < 2 or not isinstance(rest[0], Atom):
        raise ParseError("STORE takes an item and flags.")
    item = rest[0].upper()
    silent = item.endswith(".SILENT")
    base = item[: -len(".SILENT")] if silent else item
    modes = {"FLAGS": FlagMode.REPLACE, "+FLAGS": FlagMode.ADD, "-FLAGS": FlagMode.REMOVE}
    if base not in modes:
        raise ParseError("Unknown STORE item.")
    raw_flags = rest[1] if len(rest) == 2 and isinstance(rest[1], list) else rest[1:]
    flags: list[str] = []
    for f in raw_flags:
        if not isinstance(f, Atom):
            raise ParseError("Invalid flag.")
        flags.append(_flag_name(f))
    if view.readonly:
        s.no(tag, b"[READ-ONLY] Mailbox is read-only.", expunge=uid)
        return
    pairs = _pairs(s, tag, args[0], uid)
    if pairs is None:
        return
    mode = modes[base]
    if mode is not FlagMode.REMOVE:
        for line in view.new_keywords(f for f in flags if not f.startswith("\\")):
            s.send(line)
    targets = [(msn, u) for msn, u in pairs if not view.is_expunged(u)]
    view.mute(u for _, u in pairs)
    if unchanged is None:
        # One store change for the whole set (one lock, one index write, one
        # modseq), as Dovecot commits a STORE in one transaction.
        changing = view.store.set_flags_many([u for _, u in targets], flags, mode)
        storing: Deferred[list[tuple[int, int, MessageInfo | None]]] = changing.addCallback(
            lambda infos: _by_uid(targets, infos)
        )
    else:
        storing = defer.ensureDeferred(_store_each(view, targets, flags, mode, unchanged))

    def unmute(result: object) -> object:
        view.mute(None)
        return result

    storing.addBoth(unmute)

    def stored(changed: list[tuple[int, int, MessageInfo | None]]) -> None:
        modified: list[int] = []
        for msn, u, info in changed:
            if info is None:
                modified.append(u if uid else msn)
                continue
            if silent and unchanged is None:
                continue
            for announce in view.new_keywords(info.keywords):
                s.send(announce)  # one another session made meanwhile
            line = b"* %d FETCH (FLAGS %s" % (msn, flag_list(view.flags_of(info)))
            if uid:
                line += b" UID %d" % u
            if s.condstore:
                line += b" MODSEQ (%d)" % info.modseq
            s.send(line + b")\r\n")
        if modified:
            s.ok(
                tag,
                b"[MODIFIED " + format_set(modified).encode() + b"] Conditional STORE failed.",
                expunge=uid,
            )
        else:
            s.ok(tag, b"Store completed.", expunge=uid)

    _when_stored(s, tag, "STORE", storing, stored)


def _by_uid(
    targets: list[tuple[int, int]], infos: list[MessageInfo]
) -> list[tuple[int, int, MessageInfo | None]]:
    """(number, UID, info) of the targets still present, in the command's order."""
    found = {info.uid: info for info in infos}
    return [(msn, u, found[u]) for msn, u in targets if u in found]


async def _store_each(
    view: SelectedView,
    targets: list[tuple[int, int]],
    flags: list[str],
    mode: FlagMode,
    unchanged: int,
) -> list[tuple[int, int, MessageInfo | None]]:
    """STORE with UNCHANGEDSINCE (RFC 7162 3.1.3): each message on its own
    condition; None for those whose modseq was greater (not changed)."""
    out: list[tuple[int, int, MessageInfo | None]] = []
    for msn, u in targets:
        try:
            info = await view.store.set_flags(u, flags, mode, unchanged)
        except MailStoreError:
            continue  # expunged meanwhile
        out.append((msn, u, info))
    return out


def copy(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    _copy_or_move(s, tag, args, uid, move=False)


def move(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    _copy_or_move(s, tag, args, uid, move=True)


def _copy_or_move(s: IMAPSession, tag: bytes, args: list[Token], uid: bool, move: bool) -> None:
    view = _view(s)
    if len(args) != 2:
        raise ParseError("COPY takes a sequence set and a mailbox name.")
    name = mailbox_arg(args[1], s.utf8_names)
    if move and view.readonly:
        s.no(tag, b"[READ-ONLY] Mailbox is read-only.", expunge=uid)
        return
    pairs = _pairs(s, tag, args[0], uid)
    if pairs is None:
        return
    uids = [u for _, u in pairs if not view.is_expunged(u)]

    def quota(size: int) -> None:
        # QUOTA: the copies must fit (a MOVE within the mailbox adds nothing).
        guard = session_guard(s, size)
        if guard is not None:
            guard()

    assert s.folders is not None
    copying = defer.ensureDeferred(
        _copy_to(view, s.folders, name, uids, move, None if move else quota)
    )

    def copied(result: tuple[list[tuple[int, int]], int] | None) -> None:
        if result is None:
            s.no(tag, b"[TRYCREATE] Mailbox doesn't exist.", expunge=uid)
            return
        if not uids:
            s.ok(tag, b"No messages found.", expunge=uid or move)
            return
        done, uidvalidity = result
        code = b"[COPYUID %d %s %s]" % (
            uidvalidity,
            format_pairs([a for a, _ in done]).encode(),
            format_pairs([b for _, b in done]).encode(),
        )
        if not done:
            code = b""
        if move:
            s.counters.expunged += len(done)
            if code:
                s.send(b"* OK " + code + b" Moved UIDs.\r\n")
            s.ok(tag, b"Move completed.", expunge=True)
        else:
            s.ok(tag, code + b" Copy completed.", expunge=uid)

    def refused(failure: Failure) -> None:
        error = failure.value
        if s.store_refused(tag, error, expunge=uid):
            return
        if not failure.check(MailStoreError, OSError):
            failure.raiseException()
        s.log.error("imap({user}): COPY to {name}: {error}", user=s.user, name=name, error=error)
        s.no(tag, b"[SERVERBUG] Internal error occurred.", expunge=uid)

    answered: Deferred[Any] = copying.addCallbacks(copied, refused)
    _when_stored(s, tag, "COPY", answered, lambda _: None)


async def _copy_to(
    view: SelectedView,
    folders: IAsyncUserMailbox,
    name: str,
    uids: list[int],
    move: bool,
    quota: Callable[[int], None] | None = None,
) -> tuple[list[tuple[int, int]], int] | None:
    """COPY or MOVE through the store's asynchronous API: the (source,
    new) UID pairs and the target's UIDVALIDITY; None when there is no
    such target. ``quota(size)`` first raises when the copies would not
    fit (their sizes read from the index through the store)."""
    if quota is not None and uids:
        infos = await view.store.get_many(uids)
        quota(sum(info.size for info in infos.values()))
    try:
        target = await folders.folder(name)
    except NoSuchFolder:
        return None
    if not uids:
        return [], 0
    if move:
        done = await view.store.move(uids, target)
    else:
        done = await view.store.copy(uids, target)
    status = await target.status()
    return done, status.uidvalidity
