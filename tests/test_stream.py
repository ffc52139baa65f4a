"""Large answers stream with back-pressure (pymta.stream): IMAP FETCH of
message bodies and POP3 RETR/TOP of large messages stop reading files
while the client does not read, and what they hold is bounded by
construction, not by the answer's size.

The client is a StringTransport that behaves like a socket's buffer: a
write past its limit pauses the registered producer (the session), and
reading what it holds resumes it. No sockets, no sleeps."""

from __future__ import annotations

import io
import random
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from pymta.imap import message_commands
from pymta.imap.fetch import STREAM_MIN, FileLiteral
from pymta.imap.structure import crlf
from pymta.pop3.wire import to_wire, top, wire_pieces
from pymta.stream import BATCH_BYTES, Streamer
from tests import test_imap_harness, test_pop3_harness
from tests.test_pop3_harness import TLSStringTransport

#: What the fake socket buffer holds before it pauses the session.
LIMIT = 64 * 1024


class SocketBuffer(TLSStringTransport):
    """A consumer with a socket's back-pressure: write() past LIMIT bytes
    pauses the producer; drain() (the client reads) takes the bytes and
    resumes it. ``most`` is the most it ever held."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.full = False
        self.most = 0

    def write(self, data: bytes) -> None:
        super().write(data)
        held = len(self.io.getvalue())
        self.most = max(self.most, held)
        if held > LIMIT and not self.full and self.producer is not None:
            self.full = True
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        data = self.value()
        self.clear()
        if self.full:
            self.full = False
            self.producer.resumeProducing()
        return bytes(data)


#: Random bytes -> text of letters, spaces, dots, CRs and LFs (about one LF in 40).
_TEXT = bytes((b"abcdefgh ij.\r" * 20)[:250] + b"\n" * 6)


def message(n: int, size: int) -> bytes:
    """A message of about size bytes whose lines start with dots now and then
    (dot-stuffing) and hold stray CRs and CRLFs (normalised on the wire)."""
    body = random.Random(n).randbytes(size).translate(_TEXT)
    return b"From: a@example.org\nSubject: big %d\n\n" % n + body + b"\n"


def fired(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has fired (the memory store answers at once)."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out and not isinstance(out[0], Failure), out
    return out[0]


def read_all(transport: SocketBuffer, clock: Clock, until: bytes) -> bytes:
    """Read like a slow client, a buffer at a time, until the answer ends."""
    received = b""
    for _ in range(100_000):
        clock.advance(0)
        received += transport.drain()
        if received.endswith(until):
            return received
    raise AssertionError(f"no {until!r} after {len(received)} bytes")


# the Streamer --------------------------------------------------------------------


def test_streamer_pulls_nothing_while_paused() -> None:
    """Paused by its consumer, a Streamer pulls no more pieces however long it
    waits; resumed, it goes on where it stopped and ends with done(None)."""
    clock = Clock()
    pulled: list[int] = []

    def pieces() -> Iterator[bytes]:
        for n in range(1000):
            pulled.append(n)
            yield b"x" * 1024

    written: list[bytes] = []
    state = {"paused": False}
    results: list[BaseException | None] = []

    def flush() -> None:
        state["paused"] = True  # the consumer is full after every flush

    streamer = Streamer(
        pieces(),
        write=written.append,
        flush=flush,
        paused=lambda: state["paused"],
        done=results.append,
        clock=clock,
        batch_bytes=8 * 1024,
    )
    streamer.resume()
    assert len(pulled) == 8 and len(written) == 8
    clock.advance(60)
    assert len(pulled) == 8
    for _ in range(200):
        state["paused"] = False
        streamer.resume()
    assert len(pulled) == 1000 and results == [None]


def test_streamer_yields_the_reactor_between_turns() -> None:
    """A client that reads as fast as the server writes still gets at most
    turn_bytes per reactor turn; the rest follows in later turns."""
    clock = Clock()
    written: list[bytes] = []
    results: list[BaseException | None] = []
    streamer = Streamer(
        iter([b"y" * 1000] * 100),
        write=written.append,
        flush=lambda: None,
        paused=lambda: False,
        done=results.append,
        clock=clock,
        batch_bytes=1000,
        turn_bytes=10_000,
    )
    streamer.resume()
    for turn in range(1, 11):
        assert len(written) == 10 * turn and results == []
        (next_turn,) = clock.getDelayedCalls()
        run_turn = next_turn.func
        next_turn.cancel()
        run_turn()  # the reactor's next turn
    assert len(written) == 100 and results == [None]


def test_streamer_stop_closes_the_pieces() -> None:
    """stop() (the connection is gone) closes the iterator, which closes its files."""
    closed: list[bool] = []

    def pieces() -> Iterator[bytes]:
        try:
            while True:
                yield b"z" * 100
        finally:
            closed.append(True)

    state = {"paused": False}
    streamer = Streamer(
        pieces(),
        write=lambda piece: None,
        flush=lambda: state.update(paused=True),
        paused=lambda: state["paused"],
        done=lambda error: None,
        clock=Clock(),
        batch_bytes=100,
    )
    streamer.resume()
    streamer.stop()
    assert closed == [True]


# the piecewise encoders equal the whole-message ones --------------------------------


def test_streamer_waits_for_a_deferred_and_sends_its_result() -> None:
    """A piece that is a Deferred (a store read): the Streamer writes what it
    holds, pulls nothing more until the Deferred fires, sends its result
    into the generator, and raises its failure there (the generator may
    answer for that piece and go on)."""
    clock = Clock()
    reads: list[Deferred[bytes]] = []
    seen: list[object] = []

    def pieces() -> Generator[bytes | Deferred[Any], Any, None]:
        for _ in range(3):
            d: Deferred[bytes] = Deferred()
            reads.append(d)
            try:
                value = yield d
            except KeyError as e:
                seen.append(e)
                yield b"[gone]"
                continue
            seen.append(value)
            yield value

    written: list[bytes] = []
    flushed: list[int] = []
    results: list[BaseException | None] = []
    streamer = Streamer(
        pieces(),
        write=written.append,
        flush=lambda: flushed.append(len(written)),
        paused=lambda: False,
        done=results.append,
        clock=clock,
    )
    streamer.resume()
    assert len(reads) == 1 and written == []
    streamer.resume()  # as resumeProducing would: still waiting, nothing more
    assert len(reads) == 1
    reads[0].callback(b"one")
    assert written == [b"one"] and flushed == [1] and len(reads) == 2
    reads[1].errback(Failure(KeyError("two")))
    assert written == [b"one", b"[gone]"] and len(reads) == 3
    reads[2].callback(b"three")
    assert written[-1] == b"three" and results == [None]
    assert isinstance(seen[1], KeyError)


def test_streamer_stopped_while_waiting_ignores_the_late_result() -> None:
    """A stream stopped (connection gone) while a read is under way closes
    the generator; the read's late result or failure is dropped."""
    clock = Clock()
    read: Deferred[bytes] = Deferred()
    closed: list[bool] = []

    def pieces() -> Generator[bytes | Deferred[Any], Any, None]:
        try:
            yield (yield read)
        finally:
            closed.append(True)

    written: list[bytes] = []
    streamer = Streamer(
        pieces(),
        write=written.append,
        flush=lambda: None,
        paused=lambda: False,
        done=lambda error: None,
        clock=clock,
    )
    streamer.resume()
    streamer.stop()
    assert closed == [True]
    read.errback(Failure(KeyError("late")))  # no unhandled error, nothing written
    assert written == []


