"""SORT (RFC 5256, RFC 5957 SORT=DISPLAY) and ESORT (RFC 5267).

``SORT [RETURN (options)] (criteria) charset search-keys`` finds the
messages as SEARCH does (:func:`pymta.imap.message_commands.find`: body
keys in the scan workers, header keys after the header cache is filled in
a thread), then orders them by the criteria: ARRIVAL (INTERNALDATE), DATE
(sent date), SIZE (RFC822.SIZE), SUBJECT (base subject), FROM, TO, CC
(mailbox of the first address), DISPLAYFROM, DISPLAYTO (display name, RFC
5957), each optionally after REVERSE; messages that compare equal stay in
sequence order (RFC 5256 3). What is compared is in
:mod:`pymta.imap.sortkeys`. Answer: ``* SORT n ...``, or with RETURN an
``* ESEARCH`` whose MIN and MAX are the first and last of the sorted
result, ALL the result in sort order, and PARTIAL (RFC 9394) a window of
it by position.

:func:`fill_keys` gives the found messages with their keys: kept ones
from :mod:`pymta.imap.sortcache`, the others asked once of the mail
store's asynchronous API (``get_dated`` for the index keys,
``header_digests`` for the header keys: the store reads the headers
where it likes, the Maildir store in the scan worker processes and its
threads), so a SORT of 100,000 messages lets other sessions in between;
THREAD (:mod:`pymta.imap.thread`) uses it too. A few messages without
kept keys (fewer than :data:`COLUMNS_FIRST`) get every header key at
once (:data:`pymta.imap.sortdigest.SORT_KEYS`, which the store keeps in
its file for the next process). More, as in the first SORT of a big
folder, get first what the store keeps in that file
(``kept_digests``), then only the keys the criteria compare that are
missing (:class:`pymta.imap.sortdigest.SortColumnsDigest`: the Subject
field alone for SUBJECT; with the key from the same field, FROM with
DISPLAYFROM; as Dovecot reads only the fields a criterion needs), and
every key of those messages is asked in the background once no command
asked for keys of the folder for :data:`FILL_AFTER` seconds (then kept
on disk; a command that needs every key meanwhile waits for it).
:func:`sort_order` orders them: one stable sort per criterion, strings
compared by their kept ranks; :func:`off_reactor` orders (or threads) a
result of more than :data:`SLICE` messages in a worker thread. The order
and the answer are kept for the same messages sorted the same way again.

Untrusted input: the arguments (BAD on bad syntax, ``NO [BADCHARSET]`` for
an unknown charset) and the messages' header fields. Reads through the
store's asynchronous API; writes nothing but the session's saved result
(SAVE); logs only a background key request that failed unexpectedly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import CancelledError
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from pymta.imap import context, sortcache, sortkeys
from pymta.imap.message_commands import Found, find, search_failed
from pymta.imap.parser import Atom, ParseError, Token
from pymta.imap.results import (
    SEARCH_OPTIONS,
    ReturnOptions,
    ordered_set,
    parse_return,
    partial_item,
)
from pymta.imap.search import CHARSETS, BadCharset, parse_search
from pymta.mailstore.asyncstore import IAsyncFolder
from pymta.mailstore.gcpause import paused
from pymta.mailstore.interface import MessageInfo, known_date
from pymta.mailstore.prefetch import ThreadRunner

if TYPE_CHECKING:
    from pymta.imap.session import IMAPSession

_log = Logger(namespace="pymta.imap")

#: Messages whose header a SORT or THREAD reads per reactor turn.
SLICE = 2048

#: The sort criteria (RFC 5256 3, RFC 5957 DISPLAYFROM/DISPLAYTO).
CRITERIA = frozenset(
    {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}
)
#: Criteria answered from the index alone.
_INDEX_ONLY = frozenset({"ARRIVAL", "SIZE"})

#: A SORT that finds at least this many messages whose keys are not kept
#: asks the store for the keys its criteria compare first, and for every
#: key after its answer (see :func:`fill_keys`).
COLUMNS_FIRST = 4096


@dataclass(frozen=True)
class SortKey:
    name: str
    reverse: bool


def parse_criteria(token: Token) -> list[SortKey]:
    """``(REVERSE DATE SUBJECT)`` -> keys; ParseError on anything else."""
    if not isinstance(token, list) or not token:
        raise ParseError("SORT needs a list of sort criteria.")
    keys: list[SortKey] = []
    reverse = False
    for item in token:
        if not isinstance(item, Atom):
            raise ParseError("Invalid sort criterion.")
        word = item.upper()
        if word == "REVERSE" and not reverse:
            reverse = True
            continue
        if word not in CRITERIA:
            raise ParseError(f"Unknown sort criterion {word[:30]!r}.")
        keys.append(SortKey(word, reverse))
        reverse = False
    if reverse:
        raise ParseError("REVERSE needs a sort criterion after it.")
    return keys


def check_charset(token: Token) -> None:
    """SORT and THREAD name a charset for their search keys (RFC 5256)."""
    if isinstance(token, list):
        raise ParseError("Expected a charset.")
    name = token.decode("ascii", "replace") if isinstance(token, bytes) else str(token)
    if name.upper() not in CHARSETS:
        raise BadCharset(name)


#: The string criteria: their values are compared as ranks
#: (:meth:`pymta.imap.sortcache.FolderKeys.ranks`).
_STRING_FIELDS = {
    "SUBJECT": sortkeys.SUBJECT,
    "FROM": sortkeys.FROM,
    "TO": sortkeys.TO,
    "CC": sortkeys.CC,
    "DISPLAYFROM": sortkeys.DISPLAYFROM,
    "DISPLAYTO": sortkeys.DISPLAYTO,
}


def needs_header(keys: Sequence[SortKey]) -> bool:
    """Whether any of the criteria reads the header (not ARRIVAL or SIZE)."""
    return any(k.name not in _INDEX_ONLY for k in keys)


#: The header keys a first SORT asks for by criterion: with the one
#: computed from the same field at no cost (a SORT DISPLAYFROM after a SORT
#: FROM, or a THREAD after a SORT SUBJECT, then needs nothing more of it).
_CRITERION_COLUMNS = {
    "DATE": (sortkeys.DATE,),
    "SUBJECT": (sortkeys.SUBJECT, sortkeys.IS_REPLY),
    "FROM": (sortkeys.FROM, sortkeys.DISPLAYFROM),
    "DISPLAYFROM": (sortkeys.DISPLAYFROM, sortkeys.FROM),
    "TO": (sortkeys.TO, sortkeys.DISPLAYTO),
    "DISPLAYTO": (sortkeys.DISPLAYTO, sortkeys.TO),
    "CC": (sortkeys.CC,),
}


def header_columns(keys: Sequence[SortKey]) -> tuple[int, ...]:
    """The positions of the header keys a first SORT by these criteria
    asks for (see :data:`_CRITERION_COLUMNS`)."""
    positions = [p for k in keys for p in _CRITERION_COLUMNS.get(k.name, ())]
    return tuple(dict.fromkeys(positions))


@dataclass
class Keyed:
    """The found messages whose keys are all kept, in sequence order: their
    UIDs, their numbers as answered, and the folder's kept keys. A worker
    thread may read them (the keys of these messages are there and never
    change; more may be added meanwhile)."""

    kept: sortcache.FolderKeys
    uids: list[int]
    numbers: list[int]
    # The tables as they were (another session dropping the keys of the
    # messages it saw expunged replaces them, not changes them).
    headers: dict[int, sortkeys.HeaderKeys] = field(init=False)
    index: dict[int, tuple[int, int]] = field(init=False)
    columns: dict[int, dict[int, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.headers, self.index = self.kept.headers, self.kept.index
        self.columns = self.kept.columns

    def header_keys(self) -> list[sortkeys.HeaderKeys]:
        return list(map(self.headers.__getitem__, self.uids))

    def header_column(self, position: int) -> list[Any]:
        """The header key at ``position`` of each message (from its keys,
        or from those kept of that key alone)."""
        column = self.columns.get(position)
        headers = self.headers
        if column is None:
            return [headers[u][position] for u in self.uids]
        out = []
        for u in self.uids:
            keys = headers.get(u)
            out.append(column[u] if keys is None else keys[position])
        return out

    def index_keys(self) -> list[tuple[int, int]]:
        return list(map(self.index.__getitem__, self.uids))


def fill_keys(
    s: IMAPSession,
    tag: bytes,
    command: str,
    found: Found,
    header: bool,
    then: Callable[[Keyed], Deferred[None] | None],
    columns: tuple[int, ...] | None = None,
) -> Deferred[None] | None:
    """Call ``then`` with the found messages still there and their keys
    (index keys always, header keys when ``header``: every one, or only
    those at ``columns`` when given). Keys not kept yet are asked of the
    store (see the module doc) and kept :data:`SLICE` * 8 messages per
    reactor turn. With ``columns``, and :data:`COLUMNS_FIRST` messages or
    more without them, the store computes those keys only (as Dovecot
    reads only the fields a criterion needs), and every key of those
    messages is asked in the background once nothing asked for keys of
    the folder for :data:`FILL_AFTER` seconds (for the kept file, so a
    restarted server reads no message). Returns None when ``then`` ran
    at once, else a Deferred that fires after it; an unexpected error on
    the way is answered NO [SERVERBUG] (``command`` names it in the
    log)."""
    assert s.view is not None
    view = s.view
    kept = sortcache.folder_keys(view.store, view.uidvalidity, view.uids)
    index = kept.index
    if not header:
        need_header = []
    elif columns is None:
        headers = kept.headers
        need_header = [u for u in found.uids if u not in headers]
    else:
        has = kept.has_columns
        need_header = [u for u in found.uids if not has(u, columns)]
    if header:
        # Every message with header keys has its index keys.
        need_index = [u for u in need_header if u not in index]
    else:
        need_index = [u for u in found.uids if u not in index]
    lost: set[int] = set()

    def finish(_: object = None) -> Deferred[None] | None:
        if s.lost:
            return None
        uids, numbers = found.uids, found.numbers
        if lost or view.has_expunged():
            gone = view.is_expunged
            wanted = [
                (u, n) for u, n in zip(uids, numbers, strict=True) if u not in lost and not gone(u)
            ]
            uids = [u for u, _ in wanted]
            numbers = [n for _, n in wanted]
        sortcache.trim()
        return then(Keyed(kept, uids, numbers))

    if not need_index and not need_header:
        return finish()
    read = defer.ensureDeferred(_read_keys(s, kept, need_index, need_header, lost, columns))
    d: Deferred[None] = read.addCallback(finish)
    d.addErrback(partial(search_failed, s, tag, command))
    return d


async def _read_keys(
    s: IMAPSession,
    kept: sortcache.FolderKeys,
    need_index: list[int],
    need_header: list[int],
    lost: set[int],
    columns: tuple[int, ...] | None,
) -> None:
    """Keep the index keys of ``need_index`` and the header keys of
    ``need_header`` (every one, or those at ``columns``), asked of the
    store's asynchronous API; messages gone meanwhile go into ``lost``."""
    assert s.view is not None
    store = s.view.store
    if columns is None and kept.filling and not kept.filling.isdisjoint(need_header):
        # Every key of these is being asked of the store already: not twice.
        await kept.filled()
        need_header = [u for u in need_header if u not in kept.headers]
    if need_index:
        # The ARRIVAL key, and DATE's fallback: dates the store has not
        # read yet are read in its threads first.
        records = await store.get_dated(need_index)
        index, step = kept.index, SLICE * 8
        for start in range(0, len(need_index), step):
            if start:
                await _next_turn(s.clock)
            # A tuple per message: no cyclic collection walking the
            # heap meanwhile (pymta.mailstore.gcpause).
            with paused():
                for u in need_index[start : start + step]:
                    info = records.get(u)
                    if info is None:
                        lost.add(u)  # expunged meanwhile by another program
                        continue
                    # known_date's value, without a call per message.
                    date = info.internal_date
                    index[u] = (0 if date is None else int(date), info.rfc822_size)
    need_header = [u for u in need_header if u not in lost]
    if not need_header or s.lost:
        return
    if columns is not None and len(need_header) >= COLUMNS_FIRST:
        # Every key of those the store keeps (a restarted server's file),
        # then only the missing ones of the criteria's keys, computed.
        held = await store.kept_digests(need_header, sortcache.SORT_KEYS)
        if held:
            await _keep(s.clock, list(held), lambda part: kept.keep_many(held, part))
            need_header = [u for u in need_header if u not in held]
        if not need_header or s.lost:
            return
        missing = kept.missing_columns(need_header, columns)
        digest = sortcache.SortColumnsDigest(missing)
        computed = await store.header_digests(need_header, digest, s.scan_in_thread, lambda: s.lost)
        # Those left out are gone: expunged meanwhile, or unreadable.
        await _keep(
            s.clock,
            need_header,
            lambda part: lost.update(kept.keep_columns(missing, computed, part)),
        )
        _fill_later(kept, store, s.scan_in_thread, s.clock)
        return
    # The store reads the headers where it likes (its worker processes for
    # files not read before, its threads for cached ones, its kept file).
    computed = await store.header_digests(
        need_header, sortcache.SORT_KEYS, s.scan_in_thread, lambda: s.lost
    )
    # Those left out are gone: expunged meanwhile, or unreadable.
    await _keep(s.clock, need_header, lambda part: lost.update(kept.keep_many(computed, part)))


