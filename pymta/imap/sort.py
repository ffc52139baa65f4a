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

:func:`gather` reads what each found message needs from its header block
(:data:`SLICE` messages per reactor turn, after the cache is filled in a
thread, so a SORT of 100,000 messages lets other sessions in between) and
keeps them for the next time (:mod:`pymta.imap.sortcache`); THREAD
(:mod:`pymta.imap.thread`) uses it too. :func:`off_reactor` orders (or
threads) a result of more than :data:`SLICE` messages in a worker thread.

Untrusted input: the arguments (BAD on bad syntax, ``NO [BADCHARSET]`` for
an unknown charset) and the messages' header fields. Reads the header cache
and index; writes nothing but the session's saved result (SAVE); logs
nothing itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred

from pymta.imap import context, sortcache
from pymta.imap.message_commands import Found, find, one_slice_per_turn, search_failed
from pymta.imap.parser import Atom, ParseError, Token
from pymta.imap.results import (
    SEARCH_OPTIONS,
    ReturnOptions,
    ordered_set,
    parse_return,
    partial_item,
)
from pymta.imap.search import CHARSETS, BadCharset, parse_search
from pymta.imap.sortkeys import (
    address_mailbox,
    base_subject,
    display_name,
    sent_date,
    sort_header_fields,
)
from pymta.mailstore.interface import IFolder, MailStoreError, MessageInfo
from pymta.mailstore.prefetch import prefetch_headers

if TYPE_CHECKING:
    from pymta.imap.session import IMAPSession

#: Messages whose header a SORT or THREAD reads per reactor turn.
SLICE = 2048

#: The sort criteria (RFC 5256 3, RFC 5957 DISPLAYFROM/DISPLAYTO).
CRITERIA = frozenset(
    {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}
)
#: Criteria answered from the index alone.
_INDEX_ONLY = frozenset({"ARRIVAL", "SIZE"})


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


def key_of(name: str, info: MessageInfo, values: dict[str, list[str]]) -> Any:
    """What criterion ``name`` compares for one message."""
    if name == "ARRIVAL":
        return int(info.internal_date)
    if name == "SIZE":
        return info.rfc822_size
    if name == "DATE":
        dates = values.get("date")
        return sent_date(dates[0] if dates else None, info.internal_date)
    if name == "SUBJECT":
        subjects = values.get("subject")
        return base_subject(subjects[0])[0] if subjects else ""
    if name in ("FROM", "TO", "CC"):
        return address_mailbox(values.get(name.lower()))
    return display_name(values.get(name[7:].lower()))  # DISPLAYFROM, DISPLAYTO


#: (name, key function, whether it reads the header and is kept in
#: pymta.imap.sortcache) of one key gather reads.
Field = tuple[str, Callable[[MessageInfo, dict[str, list[str]]], Any], bool]

_MISSING = object()


def sort_fields(names: Sequence[str]) -> list[Field]:
    return [(n, partial(key_of, n), n not in _INDEX_ONLY) for n in names]


