"""Postfix-style mail event lines, through twisted.logger.

Every mail event is one line starting with the queue id (or NOQUEUE), as
Postfix logs it, e.g. ``4F2A9C0B1D: to=<a@example.org>, relay=virtual,
delay=0.02, delays=0.01/0/0/0.01, dsn=2.0.0, status=sent (delivered to maildir)``.
Parts call :func:`maillog`; :class:`MaillogObserver` writes the events to the
``maillog_file`` in syslog format (``Nov 28 16:00:01 host postfix/smtpd[42]:
...``) so that tools made for Postfix logs (pflogsumm) read them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import IO, Any

from twisted.logger import ILogObserver, Logger, LogLevel
from zope.interface import implementer

_log = Logger(namespace="pymta.maillog")


def maillog(service: str, text: str, level: LogLevel = LogLevel.info) -> None:
    """Log one mail event; service is the Postfix daemon name (smtpd, qmgr, virtual...)."""
    _log.emit(level, "{service}: {text}", service=service, text=text, pymta_maillog=True)


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
    ) -> None:
        self._stream = stream
        self._hostname = hostname.split(".")[0]
        self._syslog_name = syslog_name
        self._now = now
        self._pid = os.getpid() if pid is None else pid

    def __call__(self, event: dict[str, Any]) -> None:
        if not event.get("pymta_maillog"):
            return
        stamp = time.strftime("%b %d %H:%M:%S", time.localtime(event.get("log_time", self._now())))
        level = event.get("log_level")
        prefix = ""
        if level is LogLevel.warn:
            prefix = "warning: "
        elif level in (LogLevel.error, LogLevel.critical):
            prefix = "error: "
        line = (
            f"{stamp} {self._hostname} {self._syslog_name}/{event['service']}[{self._pid}]: "
            f"{prefix}{event['text']}\n"
        )
        self._stream.write(line)
        self._stream.flush()
