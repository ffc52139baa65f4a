"""End to end: IMAP with ``pymta_processes = 2`` — a real ``twistd pymta``
master and its worker both accept on the imapd socket and serve one user's
Maildir, driven by imaplib and imapclient over loopback. Sessions of one
user in the two processes see each other's changes (NOOP and IDLE, woken
through inotify), concurrent APPENDs in both processes never share a UID,
and flags set in one process are what a fresh session in the other sees."""

from __future__ import annotations

import imaplib
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient

from tests.harness import IMAP_SERVICE, PymtaServer
from tests.test_workers_e2e import token_message, two_processes

USER = "alice@example.test"
PASSWORD = "alice-pw"

_LOGIN = r"imap-login: Login: user=<alice@example\.test>, .*\bmpid=(\d+)\b"
_WORKER = r"worker 1 started, pid (\d+)"
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")
_TOKEN = re.compile(rb"X-Token: (\S+)")
_SEQ_UID = re.compile(rb"(\d+) \(UID (\d+)\)")

#: Connections tried before giving up on reaching the other process: the
#: kernel hands each new connection to whichever process accepts first, and
#: one of the two may win most of them (about 85% seen on an idle machine).
MAX_TRIES = 200

#: How long an IDLE session waits for another process's change: well below
#: the watcher's 30 s polling fallback, so only inotify can wake it in time.
WAIT = 15.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PymtaServer]:
    with two_processes(tmp_path, IMAP_SERVICE) as instance:
        yield instance


def _pids(server: PymtaServer) -> tuple[int, int]:
    """(master pid, worker pid)."""
    assert server.process is not None
    match = re.search(_WORKER, server.wait_for_log(_WORKER)[0])
    assert match is not None
    return server.process.pid, int(match.group(1))


def _logins(server: PymtaServer) -> list[int]:
    """The serving process of every login of alice so far, in log order."""
    return [int(m.group(1)) for m in map(re.compile(_LOGIN).search, server.log().splitlines()) if m]


def _login_pid(server: PymtaServer, count: int) -> int:
    """The process that logged the count-th login of alice (logins are made
    one at a time where this is used, so the count-th line is ours)."""
    line = server.wait_for_log(_LOGIN, count=count)[count - 1]
    match = re.search(_LOGIN, line)
    assert match is not None
    return int(match.group(1))


def _imaplib_session(server: PymtaServer) -> tuple[imaplib.IMAP4, int]:
    """A new imaplib session and the pid of the process serving it."""
    count = len(_logins(server)) + 1
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
    client.login(USER, PASSWORD)
    return client, _login_pid(server, count)


def _imapclient_session(server: PymtaServer) -> tuple[IMAPClient, int]:
    """A new imapclient session and the pid of the process serving it."""
    count = len(_logins(server)) + 1
    client = IMAPClient("127.0.0.1", port=server.imap_port, ssl=False, timeout=30)
    client.login(USER, PASSWORD)
    return client, _login_pid(server, count)


def _imaplib_session_not_in(server: PymtaServer, pid: int) -> tuple[imaplib.IMAP4, int]:
    """Open imaplib sessions until one is served by a process other than pid
    (bounded: fails clearly when the other process never accepts)."""
    seen = []
    for _ in range(MAX_TRIES):
        client, served_by = _imaplib_session(server)
        if served_by != pid:
            return client, served_by
        seen.append(served_by)
        client.logout()
    pytest.fail(f"{MAX_TRIES} IMAP connections, all served by pid {pid}: {seen}")


def _lines(data: list[Any]) -> list[bytes]:
    """The plain lines of an imaplib answer (no literals expected)."""
    assert all(isinstance(item, bytes) for item in data), data
    return list(data)


def _drain(client: imaplib.IMAP4) -> None:
    """Forget the untagged responses imaplib kept from earlier commands."""
    client.untagged_responses.clear()


def _fetched_flags(responses: list[Any], seq: int) -> set[bytes]:
    """Flags in the untagged FETCH responses (imapclient's parsed form) for seq."""
    flags: set[bytes] = set()
    for response in responses:
        if len(response) >= 3 and response[0] == seq and response[1] == b"FETCH":
            items = list(response[2])
            for name, value in zip(items[::2], items[1::2], strict=True):
                if name == b"FLAGS":
                    flags.update(value)
    return flags


