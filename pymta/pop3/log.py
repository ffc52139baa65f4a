"""Dovecot-style session log lines of pop3d, through twisted.logger.

Lines follow Dovecot 2.3 so that log tools made for it work::

    pop3-login: Login: user=<u@example.org>, method=PLAIN, rip=192.0.2.1,
        lip=192.0.2.9, mpid=42, TLS, session=<Xq2x...>
    pop3-login: Disconnected (auth failed, 1 attempts in 2 secs):
        user=<u@example.org>, method=PLAIN, rip=..., lip=..., session=<...>
    pop3(u@example.org)<42><Xq2x...>: Disconnected: Logged out
        top=0/0, retr=1/300, del=0/1, size=300

(each one line in the log; wrapped here).

Each line is emitted once with ``log_format = "{line}"`` and the fields
``pymta_pop3 = True``, ``service`` (``pop3-login`` or ``pop3``) and ``line``.
Untrusted input: the user name (from the client) is printed between ``<>``
with control characters replaced.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.logger import Logger

from pymta.maillog import safe

log = Logger(namespace="pymta.pop3")


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


def emit(logger: Logger, service: str, line: str) -> None:
    """One line; pop3-login lines get their ``pop3-login: `` prefix here."""
    if service == "pop3-login":
        line = f"{service}: {line}"
    logger.info("{line}", line=line, service=service, pymta_pop3=True)


def login(logger: Logger, info: SessionInfo, user: str, method: str) -> None:
    tls = ", TLS" if info.tls else ""
    emit(
        logger,
        "pop3-login",
        f"Login: user=<{safe(user)}>, method={method}, rip={info.rip}, lip={info.lip}, "
        f"mpid={info.pid}{tls}, session=<{info.session}>",
    )


def login_disconnected(
    logger: Logger,
    info: SessionInfo,
    reason: str,
    user: str,
    method: str,
) -> None:
    who = f"user=<{safe(user)}>, "
    if method:
        who += f"method={method}, "
    emit(logger, "pop3-login", f"Disconnected ({reason}): {who}{info.tail()}")


def logout(
    logger: Logger,
    info: SessionInfo,
    user: str,
    reason: str,
    counters: str,
) -> None:
    emit(
        logger,
        "pop3",
        f"pop3({safe(user)})<{info.pid}><{info.session}>: Disconnected: {reason} {counters}",
    )
