"""pickup(8): maildrop files checked, handed to the real cleanup, removed only
after its durable answer; bad files to corrupt/; the kernel's uid recorded.

Pool-thread work runs synchronously here (run_in_thread=maybeDeferred) and
time is a task.Clock; cleanup is the real one over the in-memory queue store.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from pymta.cleanup import Cleanup
from pymta.config import Config
from pymta.pickup.service import PickupService
from pymta.queue.memory import MemoryQueueStore
from pymta.queue.model import Envelope
from pymta.rewrite import Resolver
from pymta.sendmail.authorized import AuthorizationUnavailable, is_authorized, login_name
from pymta.sendmail.postdrop import full_flag_path, new_name, write_file
from pymta.sendmail.record import MaildropMessage, encode

MAIN_CF = """
myhostname = mx.example.org
mydomain = example.org
myorigin = example.org
mydestination = $myhostname, localhost
alias_maps =
queue_directory = {root}
message_size_limit = 2000
"""


class Harness:
    def __init__(self, root: Path, extra: str = "") -> None:
        self.root = root
        self.config = Config.from_text(MAIN_CF.format(root=root) + extra)
        self.clock = Clock()
        self.clock.advance(1700000000.0)
        self.store = MemoryQueueStore(self.clock)
        self.cleanup = Cleanup(
            self.config, self.store, Resolver(self.config), clock=self.clock, tz=datetime.UTC
        )
        self.held: list[Deferred[str]] | None = None
        self.pickup = PickupService(
            self.config,
            self.cleanup,
            self.clock,
            wakeup=60,
            run_in_thread=lambda f, *a: maybeDeferred(f, *a),
            use_inotify=False,
        )

    @property
    def maildrop(self) -> Path:
        return self.root / "maildrop"

    def drop(self, message: MaildropMessage | bytes) -> Path:
        data = message if isinstance(message, bytes) else encode(message)
        return Path(write_file(str(self.root), data))

    def queued(self) -> list[tuple[Envelope, bytes]]:
        return [self.store.read(qid, "incoming") for qid in self.store.list("incoming")]

    def hold_enqueue(self) -> list[Deferred[str]]:
        held: list[Deferred[str]] = []
        real = self.store.enqueue

        def slow(
            envelope: Envelope,
            content: bytes,
            queue_id: str | None = None,
            lines: int | None = None,
        ) -> Any:
            real(envelope, content, queue_id, lines=lines)
            d: Deferred[str] = Deferred()
            held.append(d)
            return d

        self.store.enqueue = slow  # type: ignore[method-assign]
        return held


@pytest.fixture
def events() -> Iterator[list[str]]:
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("pymta_maillog"):
            lines.append(f"{event['service']}: {event['text']}")

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def _message(**kw: Any) -> MaildropMessage:
    fields: dict[str, Any] = {
        "recipients": [("alice@example.org", "")],
        "content": b"Subject: hello\n\nbody\n",
    }
    fields.update(kw)
    return MaildropMessage(**fields)


def test_start_creates_maildrop_1733_and_takes_waiting_files(tmp_path: Path) -> None:
    """A file dropped before the start (server down) is queued by the first scan,
    with the kernel's uid, LOGIN@$myorigin as sender, Received "(pymta, from
    userid N)", From/Date/Message-ID added, and the file is gone."""
    h = Harness(tmp_path)
    path = h.drop(_message())
    assert (os.stat(h.maildrop).st_mode & 0o7777) == 0o1733
    h.pickup.startService()
    [(envelope, content)] = h.queued()
    uid = os.getuid()
    assert envelope.sender == f"{login_name(uid)}@example.org"
    assert envelope.attributes["uid"] == str(uid)
    assert envelope.attributes["protocol"] == "pickup"
    assert content.startswith(b"Received: by mx.example.org (pymta, from userid %d)" % uid)
    assert b"\nFrom: " in content and b"\nDate: " in content and b"\nMessage-ID: " in content
    assert not path.exists()
    h.pickup.stopService()


