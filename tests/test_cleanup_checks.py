"""Tests of cleanup's header/body checks (header_checks(5)) and automatic BCC:
each action on an in-memory Cleanup, Postfix's log lines, MIME classes,
body_checks_size_limit, FILTER refused at start, bounces left alone."""

from __future__ import annotations

import datetime
import io
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from pymta.cleanup import Cleanup, CleanupRejected
from pymta.cleanup.checks import SLICE, SLICED_SIZE
from pymta.config import Config, ConfigError
from pymta.maillog import MaillogObserver
from pymta.queue.memory import MemoryQueueStore
from pymta.queue.model import Envelope, Recipient
from pymta.rewrite import Resolver
from pymta.smtpd.testing import LogCapture
from pymta.tables import TableCache, open_maps

NOW = 1700000000.0

MAIN_CF = """
myhostname = mx.example.org
mydomain = example.org
mydestination = $myhostname, localhost
virtual_mailbox_domains = virtual.example
virtual_mailbox_maps = inline:{ bob@virtual.example=b/, carol@virtual.example=c/ }
recipient_delimiter = +
alias_maps =
"""

MESSAGE = (
    b"Subject: hello there\n"
    b"X-Long: first line\n"
    b"\tsecond line\n"
    b"To: bob@virtual.example\n"
    b"\n"
    b"line one\n"
    b"forbidden words here\n"
    b"last line\n"
)


@pytest.fixture
def maillog() -> Iterator[list[str]]:
    with LogCapture() as capture:
        yield capture.maillog


class Harness:
    def __init__(self, tmp_path: Path, extra: str = "", **tables: str) -> None:
        for name, text in tables.items():
            (tmp_path / name).write_text(text)
        self.config = Config.from_text(MAIN_CF + extra.format(dir=tmp_path))
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = MemoryQueueStore(self.clock)
        self.queued: list[str] = []
        cache = TableCache()
        self.cleanup = Cleanup(
            self.config,
            self.store,
            Resolver(self.config),
            clock=self.clock,
            on_queued=lambda q, e: self.queued.append(q),
            open_maps=lambda specs, config: open_maps(specs, config, cache=cache),
            tz=datetime.UTC,
        )

    def submit(self, content: bytes = MESSAGE, envelope: Envelope | None = None) -> str | Failure:
        results: list[str | Failure] = []
        self.cleanup.submit(envelope or smtp_envelope(), content).addBoth(results.append)
        assert len(results) == 1
        return results[0]

    def stored(self, qid: str, queue: str = "incoming") -> tuple[Envelope, bytes]:
        return self.store.read(qid, queue)


def smtp_envelope(*rcpts: str, sender: str = "alice@client.example") -> Envelope:
    attributes = {
        "client_name": "mail.client.example",
        "client_address": "192.0.2.7",
        "helo_name": "helo.client.example",
        "protocol": "ESMTP",
    }
    return Envelope(
        sender, [Recipient(r, r) for r in rcpts or ("bob@virtual.example",)], 0.0, attributes
    )


def checks(tmp_path: Path, header: str = "", body: str = "", extra: str = "") -> Harness:
    tables = {}
    cf = extra
    if header:
        tables["header_checks"] = header
        cf += "header_checks = regexp:{dir}/header_checks\n"
    if body:
        tables["body_checks"] = body
        cf += "body_checks = pcre:{dir}/body_checks\n"
    return Harness(tmp_path, cf, **tables)


def _body(message: bytes) -> bytes:
    return message.split(b"\n\n", 1)[1]


# --- each action -------------------------------------------------------------

REJECT_CASES = [
    # (rule, SMTP reply)
    ("/^Subject: hello/ REJECT", "550 5.7.1 message content rejected"),
    ("/^Subject: hello/ REJECT no greetings", "550 5.7.1 no greetings"),
    ("/^Subject: hello/ REJECT 5.7.0 go away", "550 5.7.0 go away"),
    ("/^Subject: hello/ REJECT 4.7.1 later", "451 4.7.1 later"),
    ("/^Subject: hello/ DEFER", "451 4.7.1 message content deferred"),
    ("/^Subject: hello/ DEFER busy now", "451 4.7.1 busy now"),
]


