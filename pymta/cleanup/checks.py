"""Header and body checks in cleanup: Postfix's header_checks(5).

Mirrors cleanup_message.c (cleanup_act, cleanup_act_log) over pymta's
tables. Each logical header (its first line and its continuation lines,
joined by LF, without the final LF) is looked up in one of

- ``header_checks``: the message's own headers, except MIME headers;
- ``mime_header_checks`` (default ``$header_checks``): MIME headers
  (Content-Type, Content-Transfer-Encoding, Content-Disposition,
  Content-Description, Content-ID, MIME-Version) anywhere, and every header
  of a multipart body part;
- ``nested_header_checks`` (default ``$header_checks``): the headers of an
  attached message (message/rfc822);

and each body line (without its LF) in ``body_checks``, up to
``body_checks_size_limit`` bytes of each body segment (the text before the
first part, each part, the text after the last). The MIME structure comes
from pymta.mailstore.mime (the same parser IMAP uses, bounded in depth
and parts). Headers that cleanup adds itself (Received, Message-ID, Date,
From) are not inspected, as in Postfix.

A result is an action, case-insensitive, with optional text:
REJECT [text] (``550 5.7.1 text``, or 451 when text starts with a 4.x.x
code; default ``5.7.1 message content rejected``), DEFER [text] (pymta: the
same as ``REJECT 4.7.1 text``; Postfix has no DEFER here), DISCARD
[text] (accepted, not queued), HOLD [text] (queued into hold/), WARN and
INFO [text] (logged), IGNORE (the header or line is deleted), PREPEND text
(a line inserted before; a header when the input is a header), REPLACE
text, REDIRECT user@domain (every recipient replaced), BCC user@domain (a
recipient added), DUNNO and OK (nothing). REJECT, DEFER, DISCARD and
REDIRECT end the inspection of the message. FILTER needs a content filter,
which pymta has not: a table that can answer FILTER stops the start
(ConfigError); one that answers it later (edited while running) defers the
message. An unknown action is logged and treated as DUNNO, as in Postfix.
A failed lookup defers the message (``451 4.3.0``).

Every acting result is logged as Postfix logs it::

    QID: reject: header Subject: spam from unknown[192.0.2.1]; from=<a@b>
    to=<c@d> proto=ESMTP helo=<x>: 5.7.1 message content rejected

(one line; the input cut to 200 characters, control characters as ``?``).
The inspection runs before cleanup has a queue id and logs nothing: it
records the events, and :func:`report` logs them (and raises the
rejection) once the id is known. A message larger than SLICED_SIZE is
inspected SLICE lookups at a time with a return to the reactor between
slices (inspect_later), so a large message of many parts does not stop
other clients. Untrusted input: the message. Writes nothing; logs through
report.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NoReturn

from twisted.internet.defer import Deferred
from twisted.logger import LogLevel

from pymta.cleanup.interface import CleanupRejected
from pymta.config import Config, ConfigError
from pymta.maillog import maillog
from pymta.mailstore.interface import MimePart
from pymta.mailstore.mime import parse_mime
from pymta.queue.model import Envelope
from pymta.tables import IIterableTable, Maps, TableError, open_maps
from pymta.tables.regexp import RegexpTable

PRIMARY, MULTIPART, NESTED = "primary", "multipart", "nested"
_MIME_HEADERS = frozenset(
    (
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "content-description",
        "content-id",
        "mime-version",
    )
)
_HEADER_LINE = re.compile(rb"([!-9;-~]+)[ \t]*:")
_HEADER_TEXT = re.compile(r"[!-9;-~]+[ \t]*:")
_DSN = re.compile(r"[245]\.\d{1,3}\.\d{1,3}(?=\s|$)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LOG_LIMIT = 200
_DEFAULT_REJECT = "5.7.1 message content rejected"

#: The parameters, in the order their tables are opened.
#: Lookups between two returns to the reactor in ContentChecks.inspect_later.
SLICE = 200
#: Messages larger than this are inspected in slices (see Cleanup.submit).
SLICED_SIZE = 256 * 1024

PARAMETERS = ("header_checks", "mime_header_checks", "nested_header_checks", "body_checks")


@dataclass
class Verdict:
    """What the checks decided for one message (content is the new message)."""

    content: bytes
    hold: bool = False
    discard: bool = False
    redirect: str | None = None
    bcc: list[str] = field(default_factory=list)
    #: (action, context, input, text) to log, in order (see report).
    events: list[tuple[str, str, str, str]] = field(default_factory=list)
    #: REJECT, DEFER or a failed lookup: the reply for the client.
    rejection: CleanupRejected | None = None


def _table_results(maps: Maps) -> Iterable[tuple[str, str]]:
    for table in maps:
        if isinstance(table, RegexpTable):
            for result in table.results():
                yield str(table.name), result
        elif IIterableTable.providedBy(table):
            for _, result in table.items():
                yield str(table.name), result


def _refuse_filter(parameter: str, maps: Maps) -> None:
    for name, result in _table_results(maps):
        words = result.split(None, 1)
        if words and words[0].upper() == "FILTER":
            raise ConfigError(
                f"{name}: {result}: pymta has no content_filter (use REDIRECT, HOLD or REJECT)",
                parameter=parameter,
            )


def log_origin(attributes: dict[str, str]) -> tuple[str, str, str]:
    """(origin, proto, helo) as Postfix's cleanup logs them: ``name[addr]``
    for network mail, ``local`` otherwise; proto and helo only for network mail."""
    address = attributes.get("client_address", "")
    if not address:
        return "local", "", ""
    origin = f"{attributes.get('client_name') or 'unknown'}[{address}]"
    protocol = attributes.get("protocol", "").upper()
    # Postfix logs SMTP or ESMTP here (the Received header says ESMTPS/ESMTPSA).
    proto = "ESMTP" if protocol.startswith("ESMTP") else ("LMTP" if "LMTP" in protocol else "SMTP")
    return origin, proto, attributes.get("helo_name", "")


def printable(text: str) -> str:
    """Text fit for one log line: control characters and bytes that are not
    UTF-8 (kept as surrogates when the message was decoded) become ``?``,
    as Postfix's printable() does."""
    valid = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _CONTROL.sub("?", valid.replace("\ufffd", "?"))


