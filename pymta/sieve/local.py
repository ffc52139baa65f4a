"""local: a Unix user's Sieve script, run as that user at local(8) delivery.

What Pigeonhole's LDA does when Postfix's local(8) hands it a message
(``mailbox_command = dovecot-lda``), without the extra program: the
delivery child (:mod:`pymta.privsep.child`, already running as the
recipient, so a 0700 home is no obstacle) loads this module only when the
user has an active script (``~/.dovecot.sieve``, :mod:`pymta.sieve.storage`),
and :func:`deliver` then:

- compiles and runs the script (:mod:`pymta.sieve.evaluate`); a script that
  does not compile or fails at run time never loses mail: the message is
  kept in the mailbox and the error is handed back to be logged;
- ``reject``/``ereject``: writes nothing and answers ``5.7.1`` (the agent
  bounces);
- ``keep`` and ``fileinto`` (with ``:create``, ``:flags``): the copies, as
  the user. With ``home_mailbox = Maildir/`` through the mail store's
  Maildir writer (:class:`pymta.mailstore.deliver.MaildirDelivery`: folders
  ``~/Maildir/.Folder/``, imap4flags as ``:2,`` letters and
  ``dovecot-keywords``), each file fsynced before its rename; a folder that
  does not exist (without ``:create``) keeps the message in INBOX, as
  Pigeonhole does. With an mbox mailbox (the spool), ``keep`` appends to
  it and ``fileinto`` another folder keeps the message there too (an mbox
  user has no folders pymta knows of) with a warning;
- ``vacation`` and ``duplicate``: the tracking file in the home
  (:mod:`pymta.sieve.tracking`), written as the user, read and written
  under an flock of the home directory (two deliveries at once send one
  vacation reply);
- ``redirect`` and the vacation replies go back to the agent, which
  submits them through cleanup as ``mail_owner`` (the child has no
  access to the queue).

The answer is a status line and one JSON line (:func:`answer_lines`):
``done`` (where copies went), ``redirects``, ``vacations`` (``to``,
``reason``, ``params`` for :func:`pymta.sieve.filter.vacation_reply`) and
``warnings`` (for the mail log). Untrusted input: the script and the
message (read whole into memory: a script may file several copies).
May write: the user's mailbox, Maildir folders and tracking file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from twisted.internet.defer import succeed

from pymta.mailstore.deliver import MaildirDelivery
from pymta.mailstore.interface import InvalidFolderName, NoSuchFolder
from pymta.mailstore.tmpclean import TmpCleaner
from pymta.queue.reference import BytesContent
from pymta.sieve import storage, tracking
from pymta.sieve.evaluate import Delivery, ScriptLimits, run_script
from pymta.sync import ImmediateSyncBarrier, fsync_paths

#: The most the JSON answer may hold (the agent reads the child's output
#: up to its limit); longer vacation texts are cut to fit.
ANSWER_LIMIT = 60 * 1024

#: Appends an mbox record: (request, message source) -> status, text
#: (:func:`pymta.privsep.child.append_mbox`).
AppendMbox = Callable[[dict[str, Any], io.BytesIO], tuple[str, str]]


#: Modules a run may import lazily (codecs, the email package's parts),
#: loaded by :func:`preload` while the child still has the identity that
#: started it: the user may not be able to read the interpreter's files.
PRELOAD = (
    "encodings.ascii",
    "encodings.latin_1",
    "encodings.utf_8",
    "encodings.idna",
    "email.parser",
    "email.feedparser",
    "email._header_value_parser",
    "email._encoded_words",
    "email.headerregistry",
    "email.message",
    "email.charset",
    "email.contentmanager",
    "email.base64mime",
    "email.quoprimime",
    "email.iterators",
    "email.generator",
    "urllib.parse",
    "_strptime",
)


def preload() -> None:
    """Import :data:`PRELOAD` (what is missing is left to chance)."""
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


class _Clock:
    """Wall-clock time for the Maildir writer's file names."""

    @staticmethod
    def seconds() -> float:
        return time.time()


def deliver(
    request: dict[str, Any], data: bytes, append_mbox: AppendMbox
) -> tuple[str, str, dict[str, Any]]:
    """Run the active script of the user in ``request["home"]`` on ``data``
    (delivery headers and message) and carry out its decisions: (status,
    text, details) as the module doc says."""
    home = str(request["home"])
    mailbox = str(request["path"])
    settings = dict(request.get("sieve") or {})
    details: dict[str, Any] = {"done": [], "redirects": [], "vacations": [], "warnings": []}
    writer = _Writer(mailbox, data, request, append_mbox, details)
    script = storage.active_path(home)
    cache = storage.ScriptCache(int(settings.get("max_script_size", 1 << 20)))
    compiled = cache.load(script) if script else None
    if compiled is None:
        return writer.finish_plain()
    name = os.path.basename(str(script))
    if compiled.commands is None:
        details["warnings"].append(f"script {name}: {compiled.error}; message kept in INBOX")
        return writer.finish_plain(" (Sieve script error)")
    now = float(request.get("time") or time.time())
    # Two deliveries to one user at once (two children) must not both
    # decide that a sender has had no vacation reply yet: the home is
    # locked from reading the tracking file until it is written.
    with _home_lock(home):
        return _run(request, data, writer, details, compiled, cache, settings, name, home, now)