@pytest.mark.parametrize(("rule", "reply"), REJECT_CASES)
def test_reject_and_defer_refuse_the_message(
    tmp_path: Path, maillog: list[str], rule: str, reply: str
) -> None:
    """REJECT answers 550 with 5.7.1 or the text's own code (4.x.x: 451);
    DEFER (pymta) answers 451 4.7.1; nothing is queued."""
    h = checks(tmp_path, header=rule + "\n")
    result = h.submit()
    assert isinstance(result, Failure) and isinstance(result.value, CleanupRejected)
    e = result.value
    assert f"{e.code} {e.status} {e.text}" == reply
    assert h.store.list("incoming") == [] and h.queued == []
    assert any(": reject: header Subject: hello there from " in line for line in maillog)


def test_reject_log_line_is_postfixs(tmp_path: Path, maillog: list[str]) -> None:
    """The reject line has Postfix's cleanup_act_log layout, word for word."""
    h = checks(tmp_path, header="/^Subject: hello/ REJECT\n")
    h.submit()
    assert h.store.enqueued == []
    lines = [line for line in maillog if ": reject: " in line]
    assert len(lines) == 1
    line = lines[0]
    qid = line.split(": ", 2)[1]
    assert line == (
        f"cleanup: {qid}: reject: header Subject: hello there from"
        " mail.client.example[192.0.2.7]; from=<alice@client.example>"
        " to=<bob@virtual.example> proto=ESMTP helo=<helo.client.example>:"
        " 5.7.1 message content rejected"
    )


LOGGED_CASES = [
    # (header rule, action word in the log, text after the last ': ' or None)
    ("/^Subject:/ WARN suspicious", "warning", "suspicious"),
    ("/^Subject:/ INFO seen", "info", "seen"),
    ("/^Subject:/ HOLD look later", "hold", "look later"),
    ("/^Subject:/ DISCARD", "discard", None),
    ("/^Subject:/ REDIRECT carol@virtual.example", "redirect", "carol@virtual.example"),
    ("/^Subject:/ BCC carol@virtual.example", "bcc", "carol@virtual.example"),
    ("/^Subject:/ PREPEND X-Tag: yes", "prepend", "X-Tag: yes"),
    ("/^Subject:/ REPLACE Subject: [tagged]", "replace", "Subject: [tagged]"),
]


@pytest.mark.parametrize(("rule", "action", "text"), LOGGED_CASES)
def test_log_lines_of_each_action(
    tmp_path: Path, maillog: list[str], rule: str, action: str, text: str | None
) -> None:
    """Every acting result logs ``QID: action: header ... from origin; from=<>
    to=<> proto= helo=<>[: text]`` as Postfix does."""
    h = checks(tmp_path, header=rule + "\n")
    qid = h.submit()
    assert isinstance(qid, str)
    expected = (
        f"cleanup: {qid}: {action}: header Subject: hello there from"
        " mail.client.example[192.0.2.7]; from=<alice@client.example>"
        " to=<bob@virtual.example> proto=ESMTP helo=<helo.client.example>"
    ) + (f": {text}" if text else "")
    assert expected in maillog


def test_hold_queues_into_hold_and_not_to_qmgr(tmp_path: Path) -> None:
    """HOLD: the message is durable in hold/, the queue manager is not told."""
    h = checks(tmp_path, header="/^Subject:/ HOLD\n")
    qid = h.submit()
    assert isinstance(qid, str)
    assert h.store.list("hold") == [qid] and h.store.list("incoming") == []
    assert h.queued == []


def test_discard_accepts_and_drops(tmp_path: Path) -> None:
    """DISCARD: the client gets a queue id (250), nothing is queued."""
    h = checks(tmp_path, header="/^Subject:/ DISCARD spam\n")
    qid = h.submit()
    assert isinstance(qid, str)
    assert all(h.store.list(q) == [] for q in ("incoming", "hold"))
    assert h.queued == []


def test_ignore_prepend_replace_edit_headers(tmp_path: Path) -> None:
    """IGNORE deletes the whole logical header (with its continuation),
    PREPEND inserts a header before it, REPLACE substitutes it."""
    h = checks(
        tmp_path,
        header=(
            "/^X-Long:/ IGNORE\n"
            "/^Subject: (.*)/ REPLACE Subject: [tag] $1\n"
            "/^To:/ PREPEND X-Checked: yes\n"
        ),
    )
    qid = h.submit()
    assert isinstance(qid, str)
    assert h.queued == [qid]  # the harness hears what is queued (so [] above means none)
    _, stored = h.stored(qid)
    head = stored.split(b"\n\n", 1)[0]
    assert b"X-Long" not in head and b"second line" not in head
    assert b"\nSubject: [tag] hello there\nX-Checked: yes\nTo: bob@virtual.example\n" in head
    assert _body(stored) == _body(MESSAGE)