def act_log_line(
    queue_id: str,
    action: str,
    context: str,
    content: str,
    envelope: Envelope,
    text: str,
    recipient: str | None = None,
) -> str:
    """One cleanup_act_log line (see module doc); ``recipient`` is the first
    recipient as Postfix logs it (after canonical rewriting, before virtual
    alias expansion), by default the envelope's first."""
    origin, proto, helo = log_origin(envelope.attributes)
    shown = printable(content[:_LOG_LIMIT])
    line = f"{queue_id}: {action}: {context} {shown} from {origin}; from=<{envelope.sender}>"
    if recipient is None and envelope.recipients:
        recipient = envelope.recipients[0].address
    if recipient:
        line += f" to=<{recipient}>"
    if proto:
        line += f" proto={proto}"
    if helo:
        line += f" helo=<{printable(helo)}>"
    if text:
        line += f": {printable(text)}"
    return line


def _reason(text: str, default_code: str, default_text: str) -> str:
    """Postfix's dsn_prepend: text that starts with x.y.z keeps its code."""
    if not text:
        return f"{default_code} {default_text}"
    if _DSN.match(text):
        return text
    return f"{default_code} {text}"


class ContentChecks:
    """The four check tables of one cleanup; see module doc."""

    def __init__(self, config: Config, open_maps: Callable[..., Maps] = open_maps) -> None:
        self._maps = {name: open_maps(config.get_list(name), config) for name in PARAMETERS}
        for name, maps in self._maps.items():
            _refuse_filter(name, maps)
        self._body_limit = config.get_int("body_checks_size_limit")
        # Fixed for this cleanup's life (a reload builds a new one).
        self._any = any(self._maps.values())

    def __bool__(self) -> bool:
        return self._any

    def inspect(self, content: bytes) -> Verdict:
        """The checked message, at once (see :func:`report` for its log lines)."""
        inspection = _Inspection(self)
        for _ in inspection.steps(content):
            pass
        return inspection.verdict

    def inspect_later(self, content: bytes, call_later: Callable[..., object]) -> Deferred[Verdict]:
        """The checked message, inspected in slices of :data:`SLICE` lookups
        with a return to the reactor between them (``call_later(0, f)``): a
        large message of many parts would otherwise hold it for seconds."""
        inspection = _Inspection(self)
        steps = inspection.steps(content)
        result: Deferred[Verdict] = Deferred()

        def step() -> None:
            try:
                next(steps)
            except StopIteration:
                result.callback(inspection.verdict)
                return
            except Exception:
                result.errback()
                return
            call_later(0, step)

        step()
        return result