def test_file_removed_only_after_cleanups_durable_answer(tmp_path: Path) -> None:
    """While cleanup's write is not yet durable the maildrop file stays."""
    h = Harness(tmp_path)
    held = h.hold_enqueue()
    h.pickup.startService()
    path = h.drop(_message())
    h.pickup.scan()
    assert len(held) == 1 and path.exists()
    held[0].callback("ok")
    assert not path.exists()
    h.pickup.stopService()


def test_pickup_line_logged_with_kernel_uid(tmp_path: Path, events: list[str]) -> None:
    """The log has Postfix's ``QID: uid=N from=<sender>`` pickup line, before
    cleanup's message-id line."""
    h = Harness(tmp_path)
    h.drop(_message(sender="someone@else.example"))
    h.pickup.startService()
    pickup = [e for e in events if e.startswith("pickup: ")]
    assert len(pickup) == 1
    assert pickup[0].endswith(f": uid={os.getuid()} from=<someone@else.example>")
    qid = pickup[0].split()[1].rstrip(":")
    assert events.index(pickup[0]) < events.index(
        next(e for e in events if e.startswith(f"cleanup: {qid}: message-id="))
    )


def test_claimed_uid_in_content_is_ignored(tmp_path: Path, events: list[str]) -> None:
    """A file claiming ``uid=0`` in its records is delivered as its owner's:
    the attribute is ignored with a warning."""
    h = Harness(tmp_path)
    data = encode(_message()).replace(b"N1\n", b"Auid=0\nAlogin=root\nN1\n")
    h.drop(data.replace(b"N1\n", b"N1\n", 1))
    h.pickup.startService()
    [(envelope, content)] = h.queued()
    assert envelope.attributes["uid"] == str(os.getuid())
    assert b"from userid %d)" % os.getuid() in content
    assert any("ignoring attribute 'uid'" in e for e in events)


def test_full_name_and_dsn_reach_the_envelope(tmp_path: Path) -> None:
    """-F makes the added From: "Name <sender>"; -N/-R/-V are kept."""
    h = Harness(tmp_path)
    h.drop(
        _message(
            full_name="Jo Doe",
            recipients=[("alice@example.org", "NEVER")],
            attributes={"envid": "E1", "ret": "HDRS"},
        )
    )
    h.pickup.startService()
    [(envelope, content)] = h.queued()
    assert f"\nFrom: Jo Doe <{envelope.sender}>\n".encode() in content
    assert envelope.recipients[0].notify == "NEVER"
    assert envelope.attributes["envid"] == "E1" and envelope.attributes["ret"] == "HDRS"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: (d / new_name()).write_bytes(b"garbage\n"), "bad version line"),
        (lambda d: (d / new_name()).write_bytes(encode(_message())[:-2]), "end marker"),
        (lambda d: os.symlink("/etc/passwd", d / new_name()), "symbolic link"),
        (lambda d: os.mkfifo(d / new_name()), "not a regular file"),
        (
            lambda d: (d / new_name()).write_bytes(encode(_message(content=b"x" * 3000))),
            "message too big",
        ),
    ],
)
def test_bad_files_move_to_corrupt(
    tmp_path: Path, events: list[str], make: Any, reason: str
) -> None:
    """Garbage, truncated files, links, FIFOs and oversized messages go to
    corrupt/ with a log line; nothing is queued and pickup keeps going."""
    h = Harness(tmp_path)
    h.pickup.startService()
    make(h.maildrop)
    h.drop(_message())
    h.pickup.scan()
    assert len(h.queued()) == 1
    assert len(os.listdir(tmp_path / "corrupt")) == 1
    assert not os.listdir(h.maildrop)
    assert any(reason in e and "moved to corrupt" in e for e in events), events


def test_hard_link_is_refused(tmp_path: Path, events: list[str]) -> None:
    """A file with a second link (a hard link to someone else's file) goes to corrupt/."""
    h = Harness(tmp_path)
    h.pickup.startService()
    other = tmp_path / "elsewhere"
    other.write_bytes(encode(_message()))
    os.link(other, h.maildrop / new_name())
    h.pickup.scan()
    assert not h.queued()
    assert any("2 links" in e for e in events)


