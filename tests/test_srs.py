"""SRS: postsrsd's address format, its secrets, and cleanup's use of it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from twisted.internet import task

from pymta.cleanup.cleanup import Cleanup
from pymta.config import Config
from pymta.queue.memory import MemoryQueueStore
from pymta.queue.model import Envelope, Recipient
from pymta.rewrite import Resolver
from pymta.rewrite.srs import SRS, SRSError, timestamp

DAY = 86400.0
NOW = 20000 * DAY + 3600  # day 20000: 20000 % 1024 = 544 = 17 * 32, "RA"


def test_timestamp_is_two_base32_characters_of_the_day() -> None:
    """Days since 1970 modulo 1024 in base32 (libsrs2's alphabet)."""
    day = 20000 % 1024  # 544 = 17 * 32 + 0
    assert timestamp(NOW) == "RA" and day == 17 * 32
    assert timestamp(0) == "AA"
    assert timestamp(31 * DAY) == "A7"


def test_forward_format_and_hash() -> None:
    """SRS0=HHHH=TT=host=user@domain, HHHH the first four base64 characters
    of HMAC-SHA1(secret, lower(TT host user))."""
    srs = SRS([b"tops3cret"], "fwd.example.org")
    address = srs.forward("Joe.User@Bank.Example", NOW)
    mac = hmac.new(b"tops3cret", b"rabank.examplejoe.user", hashlib.sha1).digest()
    expected = base64.b64encode(mac).decode()[:4]
    assert address == f"SRS0={expected}=RA=Bank.Example=Joe.User@fwd.example.org"
    assert srs.reverse(address, NOW + 5 * DAY) == "Joe.User@Bank.Example"
    # Case does not matter to the hash (a server may lower-case the address).
    assert srs.reverse(address.lower(), NOW) == "joe.user@bank.example"


def test_reverse_refuses_forged_and_old_addresses() -> None:
    """A wrong hash, an unknown secret, or an SRS0 older than max_age fails."""
    srs = SRS([b"tops3cret"], "fwd.example.org", max_age=21)
    address = srs.forward("joe@bank.example", NOW)
    forged = address.replace("SRS0=", "SRS0=X", 1)
    with pytest.raises(SRSError):
        srs.reverse(forged, NOW)
    with pytest.raises(SRSError, match="out of date"):
        srs.reverse(address, NOW + 22 * DAY)
    assert srs.reverse(address, NOW + 21 * DAY) == "joe@bank.example"
    other = SRS([b"other"], "fwd.example.org")
    with pytest.raises(SRSError, match="hash invalid"):
        other.reverse(address, NOW)
    assert srs.reverse("joe@fwd.example.org", NOW) is None
    assert srs.reverse(address.replace("fwd.example.org", "elsewhere.test"), NOW) is None
    for bad in (
        "SRS0=abcd@fwd.example.org",
        "SRS0=abcd=!!=h=u@fwd.example.org",
        "SRS1=x@fwd.example.org",
    ):
        with pytest.raises(SRSError):
            srs.reverse(bad, NOW)


def test_every_secret_verifies_the_first_signs() -> None:
    """postsrsd's secrets file: rotating in a new first secret keeps old
    addresses reversible."""
    old = SRS([b"old"], "fwd.example.org")
    address = old.forward("joe@bank.example", NOW)
    rotated = SRS([b"new", b"old"], "fwd.example.org")
    assert rotated.reverse(address, NOW) == "joe@bank.example"
    assert rotated.forward("joe@bank.example", NOW) != address


def test_srs0_forwarded_again_becomes_srs1_and_reverses_to_the_first_hop() -> None:
    """A second forwarder writes SRS1 (keeping the first forwarder's host);
    reversing SRS1 gives the SRS0 address of the first forwarder."""
    first = SRS([b"one"], "first.example")
    second = SRS([b"two"], "second.example")
    srs0 = first.forward("joe@bank.example", NOW)
    srs1 = second.forward(srs0, NOW)
    assert srs1.startswith("SRS1=") and "=first.example==" in srs1
    assert second.reverse(srs1, NOW) == srs0
    assert first.reverse(srs0, NOW) == "joe@bank.example"
    # A third forwarder keeps the first one's host in the SRS1 address.
    third = SRS([b"three"], "third.example")
    again = third.forward(srs1, NOW)
    assert "=first.example==" in again and again.endswith("@third.example")
    assert third.reverse(again, NOW) == srs0


CONFIG = """\
myhostname = mx.example.test
mydestination = $myhostname, localhost
virtual_mailbox_domains = example.test
virtual_mailbox_maps = inline:{{ bob@example.test=bob/ }}
virtual_alias_maps = inline:{{ fwd@example.test=joe@gmail.test }}
pymta_srs_domain = example.test
pymta_srs_secrets = {secrets}
"""


def _cleanup(tmp_path: Path) -> tuple[Cleanup, MemoryQueueStore, Resolver]:
    secrets = tmp_path / "srs.secret"
    secrets.write_text("tops3cret\n")
    config = Config.from_text(CONFIG.format(secrets=secrets))
    store = MemoryQueueStore()
    clock = task.Clock()
    clock.advance(NOW)
    resolver = Resolver(config, now=clock.seconds)
    return Cleanup(config, store, resolver, clock=clock), store, resolver


def _submit(cleanup: Cleanup, envelope: Envelope) -> str:
    box: list[object] = []
    cleanup.submit(envelope, b"Subject: x\n\nbody\n").addBoth(box.append)
    assert isinstance(box[0], str), box
    return box[0]


def test_cleanup_rewrites_the_sender_of_mail_forwarded_elsewhere(tmp_path: Path) -> None:
    """A virtual alias to another domain, and a .forward (forwarded_from),
    get an SRS sender; mail that stays here and our own senders do not."""
    cleanup, store, _ = _cleanup(tmp_path)
    srs = SRS([b"tops3cret"], "example.test")
    attrs = {"client_address": "192.0.2.1", "protocol": "ESMTP"}
    qid = _submit(
        cleanup, Envelope("joe@bank.test", [Recipient("fwd@example.test")], attributes=attrs)
    )
    assert store.read(qid, "incoming")[0].sender == srs.forward("joe@bank.test", NOW)
    qid = _submit(
        cleanup, Envelope("joe@bank.test", [Recipient("bob@example.test")], attributes=attrs)
    )
    assert store.read(qid, "incoming")[0].sender == "joe@bank.test"
    forwarded = {"origin": "local", "forwarded_from": "ABC"}
    qid = _submit(
        cleanup, Envelope("joe@bank.test", [Recipient("x@remote.test")], attributes=forwarded)
    )
    assert store.read(qid, "incoming")[0].sender.startswith("SRS0=")
    qid = _submit(
        cleanup, Envelope("alice@example.test", [Recipient("fwd@example.test")], attributes=attrs)
    )
    assert store.read(qid, "incoming")[0].sender == "alice@example.test"


def test_bounce_to_an_srs_address_goes_back_to_the_original_sender(tmp_path: Path) -> None:
    """smtpd lists a valid SRS address (the resolver), cleanup reverses it;
    a forged one is not listed."""
    cleanup, store, resolver = _cleanup(tmp_path)
    srs = SRS([b"tops3cret"], "example.test")
    address = srs.forward("joe@bank.test", NOW)
    assert resolver.is_listed_recipient(address)
    assert not resolver.is_listed_recipient(address.replace("SRS0=", "SRS0=Q", 1))
    qid = _submit(
        cleanup, Envelope("", [Recipient(address)], attributes={"client_address": "192.0.2.9"})
    )
    [rcpt] = store.read(qid, "incoming")[0].recipients
    assert rcpt.address == "joe@bank.test" and rcpt.original == address


POSTSRSD = shutil.which("postsrsd") or "/usr/sbin/postsrsd"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _tcp_table(port: int, query: str) -> str:
    """One Postfix tcp_table lookup: ``get KEY`` -> ``200 VALUE``."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"get {query}\n".encode())
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.decode().strip()


@pytest.mark.skipif(not Path(POSTSRSD).exists(), reason="postsrsd is not installed")
def test_addresses_interoperate_with_postsrsd(tmp_path: Path) -> None:
    """Debian's postsrsd, given the same secret and domain, reverses the
    addresses pymta writes, and pymta reverses postsrsd's (today's stamp)."""
    secret = tmp_path / "srs.secret"
    secret.write_text("tops3cret\n")
    forward, reverse = _free_port(), _free_port()
    process = subprocess.Popen(
        [POSTSRSD, f"-s{secret}", "-dfwd.example.org", "-l127.0.0.1",
         f"-f{forward}", f"-r{reverse}", "-4"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:  # postsrsd signals readiness to nobody: poll with a deadline
            try:
                socket.create_connection(("127.0.0.1", reverse), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.05)
        srs = SRS([b"tops3cret"], "fwd.example.org")
        now = time.time()
        ours = srs.forward("Joe@Bank.Example", now)
        assert _tcp_table(reverse, ours) == "200 Joe@Bank.Example"
        theirs = _tcp_table(forward, "joe@bank.example")
        assert theirs.startswith("200 SRS0=")
        assert srs.reverse(theirs[4:], now) == "joe@bank.example"
        assert theirs[4:] == srs.forward("joe@bank.example", now)
        srs1 = SRS([b"tops3cret"], "fwd.example.org").forward(
            SRS([b"x"], "first.example").forward("joe@bank.example", now), now
        )
        reply = _tcp_table(reverse, srs1)
        assert reply.startswith("200 SRS0=") and reply.endswith("@first.example")
    finally:
        process.terminate()
        process.wait(10)
