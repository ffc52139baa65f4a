"""COMPRESS=DEFLATE (RFC 4978): the session's bytes through raw DEFLATE.

After ``COMPRESS DEFLATE`` (authenticated or selected state, over TLS or
not) is answered OK, every byte in either direction is a raw DEFLATE
stream (RFC 1951, no zlib header). :class:`Compression` holds both ends:

- Output: every flush of the session is compressed and ended with a
  ``Z_SYNC_FLUSH``, so the client can decode each response as soon as it
  arrives (RFC 4978 section 4); a streamed FETCH is compressed batch by
  batch as it is written (pymta.stream), its back-pressure unchanged.
  Level :data:`LEVEL`: fast, as mail text compresses well at any level and
  the reactor does the work.
- Input: compressed bytes are kept as they arrive and inflated only
  :data:`INFLATE_CHUNK` at a time, and only while the command reader holds
  less than one whole command's worth (``room``): a small "deflate bomb"
  cannot make the server hold more inflated bytes than the largest
  command it accepts uncompressed. Invalid compressed data ends the
  session (``* BYE``).

Untrusted input: the client's compressed bytes (zlib errors are caught).
Writes and logs nothing itself.
"""

from __future__ import annotations

import zlib
from collections import deque

#: zlib level of the server's output (1 fastest .. 9 smallest).
LEVEL = 1

#: Inflated bytes handed to the command reader at once.
INFLATE_CHUNK = 64 * 1024


class CompressionError(Exception):
    """The client's compressed stream is invalid."""


class Compression:
    """Both directions of one session's DEFLATE stream."""

    def __init__(self, level: int = LEVEL) -> None:
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, -15)
        self._inflate = zlib.decompressobj(-15)
        # Compressed input not inflated yet: what zlib left of the piece it
        # is working on, then the pieces received since (never joined: a
        # big compressed upload is not copied again for every chunk).
        self._tail = b""
        self._received: deque[bytes] = deque()
        self._pending = 0

    def compress(self, data: bytes) -> bytes:
        """``data`` compressed, flushed so that the client can read all of it."""
        return self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def received(self, data: bytes) -> None:
        """Keep compressed bytes from the client for :meth:`inflate`."""
        if data:
            self._received.append(data)
            self._pending += len(data)

    def has_pending(self) -> bool:
        return self._pending > 0

    def pending(self) -> int:
        return self._pending

    def inflate(self, room: int) -> bytes:
        """Up to ``min(room, INFLATE_CHUNK)`` inflated bytes of what was
        received (b"" when nothing more can be inflated now);
        CompressionError on invalid data."""
        while room > 0 and self._pending:
            data = self._tail or self._received.popleft()
            try:
                out = self._inflate.decompress(data, min(room, INFLATE_CHUNK))
            except zlib.error as e:
                self._tail, self._pending = b"", 0
                self._received.clear()
                raise CompressionError(str(e)) from None
            self._tail = self._inflate.unconsumed_tail
            self._pending -= len(data) - len(self._tail)
            if self._inflate.eof:
                # RFC 4978 has no end of stream but the connection's: bytes
                # after a final block are not commands.
                raise CompressionError("compressed stream ended")
            if out:
                return out
        return b""
