"""THREAD=REFERENCES and THREAD=ORDEREDSUBJECT (RFC 5256 sections 4 and 5).

``THREAD algorithm charset search-keys`` finds the messages as SEARCH does
and reads their Message-ID, References, In-Reply-To, Subject and Date
(:func:`pymta.imap.sort.fill_keys` with :data:`THREAD_COLUMNS`: kept keys,
or only those missing asked of the store), then builds the threads:

- ORDEREDSUBJECT: messages grouped by base subject; in each group the
  earliest (sent date, then sequence number) is the parent of all others;
  threads ordered by the date of their first message.
- REFERENCES: the algorithm of RFC 5256 4 (Jamie Zawinski's): containers by
  Message-ID, parents from References (or the first In-Reply-To id), no
  link that would make a loop; a message's own parent replaces one guessed
  from another message's References (as Dovecot does, a link that would
  make a loop is dropped and the message stays a root); empty containers
  pruned; roots with the same base subject gathered; siblings ordered by
  sent date, then sequence number. A missing or duplicate Message-ID
  makes the message a thread of its own.

The threads of more than a slice of messages are built in a worker
thread (:func:`pymta.imap.sort.off_reactor`): the data is the session's
own copy. The answer is kept (:mod:`pymta.imap.sortcache`) for the same
messages threaded and numbered the same again. Answer:
``* THREAD (1 2 (3)(4))((5)(6))``. Every walk over the threads uses an
explicit stack: References chains thousands deep (anyone's mail) cannot
exhaust Python's recursion limit.

Untrusted input: the arguments (BAD; ``NO [BADCHARSET]``) and the header
fields of the messages. Reads the header cache and index; writes and logs
nothing itself.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from pymta.imap.message_commands import find
from pymta.imap.parser import Atom, ParseError, Token
from pymta.imap.search import BadCharset, parse_search
from pymta.imap.sort import Keyed, check_charset, fill_keys, off_reactor
from pymta.imap.sortkeys import DATE, IS_REPLY, MESSAGE_ID, REFERENCES, SUBJECT

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from pymta.imap.session import IMAPSession

ALGORITHMS = ("REFERENCES", "ORDEREDSUBJECT")


@dataclass(slots=True)
class ThreadMessage:
    """What threading knows of one message."""

    number: int  # sequence number or UID, as answered
    date: int  # sent date
    subject: str  # base subject
    is_reply: bool
    message_id: str | None = None
    references: Sequence[str] = field(default_factory=list)


#: The header keys threading compares (all a THREAD asks the store for,
#: :func:`pymta.imap.sort.fill_keys`).
THREAD_COLUMNS = (DATE, SUBJECT, IS_REPLY, MESSAGE_ID, REFERENCES)


def thread_messages(keyed: Keyed) -> list[ThreadMessage]:
    """The threading data of the found messages, from their kept keys."""
    return [
        ThreadMessage(number, date, subject, is_reply, message_id, refs)
        for number, date, subject, is_reply, message_id, refs in zip(
            keyed.numbers, *map(keyed.header_column, THREAD_COLUMNS), strict=True
        )
    ]


# ORDEREDSUBJECT ---------------------------------------------------------


def ordered_subject(keyed: Keyed) -> bytes:
    """The threads of RFC 5256 5, formatted. Sorted as positions by small
    integers (sent date, then base subject by its kept rank; a stable sort
    keeps sequence order among equals) rather than by tuples of strings."""
    numbers = keyed.numbers
    dates = keyed.header_column(DATE)
    subjects = keyed.kept.ranks(SUBJECT, keyed.header_column(SUBJECT))
    order = sorted(range(len(numbers)), key=dates.__getitem__)
    order.sort(key=subjects.__getitem__)
    # One thread per subject: its first message (earliest date, then
    # number) and the others in that order.
    threads: list[list[int]] = []
    previous = None
    for i in order:
        if subjects[i] != previous:
            threads.append([i])
            previous = subjects[i]
        else:
            threads[-1].append(i)
    # Threads by the date of their first message, then its number (their
    # first positions are in sequence order once sorted).
    threads.sort(key=lambda thread: thread[0])
    threads.sort(key=lambda thread: dates[thread[0]])
    out: list[str] = []
    for thread in threads:
        if len(thread) == 1:
            out.append(f"({numbers[thread[0]]})")
        elif len(thread) == 2:
            out.append(f"({numbers[thread[0]]} {numbers[thread[1]]})")
        else:
            kids = ")(".join(str(numbers[i]) for i in thread[1:])
            out.append(f"({numbers[thread[0]]} ({kids}))")
    return "".join(out).encode("ascii")


# REFERENCES -------------------------------------------------------------


class Node:
    """A container of RFC 5256's algorithm: a message, or empty (a dummy)."""

    __slots__ = ("children", "key", "message", "parent")

    def __init__(self, message: ThreadMessage | None = None) -> None:
        self.message = message
        self.parent: Node | None = None
        self.children: list[Node] = []
        self.key = (0, 0)  # (sent date, number) once siblings are sorted

    def adopt(self, child: Node) -> None:
        child.parent = self
        self.children.append(child)

    def orphan(self) -> None:
        parent = self.parent
        if parent is not None:
            parent.children.remove(self)
            self.parent = None

    def has_ancestor(self, other: Node) -> bool:
        """``other`` is this node or above it."""
        node: Node | None = self
        while node is not None:
            if node is other:
                return True
            node = node.parent
        return False


