"""filter: Sieve at final delivery: load, run, and carry out the actions.

Mirrors Pigeonhole's LDA/LMTP plugin. For a user with an active script
(:mod:`pymta.sieve.storage`), :meth:`SieveFilter.evaluate` reads the
script (compiled once per file version), the message's header (and its
body when a test needs it) and runs :mod:`pymta.sieve.interpret` in the
reactor's thread pool, never on the reactor thread. :mod:`pymta.delivery.final`
then stores the copies; here are the parts it needs:

- ``redirect`` resubmits the message through cleanup with the original
  envelope sender (Pigeonhole's ``sieve_redirect_envelope_from = sender``);
  the ``Delivered-To:`` it carries stops a loop back to this user.
- ``vacation`` (RFC 5230) submits a new message through cleanup with the
  null sender, ``Auto-Submitted: auto-replied`` (RFC 3834) and
  ``In-Reply-To``/``References``; it is never sent to the null sender,
  lists, bulk mail, auto-submitted mail or mail not addressed to the user
  (:mod:`pymta.sieve.interpret`), and once per sender and handle per
  ``:days`` (:mod:`pymta.sieve.tracking`). A vacation that cannot be
  queued is logged; the delivery itself stands.
- a script that does not compile, or fails at run time, never loses mail:
  the message is kept in INBOX and the error logged (``warning: sieve:
  USER: SCRIPT: line N: ...``), as Pigeonhole does.

Parameters: ``pymta_sieve_enable``, ``pymta_sieve_global_dir``,
``pymta_sieve_max_script_size``, ``pymta_sieve_max_actions``,
``pymta_sieve_max_redirects``, ``recipient_delimiter`` (``:detail``).
Untrusted input: scripts and messages. May write: the tracking file in
the user's home; new messages through cleanup. Logs: errors and what a
script did, through the caller.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate, make_msgid
from typing import Any

from twisted.internet.defer import Deferred

from pymta.config.config import Config
from pymta.delivery.folder import folder_exists
from pymta.delivery.headers import HEADER_READ_LIMIT
from pymta.delivery.mailbox import Mailbox
from pymta.queue.model import Envelope, Recipient
from pymta.queue.reference import BLOCK_SIZE, IMessageContent
from pymta.sieve import storage, tracking
from pymta.sieve.evaluate import Delivery, ScriptLimits, run_script
from pymta.sieve.interpret import Outcome

RunInThread = Callable[[Callable[[], Any]], "Deferred[Any]"]


@dataclass(frozen=True)
class SieveSettings:
    enabled: bool = True
    global_dir: str = ""
    max_script_size: int = 1 << 20
    max_actions: int = 32
    max_redirects: int = 4
    delimiter: str = "+"

    @classmethod
    def from_config(cls, config: Config) -> SieveSettings:
        return cls(
            enabled=config.get_bool("pymta_sieve_enable"),
            global_dir=config.get("pymta_sieve_global_dir"),
            max_script_size=config.get_int("pymta_sieve_max_script_size"),
            max_actions=max(1, config.get_int("pymta_sieve_max_actions")),
            max_redirects=max(0, config.get_int("pymta_sieve_max_redirects")),
            delimiter=config.get("recipient_delimiter"),
        )

    def for_child(self) -> dict[str, object]:
        """What the local delivery child needs (:mod:`pymta.sieve.local`);
        empty when Sieve is off (the child then writes the mailbox plainly)."""
        if not self.enabled:
            return {}
        return {
            "max_script_size": self.max_script_size,
            "global_dir": self.global_dir,
            "max_actions": self.max_actions,
            "max_redirects": self.max_redirects,
            "delimiter": self.delimiter,
        }

    @property
    def limits(self) -> ScriptLimits:
        """What one run needs (:mod:`pymta.sieve.evaluate`)."""
        return ScriptLimits(self.global_dir, self.max_actions, self.max_redirects, self.delimiter)


@dataclass
class Evaluation:
    """What a run decided, or why it did not run (``error``)."""

    script: str
    outcome: Outcome | None
    error: str | None = None
    #: The whole message (prefix included), read when a redirect needs it.
    content: bytes | None = None
    #: Something to log that did not stop the run.
    warning: str | None = None


class SieveFilter:
    """Runs users' active scripts; one instance per delivering part."""

    def __init__(
        self,
        settings: SieveSettings,
        run_in_thread: RunInThread,
        now: Callable[[], float],
        cleanup: Any = None,
    ) -> None:
        self.settings = settings
        self._run = run_in_thread
        self._now = now
        self.cleanup = cleanup
        self._cache = storage.ScriptCache(settings.max_script_size)

    def active(self, mailbox: Mailbox) -> bool:
        """Whether the user has an active script (one stat of the link, on
        the caller's thread: cheap, and the common answer is no)."""
        if not self.settings.enabled or not mailbox.home:
            return False
        try:  # os.path.lexists, without its frame
            os.lstat(os.path.join(mailbox.home, storage.ACTIVE_LINK))
        except (OSError, ValueError):
            return False
        return True

    def evaluate(
        self,
        mailbox: Mailbox,
        prefix: bytes,
        message: IMessageContent,
        sender: str,
        recipient: str,
    ) -> Deferred[Evaluation | None]:
        """Run the user's active script in the thread pool; None when there
        is none after all."""
        now = self._now()
        return self._run(lambda: self._evaluate(mailbox, prefix, message, sender, recipient, now))

    def _evaluate(
        self,
        mailbox: Mailbox,
        prefix: bytes,
        message: IMessageContent,
        sender: str,
        recipient: str,
        now: float,
    ) -> Evaluation | None:
        path = storage.active_path(mailbox.home)
        if path is None:
            return None
        name = os.path.basename(path)
        compiled = self._cache.load(path)
        if compiled is None:
            return None
        if compiled.commands is None:
            return Evaluation(name, None, compiled.error)
        try:
            head = prefix + _read_header(message)
        except OSError as e:
            return Evaluation(name, None, f"cannot read the message: {e}")
        tracking_file = tracking.tracking_path(mailbox.home)
        with tracking.lock(tracking_file):
            entries = tracking.read(tracking_file, now)
            evaluation = self._run_script(
                compiled, name, mailbox, prefix, message, sender, recipient, now, head, entries
            )
            if evaluation.outcome is not None:
                # Recorded now, under the lock: a second delivery from the
                # same sender running at the same time sees the reply.
                replies = [
                    (str(a.vacation["key"]), float(a.vacation["seconds"]))  # type: ignore[arg-type]
                    for a in evaluation.outcome.actions
                    if a.kind == "vacation"
                ]
                try:
                    tracking.record(tracking_file, replies, now)
                except OSError as e:
                    evaluation.warning = f"cannot record the vacation reply: {e}"
        return evaluation

    def _run_script(
        self,
        compiled: storage.Compiled,
        name: str,
        mailbox: Mailbox,
        prefix: bytes,
        message: IMessageContent,
        sender: str,
        recipient: str,
        now: float,
        head: bytes,
        entries: dict[str, float],
    ) -> Evaluation:
        def body() -> bytes:
            data = _read_all(message)
            end = data.find(b"\n\n")
            return b"" if end < 0 else data[end + 2 :]

        delivery = Delivery(
            user=mailbox.user,
            home=mailbox.home,
            head=head,
            body=body,
            size=len(prefix) + message.size,
            sender=sender,
            recipient=recipient,
            now=now,
            mailbox_exists=lambda folder: folder_exists(mailbox.maildir, folder),
            seen=lambda key: key in entries,
        )
        outcome, error = run_script(compiled, self._cache, self.settings.limits, delivery)
        if outcome is None:
            return Evaluation(name, None, error)
        content = None
        if any(a.kind == "redirect" for a in outcome.actions):
            content = prefix + _read_all(message)
        return Evaluation(name, outcome, None, content)

    def record(self, mailbox: Mailbox, marks: list[tuple[str, float]]) -> Deferred[None]:
        """Remember vacation replies and duplicate IDs (after the delivery)."""
        path = tracking.tracking_path(mailbox.home)
        now = self._now()
        return self._run(lambda: tracking.record(path, marks, now))

    def redirect(self, sender: str, address: str, content: bytes) -> Deferred[str]:
        envelope = Envelope(
            sender=sender,
            recipients=[Recipient(address=address, original=address)],
            arrival_time=self._now(),
            attributes={"origin": "sieve"},
        )
        return self.cleanup.submit(envelope, content)

    def vacation(
        self, mailbox: Mailbox, recipient: str, params: dict[str, object], to: str, reason: str
    ) -> Deferred[str]:
        reply = vacation_reply(
            params, to, str(params.get("from") or recipient), reason, self._now()
        )
        envelope = Envelope(
            sender="",
            recipients=[Recipient(address=to, original=to)],
            arrival_time=self._now(),
            attributes={"origin": "sieve-vacation"},
        )
        return self.cleanup.submit(envelope, reply)


