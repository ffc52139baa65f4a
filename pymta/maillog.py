"""Postfix-style mail event lines, through twisted.logger.

Every mail event is one line starting with the queue id (or NOQUEUE), as
Postfix logs it, e.g. ``4F2A9C0B1D: to=<a@example.org>, relay=virtual,
delay=0.02, delays=0.01/0/0/0.01, dsn=2.0.0, status=sent (delivered to maildir)``.
Parts call :func:`maillog`. The events go to :data:`publisher`, a
twisted.logger LogPublisher of their own: by default it forwards them to the
global log (twistd's log file), as Postfix logs to syslog when maillog_file
is empty. With ``maillog_file`` set, :func:`log_to` routes them to a
:class:`MaillogObserver` instead (and only there, as Postfix's postlogd),
which writes them to the file in syslog format (``Nov 28 16:00:01 host postfix/smtpd[42]:
...``) so that tools made for Postfix logs (pflogsumm) read them. While
that observer is the publisher's only one, :func:`maillog` hands it each
line directly, without the event dictionary (several lines per message);
any other observer added (metrics, tests) gets every event as before.

In ``twistd pymta`` the observer's lines are written at most
:data:`FLUSH_SECONDS` after the first of them, all in one ``write`` (the
file is opened ``O_APPEND``: whole lines, even from several reactor
processes). A flush per reactor turn cost a message about three appends
at one connection (one per turn that logged), each an ext4 journal handle
on the reactor thread, which can wait while the queue's fsync commits the
journal; the lines and their time stamps (taken when the event happened)
are the same. What changes: ``tail -f`` sees a line up to
:data:`FLUSH_SECONDS` later, and a process killed with SIGKILL loses the
lines of that last moment (a stop, a reload's reopen and SIGTERM flush
first).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import IO, Any

from twisted.logger import ILogObserver, Logger, LogLevel, LogPublisher, globalLogPublisher
from zope.interface import implementer


class _MaillogPublisher(LogPublisher):
    """The mail events' publisher; notes when its only observer is a
    :class:`MaillogObserver`, which :func:`maillog` then hands each line
    to directly (the same line, without building the event dictionary
    that only the observer would read)."""

    def __init__(self, *observers: ILogObserver) -> None:
        # Who listens, kept here (as LogPublisher keeps it: no duplicates),
        # so the check needs none of Twisted's private attributes.
        self._listening: list[ILogObserver] = []
        for observer in observers:
            if observer not in self._listening:
                self._listening.append(observer)
        super().__init__(*observers)
        self.line_writer: MaillogObserver | None = None

    def addObserver(self, observer: ILogObserver) -> None:
        super().addObserver(observer)
        if observer not in self._listening:
            self._listening.append(observer)
        self._note_writer()

    def removeObserver(self, observer: ILogObserver) -> None:
        super().removeObserver(observer)
        if observer in self._listening:
            self._listening.remove(observer)
        self._note_writer()

    def _note_writer(self) -> None:
        only = self._listening[0] if len(self._listening) == 1 else None
        self.line_writer = only if isinstance(only, MaillogObserver) else None


#: Every mail event passes through here; add observers to watch them.
publisher = _MaillogPublisher(globalLogPublisher)
_NAMESPACE = "pymta.maillog"
_FORMAT = "{service}: {text}"
_log = Logger(namespace=_NAMESPACE, observer=publisher)
_time = time.time
#: How long ``maillog_file``'s lines may wait in memory for company before
#: they are written (see the module doc).
FLUSH_SECONDS = 0.05


def safe(text: str, limit: int = 100) -> str:
    """text with control characters replaced by '?', cut to limit characters:
    what a client sent (a user name), made fit for one log line (pop3d,
    imapd)."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def log_to(observer: ILogObserver) -> Callable[[], None]:
    """Send mail events to observer instead of the global log; returns the undo."""
    publisher.removeObserver(globalLogPublisher)
    publisher.addObserver(observer)

    def undo() -> None:
        publisher.removeObserver(observer)
        publisher.addObserver(globalLogPublisher)

    return undo