def _run(
    request: dict[str, Any],
    data: bytes,
    writer: _Writer,
    details: dict[str, Any],
    compiled: storage.Compiled,
    cache: storage.ScriptCache,
    settings: dict[str, Any],
    name: str,
    home: str,
    now: float,
) -> tuple[str, str, dict[str, Any]]:
    tracking_file = tracking.tracking_path(home)
    entries = tracking.read(tracking_file, now)
    limits = ScriptLimits(
        str(settings.get("global_dir", "")),
        int(settings.get("max_actions", 32)),
        int(settings.get("max_redirects", 4)),
        str(settings.get("delimiter", "+")),
    )
    end = data.find(b"\n\n")
    delivery = Delivery(
        user=str(request.get("user", "")),
        home=home,
        head=data if end < 0 else data[: end + 2],
        body=lambda: b"" if end < 0 else data[end + 2 :],
        size=len(data),
        sender=str(request.get("sender", "")),
        recipient=str(request.get("recipient", "")),
        now=now,
        mailbox_exists=writer.folder_exists,
        seen=lambda key: key in entries,
    )
    try:
        outcome, error = run_script(compiled, cache, limits, delivery)
    except Exception as e:  # never lose mail over a fault in the filter
        outcome, error = None, f"internal error: {e!r}"
    if outcome is None:
        details["warnings"].append(f"script {name}: {error}; message kept in INBOX")
        return writer.finish_plain(" (Sieve script error)")
    for action in outcome.actions:
        if action.kind in ("reject", "ereject"):
            reason = " ".join(action.reason.split()) or "rejected"
            return "5.7.1", f"rejected by Sieve: {reason}", details
    targets = [
        (a.folder, a.flags, a.create) for a in outcome.actions if a.kind in ("keep", "fileinto")
    ]
    if outcome.implicit_keep and not any(t[0] == "INBOX" for t in targets):
        targets.append(("INBOX", outcome.keep_flags, False))
    try:
        for folder, flags, create in targets:
            writer.store(folder, flags, create)
        writer.sync()
    except _Deferral as e:
        return e.status, e.text, details
    marks: list[tuple[str, float]] = [(k, float(s)) for k, s in outcome.duplicate_marks]
    for action in outcome.actions:
        if action.kind == "redirect":
            details["redirects"].append(action.address)
            details["done"].append(f"redirected to {action.address}")
        elif action.kind == "vacation":
            params = dict(action.vacation)
            marks.append((str(params.pop("key")), float(params.pop("seconds"))))  # type: ignore[arg-type]
            details["vacations"].append(
                {"to": action.address, "reason": action.reason, "params": params}
            )
    try:
        tracking.record(tracking_file, marks, now)
    except Exception as e:  # the copies are written: a retry would repeat them
        details["warnings"].append(f"cannot record Sieve tracking: {e}")
    if not details["done"]:
        return "2.0.0", "discarded by Sieve", details
    return "2.0.0", "delivered by Sieve: " + ", ".join(details["done"]), details


@contextlib.contextmanager
def _home_lock(home: str) -> Iterator[None]:
    """flock(2) on the home directory itself (no lock file to leave
    behind); a home that cannot be opened goes unlocked."""
    try:
        fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class _Deferral(Exception):
    def __init__(self, status: str, text: str) -> None:
        super().__init__(f"{status} {text}")
        self.status = status
        self.text = text


