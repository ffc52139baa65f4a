"""The mail store's delivery API (pymta.mailstore.deliver) and its one
Maildir writer (pymta.mailstore.save): folders, flags, keywords, the quota
hook, and one naming scheme shared with IMAP APPEND; and the IMailDelivery
contract, run against the Maildir and the memory implementation."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from pymta.mailstore.deliver import MaildirDelivery
from pymta.mailstore.interface import IMailDelivery, NoSuchFolder
from pymta.mailstore.keywords import KEYWORDS_FILE
from pymta.mailstore.maildir import MaildirStore
from pymta.mailstore.memory import MemoryDelivery, MemoryStore
from pymta.mailstore.names import split_filename
from pymta.queue.reference import BytesContent
from pymta.sync import ImmediateSyncBarrier

MESSAGE = b"Subject: hello\n\nbody\n"


def _fired(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert len(out) == 1, "the delivery did not finish"
    return out[0]


def _delivery(clock: Clock | None = None, **kwargs: Any) -> MaildirDelivery:
    return MaildirDelivery(ImmediateSyncBarrier(), clock or Clock(), "host", **kwargs)


def test_inbox_without_flags_goes_to_new_and_the_store_numbers_it(tmp_path: Path) -> None:
    """A plain delivery makes the Maildir, lands in new/ (\\Recent), and
    the store's INBOX numbers it with the sizes of its name."""
    root = tmp_path / "u"
    path = _fired(_delivery().deliver(str(root), b"X-A: 1\n", BytesContent(MESSAGE)))
    assert Path(path).parent == root / "new"
    inbox = MaildirStore(Clock(), "host", fsync=False).open_user("u", str(root)).folder("INBOX")
    [info] = inbox.refresh()
    assert info.recent and info.flags == frozenset()
    assert inbox.read(info.uid) == b"X-A: 1\n" + MESSAGE
    assert info.rfc822_size == len(b"X-A: 1\n" + MESSAGE) + 4


def test_flags_and_keywords_go_to_cur_and_read_back(tmp_path: Path) -> None:
    """Flags and keywords (Sieve's imap4flags) put the message in cur/ with
    their :2, letters; new keywords get letters in dovecot-keywords, so the
    store reads back exactly what was delivered."""
    root = tmp_path / "u"
    flags = ["\\Seen", "\\Flagged", "$Forwarded", "Work", "$label1"]
    path = _fired(_delivery().deliver(str(root), b"", BytesContent(MESSAGE), flags=flags))
    assert Path(path).parent == root / "cur"
    assert split_filename(Path(path).name)[1] == "FPSab"
    assert (root / KEYWORDS_FILE).read_text() == "0 $label1\n1 Work\n"
    inbox = MaildirStore(Clock(), "host", fsync=False).open_user("u", str(root)).folder("INBOX")
    [info] = inbox.refresh()
    assert info.flags == {"\\Seen", "\\Flagged"}
    assert info.keywords == {"$Forwarded", "Work", "$label1"}
    assert not info.recent


def test_target_folder_must_exist_unless_create(tmp_path: Path) -> None:
    """A delivery into a missing folder errbacks NoSuchFolder and writes
    nothing (the caller decides: Sieve falls back to INBOX); with create
    the folder and its parents are made, complete, and the store lists it."""
    root = tmp_path / "u"
    delivery = _delivery()
    failure = _fired(delivery.deliver(str(root), b"", BytesContent(MESSAGE), folder="Lists/pymta"))
    assert failure.check(NoSuchFolder)
    assert not (root / ".Lists.pymta").exists()
    path = _fired(
        delivery.deliver(str(root), b"", BytesContent(MESSAGE), folder="Lists/pymta", create=True)
    )
    assert Path(path).parent == root / ".Lists.pymta" / "new"
    assert (root / ".Lists.pymta" / "maildirfolder").exists()
    mailbox = MaildirStore(Clock(), "host", fsync=False).open_user("u", str(root))
    assert {"Lists", "Lists/pymta"} <= {f.name for f in mailbox.list_folders()}
    assert len(mailbox.folder("Lists/pymta").refresh()) == 1


def test_invalid_folder_name_fails_without_writing(tmp_path: Path) -> None:
    """A folder name that could leave the Maildir (``..``) errbacks and
    writes nothing."""
    root = tmp_path / "u"
    failure = _fired(_delivery().deliver(str(root), b"", BytesContent(MESSAGE), folder="../x"))
    assert failure.check(Exception) and not root.exists()


