"""COMPRESS=DEFLATE (RFC 4978): over StringTransport, and a big FETCH over
STARTTLS + COMPRESS with imaplib against a real server."""

from __future__ import annotations

import imaplib
import shutil
import ssl
import zlib
from pathlib import Path

import pytest

from tests.harness import DEFAULT_MASTER_CF, IMAP_SERVICE, PymtaServer
from tests.test_e2e_imap_sync import (
    deliver,
    local_messages,
    mbsync_config,
    run,
    server_messages,
    without_tuid,
)
from tests.test_imap_harness import Session, World


class Peer:
    """The client's end of the DEFLATE stream."""

    def __init__(self) -> None:
        self.out = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inp = zlib.decompressobj(-15)

    def pack(self, text: bytes) -> bytes:
        return self.out.compress(text) + self.out.flush(zlib.Z_SYNC_FLUSH)

    def unpack(self, data: bytes) -> bytes:
        return self.inp.decompress(data)


@pytest.fixture
def s(tmp_path: Path) -> Session:
    w = World(tmp_path)
    w.mailbox().folder("INBOX").append(b"Subject: hi\n\n" + b"compressible line\n" * 2000)
    session = w.connect()
    session.login()
    return session


def test_capability_only_after_login_and_until_active(tmp_path: Path) -> None:
    """COMPRESS=DEFLATE is offered once logged in, not before and not once on."""
    w = World(tmp_path)
    s = w.connect()
    assert b"COMPRESS=DEFLATE" not in s.send("c CAPABILITY")
    assert s.send("z COMPRESS DEFLATE").startswith(b"z BAD")
    s.login()
    assert b"COMPRESS=DEFLATE" in s.send("c CAPABILITY")
    assert s.send("z COMPRESS DEFLATE") == b"z OK DEFLATE active.\r\n"
    peer = Peer()
    assert b"COMPRESS=DEFLATE" not in peer.unpack(s.send(peer.pack(b"c CAPABILITY\r\n")))


def test_commands_and_answers_are_compressed(s: Session) -> None:
    """After the uncompressed OK every answer is DEFLATE, each flushed whole;
    commands pipelined in the same packet as COMPRESS are read compressed;
    a second COMPRESS is NO [COMPRESSIONACTIVE], an unknown mechanism NO."""
    peer = Peer()
    reply = s.send(b"z COMPRESS DEFLATE\r\n" + peer.pack(b"n NOOP\r\n"))
    ok = b"z OK DEFLATE active.\r\n"
    assert reply.startswith(ok)
    assert peer.unpack(reply[len(ok) :]) == b"n OK NOOP completed.\r\n"
    data = s.send(peer.pack(b"s SELECT INBOX\r\nf FETCH 1 BODY.PEEK[]\r\n"))
    plain = peer.unpack(data)
    assert b"s OK [READ-WRITE]" in plain
    assert b"compressible line\r\n" * 2000 in plain and plain.endswith(b"f OK Fetch completed.\r\n")
    assert len(data) < len(plain) / 10
    assert peer.unpack(s.send(peer.pack(b"y COMPRESS DEFLATE\r\n"))) == (
        b"y NO [COMPRESSIONACTIVE] Compression is already active.\r\n"
    )
    w = s.world.connect()
    w.login()
    assert w.send("q COMPRESS LZ77") == b"q NO Unknown compression mechanism.\r\n"


def test_a_deflate_bomb_is_inflated_one_command_at_a_time(s: Session) -> None:
    """A few kilobytes that inflate to 200 MB of one endless line are never
    held inflated beyond one command's worth: the line is refused as too
    long and the session goes on."""
    peer = Peer()
    s.send("z COMPRESS DEFLATE")
    proto = s.proto
    limit = proto.reader.command_limit + proto.reader.line_limit
    highest = 0
    real_feed = proto.reader.feed

    def feed(data: bytes) -> None:
        nonlocal highest
        real_feed(data)
        highest = max(highest, proto.reader.pending())

    proto.reader.feed = feed  # type: ignore[method-assign]
    bomb = peer.out.compress(b"x" * (200 << 20)) + peer.out.flush(zlib.Z_SYNC_FLUSH)
    assert len(bomb) < 300_000
    reply = peer.unpack(s.send(bomb + peer.pack(b"\r\nn NOOP\r\n")))
    assert reply == b"* BAD Command line too long.\r\nn OK NOOP completed.\r\n"
    assert highest <= limit


def test_invalid_compressed_data_ends_the_session(s: Session) -> None:
    """Bytes that are not DEFLATE get a (compressed) BYE and the connection closes."""
    peer = Peer()
    s.send("z COMPRESS DEFLATE")
    reply = s.send(b"\xff\xff\xff\xff garbage")
    assert peer.unpack(reply) == b"* BYE Invalid compressed data.\r\n"
    assert s.transport.disconnecting