class _Writer:
    """The copies of one message into the user's mailbox (module doc)."""

    def __init__(
        self,
        mailbox: str,
        data: bytes,
        request: dict[str, Any],
        append_mbox: AppendMbox,
        details: dict[str, Any],
    ) -> None:
        self.mailbox = mailbox
        self.maildir = mailbox.endswith("/")
        self.data = data
        self.request = request
        self.append_mbox = append_mbox
        self.details = details
        self.published: list[str] = []
        self._store: MaildirDelivery | None = None

    def folder_exists(self, folder: str) -> bool:
        if folder.upper() == "INBOX":
            return True
        if not self.maildir:
            return False
        from pymta.delivery.folder import folder_exists

        return folder_exists(self.mailbox, folder)

    def store(self, folder: str, flags: Sequence[str], create: bool) -> None:
        done: list[str] = self.details["done"]
        if folder.upper() == "INBOX" and "INBOX" in done:
            return
        if not self.maildir:
            if folder.upper() != "INBOX":
                self.details["warnings"].append(
                    f"fileinto {folder!r}: the mailbox is an mbox file; kept in INBOX"
                )
                if "INBOX" in done:
                    return
            self._mbox()
            done.append("INBOX")
            return
        try:
            self.published.append(self._maildir(folder, flags, create))
            done.append(folder)
        except (NoSuchFolder, InvalidFolderName):
            # Pigeonhole: fileinto a folder that does not exist (without
            # :create) or cannot exist keeps the message in INBOX instead.
            self.details["warnings"].append(f"fileinto {folder!r}: no such folder; kept in INBOX")
            if "INBOX" not in done:
                self.published.append(self._maildir("INBOX", flags, False))
                done.append("INBOX")

    def _maildir(self, folder: str, flags: Sequence[str], create: bool) -> str:
        if self._store is None:
            clock = _Clock()
            self._store = MaildirDelivery(
                ImmediateSyncBarrier(fsync=True),
                clock,  # type: ignore[arg-type]
                # tmp/ cleaning is the IMAP server's business, not a child's.
                tmp_cleaner=TmpCleaner(clock, run_in_thread=lambda work: succeed([])),  # type: ignore[arg-type]
            )
        results: list[Any] = []
        d = self._store.deliver(
            self.mailbox, b"", BytesContent(self.data), folder=folder, flags=flags, create=create
        )
        d.addBoth(results.append)
        result = results[0]
        if isinstance(result, str):
            return result
        error = result.value
        if isinstance(error, (NoSuchFolder, InvalidFolderName)):
            raise error
        if isinstance(error, OSError):
            raise _Deferral(*_os_status(error, f"maildir {self.mailbox}"))
        raise _Deferral("4.3.0", f"cannot deliver to maildir {self.mailbox}: {error}")

    def _mbox(self) -> None:
        request = {
            "path": self.mailbox,
            "sender": self.request.get("sender", ""),
            "time": self.request.get("time", time.time()),
            "locks": self.request.get("locks", ["fcntl", "dotlock"]),
            "size_limit": self.request.get("size_limit", 0),
        }
        status, text = self.append_mbox(request, io.BytesIO(self.data))
        if not status.startswith("2"):
            raise _Deferral(status, text)

    def sync(self) -> None:
        """The directories the copies were renamed into, durable before the
        agent hears of them (and the queue file is marked done)."""
        try:
            fsync_paths((), sorted({os.path.dirname(p) for p in self.published}))
        except OSError as e:
            raise _Deferral(*_os_status(e, f"maildir {self.mailbox}")) from None

    def finish_plain(self, note: str = "") -> tuple[str, str, dict[str, Any]]:
        """Keep in the mailbox: no script, or one that failed."""
        try:
            self.store("INBOX", (), False)
            self.sync()
        except _Deferral as e:
            return e.status, e.text, self.details
        where = f"maildir {self.mailbox}" if self.maildir else f"mailbox {self.mailbox}"
        return "2.0.0", f"delivered to {where}{note}", self.details


def _os_status(error: OSError, what: str) -> tuple[str, str]:
    # A full disk or quota defers (as local(8)'s mail_copy() does); a
    # refused path is permanent.
    if error.errno in (errno.EACCES, errno.EPERM, errno.ELOOP, errno.EISDIR):
        return "5.2.0", f"cannot deliver to {what}: {error.strerror}"
    if error.errno in (errno.EDQUOT, errno.EFBIG):
        return "4.2.2", f"cannot deliver to {what}: mailbox full ({error.strerror})"
    return "4.2.0", f"cannot deliver to {what}: {error.strerror or error}"


def answer_lines(status: str, text: str, details: dict[str, Any]) -> str:
    """The child's output: the status line, then the details as one JSON
    line, vacation texts cut so that the whole stays under ANSWER_LIMIT."""
    encoded = json.dumps(details)
    for vacation in details["vacations"]:
        if len(encoded) <= ANSWER_LIMIT:
            break
        over = len(encoded) - ANSWER_LIMIT
        vacation["reason"] = vacation["reason"][: max(0, len(vacation["reason"]) - over - 16)]
        encoded = json.dumps(details)
    if len(encoded) > ANSWER_LIMIT:
        details = {
            "done": details["done"][:50],
            "redirects": details["redirects"][:50],
            "vacations": [],
            "warnings": ["Sieve answer too long: vacation replies dropped"],
        }
        encoded = json.dumps(details)
    return f"{status} {text}\n{encoded}\n"