def test_multiline_header_is_one_key(tmp_path: Path, maillog: list[str]) -> None:
    """A folded header is looked up as one string with its line breaks, and
    logged with control characters as '?'."""
    h = checks(tmp_path, header="/^X-Long: first line\\n\\tsecond/ WARN\n")
    qid = h.submit()
    assert isinstance(qid, str)
    assert any(
        f"{qid}: warning: header X-Long: first line??second line from " in x for x in maillog
    )


def test_body_actions(tmp_path: Path, maillog: list[str]) -> None:
    """body_checks see each body line: IGNORE deletes it, REPLACE and
    PREPEND edit it, REJECT refuses the message."""
    h = checks(
        tmp_path,
        body="/^forbidden/ REPLACE allowed words\n/^last/ PREPEND inserted\n/^line one$/ IGNORE\n",
    )
    qid = h.submit()
    assert isinstance(qid, str)
    _, stored = h.stored(qid)
    assert _body(stored) == b"allowed words\ninserted\nlast line\n"
    assert f"cleanup: {qid}: replace: body forbidden words here from" in " ".join(maillog)

    second = tmp_path / "second"
    second.mkdir()
    h2 = checks(second, body="/forbidden/ REJECT\n")
    result = h2.submit()
    assert isinstance(result, Failure) and result.value.code == 550


def test_redirect_replaces_every_recipient(tmp_path: Path) -> None:
    """REDIRECT: the only recipient is the redirect address; DSN kept."""
    h = checks(tmp_path, header="/^Subject:/ REDIRECT carol@virtual.example\n")
    envelope = smtp_envelope("bob@virtual.example", "other@virtual.example")
    qid = h.submit(envelope=envelope)
    assert isinstance(qid, str)
    stored, _ = h.stored(qid)
    assert [r.address for r in stored.recipients] == ["carol@virtual.example"]
    assert stored.recipients[0].original == "bob@virtual.example"


def test_bcc_action_adds_a_recipient_without_dsn(tmp_path: Path) -> None:
    """BCC adds a recipient once, with NOTIFY=NEVER."""
    h = checks(
        tmp_path, header="/^Subject:/ BCC carol@virtual.example\n/^To:/ BCC carol@virtual.example\n"
    )
    qid = h.submit()
    assert isinstance(qid, str)
    stored, _ = h.stored(qid)
    assert [(r.address, r.notify) for r in stored.recipients] == [
        ("bob@virtual.example", None),
        ("carol@virtual.example", "NEVER"),
    ]


def test_dunno_ok_and_unknown_change_nothing(tmp_path: Path, maillog: list[str]) -> None:
    """DUNNO and OK leave the line as it is (Postfix treats OK as DUNNO);
    an unknown action is a warning, then DUNNO."""
    h = checks(tmp_path, header="/^Subject:/ DUNNO\n/^To:/ OK\n/^X-Long:/ FROBNICATE\n")
    qid = h.submit()
    assert isinstance(qid, str)
    _, stored = h.stored(qid)
    assert MESSAGE.split(b"\n\n")[0] in stored
    assert f"cleanup: {qid}: warning: unknown command in header_checks map: FROBNICATE" in maillog


def test_bad_arguments_are_warnings(tmp_path: Path, maillog: list[str]) -> None:
    """PREPEND of a non-header before a header, REDIRECT without @: warned
    and ignored, as Postfix does."""
    h = checks(tmp_path, header="/^Subject:/ PREPEND not a header\n/^To:/ REDIRECT nobody\n")
    qid = h.submit()
    assert isinstance(qid, str)
    stored_env, stored = h.stored(qid)
    assert b"not a header" not in stored
    assert [r.address for r in stored_env.recipients] == ["bob@virtual.example"]
    joined = "\n".join(maillog)
    assert 'bad PREPEND header text "not a header" in header_checks map' in joined
    assert 'bad REDIRECT target "nobody" in header_checks map -- need user@domain' in joined