class CompressedIMAP4(imaplib.IMAP4):
    """imaplib with RFC 4978 bolted on: after COMPRESS, reads inflate and
    writes deflate (imaplib has no COMPRESS of its own)."""

    peer: Peer | None = None
    _plain = b""

    def compress(self) -> None:
        typ, _ = self._simple_command("COMPRESS", "DEFLATE")
        assert typ == "OK"
        self.peer = Peer()

    def _fill(self) -> None:
        assert self.peer is not None
        while not self._plain:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise imaplib.IMAP4.abort("connection closed")
            self._plain += self.peer.unpack(chunk)

    def read(self, size: int) -> bytes:
        if self.peer is None:
            return super().read(size)
        out = b""
        while len(out) < size:
            self._fill()
            take = self._plain[: size - len(out)]
            self._plain = self._plain[len(take) :]
            out += take
        return out

    def readline(self) -> bytes:
        if self.peer is None:
            return super().readline()
        line = b""
        while not line.endswith(b"\n"):
            self._fill()
            end = self._plain.find(b"\n")
            cut = len(self._plain) if end < 0 else end + 1
            line += self._plain[:cut]
            self._plain = self._plain[cut:]
        return line

    def send(self, data: bytes) -> None:
        if self.peer is None:
            super().send(data)
            return
        self.sock.sendall(self.peer.pack(data))


def test_big_fetch_over_starttls_and_compress_with_imaplib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 40 MB FETCH of 8 messages over STARTTLS with COMPRESS on comes back
    byte for byte (the streamed answer goes through the compressor batch by
    batch), and an APPEND sent compressed is stored."""
    extra = (
        f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {tmp_path / 'cert.pem'}\n"
        f"smtpd_tls_key_file = {tmp_path / 'key.pem'}\npymta_tls_create_self_signed = yes\n"
    )
    with PymtaServer(tmp_path, extra, master_cf=DEFAULT_MASTER_CF + IMAP_SERVICE) as server:
        server.start()
        monkeypatch.setitem(imaplib.Commands, "COMPRESS", ("AUTH", "SELECTED"))
        client = CompressedIMAP4("127.0.0.1", server.imap_port, timeout=60)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        assert client.starttls(context)[0] == "OK"
        client.login("alice@example.test", "alice-pw")
        assert (
            "COMPRESS=DEFLATE" in client.capabilities
            or b"COMPRESS=DEFLATE" in str(client.capability()).encode()
        )
        client.compress()
        bodies = []
        for n in range(8):
            line = b"message %d line of mail text, compressible\r\n" % n
            body = b"Subject: big %d\r\n\r\n" % n + line * (5_000_000 // len(line))
            bodies.append(body)
            assert client.append("INBOX", None, None, body)[0] == "OK"
        assert client.select("INBOX")[0] == "OK"
        typ, data = client.fetch("1:*", "(BODY.PEEK[])")
        assert typ == "OK"
        got = [part[1] for part in data if isinstance(part, tuple)]
        assert got == bodies
        client.logout()
        server.stop()


MBSYNC = shutil.which("mbsync")


@pytest.mark.skipif(MBSYNC is None, reason="mbsync (Debian isync) is not installed")
def test_mbsync_syncs_over_compress(tmp_path: Path) -> None:
    """mbsync (isync 1.4) turns COMPRESS=DEFLATE on by itself when offered
    and downloads big and small mail byte for byte through it."""
    assert MBSYNC is not None
    with PymtaServer(tmp_path / "server", master_cf=DEFAULT_MASTER_CF + IMAP_SERVICE) as server:
        server.start()
        for subject in ("one", "two"):
            deliver(server, subject)
        client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
        client.login("alice@example.test", "alice-pw")
        big = b"Subject: big\r\n\r\n" + b"a line of a big message\r\n" * 200_000
        assert client.append("INBOX", None, None, big)[0] == "OK"
        client.logout()
        config = mbsync_config(tmp_path, server)
        result = run([MBSYNC, "-D", "-c", str(config), "pymta"], tmp_path)
        assert "COMPRESS DEFLATE" in result.stdout + result.stderr
        local = local_messages(tmp_path / "local" / "INBOX")
        on_server = server_messages(server)
        assert set(local) == {"one", "two", "big"}
        for subject, (path, _) in local.items():
            assert without_tuid(path.read_bytes()) == on_server[subject][0]
        server.stop()


def test_input_arriving_in_pieces_inflates_in_order() -> None:
    """Compressed input split anywhere (one byte at a time here) inflates to
    the original, at most the room given per call, nothing held back."""
    from pymta.imap.compress import Compression

    text = b"".join(b"a%d NOOP\r\n" % n for n in range(20000))
    peer = Peer()
    packed = peer.pack(text)
    c = Compression()
    out = b""
    for i in range(0, len(packed), 7):
        c.received(packed[i : i + 7])
        while piece := c.inflate(1000):
            assert len(piece) <= 1000
            out += piece
    assert out == text and not c.has_pending()
