"""End to end: synchronisation with real IMAP sync clients from Debian — mbsync
(isync) and offlineimap — against a real ``twistd pymta`` on loopback, both ways.

Each test delivers mail with smtplib, syncs it down to a local Maildir, changes
one side (flags, deletions, moves, new messages; locally by renaming files as a
mail reader would, on the server with imaplib), syncs again and checks the
other side: the server's Maildir on disk and what imaplib sees, or the local
Maildir. Configurations are written into tmp_path; plain IMAP on loopback.
"""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import DEFAULT_MASTER_CF, IMAP_SERVICE, PymtaServer

MBSYNC = shutil.which("mbsync")
OFFLINEIMAP = shutil.which("offlineimap")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PymtaServer]:
    with PymtaServer(tmp_path / "server", master_cf=DEFAULT_MASTER_CF + IMAP_SERVICE) as instance:
        instance.start()
        yield instance
        instance.stop()


def deliver(server: PymtaServer, subject: str, to: str = "alice@example.test") -> bytes:
    """Send one message with smtplib, wait for its delivery; return its body line."""
    before = server.log().count("status=sent")
    body = f"body of {subject}".encode()
    message = b"Subject: %s\r\nMessage-ID: <%s@client.test>\r\n\r\n%s\r\n" % (
        subject.encode(),
        subject.encode(),
        body,
    )
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
        client.sendmail("sender@client.test", [to], message)
    server.wait_for_log(r"status=sent", count=before + 1)
    return body


def run(command: list[str], home: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HOME=str(home))
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{command} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


# local Maildirs -------------------------------------------------------------------


def local_messages(folder: Path) -> dict[str, tuple[Path, str]]:
    """Subject -> (file, Maildir flags) of every message in a local folder."""
    found: dict[str, tuple[Path, str]] = {}
    for sub in ("new", "cur"):
        directory = folder / sub
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            match = re.search(rb"^Subject: (.*)$", path.read_bytes(), re.M)
            assert match is not None, path
            flags = path.name.split(":2,", 1)[1] if ":2," in path.name else ""
            found[match.group(1).decode().strip()] = (path, flags)
    return found


def without_tuid(data: bytes) -> bytes:
    """A local copy without the X-TUID header mbsync adds while it propagates."""
    return re.sub(rb"^X-TUID: [^\n]*\n", b"", data, flags=re.M)


def set_local_flags(path: Path, flags: str) -> Path:
    """Change a local message's flags the way a mail reader does: rename into cur/."""
    base = path.name.split(":2,", 1)[0]
    target = path.parent.parent / "cur" / f"{base}:2,{''.join(sorted(flags))}"
    path.rename(target)
    return target


def move_local(path: Path, folder: Path, strip_uid: bool) -> None:
    """Move a local message to another folder (without the sync client's UID
    tag in its name, as a mail reader would, so that it counts as new there)."""
    name = path.name
    if strip_uid:
        name = re.sub(r",U=\d+", "", name)
    (folder / "cur").mkdir(parents=True, exist_ok=True)
    path.rename(folder / "cur" / name)


def add_local(folder: Path, name: str, subject: str) -> None:
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "new" / name).write_bytes(b"Subject: %s\n\nwritten locally\n" % subject.encode())


# the server's side ----------------------------------------------------------------


def server_messages(server: PymtaServer, folder: str = "") -> dict[str, tuple[bytes, str]]:
    """Subject -> (file contents, Maildir flags) in the server's Maildir folder
    ("" is INBOX, "Archive" is .Archive)."""
    base = server.maildir("alice") / (f".{folder}" if folder else "")
    found: dict[str, tuple[bytes, str]] = {}
    for sub in ("new", "cur"):
        directory = base / sub
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            data = path.read_bytes()
            match = re.search(rb"^Subject: (.*)$", data, re.M)
            assert match is not None, path
            flags = path.name.split(":2,", 1)[1] if ":2," in path.name else ""
            found[match.group(1).decode().strip()] = (data, flags)
    return found


def imap_flags(server: PymtaServer, folder: str) -> dict[str, set[str]]:
    """Subject -> IMAP flags of every message in a server folder, read with imaplib."""
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
    try:
        client.login("alice@example.test", "alice-pw")
        typ, _ = client.select(folder, readonly=True)
        assert typ == "OK"
        typ, data = client.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        if data == [None]:
            return {}
        result: dict[str, set[str]] = {}
        for item in data:
            if not isinstance(item, tuple):
                continue
            flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])
            assert flags is not None
            subject = item[1].split(b":", 1)[1].strip().decode()
            result[subject] = {f.decode() for f in flags.group(1).split()} - {"\\Recent"}
        return result
    finally:
        client.logout()