async def _keep(clock: IReactorTime, uids: list[int], keep: Callable[[list[int]], object]) -> None:
    """``keep`` :data:`SLICE` of ``uids`` at a time, one per reactor turn."""
    for start in range(0, len(uids), SLICE):
        if start:
            await _next_turn(clock)
        keep(uids[start : start + SLICE])


#: Seconds without a SORT or THREAD asking for keys of a folder after which
#: every key of its messages that have only some is asked in the background.
FILL_AFTER = 5.0


def _fill_later(
    kept: sortcache.FolderKeys,
    store: IAsyncFolder,
    workers: ThreadRunner | None,
    clock: IReactorTime,
) -> None:
    """Ask every key of the messages of ``kept`` that have only some in
    :data:`FILL_AFTER` seconds, or that long after the next call."""
    if kept.fill_call is not None and kept.fill_call.active():
        kept.fill_call.reset(FILL_AFTER)
        return

    def start() -> None:
        uids = kept.partial_uids()
        if uids:
            kept.start_filling(uids)
            filling = defer.ensureDeferred(_fill_rest(kept, store, workers, clock, uids))
            filling.addErrback(_fill_failed)

    kept.fill_call = clock.callLater(FILL_AFTER, start)


async def _fill_rest(
    kept: sortcache.FolderKeys,
    store: IAsyncFolder,
    workers: ThreadRunner | None,
    clock: IReactorTime,
    uids: list[int],
) -> None:
    """(Background) every header key of ``uids``, asked of the store (which
    keeps them in its file) and kept; :meth:`FolderKeys.done_filling`
    whatever happens."""
    try:
        computed = await store.header_digests(uids, sortcache.SORT_KEYS, workers, lambda: False)
        await _keep(clock, uids, lambda part: kept.keep_many(computed, part))
    finally:
        kept.done_filling(uids)


