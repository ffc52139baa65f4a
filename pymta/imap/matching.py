"""matching: SEARCH criteria tested through the store's asynchronous API.

What SEARCH (and SORT, THREAD, updating searches: :mod:`pymta.imap.context`)
does to find the messages that match, without reading the store through
its synchronous calls:

- a key that reads whole messages (BODY, TEXT): the store's ``scan``
  (:mod:`pymta.mailstore.filescan`), given a picklable
  :class:`pymta.imap.scan.SearchMatch` and the session's scan workers;
- header keys: the store's ``prefetch_headers`` first (a cold header
  cache is read in the store's threads), ``headers_may_contain`` once per
  needle of the criteria (:attr:`pymta.imap.search.Criteria.needles`),
  then :func:`test_part` per slice of messages;
- everything else reads the index records only.

:func:`test_part` tests in two passes so that only the header blocks a
test asks for are fetched: the first pass runs every test with no header
at hand (a test that asks for one is set aside: a Message-ID search rules
nearly every message out by the header cache's needle scan alone), the
second fetches the set-aside messages' blocks with one ``headers`` call
(answered at once from the cache) and tests them again. Tests are pure
functions of their candidate, so running one twice is harmless.

Untrusted input: the messages (through the tests). Reads through the
store; writes and logs nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from pymta.imap.search import Criteria, candidates
from pymta.mailstore.asyncstore import IAsyncFolder
from pymta.mailstore.interface import MailStoreError, MessageInfo, NoSuchMessage

#: (sequence number, index record, \\Recent) of a message under test.
Entry = tuple[int, MessageInfo, bool]

#: Needle -> the UIDs whose header may hold it (None: the store cannot tell).
Hits = dict[bytes, "Collection[int] | None"]


class _NeedsHeader(Exception):
    """(First pass) the test asked for a header block not fetched yet."""


async def header_hits(store: IAsyncFolder, criteria: Criteria, uids: Collection[int]) -> Hits:
    """Ready the header cache of ``uids`` for ``criteria`` (a cold cache
    filled in the store's threads) and ask where each needle may be."""
    hits: Hits = {}
    if not criteria.uses_header:
        return hits
    await store.prefetch_headers(uids)
    for needle in sorted(criteria.needles):
        # An RFC 2047 encoded word may hide the needle: never rule it out.
        hits[needle] = await store.headers_may_contain((needle, b"=?"), uids)
    return hits


def _no_content(uid: int) -> bytes:
    # Criteria that read whole messages go to the store's scan instead.
    raise RuntimeError("a test read a whole message outside the store's scan")


async def test_part(
    store: IAsyncFolder,
    entries: Sequence[Entry],
    criteria: Criteria,
    largest_msn: int,
    largest_uid: int,
    hits: Hits | None = None,
) -> tuple[list[Entry], set[int]]:
    """Test ``entries`` (criteria that read no whole message): those that
    match, in order, and the UIDs found gone (a header that cannot be
    read). Header blocks are fetched only for the messages whose test
    asks for one (see the module doc)."""
    test = criteria.test
    matched: list[int] = []  # positions in entries
    later: list[int] = []

    def unfetched(uid: int) -> bytes:
        raise _NeedsHeader

    position = 0
    for cand in candidates(entries, largest_msn, largest_uid, unfetched, _no_content, hits):
        try:
            if test(cand):
                matched.append(position)
        except _NeedsHeader:
            later.append(position)
        except MailStoreError:
            pass
        position += 1
    gone: set[int] = set()
    if later:
        asked = [entries[i] for i in later]
        blocks = await store.headers([info.uid for _, info, _ in asked])

        def fetched(uid: int) -> bytes:
            block = blocks.get(uid)
            if block is None:
                gone.add(uid)
                raise NoSuchMessage(f"UID {uid} is gone")
            return block

        cands = candidates(asked, largest_msn, largest_uid, fetched, _no_content, hits)
        for i, cand in zip(later, cands, strict=True):
            try:
                if test(cand):
                    matched.append(i)
            except MailStoreError:
                pass
        matched.sort()
    return [entries[i] for i in matched], gone