def imap_session(server: PymtaServer) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
    client.login("alice@example.test", "alice-pw")
    return client


def numbers(client: imaplib.IMAP4) -> dict[str, str]:
    """Subject -> sequence number in the selected mailbox."""
    typ, data = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    return {
        item[1].split(b":", 1)[1].strip().decode(): item[0].split()[0].decode()
        for item in data
        if isinstance(item, tuple)
    }


def server_side_changes(server: PymtaServer) -> None:
    """The server-side half of each test, with imaplib and smtplib: STORE
    -FLAGS \\Seen +FLAGS \\Answered on "one"; \\Deleted and EXPUNGE of the draft;
    MOVE of "three" from Archive back to INBOX; a new delivery, "four"."""
    client = imap_session(server)
    client.select("INBOX")
    inbox = numbers(client)
    assert client.store(inbox["one"], "-FLAGS", "(\\Seen)")[0] == "OK"
    assert client.store(inbox["one"], "+FLAGS", "(\\Answered)")[0] == "OK"
    client.select("Drafts")
    assert client.store(numbers(client)["a local draft"], "+FLAGS", "(\\Deleted)")[0] == "OK"
    typ, expunged = client.expunge()
    assert typ == "OK" and expunged == [b"1"]
    client.select("Archive")
    typ, _ = client._simple_command("MOVE", numbers(client)["three"], "INBOX")
    assert typ == "OK"
    client.logout()
    deliver(server, "four")


def check_server_after_upload(server: PymtaServer) -> None:
    """The local changes of each test arrived: "one" is \\Flagged \\Seen (in its
    Maildir file name too), "two" was trashed and is gone, "three" is in
    Archive, the local draft is in Drafts."""
    on_server = server_messages(server)
    assert set(on_server) == {"one"}
    assert on_server["one"][1] == "FS"
    assert imap_flags(server, "INBOX") == {"one": {"\\Flagged", "\\Seen"}}
    assert set(server_messages(server, "Archive")) == {"three"}
    assert imap_flags(server, "Archive") == {"three": set()}
    assert imap_flags(server, "Drafts") == {"a local draft": set()}


def check_local_after_download(server: PymtaServer, local: Path) -> None:
    """The server-side changes arrived locally."""
    inbox = local_messages(local / "INBOX")
    assert set(inbox) == {"one", "three", "four"}
    assert inbox["one"][1] == "FR"
    assert without_tuid(inbox["four"][0].read_bytes()) == server_messages(server)["four"][0]
    assert local_messages(local / "Archive") == {}
    assert local_messages(local / "Drafts") == {}


# mbsync -------------------------------------------------------------------------


def mbsync_config(tmp_path: Path, server: PymtaServer) -> Path:
    local = tmp_path / "local"
    local.mkdir()
    config = tmp_path / "mbsyncrc"
    config.write_text(
        f"""IMAPAccount pymta
Host 127.0.0.1
Port {server.imap_port}
User alice@example.test
Pass alice-pw
SSLType None
AuthMechs PLAIN LOGIN

IMAPStore remote
Account pymta

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel pymta
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
"""
    )
    return config


@pytest.mark.skipif(MBSYNC is None, reason="mbsync (Debian isync) is not installed")
def test_mbsync_syncs_down_and_up_and_down_again(tmp_path: Path, server: PymtaServer) -> None:
    """mbsync downloads delivered mail byte for byte into every special-use
    folder; local flag changes, a trashed message, a move to Archive and a new
    draft reach the server's Maildir (flags in the file names, the trashed
    message expunged); then server-side STORE, EXPUNGE, MOVE and a new delivery
    reach the local Maildir."""
    assert MBSYNC is not None
    for subject in ("one", "two", "three"):
        deliver(server, subject)
    config = mbsync_config(tmp_path, server)
    sync = [MBSYNC, "-c", str(config), "pymta"]
    run(sync, tmp_path)

    local = tmp_path / "local"
    assert {p.name for p in local.iterdir()} >= {
        "INBOX",
        "Archive",
        "Drafts",
        "Junk",
        "Sent",
        "Trash",
    }
    inbox = local_messages(local / "INBOX")
    assert set(inbox) == {"one", "two", "three"}
    on_server = server_messages(server)
    for subject, (path, flags) in inbox.items():
        assert without_tuid(path.read_bytes()) == on_server[subject][0]
        assert flags == ""

    # Local changes, then sync up.
    set_local_flags(inbox["one"][0], "FS")
    set_local_flags(inbox["two"][0], "ST")
    move_local(inbox["three"][0], local / "Archive", strip_uid=True)
    add_local(local / "Drafts", "draft1", "a local draft")
    run(sync, tmp_path)
    check_server_after_upload(server)

    # Server-side changes, then sync down.
    server_side_changes(server)
    run(sync, tmp_path)
    check_local_after_download(server, local)


