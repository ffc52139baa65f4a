"""SEARCH over StringTransport: every RFC 3501 key, charsets, sets, UID SEARCH, MODSEQ."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_imap_harness import Session, World

DAY = 86400.0
T0 = 1_700_000_000.0  # 14-Nov-2023 22:13:20 UTC

MESSAGES = [
    (
        b"From: Alice Example <alice@example.org>\nTo: bob@example.org\n"
        b"Cc: carol@example.org\nSubject: Quarterly REPORT\n"
        b"Date: Tue, 14 Nov 2023 10:00:00 +0000\nX-Tag: red\n\nNumbers inside.\n",
        ["\\Seen", "\\Answered"],
        T0,
    ),
    (
        b"From: bob@example.org\nTo: alice@example.org\nBcc: hidden@example.org\n"
        b"Subject: =?utf-8?q?caf=C3=A9_menu?=\nDate: Wed, 15 Nov 2023 10:00:00 +0000\n\n"
        + b"long body " * 50
        + b"\n",
        ["\\Flagged", "$Important"],
        T0 + DAY,
    ),
    (
        b"From: dave@example.net\nTo: alice@example.org\nSubject: lunch\n"
        b"Date: Thu, 16 Nov 2023 10:00:00 +0000\n\nSee you at noon.\n",
        ["\\Deleted", "\\Draft"],
        T0 + 2 * DAY,
    ),
]


@pytest.fixture
def s(tmp_path: Path) -> Session:
    w = World(tmp_path)
    inbox = w.mailbox().folder("INBOX")
    for content, flags, date in MESSAGES:
        inbox.append(content, flags, date)
    inbox.claim_recent()  # old mail: RECENT, NEW and OLD see none
    session = w.connect()
    session.login()
    session.select()
    return session


def search(s: Session, criteria: str) -> bytes:
    reply = s.lines(f"q SEARCH {criteria}")
    assert reply[-1] == b"q OK Search completed.", reply
    [result] = [line for line in reply if line.startswith(b"* SEARCH")]
    return result


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ("ALL", b"* SEARCH 1 2 3"),
        ("ANSWERED", b"* SEARCH 1"),
        ("UNANSWERED", b"* SEARCH 2 3"),
        ("DELETED", b"* SEARCH 3"),
        ("UNDELETED", b"* SEARCH 1 2"),
        ("DRAFT", b"* SEARCH 3"),
        ("UNDRAFT", b"* SEARCH 1 2"),
        ("FLAGGED", b"* SEARCH 2"),
        ("UNFLAGGED", b"* SEARCH 1 3"),
        ("SEEN", b"* SEARCH 1"),
        ("UNSEEN", b"* SEARCH 2 3"),
        ("KEYWORD $important", b"* SEARCH 2"),
        ("UNKEYWORD $Important", b"* SEARCH 1 3"),
        ("RECENT", b"* SEARCH"),
        ("NEW", b"* SEARCH"),
        ("OLD", b"* SEARCH 1 2 3"),
        ("FROM alice", b"* SEARCH 1"),
        ("FROM EXAMPLE.ORG", b"* SEARCH 1 2"),
        ("TO alice", b"* SEARCH 2 3"),
        ("CC carol", b"* SEARCH 1"),
        ("BCC hidden", b"* SEARCH 2"),
        ('SUBJECT "quarterly report"', b"* SEARCH 1"),
        ('SUBJECT "CAFÉ"', b"* SEARCH 2"),
        ("HEADER X-Tag RED", b"* SEARCH 1"),
        ('HEADER X-Tag ""', b"* SEARCH 1"),
        ("BODY noon", b"* SEARCH 3"),
        ("TEXT numbers", b"* SEARCH 1"),
        ("TEXT dave", b"* SEARCH 3"),
        ("LARGER 400", b"* SEARCH 2"),
        ("SMALLER 150", b"* SEARCH 3"),
        ("BEFORE 15-Nov-2023", b"* SEARCH 1"),
        ("ON 15-Nov-2023", b"* SEARCH 2"),
        ("SINCE 15-Nov-2023", b"* SEARCH 2 3"),
        ("SENTBEFORE 15-Nov-2023", b"* SEARCH 1"),
        ("SENTON 16-Nov-2023", b"* SEARCH 3"),
        ("SENTSINCE 15-Nov-2023", b"* SEARCH 2 3"),
        ("NOT SEEN", b"* SEARCH 2 3"),
        ("OR SEEN FLAGGED", b"* SEARCH 1 2"),
        ("(OR SEEN FLAGGED) NOT ANSWERED", b"* SEARCH 2"),
        ("2:*", b"* SEARCH 2 3"),
        ("1,3", b"* SEARCH 1 3"),
        ("UID 2:3 UNDELETED", b"* SEARCH 2"),
        ("CHARSET UTF-8 SUBJECT lunch", b"* SEARCH 3"),
        ("CHARSET US-ASCII SUBJECT nothing-like-this", b"* SEARCH"),
        ("FROM {5+}\r\nalice", b"* SEARCH 1"),
    ],
)
def test_search_keys(s: Session, criteria: str, expected: bytes) -> None:
    """Each key selects what RFC 3501 says, as case-insensitive substrings for strings,
    with an empty '* SEARCH' when nothing matches."""
    assert search(s, criteria) == expected


def test_uid_search_answers_uids(s: Session) -> None:
    """UID SEARCH returns UIDs, not sequence numbers."""
    s.send("x STORE 1 +FLAGS (\\Deleted)")
    s.send("x STORE 3 -FLAGS (\\Deleted)")
    s.send("x EXPUNGE")
    assert s.lines("q UID SEARCH ALL") == [b"* SEARCH 2 3", b"q OK Search completed."]
    assert s.lines("q SEARCH ALL")[0] == b"* SEARCH 1 2"


def test_search_modseq_reports_highest(s: Session) -> None:
    """MODSEQ n finds messages changed at or after n and reports the highest modseq."""
    s.send("x STORE 2 +FLAGS (\\Seen)")
    reply = search(s, "MODSEQ 5")
    assert reply.startswith(b"* SEARCH 2 (MODSEQ ")


def test_unknown_charset_is_no_badcharset(s: Session) -> None:
    """An unsupported CHARSET gets NO [BADCHARSET] listing the supported ones."""
    assert s.send("q SEARCH CHARSET KOI8-R ALL") == (
        b"q NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset.\r\n"
    )


@pytest.mark.parametrize(
    "criteria",
    ["", "NOSUCHKEY", "FROM", "LARGER x", "BEFORE 32-Foo-2023", "OR SEEN", "UID", "()", "0:2"],
)
def test_bad_search_is_bad(s: Session, criteria: str) -> None:
    """Malformed criteria are answered BAD."""
    assert s.send(f"q SEARCH {criteria}".strip()).startswith(b"q BAD ")


@pytest.mark.parametrize(
    "criteria",
    ["NOT " * 10_000 + "ALL", "OR " * 5_000 + "ALL " * 5_001, "NOT " * 200 + "(NOT ALL)"],
)
def test_too_deep_search_is_bad_not_a_crash(s: Session, criteria: str) -> None:
    """NOT, OR and parentheses nested past MAX_SEARCH_DEPTH (200) are answered
    BAD with a clear text: no RecursionError, no NO [SERVERBUG], nothing
    logged as an unexpected error; the session goes on."""
    assert s.send(f"q SEARCH {criteria}") == (
        b"q BAD Error in IMAP command SEARCH: SEARCH criteria nested too deeply "
        b"(NOT, OR and parentheses: at most 200 levels).\r\n"
    )
    assert not [e for e in s.world.events if "log_failure" in e]
    assert s.send("n NOOP") == b"n OK NOOP completed.\r\n"


def test_deepest_allowed_search_is_answered(s: Session) -> None:
    """200 levels of NOT, or of OR, parse and are tested against every message."""
    assert search(s, "NOT " * 200 + "SEEN") == b"* SEARCH 1"
    assert search(s, "OR " * 200 + "DELETED " * 201) == b"* SEARCH 3"


@pytest.mark.parametrize(
    ("header", "needle", "found"),
    [
        (b"Subject: hello\n world\n\n", "hello world", True),  # across a fold
        (b"Subject: hello\n\tworld\n\n", "hello\tworld", True),
        (b"Subject: =?utf-8?q?caf=C3=A9_time?=\n\n", "caf\u00e9 time", True),  # encoded word
        (b"Subject: =?utf-8?q?caf=C3=A9_time?=\n\n", "time", True),
        (b"Subject: Quarterly REPORT\n\n", "quarterly report", True),  # case
        (b"Subject: nothing here\nTo: report@x\n\n", "report", False),  # other field
        (b"Subject: nothing here\n\n", "absent", False),
    ],
)
def test_header_search_quick_rejection_keeps_every_match(
    header: bytes, needle: str, found: bool
) -> None:
    """The flattened-header pre-check only ever rules out messages that could
    not match: folded values, encoded words and case all still match."""
    from pymta.imap.search import Candidate, _header_has
    from pymta.mailstore.interface import MessageInfo

    info = MessageInfo(
        uid=1,
        size=len(header),
        rfc822_size=len(header),
        internal_date=0.0,
        flags=frozenset(),
        keywords=frozenset(),
        modseq=1,
        filename="x",
    )
    candidate = Candidate(1, info, False, 1, 1, lambda: header, lambda: header)
    assert _header_has("subject", needle)(candidate) is found


def test_moving_candidate_reads_the_message_it_is_at() -> None:
    """One Candidate serves a whole SEARCH: at each message its loaders fetch
    that message's header and content, and nothing parsed for the message
    before (header values, flattened header, body text) carries over."""
    from pymta.imap.search import candidates
    from pymta.mailstore.interface import MessageInfo

    blocks = {1: b"Subject: one\n\n", 2: b"Subject: two\n\n"}
    bodies = {1: b"first body\n", 2: b"second body\n"}

    def info(uid: int) -> MessageInfo:
        return MessageInfo(uid, 1, 1, 0.0, frozenset(), frozenset(), uid, f"cur/{uid}")

    seen = []
    messages = [(1, info(1), True), (3, info(2), False)]
    for c in candidates(messages, 3, 2, blocks.__getitem__, lambda u: blocks[u] + bodies[u]):
        at = (c.msn, c.info.uid, c.recent, c.largest_msn, c.largest_uid)
        seen.append((at, c.header_values()["subject"], c.flat_header(), c.body_text()))
    assert seen == [
        ((1, 1, True, 3, 2), ["one"], b"subject: one", "first body\n"),
        ((3, 2, False, 3, 2), ["two"], b"subject: two", "second body\n"),
    ]
    assert list(candidates([], 0, 0, blocks.__getitem__, bodies.__getitem__)) == []


def test_header_search_on_maildir_reads_only_possible_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a Maildir folder whose headers are cached, a header SEARCH asks the
    cache once which messages may hold the needle and reads no other header:
    a Message-ID search over many messages loads one. Folded values, encoded
    words, case and messages not cached yet still match exactly as before."""
    from twisted.internet.task import Clock

    from pymta.mailstore import maildir_folder
    from pymta.mailstore.maildir import MaildirStore

    w = World(tmp_path, store=MaildirStore(Clock(), "host", fsync=False))
    inbox = w.mailbox().folder("INBOX")
    for n in range(1, 21):
        inbox.append(b"Message-ID: <m%d@example.test>\nSubject: plain %d\n\nbody\n" % (n, n))
    inbox.append(b"Message-ID: <Folded@Example.Test>\nSubject: long\n folded-WORD\n\nb\n")
    inbox.append(b"Message-ID: <e@x>\nSubject: =?utf-8?q?secret_word?=\n\nb\n")
    session = w.connect()
    session.login()
    session.select()
    assert search(session, "HEADER Message-ID <m7@example.test>") == b"* SEARCH 7"

    loaded: list[int] = []
    real = maildir_folder.MaildirFolder.header_bytes

    def counting(self: maildir_folder.MaildirFolder, uid: int) -> bytes:
        loaded.append(uid)
        return real(self, uid)

    monkeypatch.setattr(maildir_folder.MaildirFolder, "header_bytes", counting)
    assert search(session, "HEADER Message-ID <m13@example.test>") == b"* SEARCH 13"
    assert loaded == [13, 22]  # the match, and the message with an encoded word
    assert search(session, "SUBJECT folded-word") == b"* SEARCH 21"
    assert search(session, "SUBJECT secret") == b"* SEARCH 22"
    assert search(session, 'SUBJECT "long folded"') == b"* SEARCH 21"  # white space: per message
    inbox.append(b"Message-ID: <late@x>\nSubject: late arrival\n\nb\n")  # not cached yet
    assert session.lines("n NOOP")[-1] == b"n OK NOOP completed."
    assert search(session, "SUBJECT arrival") == b"* SEARCH 23"
