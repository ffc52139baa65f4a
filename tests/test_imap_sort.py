"""SORT, SORT=DISPLAY, ESORT and PARTIAL over StringTransport (RFC 5256,
5957, 5267, 9394), and the base subject and sent date they compare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pymta.imap import sort as sort_module
from pymta.imap.results import Partial, ordered_set, partial_window
from pymta.imap.sortkeys import base_subject, display_name, sent_date
from tests.test_imap_harness import Session, World

T0 = 1_700_000_000.0

#: (header, internal date). Sizes grow with the body padding.
MESSAGES = [
    (
        b"From: Zed <zed@x.org>\nTo: b@x.org\nCc: c@x.org\nSubject: Re: lunch\n"
        b"Date: Wed, 15 Nov 2023 10:00:00 +0000\n",
        T0 + 30,
        40,
    ),
    (
        b"From: =?utf-8?q?=C3=A9mile?= <amy@x.org>\nTo: a@x.org\nSubject: [list] budget\n"
        b"Date: Tue, 14 Nov 2023 10:00:00 +0000\n",
        T0 + 10,
        5,
    ),
    (
        b"From: bob@x.org\nTo: Carl <c@x.org>\nSubject: Fwd: Lunch (fwd)\n"
        b"Date: Tue, 14 Nov 2023 09:00:00 -0200\n",
        T0 + 20,
        80,
    ),
    (b"From: Amy <amy@x.org>\nSubject: budget\nDate: not a date\n", T0 + 20, 10),
]


@pytest.fixture
def s(tmp_path: Path) -> Session:
    w = World(tmp_path)
    inbox = w.mailbox().folder("INBOX")
    for header, date, pad in MESSAGES:
        inbox.append(header + b"\n" + b"x" * (pad * 100) + b"\n", [], date)
    session = w.connect()
    session.login()
    session.select()
    return session


def sort(s: Session, command: str) -> list[bytes]:
    reply = s.lines(f"q {command}")
    assert reply[-1] == b"q OK Sort completed.", reply
    return reply[:-1]


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ("ARRIVAL", b"* SORT 2 3 4 1"),  # 3 and 4 arrived in the same second: by number
        ("REVERSE ARRIVAL", b"* SORT 1 3 4 2"),  # ties stay in sequence order
        ("SIZE", b"* SORT 2 4 1 3"),
        ("DATE", b"* SORT 2 3 4 1"),  # 3 is 11:00 UTC; 4 has no valid date: INTERNALDATE
        ("SUBJECT", b"* SORT 2 4 1 3"),  # BUDGET, BUDGET, LUNCH, LUNCH
        ("SUBJECT REVERSE DATE", b"* SORT 4 2 1 3"),
        ("FROM", b"* SORT 2 4 3 1"),  # amy amy bob zed
        ("TO", b"* SORT 4 2 1 3"),  # none sorts first, then a, b, c
        ("CC", b"* SORT 2 3 4 1"),
        ("DISPLAYFROM", b"* SORT 4 3 1 2"),  # AMY, BOB@X.ORG, ZED, ÉMILE
        ("DISPLAYTO", b"* SORT 4 2 1 3"),  # "", A@X.ORG, B@X.ORG, CARL
    ],
)
def test_sort_criteria(s: Session, criteria: str, expected: bytes) -> None:
    """Each RFC 5256 / RFC 5957 criterion orders by what it compares, REVERSE
    turns one key around, and equal messages stay in sequence order."""
    assert sort(s, f"SORT ({criteria}) UTF-8 ALL") == [expected]


def test_sort_with_search_keys_and_uid(s: Session) -> None:
    """SORT searches first (any SEARCH key), and UID SORT answers with UIDs."""
    assert sort(s, "SORT (SIZE) US-ASCII SUBJECT budget") == [b"* SORT 2 4"]
    assert sort(s, "UID SORT (REVERSE SIZE) UTF-8 2:4") == [b"* SORT 3 4 2"]
    assert sort(s, "SORT (SIZE) UTF-8 SUBJECT nothing") == [b"* SORT"]


def test_sort_errors(s: Session) -> None:
    """An unknown charset is NO [BADCHARSET]; bad criteria are BAD."""
    reply = s.lines("q SORT (DATE) KOI8-R ALL")
    assert reply == [b"q NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset."]
    for bad in (
        "SORT (WEIGHT) UTF-8 ALL",
        "SORT () UTF-8 ALL",
        "SORT (REVERSE) UTF-8 ALL",
        "SORT DATE UTF-8 ALL",
        "SORT (DATE) UTF-8",
    ):
        assert s.lines(f"q {bad}")[-1].startswith(b"q BAD "), bad


def test_esort_return_options(s: Session) -> None:
    """ESORT: MIN and MAX are the first and last in sort order, ALL keeps
    the sort order, COUNT counts; RETURN () means ALL."""
    assert sort(s, "SORT RETURN (MIN MAX COUNT) (SIZE) UTF-8 ALL") == [
        b'* ESEARCH (TAG "q") MIN 2 MAX 3 COUNT 4'
    ]
    assert sort(s, "SORT RETURN () (REVERSE ARRIVAL) UTF-8 ALL") == [
        b'* ESEARCH (TAG "q") ALL 1,3:4,2'
    ]
    assert sort(s, "UID SORT RETURN (COUNT ALL) (SIZE) UTF-8 SUBJECT nothing") == [
        b'* ESEARCH (TAG "q") UID COUNT 0'
    ]


def test_sort_return_save_feeds_dollar(s: Session) -> None:
    """SORT RETURN (SAVE) keeps the result for ``$`` (RFC 5182) and sends no ESEARCH."""
    assert sort(s, "SORT RETURN (SAVE) (SIZE) UTF-8 SUBJECT lunch") == []
    reply = s.lines("f FETCH $ (UID)")
    assert reply[:-1] == [b"* 1 FETCH (UID 1)", b"* 3 FETCH (UID 3)"]


def test_partial_on_sort_and_search(s: Session) -> None:
    """PARTIAL (RFC 9394) gives a window of the result by position, from
    the start or the end, NIL when empty; ``4:2`` is ``2:4``; a single
    number, ``*`` or mixed signs are BAD, and so is PARTIAL with ALL."""
    assert sort(s, "SORT RETURN (PARTIAL 4:2) (SIZE) UTF-8 ALL") == [
        b'* ESEARCH (TAG "q") PARTIAL (2:4 4,1,3)'
    ]
    assert sort(s, "SORT RETURN (PARTIAL -1:-2) (SIZE) UTF-8 ALL") == [
        b'* ESEARCH (TAG "q") PARTIAL (-1:-2 1,3)'
    ]
    reply = s.lines("r SEARCH RETURN (PARTIAL 5:9) ALL")
    assert reply == [b'* ESEARCH (TAG "r") PARTIAL (5:9 NIL)', b"r OK Search completed."]
    reply = s.lines("r UID SEARCH RETURN (COUNT PARTIAL 2:3) ALL")
    assert reply[0] == b'* ESEARCH (TAG "r") UID COUNT 4 PARTIAL (2:3 2:3)'
    for bad in ("1", "1:*", "*:1", "0:3", "-1:2", "1:2 ALL"):
        reply = s.lines(f"r SEARCH RETURN (PARTIAL {bad}) ALL")
        assert reply[-1].startswith(b"r BAD "), bad


def test_big_sort_runs_in_slices(s: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SORT over more messages than one slice reads their headers over
    several reactor turns (other sessions are served in between) and then
    answers; a command pipelined behind it waits for it."""
    monkeypatch.setattr(sort_module, "SLICE", 1)
    clock = s.world.clock
    turns = 0
    real_call_later = clock.callLater

    def counting(delay: float, f: object, *a: object, **kw: object) -> object:
        nonlocal turns
        turns += delay == 0
        return real_call_later(delay, f, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(clock, "callLater", counting)
    out = s.send("q SORT (SUBJECT) UTF-8 ALL\r\nn NOOP")
    assert out == b""  # the first slice is read; the rest waits for the reactor
    clock.advance(0)
    out += s.read()
    assert turns == 3  # the reactor gets a turn between one message and the next
    assert out == b"* SORT 2 4 1 3\r\nq OK Sort completed.\r\nn OK NOOP completed.\r\n"


@pytest.mark.parametrize(
    ("subject", "base", "is_reply"),
    [
        ("Re: lunch", "LUNCH", True),
        ("RE:   Re[2]: [list]  lunch  ", "LUNCH", True),
        ("[list] Fwd: lunch (fwd) (FWD)", "LUNCH", True),
        ("[Fwd: [list] lunch]", "LUNCH", True),
        ("[list]", "[LIST]", False),  # a blob that is all there is stays
        ("[a][b] Re: c", "C", True),
        ("Rest: easy", "REST: EASY", False),
        ("=?utf-8?q?Re=3A_caf=C3=A9?=", "CAFÉ", True),
        ("lunch\t  at\r\n noon", "LUNCH AT NOON", False),
        ("", "", False),
        # The short path for one leading Re:/Fw:/Fwd: agrees with the steps.
        ("Re :  lunch  at noon ", "LUNCH AT NOON", True),
        ("fwd:lunch", "LUNCH", True),
        ("Re: a: b", "A: B", True),
        ("Re: [list] lunch", "LUNCH", True),
        ("Re:", "", True),
        ("Rex: lunch", "REX: LUNCH", False),
    ],
)
def test_base_subject(subject: str, base: str, is_reply: bool) -> None:
    """RFC 5256 2.1: encoded words decoded, white space collapsed, reply and
    forward markers, blobs and [fwd: ...] removed, and reported."""
    assert base_subject(subject) == (base, is_reply)


def test_sent_date_and_display_name() -> None:
    """The sent date is the Date in UTC or else INTERNALDATE (RFC 5256 2.2);
    the display name is decoded, or the address, or a group's name."""
    assert sent_date("Tue, 14 Nov 2023 09:00:00 -0200", 5.0) == 1699959600
    assert sent_date("garbage", 5.9) == 5
    assert sent_date(None, 7.0) == 7
    assert display_name(['"Foo  Bar" <f@b.c>']) == "FOO BAR"
    assert display_name(["<f@b.c>"]) == "F@B.C"
    assert display_name(["team: a@b.c, d@e.f;"]) == "TEAM"
    assert display_name(None) == ""


def test_result_sets() -> None:
    """Results in sort order keep only ascending runs as ranges; windows
    count from the start or the end."""
    assert ordered_set([5, 3, 4, 2, 1]) == b"5,3:4,2,1"
    assert ordered_set([1, 2, 3]) == b"1:3"
    assert partial_window([10, 20, 30, 40], Partial(2, 3)) == [20, 30]
    assert partial_window([10, 20, 30, 40], Partial(-1, -2)) == [30, 40]
    assert partial_window([10, 20], Partial(-3, -9)) == []


def test_keys_are_kept_for_the_next_sort(s: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second SORT or THREAD of the folder reads no header: the keys of
    the first are kept (pymta.imap.sortcache); a message that arrived since
    is read, alone; the answers stay the same."""
    folder = s.proto.view.store.folder  # type: ignore[union-attr, attr-defined]
    cls = type(folder)
    real = cls.header_bytes
    read: list[int] = []

    def counting(self: object, uid: int) -> bytes:
        read.append(uid)
        return real(self, uid)

    monkeypatch.setattr(cls, "header_bytes", counting)
    assert sort(s, "SORT (SUBJECT) UTF-8 ALL") == [b"* SORT 2 4 1 3"]
    assert sorted(read) == [1, 2, 3, 4]
    read.clear()
    assert sort(s, "SORT (SUBJECT) UTF-8 ALL") == [b"* SORT 2 4 1 3"]
    # Every key of a message comes from the one read: other criteria and
    # THREAD need no header either.
    assert sort(s, "SORT (FROM) UTF-8 ALL") == [b"* SORT 2 4 3 1"]
    assert sort(s, "SORT (REVERSE DATE DISPLAYTO) UTF-8 ALL") == [b"* SORT 1 4 3 2"]
    assert s.lines("t THREAD ORDEREDSUBJECT UTF-8 ALL")[0] == b"* THREAD (2 4)(3 1)"
    assert read == []
    folder.append(b"Subject: aardvark\n\nx\n")
    assert s.lines("n NOOP")[-1] == b"n OK NOOP completed."
    assert sort(s, "SORT (SUBJECT) UTF-8 ALL") == [b"* SORT 5 2 4 1 3"]
    assert read == [5]


def test_kept_keys_are_bounded(s: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above sortcache.MAX_ENTRIES messages' keys the folder sorted least
    recently is dropped first; a folder alone above it keeps nothing."""
    from pymta.imap import sortcache

    sortcache.clear()
    monkeypatch.setattr(sortcache, "MAX_ENTRIES", 3)
    sort(s, "SORT (SUBJECT) UTF-8 ALL")  # 4 messages of one folder: over the bound
    assert sortcache._folders == {}
    monkeypatch.setattr(sortcache, "MAX_ENTRIES", 5)
    sort(s, "SORT (FROM) UTF-8 ALL")  # 4 messages of INBOX
    assert len(sortcache._folders) == 1
    other = s.world.mailbox().create_folder("Other")
    other.append(b"From: a@x\n\nx\n")
    other.append(b"From: b@x\n\nx\n")
    s.select("Other")
    sort(s, "SORT (FROM) UTF-8 ALL")  # 4 + 2: INBOX, used least recently, goes
    [(_, kept)] = sortcache._folders.values()
    assert kept.size() == 2 and set(kept.headers) == {1, 2}


def test_sort_header_fields_match_header_values() -> None:
    """The quick reader of the sort fields gives what the full header parser
    gives for them: folded lines unfolded, any case, CRLF or LF, repeats."""
    from pymta.imap.sortkeys import sort_header_fields
    from pymta.imap.structure import header_values

    header = (
        b"Received: from x\r\n\tby y\r\nSUBJECT : folded\r\n  subject line\r\n"
        b"From: A <a@x>\r\nX-Subject: no\r\nTo: b@x\nCc:\r\nReferences: <1@x>\r\n <2@x>\r\n"
        b"Date: Tue, 14 Nov 2023 10:00:00 +0000\r\nTo: second@x\r\n\r\n"
    )
    wanted = {"date", "subject", "from", "to", "cc", "message-id", "references", "in-reply-to"}
    full = {k: v for k, v in header_values(header).items() if k in wanted}
    assert sort_header_fields(header) == full
    assert full["to"] == ["b@x", "second@x"] and full["subject"] == ["folded  subject line"]
    other = (
        b"CC: c@x\nmessage-id: <m@x>\nMessage-Id: <n@x>\nIN-REPLY-TO: <r@x>\r\n"
        b"in-reply-to:\t<s@x>\nSubJect:\tx\x0c\xa0\n\n"
    )
    assert sort_header_fields(other) == {
        k: v for k, v in header_values(other).items() if k in wanted
    }


@pytest.mark.parametrize(
    "header",
    [
        b"Received: from x\r\n\tby y\r\nSUBJECT : Re: folded\r\n  subject line\r\n"
        b"From: A <a@x>\r\nX-Subject: no\r\nTo: b@x\nCc:\r\nReferences: <1@x>\r\n <2@x>\r\n"
        b"Date: Tue, 14 Nov 2023 10:00:00 +0000\r\nTo: second@x\r\n\r\n",
        b"subject: =?utf-8?q?Fwd=3A_caf=C3=A9?= (fwd)\nfrom: team: a@b.c, d@e.f;\n"
        b'TO: "Q, R" <q@r>\nDate: garbage\nMessage-ID: <m@x> <n@x>\n\n',
        b"From: (comment) x@y (Name)\nFrom: second@y\nCC: =?utf-8?b?w6k=?= <e@x>\n"
        b"Subject: [list] Re[2]: [fwd: plain]\nsubject: not the first\n"
        b"Date: Tue, 14 Nov 23 09:00 GMT\n\n",
        b"X-Other: value\nIn-Reply-To: <p@x> <q@x>\nin-reply-to: <r@x>\n\n",
        b"Subject:\n\tonly folded\nTo: undisclosed-recipients:;\nFrom: <>\n\n",
        b"",
    ],
)
def test_header_columns_are_the_header_keys(header: bytes) -> None:
    """The keys a first SORT asks for alone (sortkeys.header_columns, only
    their fields found) are, one by one and together, those every key
    computed at once gives."""
    from pymta.imap import sortkeys

    full = sortkeys.header_keys(sortkeys.sort_header_fields(header), 1_700_000_007.5)
    positions = tuple(range(sortkeys.REFERENCES + 1))
    for position in positions:
        assert sortkeys.header_columns(header, 1_700_000_007.5, (position,)) == (full[position],)
    assert sortkeys.header_columns(header, 1_700_000_007.5, positions) == full
    assert sortkeys.header_columns(header, 1_700_000_007.5, positions[::-1]) == full[::-1]


@pytest.mark.parametrize(
    "value",
    ["plain words", "  spaced\t out  ", "Dé jà vu", "a=b c", "x: y", "(fwd) z", "[a] b"],
)
def test_base_subject_quick_path_agrees(value: str) -> None:
    """Subjects without markers take a quick path that gives what the full
    extraction gives."""
    from pymta.imap import sortkeys

    quick = sortkeys.base_subject(value)
    slow = sortkeys.base_subject("[x]" + value)[0]  # a blob forces the full path
    assert quick[0] == (slow if value.strip() else quick[0])


def test_kept_answers_follow_the_folder(s: Session) -> None:
    """A kept SORT answer is given again only for the same messages with
    the same numbers: a message flagged away from a search, an expunge
    that renumbers, or UID instead of sequence numbers give a new answer."""
    assert sort(s, "SORT (SIZE) UTF-8 ALL") == [b"* SORT 2 4 1 3"]
    assert sort(s, "SORT (SIZE) UTF-8 ALL") == [b"* SORT 2 4 1 3"]
    assert sort(s, "SORT (SIZE) UTF-8 UNSEEN") == [b"* SORT 2 4 1 3"]
    s.lines("f STORE 4 +FLAGS (\\Seen)")
    assert sort(s, "SORT (SIZE) UTF-8 UNSEEN") == [b"* SORT 2 1 3"]
    s.lines("f STORE 2 +FLAGS (\\Deleted)")
    assert s.lines("e EXPUNGE")[0] == b"* 2 EXPUNGE"
    assert sort(s, "SORT (SIZE) UTF-8 ALL") == [b"* SORT 3 1 2"]
    assert sort(s, "UID SORT (SIZE) UTF-8 ALL") == [b"* SORT 4 1 3"]
    assert sort(s, "SORT (REVERSE SIZE) UTF-8 ALL") == [b"* SORT 2 1 3"]


@pytest.mark.parametrize(
    "value",
    [
        "Tue, 14 Nov 2023 09:00:00 -0200",
        "14 Nov 2023 23:59:60 +1400",
        "\tMon,14 Nov 2023 09:00:00 +0000 ",
        "1 Jan 1970 00:00:00 +0001",
        "31 Feb 2024 25:61:00 -0930",  # out of range: counted on, as email.utils does
        "Tue, 14 Nov 0023 09:00:00 +0000",  # a year below 1000: the general parser
        "Tue, 14 Nov 2023 09:00:00 +0000 (UTC)",
        "Tue, 14 Nov 23 09:00 GMT",
    ],
)
def test_sent_date_quick_path_agrees(value: str) -> None:
    """The usual Date form is read without email.utils, to the same second."""
    from email.utils import mktime_tz, parsedate_tz

    parsed = parsedate_tz(value)
    assert parsed is not None
    assert sent_date(value, 0.0) == int(mktime_tz(parsed))


def test_keys_are_kept_on_disk_for_the_next_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The header keys a SORT had the store read are written to the
    folder's pymta-sortkeys by the store; a new process (nothing kept in
    memory) sorts and threads the folder without reading a header; a
    file that does not parse is not used, and is written again."""
    from twisted.internet.task import Clock

    from pymta.imap import sortcache
    from pymta.mailstore import digests
    from pymta.mailstore.maildir import MaildirStore
    from tests.test_pop3_harness import sync_runner

    clock = Clock()
    clock.advance(1_700_000_000)
    world = World(tmp_path, store=MaildirStore(clock, hostname="h", fsync=False))
    inbox = world.mailbox().folder("INBOX")
    for header, date, pad in MESSAGES:
        inbox.append(header + b"\n" + b"x" * (pad * 100) + b"\n", [], date)
    s = world.connect()
    s.proto.run_in_thread = sync_runner
    s.login()
    s.select()
    sortcache.clear()
    assert sort(s, "SORT (SUBJECT) UTF-8 ALL") == [b"* SORT 2 4 1 3"]
    folder = s.proto.view.store.folder  # type: ignore[union-attr, attr-defined]
    stored = Path(folder.path) / "pymta-sortkeys"
    assert stored.read_bytes().startswith(b"pymta-sortkeys 2 V%d\n" % folder.uidvalidity)

    cls = type(folder)
    real = cls.header_bytes
    read: list[int] = []

    def counting(self: object, uid: int) -> bytes:
        read.append(uid)
        return real(self, uid)

    monkeypatch.setattr(cls, "header_bytes", counting)
    sortcache.clear()  # a new process
    assert sort(s, "SORT (FROM) UTF-8 ALL") == [b"* SORT 2 4 3 1"]
    assert s.lines("t THREAD ORDEREDSUBJECT UTF-8 ALL")[0] == b"* THREAD (2 4)(3 1)"
    assert read == []

    sortcache.clear()
    stored.write_bytes(b"pymta-sortkeys 2 V%d\n[[1,2]]\n[]\n" % folder.uidvalidity)
    assert sort(s, "SORT (FROM) UTF-8 ALL") == [b"* SORT 2 4 3 1"]
    assert sorted(read) == [1, 2, 3, 4]
    kept = digests.load(folder.path, folder.uidvalidity, sortcache.SORT_KEYS, lambda: {1, 2, 3, 4})
    assert len(kept) == 4


def test_cold_keys_are_computed_in_the_scan_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store reads the keys of messages whose header is not cached
    from their files in the scan workers the session hands it (here run
    at once), in batches, not through the folder's header reads; the
    answers are the same."""
    from twisted.internet.task import Clock

    from pymta.imap import sortcache
    from pymta.mailstore.maildir import MaildirStore
    from tests.test_pop3_harness import sync_runner

    clock = Clock()
    clock.advance(1_700_000_000)
    world = World(tmp_path, store=MaildirStore(clock, hostname="h", fsync=False))
    inbox = world.mailbox().folder("INBOX")
    for header, date, pad in MESSAGES:
        inbox.append(header + b"\n" + b"x" * (pad * 100) + b"\n", [], date)
    s = world.connect()
    s.proto.run_in_thread = sync_runner
    jobs: list[object] = []

    def workers(work: Any) -> Any:
        jobs.append(work)
        return sync_runner(work)

    s.proto.scan_in_thread = workers
    s.login()
    s.select()
    sortcache.clear()
    from pymta.mailstore import digests

    monkeypatch.setattr(digests, "AT_ONCE", 1)
    monkeypatch.setattr(digests, "BATCH", 3)
    folder = s.proto.view.store.folder  # type: ignore[union-attr, attr-defined]
    cls = type(folder)
    monkeypatch.setattr(cls, "header_bytes", lambda self, uid: pytest.fail("read in the reactor"))
    assert sort(s, "SORT (SUBJECT) UTF-8 ALL") == [b"* SORT 2 4 1 3"]
    assert len(jobs) == 2  # 4 messages in batches of 3
    assert s.lines("t THREAD ORDEREDSUBJECT UTF-8 ALL")[0] == b"* THREAD (2 4)(3 1)"
    assert len(jobs) == 2


@pytest.mark.parametrize(
    "criteria",
    ["SUBJECT", "REVERSE DATE", "FROM REVERSE SIZE", "ARRIVAL", "DISPLAYTO CC", "TO"],
)
def test_message_keys_order_as_sort_does(s: Session, criteria: str) -> None:
    """The values an updating SORT compares for a joining message
    (sort.message_keys) are those sort.sorted_keys gives the sorted rows,
    and ordered by them (REVERSE turned, ties by UID) they are the SORT's
    own order."""
    import functools

    from pymta.imap.message_commands import Found
    from pymta.imap.parser import Atom
    from pymta.imap.sort import fill_keys, message_keys, parse_criteria, sort_order, sorted_keys

    keys = parse_criteria([Atom(w) for w in criteria.split()])
    view = s.proto.view
    assert view is not None
    found = Found(list(view.uids), list(view.uids))
    rows: list[tuple[int, tuple[object, ...]]] = []

    def then(keyed: sort_module.Keyed) -> None:
        rows.extend(sorted_keys(keyed, keys, sort_order(keyed, keys)))

    fill_keys(s.proto, b"t", "SORT", found, sort_module.needs_header(keys), then)  # type: ignore[arg-type]
    records = view.store.folder.messages()
    joining: list[dict[int, tuple[object, ...]]] = []
    message_keys(keys, view.store, records).addCallback(joining.append)
    [values] = joining  # the memory store answers at once
    assert rows and [k for _, k in rows] == [values[u] for u, _ in rows]

    def compare(a: tuple[int, tuple[object, ...]], b: tuple[int, tuple[object, ...]]) -> int:
        for x, y, key in zip(a[1], b[1], keys, strict=True):
            if x != y:
                before = x < y  # type: ignore[operator]
                return (1 if before else -1) if key.reverse else (-1 if before else 1)
        return (a[0] > b[0]) - (a[0] < b[0])

    assert sorted(rows, key=functools.cmp_to_key(compare)) == rows