@pytest.mark.skipif(MBSYNC is None, reason="mbsync (Debian isync) is not installed")
def test_mbsync_eight_bit_folder_name_is_refused_not_renamed(
    tmp_path: Path, server: PymtaServer
) -> None:
    """mbsync 1.4 sends a new local folder's name as raw UTF-8. IMAP4rev1 names
    are mUTF-7, so CREATE is refused with NO (as Dovecot does) and no folder
    appears on the server; storing it translated would list it back as
    "B&APw-cher" and mbsync would make a second local copy on every run."""
    assert MBSYNC is not None
    deliver(server, "one")
    config = mbsync_config(tmp_path, server)
    add_local(tmp_path / "local" / "Bücher", "b1", "a book")
    result = run([MBSYNC, "-c", str(config), "pymta"], tmp_path, check=False)
    assert result.returncode != 0
    assert "Bücher" in result.stderr + result.stdout
    assert not any("B&APw-cher" in p.name for p in server.maildir("alice").iterdir())
    assert set(local_messages(tmp_path / "local" / "INBOX")) == {"one"}
    assert sorted(p.name for p in (tmp_path / "local").iterdir()) == [
        "Archive",
        "Bücher",
        "Drafts",
        "INBOX",
        "Junk",
        "Sent",
        "Trash",
    ]


# offlineimap ----------------------------------------------------------------------


def offlineimap_config(tmp_path: Path, server: PymtaServer) -> Path:
    config = tmp_path / "offlineimaprc"
    config.write_text(
        f"""[general]
accounts = pymta
metadata = {tmp_path}/offlineimap-meta

[Account pymta]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {tmp_path}/local

[Repository remote]
type = IMAP
remotehost = 127.0.0.1
remoteport = {server.imap_port}
remoteuser = alice@example.test
remotepass = alice-pw
ssl = no
starttls = no
"""
    )
    (tmp_path / "local").mkdir()
    return config


@pytest.mark.skipif(
    OFFLINEIMAP is None, reason="offlineimap (Debian offlineimap3) is not installed"
)
def test_offlineimap_syncs_down_and_up_and_down_again(tmp_path: Path, server: PymtaServer) -> None:
    """offlineimap downloads delivered mail byte for byte; local flag changes, a
    deleted message, a move to Archive and a new draft reach the server (APPEND
    with UIDPLUS, UID STORE, EXPUNGE); then server-side STORE, EXPUNGE, MOVE and
    a new delivery reach the local Maildir."""
    assert OFFLINEIMAP is not None
    for subject in ("one", "two", "three"):
        deliver(server, subject)
    config = offlineimap_config(tmp_path, server)
    sync = [OFFLINEIMAP, "-c", str(config), "-o", "-u", "basic"]
    output = run(sync, tmp_path)
    assert "ERROR" not in output.stdout + output.stderr

    local = tmp_path / "local"
    assert {p.name for p in local.iterdir()} >= {"INBOX", "Archive", "Drafts", "Sent", "Trash"}
    inbox = local_messages(local / "INBOX")
    assert set(inbox) == {"one", "two", "three"}
    on_server = server_messages(server)
    for subject, (path, flags) in inbox.items():
        assert path.read_bytes() == on_server[subject][0]
        assert flags == ""

    set_local_flags(inbox["one"][0], "FS")
    # offlineimap stores a local T flag as \\Deleted without expunging it; a
    # message removed locally is deleted and expunged on the server.
    inbox["two"][0].unlink()
    move_local(inbox["three"][0], local / "Archive", strip_uid=True)
    add_local(local / "Drafts", "draft1", "a local draft")
    output = run(sync, tmp_path)
    assert "ERROR" not in output.stdout + output.stderr
    check_server_after_upload(server)

    server_side_changes(server)
    output = run(sync, tmp_path)
    assert "ERROR" not in output.stdout + output.stderr
    check_local_after_download(server, local)