def test_reject_stops_inspection_hold_does_not(tmp_path: Path, maillog: list[str]) -> None:
    """After HOLD the next headers are still inspected; one hold line only."""
    h = checks(tmp_path, header="/^Subject:/ HOLD\n/^To:/ HOLD\n/^X-Long:/ WARN\n")
    qid = h.submit()
    assert isinstance(qid, str)
    assert sum(1 for line in maillog if ": hold: " in line) == 1
    assert any(": warning: header X-Long" in line for line in maillog)


def test_failed_lookup_defers(tmp_path: Path) -> None:
    """A table that cannot be opened fails every lookup: 451 4.3.0."""
    h = Harness(tmp_path, "header_checks = regexp:{dir}/missing\n")
    result = h.submit()
    assert isinstance(result, Failure)
    assert (result.value.code, result.value.status) == (451, "4.3.0")


def test_filter_is_refused_at_start(tmp_path: Path) -> None:
    """FILTER needs a content filter pymta has not: the start stops, naming it."""
    with pytest.raises(ConfigError) as caught:
        checks(tmp_path, header="/^Subject:/ FILTER smtp:[127.0.0.1]:10025\n")
    assert "header_checks" in str(caught.value) and "content_filter" in str(caught.value)


# --- MIME classes and limits ----------------------------------------------

MIME_MESSAGE = (
    b"Subject: outer\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="XX"\n'
    b"\n"
    b"preamble\n"
    b"--XX\n"
    b"Content-Type: text/plain\n"
    b"X-Part: one\n"
    b"\n"
    b"part body\n"
    b"--XX\n"
    b"Content-Type: message/rfc822\n"
    b"\n"
    b"Subject: inner\n"
    b"\n"
    b"inner body\n"
    b"--XX--\n"
)


def test_mime_and_nested_headers_go_to_their_tables(tmp_path: Path, maillog: list[str]) -> None:
    """MIME headers and part headers go to mime_header_checks, attached
    message headers to nested_header_checks, the rest to header_checks."""
    for name in ("h", "m", "n"):
        (tmp_path / name).write_text(f"/^(.*)/ INFO {name}\n")
    h = Harness(
        tmp_path,
        "header_checks = regexp:{dir}/h\n"
        "mime_header_checks = regexp:{dir}/m\n"
        "nested_header_checks = regexp:{dir}/n\n",
    )
    qid = h.submit(MIME_MESSAGE)
    assert isinstance(qid, str)
    seen = {
        line.split(": info: header ", 1)[1].split(" from ", 1)[0]: line.rsplit(": ", 1)[1]
        for line in maillog
        if ": info: header " in line
    }
    assert seen == {
        "Subject: outer": "h",
        "MIME-Version: 1.0": "m",
        'Content-Type: multipart/mixed; boundary="XX"': "m",
        "Content-Type: text/plain": "m",
        "X-Part: one": "m",
        "Content-Type: message/rfc822": "m",
        "Subject: inner": "n",
    }


def test_mime_header_checks_default_to_header_checks(tmp_path: Path, maillog: list[str]) -> None:
    """$header_checks is the default of the MIME and nested tables."""
    h = checks(tmp_path, header="/^Subject: inner/ REJECT no inner\n")
    result = h.submit(MIME_MESSAGE)
    assert isinstance(result, Failure) and result.value.text == "no inner"


def test_body_checks_see_body_lines_of_every_part(tmp_path: Path, maillog: list[str]) -> None:
    """Body lines of every part (and the preamble) are body_checks input;
    headers of parts are not."""
    h = checks(tmp_path, body="/^(.*)$/ INFO\n")
    h.submit(MIME_MESSAGE)
    bodies = [
        line.split(": info: body ", 1)[1].split(" from ", 1)[0]
        for line in maillog
        if ": info: body " in line
    ]
    assert "part body" in bodies and "inner body" in bodies and "preamble" in bodies
    assert "Subject: inner" not in bodies and "X-Part: one" not in bodies


def test_body_checks_size_limit(tmp_path: Path, maillog: list[str]) -> None:
    """Only the first body_checks_size_limit bytes of a body segment are inspected."""
    h = checks(tmp_path, body="/^bad/ REJECT\n", extra="body_checks_size_limit = 20\n")
    ok = h.submit(b"Subject: x\n\n" + b"0123456789\n" * 2 + b"bad line\n")
    assert isinstance(ok, str)
    refused = h.submit(b"Subject: x\n\n" + b"0123456789\n" + b"bad line\n")
    assert isinstance(refused, Failure)