def test_piecewise_wire_forms_equal_the_whole_message_forms() -> None:
    """For contents full of CR, LF, CRLF and leading dots, cut at every kind of
    place: POP3's wire_pieces equals to_wire (and to_wire(top(..)) for TOP),
    and IMAP's FileLiteral has crlf()'s bytes and announces their length."""
    rng = random.Random(11)
    alphabet = [b"a", b"\n", b"\r", b".", b"\r\n", b"\n.", b"\n\n"]
    for _ in range(3000):
        content = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        chunk = rng.randint(1, 6)
        assert b"".join(wire_pieces(io.BytesIO(content).read, None, chunk)) == to_wire(content)
        lines = rng.randint(-1, 4)
        got = b"".join(wire_pieces(io.BytesIO(content).read, lines, chunk))
        assert got == to_wire(top(content, lines))
        whole = FileLiteral(io.BytesIO(content), read_chunk=chunk)
        assert whole.size == len(crlf(content))
        assert b"".join(whole.chunks()) == crlf(content)


# IMAP FETCH ---------------------------------------------------------------------


def imap_session(tmp_path: Path, messages: list[bytes]) -> tuple[Any, SocketBuffer, Clock]:
    world = test_imap_harness.World(tmp_path)
    inbox = world.mailbox().folder("INBOX")
    for content in messages:
        inbox.append(content)
    inbox.claim_recent()  # old mail: no \Recent in the answers
    proto = world.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40001))
    transport = SocketBuffer(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 143),
        peerAddress=IPv4Address("TCP", "127.0.0.1", 40001),
    )
    proto.makeConnection(transport)
    transport.drain()
    proto.dataReceived(b"a LOGIN alice@example.org secret\r\nb SELECT INBOX\r\n")
    assert b"b OK [READ-WRITE]" in read_all(transport, world.clock, b"completed.\r\n")
    transport.most = 0
    return proto, transport, world.clock


