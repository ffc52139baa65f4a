"""The replies of one SMTP session: one path for every answer smtpd sends.

Mirrors Postfix's smtpd_chat.c (replies gathered and written together,
``smtpd_chat_reply``) with the error handling smtpd.c wraps around it:

- :meth:`Chat.reply` queues a reply; :meth:`Chat.flush` writes what is
  queued in one write, in command order (RFC 2920: the replies to a
  pipelined batch go out together). pymta.output's ``send`` writes at once
  when the socket takes it.
- :meth:`Chat.error` is a reply to a command that failed: it marks the
  command failed (the ``commands=ok/total`` figure of the disconnect line)
  and counts an error. Past ``smtpd_soft_error_limit`` the next reply waits
  ``smtpd_error_sleep_time`` (the tarpit: :attr:`tarpit_due` asks the
  session to stop reading, :meth:`start_tarpit` holds the replies); at
  ``smtpd_hard_error_limit`` the session ends with ``421 4.7.0 ... too many
  errors``, logged as Postfix logs it.
- :meth:`Chat.reject` is an error that a restriction decided: logged as
  Postfix's ``NOQUEUE: reject: STAGE from CLIENT: REPLY; from=<> to=<>
  proto= helo=<>`` line, then answered.
- :meth:`Chat.hangup` is a last reply (421, the 554 of a pipelining
  violation, the 221 to a non-SMTP command): queued, written, and the
  connection closed.
- :meth:`Chat.forgive` forgets the errors once a message was accepted, as
  Postfix does.

Untrusted: the texts it logs come from the session (already escaped where
they hold client bytes). Writes: the transport. Logs: the reject and
too-many-errors lines.
"""

from __future__ import annotations

from typing import Any

from pymta.maillog import maillog
from pymta.output import lose_connection, send
from pymta.smtpd.restrictions import Reject
from pymta.smtpd.session import Session
from pymta.smtpd.settings import SMTPServerSettings

__all__ = ["Chat"]


class Chat:
    """The reply path of one session (see the module docstring).

    ``transport`` is set once the connection is made; ``last_command`` is
    the command being answered, as the log lines name it.
    """

    def __init__(self, settings: SMTPServerSettings, session: Session) -> None:
        self._settings = settings
        self.session = session
        self.transport: Any = None
        self.connected = False
        self.last_command = "CONNECT"
        self.out: list[bytes] = []
        #: The command being answered failed (set by error, reset per command).
        self.failed = False
        self.errors = 0
        #: An error passed the soft limit: the session pauses before reading on.
        self.tarpit_due = False
        #: The tarpit is running: replies wait.
        self.tarpit_active = False
        #: The session ends: no more input is read.
        self.closing = False

    def reply(self, data: bytes) -> None:
        self.out.append(data)

    def error(self, data: bytes) -> None:
        self.out.append(data)
        self.failed = True
        self.count_error()

    def count_error(self) -> None:
        """One more error: past smtpd_soft_error_limit the next reply waits,
        at smtpd_hard_error_limit the session ends with 421."""
        self.errors += 1
        s = self._settings
        if self.errors >= s.soft_error_limit and s.error_sleep_time > 0:
            self.tarpit_due = True
        if self.errors >= s.hard_error_limit and not self.closing:
            maillog(
                s.service_name,
                f"too many errors after {self.last_command} from {self.session.client}",
            )
            self.hangup(f"421 4.7.0 {s.myhostname} Error: too many errors\r\n".encode())

    def reject(
        self,
        reject: Reject,
        stage: str,
        recipient: str | None = None,
        sender: str | None = None,
    ) -> None:
        """Reply with a restriction's refusal and log it like Postfix's log_whatsup."""
        s = self.session
        parts = [f"NOQUEUE: reject: {stage} from {s.client}: {reject.line()};"]
        if sender is None:
            sender = s.sender
        if sender is not None:
            parts.append(f" from=<{sender}>")
        if recipient is not None:
            parts.append(f" to=<{recipient}>")
        parts.append(f" proto={s.log_protocol}")
        if s.helo_name:
            parts.append(f" helo=<{s.helo_name}>")
        maillog(self._settings.service_name, "".join(parts))
        self.error(f"{reject.line()}\r\n".encode())

    def hangup(self, data: bytes) -> None:
        """A last reply, then the connection is closed."""
        self.out.append(data)
        self.close()

    def close(self) -> None:
        self.closing = True
        self.tarpit_active = False
        self.flush()
        if self.transport is not None:
            # At once when the reply is out (pymta.output): no write event.
            lose_connection(self.transport)

    def flush(self) -> None:
        if self.tarpit_active:
            return
        if self.out and self.transport is not None and self.connected:
            out = self.out
            self.out = []
            # At once when the socket takes it (pymta.output): a client that
            # waits for each reply saves a reactor round per command.
            send(self.transport, out[0] if len(out) == 1 else b"".join(out))

    def start_tarpit(self) -> None:
        """Postfix's smtpd_error_sleep_time: replies wait until end_tarpit."""
        self.tarpit_due = False
        self.tarpit_active = True

    def end_tarpit(self) -> bool:
        """The tarpit is over; False when it was cancelled meanwhile (closed)."""
        if not self.tarpit_active:
            return False
        self.tarpit_active = False
        return True

    def forgive(self) -> None:
        """A message was accepted: earlier errors no longer count (Postfix)."""
        self.errors = 0

    def drop(self) -> None:
        """The client is gone: replies still queued are thrown away."""
        self.out = []