def test_bounces_and_forwarded_mail_are_not_checked(tmp_path: Path) -> None:
    """Mail pymta makes itself (bounces, local forwarding) is not inspected
    and gets no automatic BCC, as Postfix's internal mail."""
    h = checks(
        tmp_path, header="/^Subject:/ REJECT\n", extra="always_bcc = carol@virtual.example\n"
    )
    for origin in ("bounce", "local"):
        envelope = Envelope("", [Recipient("bob@virtual.example")], 0.0, {"origin": origin})
        qid = h.submit(envelope=envelope)
        assert isinstance(qid, str)
        stored, _ = h.stored(qid)
        assert [r.address for r in stored.recipients] == ["bob@virtual.example"]


# --- automatic BCC ----------------------------------------------------------


def test_always_sender_and_recipient_bcc(tmp_path: Path) -> None:
    """always_bcc, sender_bcc_maps (by sender) and recipient_bcc_maps (by
    recipient, Postfix's lookup order) add recipients with NOTIFY=NEVER."""
    h = Harness(
        tmp_path,
        "always_bcc = archive@virtual.example\n"
        "sender_bcc_maps = inline:{{ @client.example=sent@virtual.example }}\n"
        "recipient_bcc_maps = inline:{{ bob@virtual.example=bobcopy@virtual.example }}\n",
    )
    qid = h.submit(envelope=smtp_envelope("bob+tag@virtual.example", "carol@virtual.example"))
    assert isinstance(qid, str)
    stored, _ = h.stored(qid)
    assert [(r.address, r.notify) for r in stored.recipients] == [
        ("bob+tag@virtual.example", None),
        ("carol@virtual.example", None),
        ("bobcopy@virtual.example", "NEVER"),
        ("sent@virtual.example", "NEVER"),
        ("archive@virtual.example", "NEVER"),
    ]


def test_bcc_address_already_a_recipient_is_not_added(tmp_path: Path) -> None:
    """An automatic BCC address that is already a recipient is not added twice."""
    h = Harness(tmp_path, "always_bcc = bob@virtual.example\n")
    qid = h.submit()
    assert isinstance(qid, str)
    stored, _ = h.stored(qid)
    assert [r.address for r in stored.recipients] == ["bob@virtual.example"]


def test_null_sender_gets_no_sender_bcc(tmp_path: Path) -> None:
    """sender_bcc_maps is not looked up for the null sender."""
    h = Harness(tmp_path, "sender_bcc_maps = static:copy@virtual.example\n")
    qid = h.submit(envelope=smtp_envelope(sender=""))
    assert isinstance(qid, str)
    stored, _ = h.stored(qid)
    assert [r.address for r in stored.recipients] == ["bob@virtual.example"]


def test_ignored_received_headers_still_count_as_hops(tmp_path: Path) -> None:
    """Received headers are counted before the checks (as Postfix does), so
    IGNOREing them cannot hide a mail loop."""
    h = checks(tmp_path, header="/^Received:/ IGNORE\n", extra="hopcount_limit = 3\n")
    looped = b"Received: from a\nReceived: from b\nSubject: x\n\nbody\n"
    result = h.submit(looped)
    assert isinstance(result, Failure) and result.value.status == "5.4.0"
    qid = h.submit(b"Received: from a\nSubject: x\n\nbody\n")
    assert isinstance(qid, str)
    _, stored = h.stored(qid)
    assert stored.count(b"Received:") == 1  # ours only


def test_local_submission_log_line(tmp_path: Path, maillog: list[str]) -> None:
    """Mail without a client address (sendmail, pickup) is logged ``from
    local;`` with no proto= or helo=, as Postfix's pickup mail is."""
    h = checks(tmp_path, header="/^Subject:/ WARN\n")
    envelope = Envelope(
        "root@mx.example.org", [Recipient("bob@virtual.example")], 0.0, {"protocol": "sendmail"}
    )
    qid = h.submit(envelope=envelope)
    assert isinstance(qid, str)
    assert (
        f"cleanup: {qid}: warning: header Subject: hello there from local;"
        " from=<root@mx.example.org> to=<bob@virtual.example>"
    ) in maillog