def _fill_failed(failure: Failure) -> None:
    """Every key asked in the background could not be had (a later
    command asks again); the server stopping is not worth a word."""
    if not failure.check(CancelledError, BrokenProcessPool):
        _log.failure("imap: background sort keys failed", failure)


def _next_turn(clock: IReactorTime) -> Deferred[None]:
    """Fires in the next reactor turn (other sessions are served first)."""
    turn: Deferred[None] = Deferred()
    clock.callLater(0, turn.callback, None)
    return turn


def off_reactor(
    s: IMAPSession,
    tag: bytes,
    command: str,
    count: int,
    work: Callable[[], bytes],
    answer: Callable[[bytes], None],
) -> Deferred[None] | None:
    """``answer(work())``: the work (ordering or threading ``count``
    messages, on data nobody else touches) in a worker thread when there
    are more than :data:`SLICE` of them, so the reactor keeps serving
    other sessions (it gets the interpreter back every few milliseconds);
    the answer is sent from the reactor thread."""
    if s.run_in_thread is None or count <= SLICE:
        answer(work())
        return None
    d: Deferred[Any] = s.run_in_thread(work)
    d.addCallback(lambda text: None if s.lost else answer(text))
    d.addErrback(partial(search_failed, s, tag, command))
    return d


def sort_order(keyed: Keyed, keys: Sequence[SortKey]) -> list[int]:
    """The positions in ``keyed`` in sort order: one stable sort per key
    from the last to the first, so that equal messages stay in sequence
    order whatever REVERSE says (RFC 5256 3). Strings are compared through
    their ranks. Reads only ``keyed`` (a worker thread may run it)."""
    order = list(range(len(keyed.uids)))
    for key in reversed(keys):
        order.sort(key=_column(keyed, key.name).__getitem__, reverse=key.reverse)
    return order