def gather(
    s: IMAPSession,
    tag: bytes,
    command: str,
    found: Found,
    fields: Sequence[Field],
    then: Callable[[list[tuple[int, int, tuple[Any, ...]]]], Deferred[None] | None],
) -> Deferred[None] | None:
    """Call ``then`` with (sequence number, UID, the fields' keys) of each
    found message still there, in sequence order. Keys read from a header
    are kept (pymta.imap.sortcache); headers not kept yet are put into the
    header cache in a thread first, and big results are read :data:`SLICE`
    messages per reactor turn: then a Deferred is returned (firing when
    ``then`` has run), else None. An unexpected error on the way is
    answered NO [SERVERBUG] (``command`` names it in the log)."""
    assert s.view is not None
    view = s.view
    folder = view.folder
    kept = sortcache.folder_keys(folder, view.uids)
    tables = [kept.of(name) if cached else None for name, _, cached in fields]
    rows: list[tuple[int, int, tuple[Any, ...]]] = []
    empty: dict[str, list[str]] = {}

    def keys_of(u: int) -> tuple[Any, ...]:
        # The index record and the header only when a key needs them: a
        # sort whose keys are all kept reads neither.
        info: MessageInfo | None = None
        values: dict[str, list[str]] | None = None
        row = []
        for (_, compute, _), table in zip(fields, tables, strict=True):
            if table is None:
                info = info or folder.get(u)
                row.append(compute(info, empty))
                continue
            key = table.get(u, _MISSING)
            if key is _MISSING:
                info = info or folder.get(u)
                if values is None:
                    values = sort_header_fields(folder.header_bytes(u))
                key = table[u] = compute(info, values)
            row.append(key)
        return tuple(row)

    def kept_steps(kept: list[dict[int, Any]]) -> Iterator[None]:
        # Every key is kept already (a folder sorted before): no function
        # call per message.
        msn_of, gone, uids = view.msn, view.is_expunged, found.uids
        for start in range(0, len(uids), SLICE):
            for u in uids[start : start + SLICE]:
                msn = msn_of(u)
                if msn is not None and not gone(u):
                    rows.append((msn, u, tuple([table[u] for table in kept])))
            yield

    def steps() -> Iterator[None]:
        if all_kept:
            yield from kept_steps([t for t in tables if t is not None])
            return
        for n, u in enumerate(found.uids, 1):
            msn = view.msn(u)
            if msn is None or view.is_expunged(u):
                continue
            try:
                rows.append((msn, u, keys_of(u)))
            except MailStoreError:
                continue  # expunged meanwhile by another program
            if n % SLICE == 0:
                yield

    def finish() -> Deferred[None] | None:
        sortcache.trim()
        return then(rows)

    def run() -> Deferred[None] | None:
        if s.lost:
            return None
        if len(found.uids) <= SLICE:
            for _ in steps():
                pass
            return finish()
        d = one_slice_per_turn(s, steps())
        d.addCallback(lambda _: None if s.lost else finish())
        d.addErrback(partial(search_failed, s, tag, command))
        return d

    live = [t for t in tables if t is not None]
    all_kept = False
    if live:
        wanted = set(found.uids)
        missing = sorted(set().union(*(wanted.difference(t) for t in live)))
        all_kept = not missing and len(live) == len(tables)
        filling = prefetch_headers(folder, missing, s.run_in_thread) if missing else None
        if filling is not None:
            # The cache is only a speed-up: a failed fill reads in the reactor.
            filling.addErrback(
                lambda f: s.log.failure("imap({user}): header prefetch", f, user=s.user)
            )
            after: Deferred[Any] = filling.addCallback(lambda _: run())
            after.addErrback(partial(search_failed, s, tag, command))
            return after
    return run()


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


def sort_rows(rows: list[tuple[int, int, tuple[Any, ...]]], keys: Sequence[SortKey]) -> None:
    """Order rows (in sequence order) by the keys, in place: one stable
    sort per key from the last to the first, so that equal messages stay
    in sequence order whatever REVERSE says (RFC 5256 3)."""
    for i in range(len(keys) - 1, -1, -1):
        rows.sort(key=lambda row: row[2][i], reverse=keys[i].reverse)


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
    fields = sort_fields([k.name for k in keys])
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
            context.SortOrder(tuple(k.reverse for k in keys), partial(_keys_of, fields)),
        )
        returns = ReturnOptions(frozenset(options), returns.partial)
    kept: list[tuple[int, tuple[Any, ...]]] = []

    def order(rows: list[tuple[int, int, tuple[Any, ...]]]) -> bytes:
        sort_rows(rows, keys)
        if updating is not None:
            kept.extend((u, k) for _, u, k in rows)
        numbers = [u if uid else msn for msn, u, _ in rows]
        if returns is None:
            return b"* SORT" + b"".join(b" %d" % n for n in numbers) + b"\r\n"
        if "SAVE" in returns.options:
            saved[:] = _saved(returns, [u for _, u, _ in rows])
        if returns.options != {"SAVE"}:
            return esort_line(tag, uid, returns, numbers)
        return b""

    saved: list[int] = []

    def answer(text: bytes) -> None:
        if returns is not None and "SAVE" in returns.options:
            s.saved = saved
        s.send(text)
        if updating is not None:
            context.sort_answered(s, updating, kept)
        s.ok(tag, b"Sort completed.", expunge=uid)

    def sort_found(rows: list[tuple[int, int, tuple[Any, ...]]]) -> Deferred[None] | None:
        return off_reactor(s, tag, "SORT", len(rows), partial(order, rows), answer)

    find(
        s,
        tag,
        uid,
        rest[2:],
        criteria,
        lambda found: gather(s, tag, "SORT", found, fields, sort_found),
        "SORT",
    )


def _keys_of(fields: Sequence[Field], folder: IFolder, u: int) -> tuple[Any, ...]:
    """One message's sort keys (a message joining an updating SORT)."""
    info = folder.get(u)
    needs_header = any(cached for _, _, cached in fields)
    values = sort_header_fields(folder.header_bytes(u)) if needs_header else {}
    return tuple(compute(info, values) for _, compute, _ in fields)


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