def test_imap_fetch_of_bodies_stops_while_the_client_does_not_read(tmp_path: Path) -> None:
    """FETCH 1:* BODY.PEEK[] over 20 messages of 300 kB (6 MB): with a client
    that does not read, the server writes about one socket buffer and one
    batch, then stops; read slowly, the answer is complete and exact, and
    commands pipelined behind it are answered after it."""
    messages = [message(n, STREAM_MIN + 50_000) for n in range(20)]
    proto, transport, clock = imap_session(tmp_path, messages)
    proto.dataReceived(b"c FETCH 1:* BODY.PEEK[]\r\nd NOOP\r\n")
    for _ in range(10):
        clock.advance(1)
    assert transport.most <= LIMIT + BATCH_BYTES + 2 * 128 * 1024
    answer = read_all(transport, clock, b"d OK NOOP completed.\r\n")
    assert transport.most <= LIMIT + BATCH_BYTES + 2 * 128 * 1024
    inbox = proto.mailbox.folder("INBOX")
    for n in range(1, len(messages) + 1):
        content = inbox.read(n)
        expected = b"* %d FETCH (BODY[] {%d}\r\n" % (n, len(crlf(content))) + crlf(content)
        assert expected + b")\r\n" in answer
    assert answer.index(b"c OK Fetch completed.") < answer.index(b"d OK NOOP")


def test_imap_fetch_small_and_partial_bodies_are_unchanged(tmp_path: Path) -> None:
    """Small messages, a partial BODY[]<0.100> and RFC822 of a large one
    give the same bytes as before streaming."""
    small = b"Subject: s\n\nsmall\n"
    large = message(1, STREAM_MIN + 10)
    proto, transport, clock = imap_session(tmp_path, [small, large])
    inbox = proto.mailbox.folder("INBOX")
    proto.dataReceived(b"c FETCH 1:2 (UID RFC822 BODY.PEEK[]<0.100>)\r\n")
    answer = read_all(transport, clock, b"c OK Fetch completed.\r\n")
    for n in (1, 2):
        whole = crlf(inbox.read(n))
        part = whole[:100]
        assert (
            b"* %d FETCH (UID %d RFC822 {%d}\r\n" % (n, n, len(whole))
            + whole
            + b" BODY[]<0> {%d}\r\n" % len(part)
            + part
            + b" FLAGS (\\Seen))\r\n"
        ) in answer


def test_imap_lost_connection_ends_the_fetch(tmp_path: Path) -> None:
    """A client gone in the middle of a long FETCH leaves no stream behind."""
    proto, _, _ = imap_session(tmp_path, [message(n, STREAM_MIN + 1) for n in range(5)])
    proto.dataReceived(b"c FETCH 1:* BODY.PEEK[]\r\n")
    assert proto._streamer is not None
    proto.connectionLost(Failure(ConnectionLost()))
    assert proto._streamer is None


def test_imap_fetch_reads_nothing_while_the_client_does_not_read(tmp_path: Path) -> None:
    """FETCH 1:* BODY.PEEK[] over 30 messages of 40 kB: the store is asked
    for one message at a time as the answer is written; while the transport
    is full (the session paused) it is asked for nothing more, however long
    the client waits, and never for more than one batch ahead of what the
    client took (the reads are counted)."""
    proto, transport, clock = imap_session(tmp_path, [message(n, 40_000) for n in range(30)])
    store = proto.view.store
    reads: list[int] = []
    read = store.read
    store.read = lambda uid: (reads.append(uid), read(uid))[1]
    proto.dataReceived(b"c FETCH 1:* BODY.PEEK[]\r\n")
    stalled = len(reads)
    for _ in range(10):
        clock.advance(1)
    assert len(reads) == stalled < 30
    ahead = BATCH_BYTES // 40_000 + 1  # a batch is flushed before looking at the pause
    answer = b""
    for _ in range(1000):
        clock.advance(0)
        answer += transport.drain()
        assert len(reads) <= answer.count(b" FETCH (BODY[] ") + ahead
        if answer.endswith(b"c OK Fetch completed.\r\n"):
            break
    assert reads == list(range(1, 31)) and answer.count(b" FETCH (BODY[] ") == 30