def _link(parent: Node, child: Node) -> bool:
    """Make ``child`` a child of ``parent`` unless that makes a loop."""
    # Without children the child cannot be above the parent: no walk up a
    # long chain for the usual case (a new message, a new reference).
    if parent is child or (child.children and parent.has_ancestor(child)):
        return False
    child.orphan()
    parent.adopt(child)
    return True


def _post_order(root: Node) -> list[Node]:
    """Every node under ``root`` (and it), each after all its children
    (siblings in no particular order: each walk needs only that)."""
    order: list[Node] = []
    stack = [root]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    order.reverse()
    return order


def references(messages: list[ThreadMessage]) -> list[Node]:
    """The threads of RFC 5256 4, ordered: the root containers."""
    table: dict[str, Node] = {}
    nodes: list[Node] = []

    def container(message_id: str) -> Node:
        node = table.get(message_id)
        if node is None:
            node = table[message_id] = Node()
            nodes.append(node)
        return node

    # (1) containers and links.
    for m in messages:
        own = table.get(m.message_id) if m.message_id else None
        if own is not None and own.message is None:
            own.message = m
        else:
            # No Message-ID, or a duplicate: a container of its own.
            own = Node(m)
            nodes.append(own)
            if m.message_id:
                table.setdefault(m.message_id, own)
        previous: Node | None = None
        for ref in m.references:
            node = container(ref)
            if previous is not None and node.parent is None and node is not previous:
                _link(previous, node)  # an existing link is kept (RFC 5256 4 step 1B)
            previous = node
        # (1C) this message's parent is its last reference, whatever another
        # message's References suggested; none when that would make a loop.
        if own.parent is not None:
            own.orphan()
        if previous is not None and previous is not own:
            _link(previous, own)

    # (2) the root set, under one top container; (4) empty containers pruned.
    top = Node()
    for node in nodes:
        if node.parent is None:
            top.adopt(node)
    for node in _post_order(top):
        kept: list[Node] = []
        for child in node.children:
            if child.message is None:
                if not child.children:
                    continue
                if node is not top or len(child.children) == 1:
                    for grandchild in child.children:
                        grandchild.parent = node
                    kept.extend(child.children)
                    continue
            kept.append(child)
        node.children = kept

    # (5) roots by date; (6) roots gathered by base subject.
    _sort_siblings(top)
    _gather_subjects(top)
    # (7) every set of siblings by date.
    _sort_siblings(top)
    return top.children


def _sort_siblings(top: Node) -> None:
    """Order each node's children by (sent date, number); an empty
    container counts as its first child."""
    for node in _post_order(top):
        if len(node.children) > 1:
            node.children.sort(key=_key_of)
        if node.message is not None:
            node.key = (node.message.date, node.message.number)
        elif node.children:
            node.key = node.children[0].key
        else:
            node.key = (0, 0)


def _key_of(node: Node) -> tuple[int, int]:
    return node.key


def _thread_subject(node: Node) -> tuple[str, bool]:
    message = node.message
    if message is None and node.children:
        message = node.children[0].message
    if message is None:
        return "", False
    return message.subject, message.is_reply