def vacation_reply(
    params: dict[str, object], to: str, sender_from: str, reason: str, now: float
) -> bytes:
    """The reply message of RFC 5230 section 5 (LF line ends)."""
    subject = params.get("subject")
    if subject is None:
        original = params.get("original_subject") or [""]
        subject = "Auto: " + str(original[0]) if original and original[0] else "Automated reply"  # type: ignore[index]
    lines = [
        f"From: {sender_from}",
        f"To: <{to}>",
        f"Subject: {_one_line(str(subject))}",
        f"Date: {formatdate(now, localtime=True)}",
        f"Message-ID: {make_msgid()}",
        "Auto-Submitted: auto-replied (vacation)",
        "Precedence: bulk",
    ]
    message_id = params.get("message_id") or []
    if message_id:
        mid = str(message_id[0]).strip()  # type: ignore[index]
        lines.append(f"In-Reply-To: {mid}")
        references = params.get("references") or []
        refs = (str(references[0]).strip() + " " if references else "") + mid  # type: ignore[index]
        lines.append(f"References: {refs}")
    lines.append("MIME-Version: 1.0")
    text = reason.replace("\r\n", "\n")
    if params.get("mime"):
        # :mime: the reason is a MIME entity, its own headers first.
        return ("\n".join(lines) + "\n" + text.lstrip("\n")).encode("utf-8")
    lines += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
    if not text.endswith("\n"):
        text += "\n"
    return ("\n".join(lines) + "\n\n" + text).encode("utf-8")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _read_header(message: IMessageContent) -> bytes:
    reader = message.open()
    try:
        data = b""
        while len(data) < HEADER_READ_LIMIT:
            block = reader.read(BLOCK_SIZE)
            if not block:
                break
            data += block
            if data.startswith(b"\n") or b"\n\n" in data:
                break
        return data[:HEADER_READ_LIMIT]
    finally:
        reader.close()


def _read_all(message: IMessageContent) -> bytes:
    reader = message.open()
    try:
        chunks: list[bytes] = []
        while True:
            block = reader.read(BLOCK_SIZE)
            if not block:
                return b"".join(chunks)
            chunks.append(block)
    finally:
        reader.close()


def sieve_filter(
    config: Config, reactor: Any, cleanup: Any, now: Callable[[], float] | None = None
) -> SieveFilter | None:
    """The SieveFilter of a delivering part (None with ``pymta_sieve_enable = no``);
    scripts run in the reactor's thread pool; ``now`` defaults to the reactor's clock."""
    settings = SieveSettings.from_config(config)
    if not settings.enabled:
        return None
    return SieveFilter(settings, thread_runner(reactor), now or reactor.seconds, cleanup)


def thread_runner(reactor: Any) -> RunInThread:
    """Runs a function in the reactor's thread pool."""
    from twisted.internet.threads import deferToThreadPool

    def run(work: Callable[[], Any]) -> Deferred[Any]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), work)

    return run