def report(verdict: Verdict, queue_id: str, envelope: Envelope, recipient: str | None) -> None:
    """Log what the checks did, as Postfix logs it, and raise the rejection
    (REJECT, DEFER, failed lookup) if there is one. ``envelope`` gives
    from= and the client, ``recipient`` to= (see act_log_line)."""
    for action, context, key, text in verdict.events:
        if action == "warning:":  # a problem with a rule, not a WARN action
            maillog("cleanup", f"{queue_id}: warning: {printable(text)}", LogLevel.warn)
        else:
            line = act_log_line(queue_id, action, context, key, envelope, text, recipient)
            maillog("cleanup", line)
    if verdict.rejection is not None:
        raise verdict.rejection


class _Rejected(Exception):
    """Ends the walk: the message is refused."""


class _Inspection:
    """One message's pass through the checks; pure (logs nothing)."""

    def __init__(self, checks: ContentChecks) -> None:
        self._maps = checks._maps
        self._body_limit = checks._body_limit
        self._filtering = True
        self._lookups = 0
        self.verdict = Verdict(b"")
        self._out: list[bytes] = []

    # the walk ---------------------------------------------------------------

    def steps(self, content: bytes) -> Iterator[None]:
        """Walk the message; yields after every SLICE lookups."""
        blocks: list[tuple[int, int, str]] = []
        _header_blocks(parse_mime(content), PRIMARY, blocks)
        blocks.sort()
        position = 0
        try:
            for start, end, kind in blocks:
                if start < position:
                    continue  # a malformed part overlapping its parent
                yield from self._body(content, position, start)
                position = yield from self._headers(content, start, end, kind)
            yield from self._body(content, position, len(content))
        except _Rejected:
            return
        self.verdict.content = b"".join(self._out)

    def _headers(
        self, content: bytes, start: int, end: int, kind: str
    ) -> Generator[None, None, int]:
        """Inspect the header block [start, end); returns where the body begins."""
        position = start
        while position < end:
            stop = content.find(b"\n", position, end)
            stop = end if stop < 0 else stop + 1
            match = _HEADER_LINE.match(content, position, stop)
            if match is None:
                # A blank line (end of headers) or a line that is no header:
                # the body begins here, as in Postfix's MIME state machine.
                if content[position:stop].strip(b"\r\n") == b"":
                    self._out.append(content[position:stop])
                    return stop
                return position
            # The logical header: continuation lines start with white space.
            while stop < end and content[stop : stop + 1] in (b" ", b"\t"):
                nxt = content.find(b"\n", stop, end)
                stop = end if nxt < 0 else nxt + 1
            name = match.group(1).decode("ascii").lower()
            if name in _MIME_HEADERS or kind == MULTIPART:
                parameter = "mime_header_checks"
            elif kind == NESTED:
                parameter = "nested_header_checks"
            else:
                parameter = "header_checks"
            yield from self._line(content[position:stop], "header", parameter)
            position = stop
        return end

    def _body(self, content: bytes, start: int, end: int) -> Iterator[None]:
        maps = self._maps["body_checks"]
        if not maps or start >= end:
            self._out.append(content[start:end])
            return
        offset = 0  # within this body segment
        position = start
        while position < end:
            stop = content.find(b"\n", position, end)
            stop = end if stop < 0 else stop + 1
            if offset >= self._body_limit or not self._filtering:
                self._out.append(content[position:end])
                return
            offset += stop - position
            yield from self._line(content[position:stop], "body", "body_checks")
            position = stop

    # one input --------------------------------------------------------------

    def _line(self, raw: bytes, context: str, parameter: str) -> Iterator[None]:
        maps = self._maps[parameter]
        if not maps or not self._filtering:
            self._out.append(raw)
            return
        ending = b"\n" if raw.endswith(b"\n") else b""
        key = raw[: len(raw) - len(ending)].decode("utf-8", "surrogateescape")
        try:
            value = maps.lookup(key)
        except TableError as e:
            self._warn(
                f"{parameter} map lookup problem -- message not accepted, try again later: {e}"
            )
            self._reject(CleanupRejected(451, "4.3.0", "Temporary lookup failure"))
        if value is None:
            self._out.append(raw)
        else:
            self._act(raw, key, context, parameter, value.strip())
        self._lookups += 1
        if self._lookups >= SLICE:
            self._lookups = 0
            yield

    def _log(self, action: str, context: str, key: str, text: str) -> None:
        self.verdict.events.append((action, context, key, text))

    def _warn(self, text: str) -> None:
        self.verdict.events.append(("warning:", "", "", text))

    def _reject(self, rejection: CleanupRejected) -> NoReturn:
        self.verdict.rejection = rejection
        raise _Rejected

    def _act(self, raw: bytes, key: str, context: str, parameter: str, value: str) -> None:
        words = value.split(None, 1)
        command = words[0].upper() if words else ""
        text = words[1].strip() if len(words) > 1 else ""
        verdict = self.verdict
        keep = True
        if command in ("REJECT", "DEFER"):
            if command == "REJECT":
                reason = _reason(text, "5.7.1", "message content rejected")
            else:
                reason = _reason(text, "4.7.1", "message content deferred")
                reason = "4" + reason[1:]
            self._log("reject", context, key, reason)
            status, _, reply = reason.partition(" ")
            self._reject(CleanupRejected(451 if reason.startswith("4") else 550, status, reply))
        elif command in ("WARN", "INFO"):
            self._log("warning" if command == "WARN" else "info", context, key, text)
        elif command == "FILTER":
            self._warn(f"{parameter} answered FILTER {text}: pymta has no content_filter")
            self._reject(CleanupRejected(451, "4.3.0", "Error: content filter not available"))
        elif command == "DISCARD":
            self._log("discard", context, key, text)
            verdict.discard = True
            self._filtering = False
        elif command == "HOLD":
            if not (verdict.hold or verdict.discard):
                self._log("hold", context, key, text)
                verdict.hold = True
        elif command in ("PREPEND", "REPLACE"):
            if not text:
                self._warn(f"{command} action without text in {parameter} map")
            elif context == "header" and not _HEADER_TEXT.match(text):
                self._warn(
                    f'bad {command} header text "{text}" in {parameter} map -- need'
                    ' "headername: headervalue"'
                )
            else:
                self._log(command.lower(), context, key, text)
                self._out.append(text.encode("utf-8", "surrogateescape") + b"\n")
                keep = command == "PREPEND"
        elif command in ("REDIRECT", "BCC"):
            if "@" not in text:
                what = "REDIRECT target" if command == "REDIRECT" else "BCC address"
                self._warn(f'bad {what} "{text}" in {parameter} map -- need user@domain')
            elif command == "REDIRECT":
                self._log("redirect", context, key, text)
                verdict.redirect = text
                self._filtering = False
            else:
                self._log("bcc", context, key, text)
                verdict.bcc.append(text)
        elif command == "IGNORE":
            keep = False
        elif command not in ("DUNNO", "OK"):
            self._warn(f"unknown command in {parameter} map: {value}")
        if keep:
            self._out.append(raw)


def _header_blocks(part: MimePart, kind: str, out: list[tuple[int, int, str]]) -> None:
    """(start, end, kind) of every header block in the MIME tree."""
    out.append((part.header_start, part.body_start, kind))
    if part.content_type == "multipart":
        for child in part.parts:
            _header_blocks(child, MULTIPART, out)
    elif part.content_type == "message":
        for child in part.parts:
            _header_blocks(child, NESTED, out)