def test_imap_fetch_asks_for_headers_in_runs_and_none_while_paused(tmp_path: Path) -> None:
    """FETCH 1:* BODY.PEEK[HEADER] over 300 messages asks the store for the
    header blocks of a run of messages at once (HEADER_RUN of them, one
    call and one Deferred a run, not one a message), writes them one
    message at a time, and asks for no further run while the client does
    not read; the answer is the one each header gives."""
    big = b"X-Filler: " + b"f" * 300 + b"\n"
    messages = [b"Subject: h%d\n" % n + big * 5 + b"\nbody\n" for n in range(300)]
    proto, transport, clock = imap_session(tmp_path, messages)
    store = proto.view.store
    runs: list[list[int]] = []
    headers = store.headers
    store.headers = lambda uids: (runs.append(list(uids)), headers(uids))[1]
    store.header_bytes = None  # one message's header alone is never asked for
    proto.dataReceived(b"c FETCH 1:* BODY.PEEK[HEADER]\r\n")
    stalled = len(runs)
    for _ in range(10):
        clock.advance(1)
    assert len(runs) == stalled < 300 // message_commands.HEADER_RUN
    answer = read_all(transport, clock, b"c OK Fetch completed.\r\n")
    assert [len(run) for run in runs] == [message_commands.HEADER_RUN] * 4 + [44]
    assert [u for run in runs for u in run] == list(range(1, 301))
    inbox = proto.mailbox.folder("INBOX")
    for n in (1, 150, 300):
        header = crlf(inbox.header_bytes(n))
        assert b"* %d FETCH (BODY[HEADER] {%d}\r\n" % (n, len(header)) + header in answer


# POP3 RETR and TOP -------------------------------------------------------------


def pop3_session(tmp_path: Path, content: bytes) -> tuple[Any, SocketBuffer, Clock]:
    world = test_pop3_harness.World(tmp_path)
    world.inbox().append(content)
    proto = world.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40001))
    transport = SocketBuffer(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 110),
        peerAddress=IPv4Address("TCP", "127.0.0.1", 40001),
    )
    proto.makeConnection(transport)
    transport.drain()
    proto.dataReceived(b"USER alice@example.org\r\nPASS secret\r\n")
    assert read_all(transport, world.clock, b"Logged in.\r\n")
    transport.most = 0
    return proto, transport, world.clock


def test_pop3_retr_of_a_large_message_stops_while_the_client_does_not_read(
    tmp_path: Path,
) -> None:
    """RETR of a 3 MB message: with a client that does not read, the server
    writes about one socket buffer and one batch, then stops; read slowly,
    the answer is exactly +OK, the dot-stuffed CRLF message and the dot."""
    content = message(7, 3_000_000)
    proto, transport, clock = pop3_session(tmp_path, content)
    proto.dataReceived(b"RETR 1\r\nNOOP\r\n")
    for _ in range(10):
        clock.advance(1)
    assert transport.most <= LIMIT + BATCH_BYTES + 2 * 128 * 1024
    answer = read_all(transport, clock, b".\r\n+OK\r\n")
    size = proto.maildrop.info(1).rfc822_size
    stored = fired(proto.maildrop.read(1))
    assert answer == b"+OK %d octets\r\n" % size + to_wire(stored) + b".\r\n+OK\r\n"


def test_pop3_top_of_a_large_message_streams_the_same_bytes(tmp_path: Path) -> None:
    """TOP of a large message gives what top() and to_wire() give."""
    content = message(8, STREAM_MIN + 1000)
    proto, transport, clock = pop3_session(tmp_path, content)
    proto.dataReceived(b"TOP 1 25\r\n")
    answer = read_all(transport, clock, b"\r\n.\r\n")
    stored = fired(proto.maildrop.read(1))
    assert answer == b"+OK\r\n" + to_wire(top(stored, 25)) + b".\r\n"


def test_pop3_pipelined_retrs_read_nothing_while_the_client_does_not_read(
    tmp_path: Path,
) -> None:
    """Pipelined RETRs of small messages: each is read from the store only
    when the one before is written and the transport takes more, so a
    client that stops reading stops the store reads (counted) too."""
    world = test_pop3_harness.World(tmp_path)
    for n in range(6):
        world.inbox().append(message(n, 40_000))
    proto = world.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40001))
    transport = SocketBuffer(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 110),
        peerAddress=IPv4Address("TCP", "127.0.0.1", 40001),
    )
    proto.makeConnection(transport)
    transport.drain()
    proto.dataReceived(b"USER alice@example.org\r\nPASS secret\r\n")
    assert read_all(transport, world.clock, b"Logged in.\r\n")
    inbox = proto.maildrop.folder
    reads: list[int] = []
    read = inbox.read
    inbox.read = lambda uid: (reads.append(uid), read(uid))[1]  # type: ignore[method-assign]
    proto.dataReceived(b"".join(b"RETR %d\r\n" % n for n in range(1, 7)) + b"QUIT\r\n")
    for _ in range(5):
        world.clock.advance(1)
    # 40 kB a message, 64 kB of socket buffer: two answers written, then full.
    assert reads == [1, 2]
    answer = b""
    for _ in range(1000):
        world.clock.advance(0)
        answer += transport.drain()
        # Never more read than answered, and one socket buffer's worth.
        assert len(reads) <= answer.count(b" octets\r\n") + 2
        if answer.endswith(b"+OK Logging out.\r\n"):
            break
    assert reads == [1, 2, 3, 4, 5, 6] and answer.count(b" octets\r\n") == 6
