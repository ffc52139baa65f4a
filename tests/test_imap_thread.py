"""THREAD=REFERENCES and THREAD=ORDEREDSUBJECT over StringTransport (RFC 5256)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pymta.imap.thread import ThreadMessage, format_threads, references
from tests.test_imap_harness import Session, World

T0 = 1_700_000_000.0


def session(tmp_path: Path, messages: list[bytes]) -> Session:
    w = World(tmp_path)
    inbox = w.mailbox().folder("INBOX")
    for n, header in enumerate(messages):
        inbox.append(header + b"\nbody\n", [], T0 + n)
    s = w.connect()
    s.login()
    s.select()
    return s


def thread(s: Session, command: str) -> bytes:
    reply = s.lines(f"t {command}")
    assert reply[-1] == b"t OK Thread completed.", reply
    [line] = reply[:-1]
    return line


def dated(msg_id: str, minute: int, extra: str = "") -> bytes:
    return (
        f"Message-ID: <{msg_id}>\nDate: Tue, 14 Nov 2023 10:{minute:02d}:00 +0000\n{extra}"
    ).encode()


def test_references_threads_replies_under_their_parents(tmp_path: Path) -> None:
    """Replies hang under the message their References end with, siblings in
    sent-date order; In-Reply-To serves when References is missing; a parent
    never seen becomes an empty container, pruned when it holds one thread."""
    s = session(
        tmp_path,
        [
            dated("a@x", 0, "Subject: plan\n"),
            dated("c@x", 5, "Subject: Re: plan\nReferences: <a@x>\n"),
            dated("b@x", 2, "Subject: Re: plan\nIn-Reply-To: <a@x> (sent by bob)\n"),
            dated("d@x", 9, "Subject: Re: plan\nReferences: <a@x> <c@x>\n"),
            dated("e@x", 1, "Subject: other\nReferences: <gone@x>\n"),
            dated("f@x", 3, "Subject: third\nReferences: <lost@x>\n"),
            dated("g@x", 4, "Subject: Re: third\nReferences: <lost@x>\n"),
        ],
    )
    # 6 and 7 share a missing parent: an empty container holds them.
    assert thread(s, "THREAD REFERENCES UTF-8 ALL") == b"* THREAD (1 (3)(2 4))(5)((6)(7))"
    assert thread(s, "UID THREAD REFERENCES US-ASCII 2:4") == b"* THREAD ((3)(2 4))"


def test_references_gathers_roots_by_subject(tmp_path: Path) -> None:
    """Threads whose roots have the same base subject become one: a reply
    goes under the original, two originals under an empty container."""
    s = session(
        tmp_path,
        [
            dated("a@x", 0, "Subject: lunch\n"),
            dated("b@x", 1, "Subject: Re: lunch\n"),  # no References: by subject
            dated("c@x", 2, "Subject: budget\n"),
            dated("d@x", 3, "Subject: [team] budget\n"),
        ],
    )
    assert thread(s, "THREAD REFERENCES UTF-8 ALL") == b"* THREAD (1 2)((3)(4))"


def test_references_never_loops(tmp_path: Path) -> None:
    """References that contradict each other make no loop: a message's own
    References replace what another message's suggested, and a link that
    would close a loop is dropped (the groups imaptest calls thread)."""
    s = session(
        tmp_path,
        [
            dated("a@x", 59),
            dated("b@x", 10, "References: <a@x> <c@x>\n"),
            dated("c@x", 30, "References: <b@x>\n"),
            dated("self@x", 40, "References: <self@x>\n"),
        ],
    )
    assert thread(s, "THREAD REFERENCES UTF-8 ALL") == b"* THREAD (3 2)(4)(1)"


def test_duplicate_and_missing_message_ids(tmp_path: Path) -> None:
    """A second message with the same Message-ID, or one without any, is a
    thread of its own."""
    s = session(
        tmp_path,
        [
            dated("a@x", 0),
            dated("a@x", 1),
            b"Subject: none\n",
            dated("r@x", 3, "References: <a@x>\n"),
        ],
    )
    assert thread(s, "THREAD REFERENCES UTF-8 ALL") == b"* THREAD (1 4)(2)(3)"


def test_ordered_subject(tmp_path: Path) -> None:
    """ORDEREDSUBJECT: one thread per base subject, the earliest message the
    parent of the others (in date order), threads by their first date."""
    s = session(
        tmp_path,
        [
            dated("1@x", 5, "Subject: Re: lunch\n"),
            dated("2@x", 1, "Subject: budget\n"),
            dated("3@x", 2, "Subject: lunch\n"),
            dated("4@x", 9, "Subject: Fwd: budget\n"),
            dated("5@x", 0, "Subject: [x] LUNCH\n"),
            dated("6@x", 3, "Subject: alone\n"),
        ],
    )
    assert thread(s, "THREAD ORDEREDSUBJECT UTF-8 ALL") == b"* THREAD (5 (3)(1))(2 4)(6)"
    assert thread(s, "THREAD ORDEREDSUBJECT UTF-8 SUBJECT nothing") == b"* THREAD"


def test_thread_errors(tmp_path: Path) -> None:
    """An unknown algorithm or missing arguments are BAD, an unknown charset NO."""
    s = session(tmp_path, [dated("a@x", 0)])
    for bad in ("THREAD JWZ UTF-8 ALL", "THREAD REFERENCES UTF-8", "THREAD (REFERENCES) UTF-8 ALL"):
        assert s.lines(f"t {bad}")[-1].startswith(b"t BAD "), bad
    assert s.lines("t THREAD REFERENCES BIG5 ALL") == [
        b"t NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset."
    ]


@pytest.mark.parametrize("depth", [20_000])
def test_deep_reference_chains_do_not_recurse(depth: int) -> None:
    """A reply chain tens of thousands deep (each message referencing the
    one before) is threaded and written without hitting the recursion limit."""
    messages = [
        ThreadMessage(n, n, "S", n > 1, f"{n}@x", [f"{n - 1}@x"] if n > 1 else [])
        for n in range(1, depth + 1)
    ]
    text = format_threads(references(messages))
    assert text == b"(" + b" ".join(b"%d" % n for n in range(1, depth + 1)) + b")"


def test_big_results_are_threaded_and_sorted_in_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threading or ordering more than a slice of messages runs in a worker
    thread: nothing is answered until the worker's result is back, then the
    answer is the same as in the reactor; later commands wait for it."""
    from twisted.internet.defer import Deferred

    from pymta.imap import sort as sort_module

    s = session(tmp_path, [dated("a@x", 1), dated("b@x", 0, "References: <a@x>\n")])
    monkeypatch.setattr(sort_module, "SLICE", 1)
    pending: list[tuple[Any, Deferred[Any]]] = []

    def runner(work: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        pending.append((work, d))
        return d

    s.proto.run_in_thread = runner
    s.world.clock.advance(0)
    assert s.send("t THREAD REFERENCES UTF-8 ALL\r\nn NOOP") == b""
    s.world.clock.advance(0)
    # The store reads the keys (the memory store at once); the threading
    # is the one work of the worker thread.
    works = 0
    while pending:
        work, d = pending.pop(0)
        assert s.read() == b""
        d.callback(work())
        works += 1
    assert works == 1
    assert s.read() == b"* THREAD (1 2)\r\nt OK Thread completed.\r\nn OK NOOP completed.\r\n"
    pending.clear()
    assert s.send("q SORT (REVERSE DATE) UTF-8 ALL") == b""
    s.world.clock.advance(0)
    [(work, d)] = pending
    d.callback(work())
    assert s.read() == b"* SORT 1 2\r\nq OK Sort completed.\r\n"