def test_temporary_files_are_left_alone(tmp_path: Path) -> None:
    """sendmail's unfinished ``tmp.`` files are not read."""
    h = Harness(tmp_path)
    h.pickup.startService()
    (h.maildrop / ("tmp." + new_name())).write_bytes(encode(_message()))
    h.pickup.scan()
    assert not h.queued() and len(os.listdir(h.maildrop)) == 1


def test_unauthorized_user_file_is_removed(tmp_path: Path, events: list[str]) -> None:
    """authorized_submit_users is checked against the owner's login: refused
    files are removed with Postfix's warning."""
    h = Harness(tmp_path, "authorized_submit_users = !root, static:anyone\n")
    if os.getuid() != 0:
        pytest.skip("needs the file owner to be root")
    h.drop(_message())
    h.pickup.startService()
    assert not h.queued() and not os.listdir(h.maildrop)
    assert any("user root is not allowed to submit mail" in e for e in events)


def test_temporary_cleanup_failure_keeps_the_file(tmp_path: Path, events: list[str]) -> None:
    """A 4xx from cleanup leaves the file for the next scan, which queues it."""
    h = Harness(tmp_path)
    real = h.store.enqueue
    h.store.enqueue = lambda *a, **kw: fail(OSError("disk"))  # type: ignore
    path = h.drop(_message())
    h.pickup.startService()
    assert path.exists() and any("will try again" in e for e in events)
    h.store.enqueue = real  # type: ignore[method-assign]
    h.clock.advance(60)
    assert not path.exists() and len(h.queued()) == 1


def test_count_limit_flags_maildrop_full(tmp_path: Path, events: list[str]) -> None:
    """More files than pymta_maildrop_count_limit: a warning naming the uid,
    and the full flag that makes sendmail refuse; removed once drained."""
    h = Harness(tmp_path, "pymta_maildrop_count_limit = 2\n")
    held = h.hold_enqueue()
    for _ in range(3):
        h.drop(_message())
    h.pickup.startService()
    assert os.path.exists(full_flag_path(str(tmp_path)))
    assert any(f"uid={os.getuid()} (3 files)" in e for e in events)
    for d in held:
        d.callback("ok")
    h.clock.advance(60)
    assert not os.path.exists(full_flag_path(str(tmp_path)))


@pytest.mark.parametrize(
    ("entries", "name", "allowed"),
    [
        (["static:anyone"], "bob", True),
        ([], "bob", False),
        (["alice", "bob"], "BOB", True),
        (["alice"], "bob", False),
        (["!bob", "static:anyone"], "bob", False),
        (["!bob", "static:anyone"], "alice", True),
    ],
)
def test_authorized_submit_users_matching(entries: list[str], name: str, allowed: bool) -> None:
    """Postfix's list: names, !name, static:anyone; first match wins; empty denies."""
    assert is_authorized(name, entries) is allowed


def test_authorized_submit_users_file(tmp_path: Path) -> None:
    """A /file/name entry is replaced by its contents; a missing file is undecidable."""
    listing = tmp_path / "users"
    listing.write_text("# who may\n!eve\nalice, bob\n")
    assert is_authorized("bob", [str(listing)])
    assert not is_authorized("eve", [str(listing), "static:anyone"])
    assert is_authorized("carol", [str(listing), "static:anyone"])
    with pytest.raises(AuthorizationUnavailable):
        is_authorized("bob", [str(tmp_path / "missing")])


def test_file_pickup_may_not_open_stays(
    tmp_path: Path, events: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file pickup is not allowed to open (pickup not run as root) is left
    in maildrop with a warning, not moved to corrupt/."""
    h = Harness(tmp_path)
    path = h.drop(_message())

    def refuse(*args: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("pymta.pickup.reader.os.open", refuse)
    h.pickup.startService()
    assert path.exists() and not os.listdir(tmp_path / "corrupt")
    assert any("cannot open: Permission denied: left in place" in e for e in events)


def test_master_cf_pickup_line_is_built() -> None:
    """Postfix's ``pickup unix n - n 60 1 pickup`` line starts pickup: no
    "not built yet" warning any more."""
    from pymta.config.master_cf import check_master, parse_master_cf
    from pymta.service import BUILT_PARTS

    assert check_master(parse_master_cf("pickup unix n - n 60 1 pickup\n"), BUILT_PARTS) == []