def _idle_until(client: IMAPClient, wanted: tuple[int, bytes]) -> list[Any]:
    """Wait in IDLE, on the socket (imapclient's poll with a timeout), until
    the untagged response ``wanted`` arrives; everything heard on the way."""
    heard: list[Any] = []
    deadline = time.monotonic() + WAIT
    while wanted not in [tuple(r[:2]) for r in heard]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"IDLE not woken with {wanted} in {WAIT}s; heard {heard}")
        heard += client.idle_check(timeout=remaining)
    return heard


def test_sessions_in_two_processes_see_each_others_changes(server: PymtaServer) -> None:
    """Two sessions of alice, one in each process, both with INBOX selected:
    B's APPEND reaches A as EXISTS on NOOP, and in IDLE without a NOOP
    (inotify, not polling: the wait is far below the 30 s poll fallback);
    B's \\Flagged reaches A as an untagged FETCH; B's \\Deleted + EXPUNGE of
    the middle message reaches A as ``* 2 EXPUNGE``; A's STORE and APPEND
    reach B the other way; at the end both number the messages alike."""
    a, pid_a = _imapclient_session(server)
    b, pid_b = _imaplib_session_not_in(server, pid_a)
    assert {pid_a, pid_b} == set(_pids(server))
    assert a.select_folder("INBOX")[b"EXISTS"] == 0
    assert b.select("INBOX") == ("OK", [b"0"])

    # B appends: A's NOOP tells of it.
    typ, data = b.append("INBOX", "", "", token_message("one"))
    assert typ == "OK"
    first = _APPENDUID.search(data[0])
    assert first is not None
    noop = a.noop()[1]
    assert (1, b"EXISTS") in noop, noop

    # B appends while A idles: A is woken without asking.
    a.idle()
    b.append("INBOX", "", "", token_message("two"))
    _idle_until(a, (2, b"EXISTS"))
    a.idle_done()
    b.append("INBOX", "", "", token_message("three"))
    assert (3, b"EXISTS") in a.noop()[1]

    # B flags the first message: A hears the new flags, in IDLE too.
    a.idle()
    typ, _ = b.uid("STORE", first.group(2).decode(), "+FLAGS", r"(\Flagged)")
    assert typ == "OK"
    heard = _idle_until(a, (1, b"FETCH"))
    a.idle_done()
    assert b"\\Flagged" in _fetched_flags(heard, 1), heard

    # B deletes and expunges the middle message: A is told its sequence number.
    uids_b = b.uid("SEARCH", "ALL")[1][0].split()
    assert len(uids_b) == 3
    typ, _ = b.uid("STORE", uids_b[1].decode(), "+FLAGS", r"(\Deleted)")
    assert typ == "OK"
    assert b.expunge() == ("OK", [b"2"])
    noop = a.noop()[1]
    assert (2, b"EXPUNGE") in noop, noop
    assert a.search("ALL") == [int(uids_b[0]), int(uids_b[2])]

    # The other way: A flags and appends, B's NOOP tells of both.
    _drain(b)
    a.add_flags([int(uids_b[2])], [b"\\Answered"])
    a.append("INBOX", token_message("four"))
    assert b.noop()[0] == "OK"
    exists = b.response("EXISTS")[1]
    fetched = b.response("FETCH")[1]
    assert exists and exists[-1] == b"3", exists
    assert any(f.startswith(b"2 (") and b"\\Answered" in f for f in fetched if f), fetched

    # Both number the messages the same way.
    numbered_a = {info[b"SEQ"]: uid for uid, info in a.fetch(a.search("ALL"), ["UID"]).items()}
    typ, lines = b.fetch("1:*", "(UID)")
    assert typ == "OK"
    numbered_b = {int(m[1]): int(m[2]) for m in map(_SEQ_UID.match, _lines(lines)) if m}
    assert numbered_a == numbered_b
    assert len(numbered_a) == 3
    a.logout()
    b.logout()


