"""Dovecot-style session log lines of imapd, through twisted.logger.

Lines follow Dovecot 2.3 so that log tools made for it work::

    imap-login: Login: user=<u@example.org>, method=PLAIN, rip=192.0.2.1,
        lip=192.0.2.9, mpid=42, TLS, session=<Xq2x...>
    imap-login: Disconnected (auth failed, 1 attempts in 2 secs):
        user=<u@example.org>, method=PLAIN, rip=..., lip=..., session=<...>
    imap(u@example.org)<42><Xq2x...>: Disconnected: Logged out in=120 out=900
        deleted=0 expunged=0 trashed=0 hdr_count=0 hdr_bytes=0
        body_count=1 body_bytes=300

(each one line in the log; wrapped here). Each line is emitted with
``log_format = "{line}"`` and the fields ``pymta_imap = True``,
``service`` (``imap-login`` or ``imap``) and ``line``. Untrusted input:
the user name (from the client), printed with control characters replaced.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.logger import Logger

from pymta.maillog import safe

log = Logger(namespace="pymta.imap")


@dataclass
class SessionInfo:
    """What every log line of a session names."""

    rip: str
    lip: str
    pid: int
    session: str
    tls: bool = False

    def tail(self) -> str:
        tls = ", TLS" if self.tls else ""
        return f"rip={self.rip}, lip={self.lip}{tls}, session=<{self.session}>"


@dataclass
class Counters:
    """Dovecot's imap_logout_format fields."""

    bytes_in: int = 0
    bytes_out: int = 0
    deleted: int = 0
    expunged: int = 0
    hdr_count: int = 0
    hdr_bytes: int = 0
    body_count: int = 0
    body_bytes: int = 0

    def format(self) -> str:
        return (
            f"in={self.bytes_in} out={self.bytes_out} deleted={self.deleted} "
            f"expunged={self.expunged} trashed=0 hdr_count={self.hdr_count} "
            f"hdr_bytes={self.hdr_bytes} body_count={self.body_count} "
            f"body_bytes={self.body_bytes}"
        )


def emit(logger: Logger, service: str, line: str) -> None:
    if service == "imap-login":
        line = f"{service}: {line}"
    logger.info("{line}", line=line, service=service, pymta_imap=True)


def login(logger: Logger, info: SessionInfo, user: str, method: str) -> None:
    tls = ", TLS" if info.tls else ""
    emit(
        logger,
        "imap-login",
        f"Login: user=<{safe(user)}>, method={method}, rip={info.rip}, lip={info.lip}, "
        f"mpid={info.pid}{tls}, session=<{info.session}>",
    )


def login_disconnected(
    logger: Logger, info: SessionInfo, reason: str, user: str, method: str
) -> None:
    who = f"user=<{safe(user)}>, " if user else ""
    if method:
        who += f"method={method}, "
    emit(logger, "imap-login", f"Disconnected ({reason}): {who}{info.tail()}")


def logout(logger: Logger, info: SessionInfo, user: str, reason: str, counters: Counters) -> None:
    emit(
        logger,
        "imap",
        f"imap({safe(user)})<{info.pid}><{info.session}>: Disconnected: {reason} "
        f"{counters.format()}",
    )
