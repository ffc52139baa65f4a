"""A real mail system inside the test's own reactor (trial, pytest-twisted).

pymta-only. :class:`EmbeddedMailServer` is :class:`pymta.testing.MailServer`
for Twisted tests: the same configuration from code, but pymta's service
hierarchy (``pymta.service.makeService``) runs in the reactor the test
already runs, so a test of a Twisted application talks to it without a
subprocess, and every wait is a Deferred: :meth:`send` fires when the
message is queued, :meth:`wait_for_delivery` when the mailbox holds it.
Mail events are read from the mail log publisher as they happen
(:meth:`events`). Writes: its directory. Logs: pymta's own log lines.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.logger import ILogObserver

from pymta.maillog import publisher
from pymta.testing.events import MailEvent, parse_event
from pymta.testing.site import (
    DEFAULT_USERS,
    IMAP_SERVICE_NAME,
    POP3_SERVICE_NAME,
    SMTP_SERVICE_NAME,
    Mailbox,
    mailbox_path,
    write_site,
)

__all__ = ["EmbeddedMailServer"]


class EmbeddedMailServer:
    """pymta in the calling test's reactor (see module doc)."""

    host = "127.0.0.1"

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        users: Mapping[str, str] | None = None,
        aliases: Mapping[str, Iterable[str]] | None = None,
        main_cf: str = "",
        reactor: Any = None,
    ) -> None:
        self._own_directory = directory is None
        self.root = Path(tempfile.mkdtemp(prefix="pymta-test.") if directory is None else directory)
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.aliases = {k: list(v) for k, v in (aliases or {}).items()}
        self.main_cf = main_cf
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self._reactor = reactor
        self._service: Any = None
        self._events: list[MailEvent] = []
        self._waiters: list[tuple[str, int, Deferred[list[EmailMessage]]]] = []

    # life cycle ----------------------------------------------------------------

    def start(self) -> None:
        """Build pymta from the configuration and start it (it listens when
        this returns)."""
        from pymta.service import makeService

        config_dir = self.root / "etc"
        write_site(config_dir, self.root, self.users, self.aliases, self.main_cf)
        publisher.addObserver(cast(ILogObserver, self._observe))
        self._service = makeService(config_dir, self._reactor)
        self._service.privilegedStartService()
        self._service.startService()

    def stop(self) -> Deferred[None]:
        """Stop pymta (the deliveries in flight finish first)."""
        publisher.removeObserver(cast(ILogObserver, self._observe))
        d: Deferred[None] = succeed(None)
        if self._service is not None and self._service.running:
            d = Deferred.fromCoroutine(self._stop())
        return d

    async def _stop(self) -> None:
        await self._service.stopService()
        if self._own_directory:
            shutil.rmtree(self.root, ignore_errors=True)

    # where it listens ------------------------------------------------------------

    def _port(self, service_name: str) -> int:
        for key, server in self._service.ports.items():
            if key.startswith(service_name + ":"):
                return int(server.port)
        raise KeyError(service_name)

    @property
    def smtp_port(self) -> int:
        return self._port(SMTP_SERVICE_NAME)

    @property
    def pop3_port(self) -> int:
        return self._port(POP3_SERVICE_NAME)

    @property
    def imap_port(self) -> int:
        return self._port(IMAP_SERVICE_NAME)

    # mail ------------------------------------------------------------------------------

    def send(
        self, sender: str, recipients: str | Iterable[str], message: bytes | str
    ) -> Deferred[Any]:
        """Submit a message with twisted.mail's SMTP client; fires once the
        server answered 250 to it (the message is durable)."""
        from twisted.mail.smtp import sendmail

        if isinstance(recipients, str):
            recipients = [recipients]
        data = message.encode("utf-8") if isinstance(message, str) else message
        d: Deferred[Any] = sendmail(
            self.host,
            sender,
            list(recipients),
            data,
            port=self.smtp_port,
            requireTransportSecurity=False,
        )
        return d

    def mailbox(self, address: str) -> Mailbox:
        return Mailbox(mailbox_path(self.root, address))

    def wait_for_delivery(self, address: str, count: int = 1) -> Deferred[list[EmailMessage]]:
        """Fires with the mailbox's messages once it holds at least count
        (checked after each delivery the mail log reports)."""
        d: Deferred[list[EmailMessage]] = Deferred()
        self._waiters.append((address, count, d))
        self._check_waiters()
        return d

    def events(self, service: str | None = None) -> list[MailEvent]:
        return [e for e in self._events if service is None or e.service == service]

    def _observe(self, event: dict[str, Any]) -> None:
        if not event.get("pymta_maillog"):
            return
        level = getattr(event.get("log_level"), "name", "info")
        parsed = parse_event(event["service"], event["text"], level)
        self._events.append(parsed)
        if parsed.status == "sent":
            self._check_waiters()

    def _check_waiters(self) -> None:
        for waiter in list(self._waiters):
            address, count, d = waiter
            box = self.mailbox(address)
            if len(box) >= count:
                self._waiters.remove(waiter)
                d.callback(box.messages())