@pytest.mark.skipif(shutil.which("pflogsumm") is None, reason="pflogsumm not installed")
def test_pflogsumm_counts_check_actions(tmp_path: Path) -> None:
    """The reject, warning, hold and discard lines, written as syslog by
    MaillogObserver, are counted by Debian's pflogsumm as Postfix's are, and
    its reject detail names the header."""
    h = checks(
        tmp_path,
        header=(
            "/^Subject: reject/ REJECT\n/^Subject: warn/ WARN\n"
            "/^Subject: hold/ HOLD\n/^Subject: discard/ DISCARD\n"
        ),
    )
    stream = io.StringIO()
    observer: Any = MaillogObserver(stream, "mx.example.org", now=lambda: 1_800_000_000.0, pid=42)
    globalLogPublisher.addObserver(observer)
    try:
        for subject in ("reject", "warn", "hold", "discard"):
            h.submit(f"Subject: {subject} me\n\nbody\n".encode())
    finally:
        globalLogPublisher.removeObserver(observer)
    log = tmp_path / "maillog"
    log.write_text(stream.getvalue())
    report = subprocess.run(
        ["pflogsumm", str(log)], capture_output=True, text=True, check=True, timeout=60
    ).stdout

    def total(label: str) -> int:
        match = re.search(rf"^\s*(\d+)\s+{label}\b", report, re.MULTILINE)
        assert match, report
        return int(match.group(1))

    assert [total(x) for x in ("rejected", "reject warnings", "held", "discarded")] == [1, 1, 1, 1]
    assert "Subject: reject me" in report


def test_log_shows_first_recipient_before_aliases_and_no_raw_bytes(
    tmp_path: Path, maillog: list[str]
) -> None:
    """to= is the first recipient before virtual alias expansion, as Postfix
    logs it; bytes that are not UTF-8 are logged as '?'."""
    h = checks(
        tmp_path,
        header="/^Subject:/ WARN\n",
        extra="virtual_alias_maps = inline:{{ list@virtual.example=bob@virtual.example }}\n",
    )
    qid = h.submit(b"Subject: caf\xe9 \xff\n\nbody\n", smtp_envelope("list@virtual.example"))
    assert isinstance(qid, str)
    line = next(x for x in maillog if ": warning: header " in x)
    assert "header Subject: caf? ? from " in line and " to=<list@virtual.example> " in line


def test_large_message_is_inspected_in_slices(tmp_path: Path, maillog: list[str]) -> None:
    """A message above SLICED_SIZE is inspected SLICE lookups at a time with
    a return to the reactor in between (a 10 MB message of many parts would
    otherwise hold it for seconds); the result is the same as at once."""
    h = checks(tmp_path, body="/^drop me$/ IGNORE\n/^reject me$/ REJECT big\n")
    part = b"a line of text\n" * 100 + b"drop me\n"
    parts = b"".join(b"--b\nContent-Type: text/plain\n\n" + part for _ in range(300))
    big = b'Subject: big\nContent-Type: multipart/mixed; boundary="b"\n\n' + parts + b"--b--\n"
    assert len(big) > SLICED_SIZE
    # Each slice schedules the next one: run them one by one, as the reactor
    # would (with I/O between them).
    scheduled: list[Callable[[], object]] = []
    h.clock.callLater = lambda delay, f, *a, **kw: scheduled.append(f)  # type: ignore[method-assign,assignment,misc]
    results: list[str | Failure] = []
    h.cleanup.submit(smtp_envelope(), big).addBoth(results.append)
    slices = 0
    while not results:
        assert scheduled, "the inspection stalled"
        scheduled.pop(0)()
        slices += 1
    assert slices >= 300 * 101 // SLICE - 1
    qid = results[0]
    assert isinstance(qid, str)
    _, stored = h.stored(qid)
    assert b"drop me" not in stored and stored.count(b"a line of text\n") == 300 * 100

    results.clear()
    h.cleanup.submit(smtp_envelope(), big.replace(b"drop me", b"reject me")).addBoth(results.append)
    while not results:
        scheduled.pop(0)()
    failure = results[0]
    assert isinstance(failure, Failure) and failure.value.text == "big"
    assert any(": reject: body reject me from " in line for line in maillog)
