"""Write a long answer as the client reads it (imapd FETCH, pop3d RETR/TOP).

A large answer (``FETCH 1:* BODY.PEEK[]`` over a 500 MB folder, RETR of a
50 MB message) must not be built whole in memory, nor written whole into
the transport's buffer: Twisted's ``transport.write`` never refuses bytes,
it keeps them. A :class:`Streamer` pulls the answer from an iterator of
byte pieces (one message's response, one chunk of a message file) and
hands them to the session's ``write``; every ``batch_bytes`` it calls
``flush``, which puts them on the transport, and then looks at the
session's ``paused()``: the transport calls the session's
``pauseProducing`` from inside ``write`` when its buffer is full (the
session is the transport's registered streaming producer: Twisted's
IPushProducer / IConsumer back-pressure). While paused it pulls nothing
more; the session's ``resumeProducing`` calls :meth:`Streamer.resume`. So
what the server holds for one answer is bounded by construction: the
transport's buffer, one batch, and the piece the iterator is working on —
not the size of the answer.

A piece may also be a Deferred (a read from the mail store's
asynchronous API): the Streamer flushes what it holds, waits for it
without pulling more, and sends its result into the generator (``value =
yield d``; a failure is raised there, so the generator can answer for one
message and go on). So an answer over many messages reads one message at
a time, and none while the client does not read: a paused session pulls
nothing, and so asks the store for nothing.

The reactor is not held either: after ``turn_bytes`` the Streamer goes on
in the next reactor turn (``callLater(0)``), so other sessions are served
between the batches of a client that reads as fast as the server writes.

When the iterator ends, ``done(None)`` is called (after the last flush);
an unexpected exception from it ends the stream with ``done(exception)``.
:meth:`stop` (the connection is gone) closes the iterator, which closes
the files it holds (a generator's ``finally``).

Untrusted input: none. Writes: through the callables given. Logs: nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Any, TypeAlias

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

#: What a Streamer pulls: byte pieces, and Deferreds whose results are sent
#: back into the generator.
Pieces: TypeAlias = "Iterator[bytes] | Generator[bytes | Deferred[Any], Any, None]"

#: Bytes handed to the transport at once.
BATCH_BYTES = 256 * 1024

#: Bytes written in one reactor turn before other work gets its turn.
TURN_BYTES = 1024 * 1024


class Streamer:
    """Drives one answer's pieces to a session's output with back-pressure."""

    def __init__(
        self,
        pieces: Pieces,
        *,
        write: Callable[[bytes], None],
        flush: Callable[[], None],
        paused: Callable[[], bool],
        done: Callable[[BaseException | None], None],
        clock: IReactorTime,
        batch_bytes: int = BATCH_BYTES,
        turn_bytes: int = TURN_BYTES,
    ) -> None:
        self._pieces = pieces
        self._write = write
        self._flush = flush
        self._paused = paused
        self._done = done
        self._clock = clock
        self._batch_bytes = batch_bytes
        self._turn_bytes = turn_bytes
        self._next_turn: IDelayedCall | None = None
        self._running = False
        self._waiting = False  # for a Deferred the pieces yielded
        # The result of that Deferred, to send into the generator: a
        # one-element list (the value may be None), or a Failure in it.
        self._arrived: list[Any] | None = None
        self.finished = False

    def resume(self) -> None:
        """Pull and write until paused, the turn's budget is spent, or the end."""
        if self.finished or self._running or self._waiting or self._next_turn is not None:
            return
        self._running = True
        try:
            self._run()
        finally:
            self._running = False

    def _run(self) -> None:
        pending = 0  # written since the last flush
        turn = 0
        while not self._paused():
            try:
                piece = self._pull()
            except StopIteration:
                self._finish(None)
                return
            except Exception as error:  # reported to the session, which logs it
                self._finish(error)
                return
            if isinstance(piece, Deferred):
                if self._wait(piece):
                    if pending:
                        self._flush()  # what is ready goes out meanwhile
                    return
                continue
            if not piece:
                continue
            self._write(piece)
            pending += len(piece)
            if pending >= self._batch_bytes:
                self._flush()  # may pause us, from inside the transport's write
                turn += pending
                pending = 0
                if turn >= self._turn_bytes and not self._paused():
                    self._next_turn = self._clock.callLater(0, self._turn)
                    return
        if pending:
            self._flush()

    def _pull(self) -> bytes | Deferred[Any]:
        arrived, self._arrived = self._arrived, None
        if arrived is None:
            return next(self._pieces)
        [outcome] = arrived
        generator: Any = self._pieces
        if isinstance(outcome, Failure):
            return outcome.throwExceptionIntoGenerator(generator)
        return generator.send(outcome)

    def _wait(self, d: Deferred[Any]) -> bool:
        """Take d's result for the next pull; True when it has not come yet
        (then resume() runs when it does)."""
        started = True

        def arrived(outcome: Any) -> None:
            if self.finished:
                return None  # stopped meanwhile: nothing to answer (nor to log)
            self._arrived = [outcome]
            if not started:
                self._waiting = False
                self.resume()
            return None

        d.addBoth(arrived)
        started = False
        if self._arrived is not None:
            return False
        self._waiting = True
        return True

    def _turn(self) -> None:
        self._next_turn = None
        self.resume()

    def _finish(self, error: BaseException | None) -> None:
        self.finished = True
        self._flush()
        self._done(error)

    def stop(self) -> None:
        """Abandon the answer (the connection is gone): close the iterator."""
        self.finished = True
        if self._next_turn is not None and self._next_turn.active():
            self._next_turn.cancel()
        self._next_turn = None
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()


class StreamingSession:
    """What imapd and pop3d share to answer through a :class:`Streamer`:
    starting one (later commands wait: ``_busy``), going back to the command
    loop when it ends, and stopping it when the connection is gone. The
    session supplies ``_stream_flush`` (put the batch on the transport) and
    ``_stream_failed`` (an answer cut off in the middle ends the session)."""

    clock: IReactorTime
    _busy: bool
    _paused: bool
    _closing: bool
    _lost: bool
    _processing: bool
    _streamer: Streamer | None
    _streamer_starting: bool

    def _process(self) -> None:
        raise NotImplementedError

    def _stream_flush(self) -> None:
        raise NotImplementedError

    def _stream_failed(self, error: BaseException) -> None:
        raise NotImplementedError

    def _start_stream(self, pieces: Pieces, write: Callable[[bytes], None]) -> None:
        """Answer with what pieces yields, as fast as the client reads it."""
        self._busy = True
        self._streamer = Streamer(
            pieces,
            write=write,
            flush=self._stream_flush,
            paused=lambda: self._paused or self._closing or self._lost,
            done=self._stream_done,
            clock=self.clock,
        )
        self._streamer_starting = True
        try:
            self._streamer.resume()
        finally:
            self._streamer_starting = False

    def _stream_done(self, error: BaseException | None) -> None:
        self._streamer = None
        self._busy = False
        if error is not None:
            self._stream_failed(error)
            return
        if self._streamer_starting:
            return  # ended at once: the command loop that started it goes on
        if self._processing:
            # Ended from inside a write of _process, which has stopped
            # looking at the input: look again in the next turn.
            self.clock.callLater(0, self._process)
        else:
            self._process()

    def _stop_stream(self) -> None:
        """The connection is gone: close the answer's iterator (its files)."""
        if self._streamer is not None:
            streamer, self._streamer = self._streamer, None
            streamer.stop()