def maillog(service: str, text: str, level: LogLevel = LogLevel.info) -> None:
    """Log one mail event; service is the Postfix daemon name (smtpd, qmgr, virtual...)."""
    writer = publisher.line_writer
    if writer is not None:
        # maillog_file alone listens: the line straight to it, no event.
        writer.write_line(service, text, level, _time())
        return
    # The event Logger.emit would build, handed to the publisher directly:
    # several lines per message, and emit's check of the level against
    # every LogLevel constant was a third of a line's cost (the type
    # checker already holds ``level`` to a LogLevel).
    publisher(
        {
            "service": service,
            "text": text,
            "pymta_maillog": True,
            "log_logger": _log,
            "log_level": level,
            "log_namespace": _NAMESPACE,
            "log_source": None,
            "log_format": _FORMAT,
            "log_time": _time(),
        }
    )


#: Postfix's prefixes of a warning's and an error's text (msg_warn, msg_error).
_LEVEL_PREFIX = {
    LogLevel.warn: "warning: ",
    LogLevel.error: "error: ",
    LogLevel.critical: "error: ",
}
_INFO = LogLevel.info
#: Services are master.cf's few names; the bound only guards against a bug.
_TAG_CACHE_LIMIT = 256


@implementer(ILogObserver)
class MaillogObserver:
    """Writes mail events as syslog lines, ``MMM DD HH:MM:SS host name/service[pid]: text``."""

    def __init__(
        self,
        stream: IO[str],
        hostname: str,
        syslog_name: str = "postfix",
        now: Callable[[], float] = time.time,
        pid: int | None = None,
        flush_later: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        self._stream = stream
        self._hostname = hostname.split(".")[0]
        self._syslog_name = syslog_name
        self._now = now
        self._pid = os.getpid() if pid is None else pid
        # With flush_later (e.g. ``lambda f: reactor.callLater(FLUSH_SECONDS, f)``)
        # the lines are flushed together when it calls back, instead of once
        # each. What it returns is kept: :meth:`flush` cancels it (a
        # DelayedCall) when it flushes first.
        self._flush_later = flush_later
        self._flush_pending = False
        self._pending_call: Any = None
        self._stamp_second = -1
        self._stamp = ""
        # service -> " host name/service[pid]: ", the middle of every line
        self._tags: dict[str, str] = {}

    def _flush(self) -> None:
        self._flush_pending = False
        self._pending_call = None
        self._stream.flush()

    def flush(self) -> None:
        """Write the lines waiting for :data:`FLUSH_SECONDS` now (a stop, a
        reopen), and drop the call that would have."""
        call = self._pending_call
        if call is not None and getattr(call, "active", lambda: False)():
            call.cancel()
        self._flush()

    def __call__(self, event: dict[str, Any]) -> None:
        if not event.get("pymta_maillog"):
            return
        logged = event.get("log_time")
        self.write_line(
            event["service"],
            event["text"],
            event.get("log_level"),
            self._now() if logged is None else logged,
        )

    def write_line(self, service: str, text: str, level: LogLevel | None, logged: float) -> None:
        """Write one mail event's line (what :meth:`__call__` does with an
        event's service, text, level and time)."""
        when = int(logged)
        if when != self._stamp_second:
            self._stamp_second = when
            self._stamp = time.strftime("%b %d %H:%M:%S", time.localtime(when))
        tag = self._tags.get(service)
        if tag is None:
            if len(self._tags) >= _TAG_CACHE_LIMIT:
                self._tags.clear()
            tag = f" {self._hostname} {self._syslog_name}/{service}[{self._pid}]: "
            self._tags[service] = tag
        prefix = "" if level is _INFO or level is None else _LEVEL_PREFIX.get(level, "")
        self._stream.write(f"{self._stamp}{tag}{prefix}{text}\n")
        if self._flush_later is None:
            self._stream.flush()
        elif not self._flush_pending:
            self._flush_pending = True
            self._pending_call = self._flush_later(self._flush)