def _gather_subjects(top: Node) -> None:
    """RFC 5256 4 step 6: roots whose base subjects are equal become one
    thread."""
    table: dict[str, Node] = {}
    for root in top.children:
        subject, is_reply = _thread_subject(root)
        if not subject:
            continue
        held = table.get(subject)
        if (
            held is None
            or (root.message is None and held.message is not None)
            or (held.message is not None and held.message.is_reply and not is_reply)
        ):
            table[subject] = root
    # Built anew at the end: removing roots one by one from a list of
    # 100,000 would be quadratic.
    roots = list(top.children)
    gone: set[int] = set()  # merged into or adopted by another root
    replaced: dict[int, Node] = {}  # a root's place taken by a new container
    for root in roots:
        if id(root) in gone:
            continue
        subject, is_reply = _thread_subject(root)
        if not subject:
            continue
        held = table[subject]
        if held is root:
            continue
        if held.message is None and root.message is None:
            for child in root.children:
                child.parent = held
            held.children.extend(root.children)
            root.children = []
        elif held.message is None or (is_reply and not held.message.is_reply):
            held.adopt(root)
        else:
            # Neither is the other's parent: both under a new empty container
            # in the place of the one in the table.
            dummy = Node()
            dummy.parent = top
            replaced[id(held)] = dummy
            gone.add(id(held))
            dummy.adopt(held)
            dummy.adopt(root)
            table[subject] = dummy
        gone.add(id(root))
    kept: list[Node] = []
    for root in roots:
        if id(root) in replaced:
            kept.append(replaced[id(root)])
        elif id(root) not in gone:
            kept.append(root)
    top.children = kept


def format_threads(roots: list[Node]) -> bytes:
    """``(1 2 (3)(4))((5)(6))``: one child continues its parent's list,
    several are each parenthesised (RFC 5256 4)."""
    out: list[bytes] = []
    stack: list[bytes | Node] = []
    for root in reversed(roots):
        stack += [b")", root, b"("]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            out.append(item)
            continue
        parts: list[bytes | Node] = []
        kids = item.children
        if item.message is not None:
            parts.append(b"%d" % item.message.number)
            if kids:
                parts.append(b" ")
        if item.message is not None and len(kids) == 1:
            parts.append(kids[0])
        else:
            for kid in kids:
                parts += [b"(", kid, b")"]
        stack.extend(reversed(parts))
    return b"".join(out)


# the command ------------------------------------------------------------

_pause_lock = threading.Lock()
_pauses = 0
_was_enabled = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while threads are built:
    a build of 100,000 messages makes hundreds of thousands of objects,
    none garbage before it ends, and each full collection meanwhile walked
    them all (0.5 s of 0.84 s of CPU, measured) holding the interpreter
    lock, so the reactor thread waited that long. Nested or concurrent
    builds share one pause."""
    global _pauses, _was_enabled
    with _pause_lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()


def thread(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    if len(args) < 3 or not isinstance(args[0], Atom):
        raise ParseError("THREAD takes an algorithm, a charset and search keys.")
    algorithm = args[0].upper()
    if algorithm not in ALGORITHMS:
        raise ParseError("Unknown thread algorithm.")
    try:
        check_charset(args[1])
        criteria = parse_search(args[2:], saved=set(s.saved), rev2=s.rev2)
    except BadCharset:
        s.no(tag, b"[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset.", expunge=uid)
        return
    if criteria.uses_modseq:
        s.condstore = True

    result_key = ("THREAD", algorithm)

    def build(keyed: Keyed) -> bytes:
        with collector_paused():
            return build_text(keyed)

    def build_text(keyed: Keyed) -> bytes:
        if algorithm == "ORDEREDSUBJECT":
            text = ordered_subject(keyed)
        else:
            text = format_threads(references(thread_messages(keyed)))
        return b"* THREAD " + text + b"\r\n" if text else b"* THREAD\r\n"

    def threaded(keyed: Keyed) -> Deferred[None] | None:
        kept = keyed.kept

        def answer(text: bytes) -> None:
            # Kept for the same messages numbered the same (a client
            # threading its unchanged folder again).
            kept.keep_result(result_key, keyed.uids, keyed.numbers, text)
            s.send(text)
            s.ok(tag, b"Thread completed.", expunge=uid)

        text = kept.result(result_key, keyed.uids, keyed.numbers)
        if text is not None:
            answer(text)
            return None
        return off_reactor(s, tag, "THREAD", len(keyed.uids), partial(build, keyed), answer)

    find(
        s,
        tag,
        uid,
        args[2:],
        criteria,
        lambda found: fill_keys(s, tag, "THREAD", found, True, threaded, THREAD_COLUMNS),
        "THREAD",
    )
