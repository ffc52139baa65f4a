"""The SMTP DATA reader: raw content in, message pieces in the internal form out.

Mirrors the content half of Postfix's smtpd.c (smtpd_data's record loop),
with no state of the session: :meth:`DataReader.feed` takes the bytes that
arrive after ``354`` and returns ``(pieces, done, rest)``:

- ``pieces``: the content so far in pymta's internal form (LF line ends,
  dot-unstuffed as RFC 5321 4.5.2 says), ready to be written as it comes;
  joined, the pieces of a message are exactly what converting the whole
  content at once gives;
- ``done``: the end of data was seen;
- ``rest``: what followed the end of data (pipelined commands), only when
  done.

The only end of data is CR LF . CR LF (no SMTP smuggling: LF . LF, CR . CR
and the mixed forms are content). The CR LF that ended the DATA line
counts as the start of the content, so ``.`` on the first line ends an
empty message. A bare LF ends a line in the internal form (Postfix's
``smtpd_forbid_bare_newline = normalize``); :attr:`bare_lf` tells whether
one was seen, for the ``reject`` setting. A bare CR is data.

At most four bytes (a possible start of CR LF . CR LF) plus one CR are held
back between calls, so the reader's memory does not grow with the message.
:attr:`DataReader.lines` counts the LF of the pieces handed out (the line
count a Maildir file's ``,W=`` needs, carried to the queue file so that
nobody counts again).

Cost per byte: the conversion runs on whole reads in C, never per line. A
read whose lines all end in CR LF (nearly all mail) takes one search for
CR LF "." (which finds both the end of data and any line to unstuff), a
deletion of every CR, and a comparison that proves the read had no bare CR
or LF; a read with a line to unstuff, a bare CR or LF, or an end of data
cut between two reads takes the general conversion (a search for the end,
CR LF to LF, unstuffing). Both give the same pieces.
Untrusted input: all of it. Writes and logs nothing.
"""

from __future__ import annotations

_EOD = b"\r\n.\r\n"
_CR = 13
_LF = 10


class DataReader:
    """One message's content, fed as it arrives."""

    __slots__ = ("_crlf_before", "_first", "_held", "_line_start", "bare_lf", "done", "lines")

    def __init__(self) -> None:
        # The DATA line's CR LF, which may be the start of the end of data,
        # stands in front of the first read without being copied there
        # (the fast path needs no copy of it); the general path puts it
        # into its buffer.
        self._crlf_before = True
        self._held = b""
        # Whether the next converted byte starts a line (after LF), where a
        # leading dot is removed.
        self._line_start = True
        # The DATA line's CR LF, once in a buffer, is not content: its LF
        # is dropped from the output.
        self._first = True
        self.bare_lf = False
        self.done = False
        #: LF in the pieces handed out so far.
        self.lines = 0

    def feed(self, data: bytes) -> tuple[list[bytes], bool, bytes]:
        """Consume data; (pieces in the internal form, done, what followed)."""
        if self.done:
            raise RuntimeError("DataReader fed after the end of data")
        buffer = self._held + data if self._held else data
        # In content whose lines end in CR LF, both the end of data and a
        # line to unstuff begin with CR LF ".": one search finds either.
        dot = buffer.find(b"\r\n.")
        if not (self._line_start and buffer.startswith(b".")):
            if dot < 0:
                cut = len(buffer) - 4
                if cut > 0 and buffer[cut - 1] == _CR:
                    cut -= 1
                if cut > 0:
                    piece = self._convert_clean(buffer[:cut])
                    if piece is not None:
                        self._held = buffer[cut:]
                        return ([piece] if piece else []), False, b""
            elif buffer.startswith(_EOD, dot):
                piece = self._convert_clean(buffer[: dot + 2])
                if piece is not None:
                    self._held = b""
                    self.done = True
                    return ([piece] if piece else []), True, buffer[dot + 5 :]
        return self._feed_general(buffer)

    def _convert_clean(self, raw: bytes) -> bytes | None:
        """raw (a line start never followed by a dot) in the internal form
        when each of its CR and LF is part of a CR LF; None otherwise."""
        text = raw.replace(b"\r", b"")
        # Putting a CR back in front of every LF gives raw again exactly
        # when raw has no lone CR and no lone LF. Both replaces and the
        # comparison run on memchr and memcpy: a tenth of the instructions
        # of a replace of CR LF or a count of LF over the same bytes.
        if text.replace(b"\n", b"\r\n") != raw:
            return None
        lf = len(raw) - len(text)
        self._line_start = raw[-1] == _LF
        if self._crlf_before:
            # The DATA line's CR LF was never part of a buffer: nothing to drop.
            self._crlf_before = self._first = False
        elif self._first:
            self._first = False
            text = text[1:]  # the DATA line's LF
            lf -= 1
        self.lines += lf
        return text

    def _feed_general(self, buffer: bytes) -> tuple[list[bytes], bool, bytes]:
        """feed's general case (see the module doc)."""
        if self._crlf_before:
            self._crlf_before = False
            buffer = b"\r\n" + buffer
        end = buffer.find(_EOD)
        if end >= 0:
            # The CR LF in front of "." ends the last line of content.
            piece = self._convert(buffer[: end + 2])
            self._held = b""
            self.done = True
            return ([piece] if piece else []), True, buffer[end + 5 :]
        # No end of data in buffer: one may still start in its last 4 bytes.
        cut = len(buffer) - 4
        if cut > 0 and buffer[cut - 1] == _CR:
            cut -= 1  # never split a CR LF: it is one line end
        if cut <= 0:
            self._held = buffer
            return [], False, b""
        self._held = buffer[cut:]
        piece = self._convert(buffer[:cut])
        return ([piece] if piece else []), False, b""

    def _convert(self, raw: bytes) -> bytes:
        """raw (never ending inside a CR LF) in the internal form."""
        if not raw:
            return raw
        lf = raw.count(b"\n")
        text = raw.replace(b"\r\n", b"\n")
        if len(raw) - len(text) != lf:
            self.bare_lf = True
        # The line-start state comes from the text before unstuffing: a
        # removed dot at the very end does not make the next byte a line start.
        ends_line = text.endswith(b"\n")
        if self._line_start and text.startswith(b"."):
            text = text[1:]
        text = text.replace(b"\n.", b"\n")
        self._line_start = ends_line
        if self._first:
            self._first = False
            text = text[1:]  # the DATA line's LF
            lf -= 1
        self.lines += lf
        return text