def test_quota_check_refuses_after_the_write_and_leaves_nothing(tmp_path: Path) -> None:
    """The quota hook sees the folder and the written size; its EDQUOT
    fails the delivery, removes the tmp/ file and publishes nothing, and
    the mark never runs."""
    root = tmp_path / "u"
    seen: list[tuple[str, int]] = []
    marks: list[int] = []

    def quota(path: str, size: int) -> None:
        seen.append((path, size))
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    failure = _fired(
        _delivery(quota_check=quota).deliver(
            str(root), b"H: 1\n", BytesContent(MESSAGE), lambda: marks.append(1)
        )
    )
    assert failure.check(OSError) and failure.value.errno == errno.EDQUOT
    assert seen == [(str(root), len(b"H: 1\n" + MESSAGE))]
    assert os.listdir(root / "tmp") == [] and os.listdir(root / "new") == []
    assert marks == []


def test_delivery_and_append_share_one_naming_sequence(tmp_path: Path) -> None:
    """A delivery and an IMAP APPEND at the same instant in one process get
    different file names: both draw Q<n> from the one process sequence
    (two writers with counters of their own both named their first file
    ...Q1 and one rename would replace the other's message)."""
    clock = Clock()
    clock.advance(1_700_000_000)
    root = tmp_path / "u"
    store = MaildirStore(clock, "host", fsync=False)
    inbox = store.open_user("u", str(root)).folder("INBOX")
    delivered = _fired(_delivery(clock).deliver(str(root), b"", BytesContent(MESSAGE)))
    inbox.append(MESSAGE)
    files = [p for sub in ("new", "cur") for p in (root / sub).iterdir()]
    assert Path(delivered).name in {p.name for p in files}
    # APPEND files into new/ too (its mail is \Recent): two files, two names.
    assert len({p.name.split(":")[0] for p in files}) == 2
    assert len(inbox.messages()) == 2


# -- the contract: both implementations of IMailDelivery -----------------------


class _Store:
    """One implementation of IMailDelivery and the store it files into."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.root = str(tmp_path / "u")
        store: Any
        if kind == "maildir":
            store = MaildirStore(self.clock, "host", fsync=False)
            self.delivery: Any = MaildirDelivery(ImmediateSyncBarrier(), self.clock, "host")
        else:
            store = MemoryStore(self.clock)
            self.delivery = MemoryDelivery(store)
        self.store = store

    def folder(self, name: str = "INBOX") -> Any:
        folder = self.store.open_user("u", self.root).folder(name)
        folder.refresh()
        return folder


@pytest.fixture(params=["maildir", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> _Store:
    return _Store(request.param, tmp_path)


def test_contract_provides_the_interface(store: _Store) -> None:
    """Both deliveries provide IMailDelivery."""
    assert verifyObject(IMailDelivery, store.delivery)


def test_contract_plain_delivery_is_recent_in_inbox(store: _Store) -> None:
    """Headers and content arrive whole, in INBOX, \\Recent and unflagged,
    and the mark runs once before the Deferred fires."""
    marks: list[int] = []
    _fired(
        store.delivery.deliver(
            store.root, b"X-A: 1\n", BytesContent(MESSAGE), lambda: marks.append(1)
        )
    )
    assert marks == [1]
    inbox = store.folder()
    [info] = inbox.messages()
    assert inbox.read(info.uid) == b"X-A: 1\n" + MESSAGE
    assert info.recent and info.flags == frozenset() and info.keywords == frozenset()


def test_contract_flags_and_keywords(store: _Store) -> None:
    """Flags and keywords read back as given; the message is not \\Recent."""
    flags = ["\\Seen", "$Forwarded", "Work"]
    _fired(store.delivery.deliver(store.root, b"", BytesContent(MESSAGE), flags=flags))
    [info] = store.folder().messages()
    assert info.flags == {"\\Seen"} and info.keywords == {"$Forwarded", "Work"}
    assert not info.recent


def test_contract_missing_folder(store: _Store) -> None:
    """A missing folder fails with NoSuchFolder unless create; with create
    the message is in the new folder."""
    failure = _fired(store.delivery.deliver(store.root, b"", BytesContent(MESSAGE), folder="Lists"))
    assert failure.check(NoSuchFolder)
    _fired(
        store.delivery.deliver(store.root, b"", BytesContent(MESSAGE), folder="Lists", create=True)
    )
    assert len(store.folder("Lists").messages()) == 1


def test_contract_mark_failure_is_not_a_delivery_failure(store: _Store) -> None:
    """A mark that raises OSError leaves the mark to the queue manager: the
    delivery still succeeds."""

    def mark() -> None:
        raise OSError("queue file gone")

    result = _fired(store.delivery.deliver(store.root, b"", BytesContent(MESSAGE), mark))
    assert isinstance(result, str)