def test_concurrent_appends_in_both_processes_never_share_a_uid(server: PymtaServer) -> None:
    """Four threads of 25 APPENDs, each on a fresh connection so that both
    processes serve some (checked in the log) at the same time: INBOX then
    lists 100 distinct UIDs, each token once; the UIDs are exactly the
    APPENDUIDs the clients were given (under the folder's UIDVALIDITY);
    UIDNEXT from SELECT and from STATUS agree and lie above every UID."""
    before = len(_logins(server))
    start = threading.Barrier(4)

    def client(name: str) -> list[tuple[str, int, int]]:
        given = []
        start.wait(30)
        for i in range(25):
            token = f"{name}-{i:02d}"
            imap = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
            imap.login(USER, PASSWORD)
            typ, data = imap.append("INBOX", "", "", token_message(token))
            assert typ == "OK", data
            match = _APPENDUID.search(data[0])
            assert match is not None, data
            given.append((token, int(match.group(1)), int(match.group(2))))
            imap.logout()
        return given

    with ThreadPoolExecutor(4) as pool:
        results = [pool.submit(client, f"t{n}") for n in range(4)]
        given = [entry for future in results for entry in future.result()]
    server.wait_for_log(_LOGIN, count=before + 100)
    assert set(_logins(server)[before:]) == set(_pids(server))

    appenduids = {token: uid for token, _, uid in given}
    assert len(set(appenduids.values())) == 100, sorted(appenduids.values())
    imap, pid = _imaplib_session(server)
    typ, data = imap.select("INBOX")
    assert (typ, data) == ("OK", [b"100"])
    uidvalidity = int(imap.response("UIDVALIDITY")[1][0])
    assert {validity for _, validity, _ in given} == {uidvalidity}
    uidnext = int(imap.response("UIDNEXT")[1][0])
    typ, fetched = imap.uid("FETCH", "1:*", "(UID BODY.PEEK[HEADER.FIELDS (X-Token)])")
    assert typ == "OK"
    listed: dict[str, int] = {}
    uids: list[int] = []
    for part in fetched:
        if not isinstance(part, tuple):
            continue
        uid_match = re.search(rb"UID (\d+)", part[0])
        token_match = _TOKEN.search(part[1])
        assert uid_match is not None and token_match is not None, part
        uids.append(int(uid_match.group(1)))
        token = token_match.group(1).decode()
        assert token not in listed, f"{token} listed twice"
        listed[token] = int(uid_match.group(1))
    assert len(uids) == len(set(uids)) == 100
    assert listed == appenduids
    assert uidnext > max(uids)
    # STATUS in the other process agrees with SELECT in this one.
    other, _ = _imaplib_session_not_in(server, pid)
    typ, status = other.status("INBOX", "(MESSAGES UIDNEXT UIDVALIDITY)")
    assert typ == "OK"
    assert status[0].endswith(
        b"(MESSAGES 100 UIDNEXT %d UIDVALIDITY %d)" % (uidnext, uidvalidity)
    ), status
    other.logout()
    imap.logout()


def test_flags_set_in_one_process_are_seen_by_a_fresh_session_in_the_other(
    server: PymtaServer,
) -> None:
    """Both processes have INBOX loaded; then a session in one reads BODY[]
    of message 2 (\\Seen), stores \\Answered and a keyword on message 3 and
    logs out; a fresh session in the other process sees exactly those flags
    in ``FETCH 1:* FLAGS``, and the Maildir file names carry them."""
    writer, pid_w = _imapclient_session(server)
    other, pid_o = _imaplib_session_not_in(server, pid_w)
    for n in range(1, 4):
        writer.append("INBOX", token_message(f"m{n}"))
    writer.select_folder("INBOX")
    assert other.select("INBOX") == ("OK", [b"3"])  # the other process has read the folder
    other.logout()

    _, uid2, uid3 = writer.search("ALL")
    assert writer.fetch([uid2], ["BODY[]"])[uid2][b"BODY[]"] == token_message("m2")
    writer.add_flags([uid3], [b"\\Answered", b"$Label1"])
    writer.logout()

    reader, pid_r = _imaplib_session_not_in(server, pid_w)
    assert pid_r == pid_o
    assert reader.select("INBOX", readonly=True) == ("OK", [b"3"])
    typ, lines = reader.fetch("1:*", "(UID FLAGS)")
    assert typ == "OK"
    flags: dict[int, tuple[int, set[bytes]]] = {}
    for line in _lines(lines):
        match = re.match(rb"(\d+) \(UID (\d+) FLAGS \(([^)]*)\)\)", line)
        assert match is not None, line
        flags[int(match.group(1))] = (int(match.group(2)), set(match.group(3).split()))
    assert flags[1][1] <= {b"\\Recent"}
    assert flags[2][0] == uid2
    assert flags[2][1] - {b"\\Recent"} == {b"\\Seen"}
    assert flags[3][0] == uid3
    assert flags[3][1] - {b"\\Recent"} == {b"\\Answered", b"$Label1"}
    reader.logout()
    # On disk: Maildir info letters, the keyword's from dovecot-keywords.
    keywords = (server.maildir("alice") / "dovecot-keywords").read_text().split()
    letter = chr(ord("a") + int(keywords[keywords.index("$Label1") - 1]))
    suffixes = sorted(p.name.split(":2,")[1] for p in (server.maildir("alice") / "cur").iterdir())
    assert suffixes == ["", "R" + letter, "S"]