def _column(keyed: Keyed, name: str) -> list[Any]:
    """What criterion ``name`` compares, for each message of ``keyed``."""
    if name == "ARRIVAL":
        return [k[0] for k in keyed.index_keys()]
    if name == "SIZE":
        return [k[1] for k in keyed.index_keys()]
    if name == "DATE":
        return keyed.header_column(sortkeys.DATE)
    position = _STRING_FIELDS[name]
    return keyed.kept.ranks(position, keyed.header_column(position))


def message_keys(
    keys: Sequence[SortKey], store: IAsyncFolder, records: Sequence[MessageInfo]
) -> Deferred[dict[int, tuple[Any, ...]]]:
    """What each criterion compares for each of these messages, as values
    (not ranks), by UID: for messages joining an updating SORT (RFC 5267
    CONTEXT=SORT), compared with :func:`sorted_keys`' rows. A message gone
    meanwhile is left out."""
    index = {m.uid: (int(known_date(m)), m.rfc822_size) for m in records}

    def of(blocks: dict[int, bytes] | None) -> dict[int, tuple[Any, ...]]:
        out: dict[int, tuple[Any, ...]] = {}
        for u, at in index.items():
            header = None
            if blocks is not None:
                block = blocks.get(u)
                if block is None:
                    continue  # gone
                header = sortcache.SORT_KEYS(block, at[0])
            out[u] = tuple(_value(k.name, header, at) for k in keys)
        return out

    if not needs_header(keys):
        return succeed(of(None))
    return store.headers(list(index)).addCallback(of)


