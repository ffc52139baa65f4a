"""A real mail system for other people's tests: one call, no config files.

pymta-only. :class:`MailServer` starts pymta in a subprocess on free
loopback ports, in a temporary directory, with users and aliases given in
code; the test sends mail with :meth:`MailServer.send` (or any SMTP client
to ``smtp_port``), waits with :meth:`MailServer.wait_for_delivery`, reads
:meth:`MailServer.mailbox` and asks :meth:`MailServer.events` what the mail
log says — then :meth:`MailServer.stop`. POP3 and IMAP listen too, so the
code under test can read mail the way it will in production. For a test
that runs in its own Twisted reactor, see :mod:`pymta.testing.embedded`;
for pytest, the ``pymta_server`` fixture (:mod:`pymta.testing.pytest_plugin`).

The server is a test server: every domain and user lives under the
directory; logins are stored in clear (``{PLAIN}``) and failed logins are
delayed 100 ms instead of seconds, so that a test of a wrong password is
quick. Mail for other domains is accepted from loopback (mynetworks) and
goes nowhere: DNS points at a loopback port nobody serves, so it is
deferred, and :meth:`MailServer.events` shows it.

Writes: the directory (configuration, queue, mailboxes). Starts: one
twistd process, stopped by :meth:`stop` or when the ``with`` block ends.
"""

from __future__ import annotations

import email
import email.policy
import shutil
import smtplib
import tempfile
from collections.abc import Iterable, Mapping
from email.message import EmailMessage
from pathlib import Path

from pymta.testing.events import MailEvent, parse_twistd_line
from pymta.testing.process import PymtaProcess, wait_for_file
from pymta.testing.site import DEFAULT_USERS, MASTER_CF, Mailbox, mailbox_path, write_site

__all__ = ["MailServer", "Mailbox"]


class MailServer:
    """pymta on loopback for a test (see module doc)."""

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        users: Mapping[str, str] | None = None,
        aliases: Mapping[str, Iterable[str]] | None = None,
        main_cf: str = "",
        processes: int = 1,
    ) -> None:
        """``users``: address -> password (default alice@ and bob@example.test);
        ``aliases``: address -> addresses it forwards to; ``main_cf``: more
        main.cf lines (Postfix syntax) for what the test needs."""
        self._own_directory = directory is None
        self.root = Path(tempfile.mkdtemp(prefix="pymta-test.") if directory is None else directory)
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.aliases = {k: list(v) for k, v in (aliases or {}).items()}
        self.main_cf = main_cf
        self.processes = processes
        self._process: PymtaProcess | None = None

    # configuration, before start --------------------------------------------

    def add_user(self, address: str, password: str) -> None:
        """Another mailbox and login (before :meth:`start`)."""
        self._not_started()
        self.users[address] = password

    def add_alias(self, address: str, *targets: str) -> None:
        """Mail to address goes to targets (before :meth:`start`)."""
        self._not_started()
        self.aliases[address] = list(targets)

    def _not_started(self) -> None:
        if self._process is not None:
            raise RuntimeError("add users and aliases before start()")

    def _process_for(self) -> PymtaProcess:
        process = PymtaProcess(self.root, master_cf=MASTER_CF)
        write_site(
            process.config_dir, self.root, self.users, self.aliases, self.main_cf, self.processes
        )
        return process

    # life cycle ----------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> MailServer:
        """Write the configuration, start pymta, wait until it listens."""
        if self._process is not None:
            raise RuntimeError("already started")
        self._process = self._process_for()
        self._process.start(timeout)
        return self

    def stop(self) -> None:
        """Stop pymta cleanly (SIGTERM); the directory is removed if this
        class made it."""
        if self._process is not None:
            self._process.stop()
            self._process.__exit__()
        if self._own_directory:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> MailServer:
        return self.start() if self._process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def process(self) -> PymtaProcess:
        if self._process is None:
            raise RuntimeError("not started")
        return self._process

    # where it listens ------------------------------------------------------------

    host = "127.0.0.1"

    @property
    def smtp_port(self) -> int:
        return self.process.smtp_port

    @property
    def pop3_port(self) -> int:
        return self.process.pop3_port

    @property
    def imap_port(self) -> int:
        return self.process.imap_port

    @property
    def config_dir(self) -> Path:
        return self.process.config_dir

    # mail ----------------------------------------------------------------------------

    def send(
        self,
        sender: str,
        recipients: str | Iterable[str],
        message: bytes | str | EmailMessage,
    ) -> str:
        """Submit a message over SMTP; returns its queue id. Raises
        smtplib's errors for a refusal (``SMTPRecipientsRefused``, ...)."""
        if isinstance(recipients, str):
            recipients = [recipients]
        if isinstance(message, EmailMessage):
            data = message.as_bytes(policy=email.policy.SMTP)
        elif isinstance(message, str):
            data = message.encode("utf-8")
        else:
            data = message
        with smtplib.SMTP(self.host, self.smtp_port, timeout=30) as client:
            client.ehlo("pymta-testing")
            client.mail(sender)
            for rcpt in recipients:
                code, text = client.rcpt(rcpt)
                if code >= 400:
                    raise smtplib.SMTPRecipientsRefused({rcpt: (code, text)})
            code, text = client.data(data)
            if code != 250:
                raise smtplib.SMTPDataError(code, text)
        return text.decode().rsplit(" ", 1)[-1]

    def mailbox(self, address: str) -> Mailbox:
        """The Maildir of one of the users."""
        return Mailbox(mailbox_path(self.root, address))

    def wait_for_delivery(
        self, address: str, count: int = 1, timeout: float = 30.0
    ) -> list[EmailMessage]:
        """Wait until address's mailbox holds at least count messages (woken
        by the Maildir changing, never polled on a timer); return them."""
        box = self.mailbox(address)
        wait_for_file(box.path / "new", lambda: len(box) >= count, timeout)
        return box.messages()

    def events(self, service: str | None = None) -> list[MailEvent]:
        """The mail log so far as values, optionally of one service."""
        found = []
        for line in self.process.log().splitlines():
            event = parse_twistd_line(line)
            if event is not None and (service is None or event.service == service):
                found.append(event)
        return found

    def wait_for_event(self, pattern: str, timeout: float = 30.0) -> MailEvent:
        """Wait for the first mail log line whose text (after the service
        name) matches the regular expression, e.g. ``r"to=<bob@.*status=sent"``."""
        line = self.process.wait_for_log(r"\[pymta\.maillog#\w+\] [\w./-]+: .*" + pattern, timeout)[
            0
        ]
        event = parse_twistd_line(line)
        assert event is not None
        return event