def sorted_keys(
    keyed: Keyed, keys: Sequence[SortKey], order: Sequence[int]
) -> list[tuple[int, tuple[Any, ...]]]:
    """(UID, the values :func:`message_keys` gives) of the messages at the
    positions ``order`` (a sort's result), in that order."""
    index = keyed.index_keys()
    headers: list[sortkeys.HeaderKeys | None] = (
        list(keyed.header_keys()) if needs_header(keys) else [None] * len(index)
    )
    return [
        (keyed.uids[i], tuple(_value(k.name, headers[i], index[i]) for k in keys)) for i in order
    ]


def _value(name: str, header: sortkeys.HeaderKeys | None, index: tuple[int, int]) -> Any:
    if name == "ARRIVAL":
        return index[0]
    if name == "SIZE":
        return index[1]
    assert header is not None
    if name == "DATE":
        return header[sortkeys.DATE]
    return header[_STRING_FIELDS[name]]


def numbers_text(numbers: Iterable[int]) -> bytes:
    """``1 5 3``: numbers as an answer lists them."""
    return " ".join(map(str, numbers)).encode("ascii")


ESORT_OPTIONS = SEARCH_OPTIONS


def sort(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    returns, rest = parse_return(args, ESORT_OPTIONS | context.CONTEXT_OPTIONS)
    if len(rest) < 3:
        raise ParseError("SORT takes sort criteria, a charset and search keys.")
    keys = parse_criteria(rest[0])
    try:
        check_charset(rest[1])
        criteria = parse_search(rest[2:], saved=set(s.saved), rev2=s.rev2)
    except BadCharset:
        if returns is not None and "SAVE" in returns.options:
            s.saved = []  # RFC 5182 2.1: a failed search empties $
        s.no(tag, b"[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset.", expunge=uid)
        return
    if criteria.uses_modseq:
        s.condstore = True
    header = needs_header(keys)
    order_key = ("SORT", tuple(keys))
    text_key = ("SORT text", tuple(keys))
    updating = None
    if returns is not None and returns.options & context.CONTEXT_OPTIONS:
        # RFC 5267 CONTEXT=SORT (pymta.imap.context).
        options, updating = context.start(
            s,
            tag,
            uid,
            set(returns.options),
            returns.partial,
            rest[2:],
            criteria,
            context.SortOrder(tuple(k.reverse for k in keys), partial(message_keys, keys)),
        )
        returns = ReturnOptions(frozenset(options), returns.partial)
    # The keys a first SORT asks for before every other (an updating SORT
    # compares a joining message's keys with every row's: all of them).
    columns = header_columns(keys) if updating is None else None
    # The (UID, keys) rows an updating SORT starts from.
    context_rows: list[tuple[int, tuple[Any, ...]]] = []

    def order(keyed: Keyed, kept_order: list[int] | None) -> bytes:
        sorted_at = kept_order if kept_order is not None else sort_order(keyed, keys)
        orders.append(sorted_at)
        if updating is not None:
            context_rows.extend(sorted_keys(keyed, keys, sorted_at))
        numbers = list(map(keyed.numbers.__getitem__, sorted_at))
        if returns is None:
            return b"* SORT " + numbers_text(numbers) + b"\r\n" if numbers else b"* SORT\r\n"
        if "SAVE" in returns.options:
            saved[:] = _saved(returns, list(map(keyed.uids.__getitem__, sorted_at)))
        if returns.options != {"SAVE"}:
            return esort_line(tag, uid, returns, numbers)
        return b""

    saved: list[int] = []
    orders: list[list[int]] = []

    def sort_found(keyed: Keyed) -> Deferred[None] | None:
        kept = keyed.kept

        def answer(text: bytes) -> None:
            if kept_order is None and orders:
                kept.keep_result(order_key, keyed.uids, [], orders[0])
            if returns is None:
                kept.keep_result(text_key, keyed.uids, keyed.numbers, text)
            if returns is not None and "SAVE" in returns.options:
                s.saved = saved
            s.send(text)
            if updating is not None:
                context.sort_answered(s, updating, context_rows)
            s.ok(tag, b"Sort completed.", expunge=uid)

        # The same messages sorted the same way before: the kept order
        # (and the kept answer, when they are numbered the same).
        kept_order = kept.result(order_key, keyed.uids, [])
        if kept_order is not None and returns is None:
            text = kept.result(text_key, keyed.uids, keyed.numbers)
            if text is not None:
                answer(text)
                return None
        work = partial(order, keyed, kept_order)
        return off_reactor(s, tag, "SORT", len(keyed.uids), work, answer)

    find(
        s,
        tag,
        uid,
        rest[2:],
        criteria,
        lambda found: fill_keys(s, tag, "SORT", found, header, sort_found, columns),
        "SORT",
    )


def _saved(returns: ReturnOptions, uids: list[int]) -> list[int]:
    """What SAVE keeps (RFC 5182 2.4): with MIN and/or MAX but neither ALL
    nor COUNT only those messages, else every match (kept in UID order)."""
    opts = returns.options
    if not uids or opts & {"ALL", "COUNT"} or not opts & {"MIN", "MAX"}:
        return sorted(uids)
    kept = set()
    if "MIN" in opts:
        kept.add(uids[0])
    if "MAX" in opts:
        kept.add(uids[-1])
    return sorted(kept)


def esort_line(tag: bytes, uid: bool, returns: ReturnOptions, numbers: list[int]) -> bytes:
    """``* ESEARCH (TAG "a") UID MIN 4 MAX 2 COUNT 3 ALL 4,1:2``: MIN and
    MAX are the first and last message in sort order (RFC 5267 3.2)."""
    opts = returns.options
    line = b'* ESEARCH (TAG "' + tag + b'")'
    if uid:
        line += b" UID"
    if numbers:
        if "MIN" in opts:
            line += b" MIN %d" % numbers[0]
        if "MAX" in opts:
            line += b" MAX %d" % numbers[-1]
    if "COUNT" in opts:
        line += b" COUNT %d" % len(numbers)
    if numbers and "ALL" in opts:
        line += b" ALL " + ordered_set(numbers)
    if returns.partial is not None:
        line += partial_item(numbers, returns.partial)
    return line + b"\r\n"
