"""The LMTP server protocol (RFC 2033) in memory: StringTransport, Clock,
real Maildirs on tmp_path behind a barrier the test releases."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from pymta.auth.passwdfile import PasswdFile
from pymta.config import Config
from pymta.delivery.final import FinalDelivery
from pymta.lmtpd.factory import LMTPServerFactory
from pymta.lmtpd.protocol import LMTPServerProtocol, to_internal
from pymta.lmtpd.users import RecipientDirectory
from pymta.mailstore.deliver import MaildirDelivery
from pymta.sync import ImmediateSyncBarrier
from pymta.tables.interface import TableError
from tests.barriers import ManualBarrier


class Setup:
    def __init__(
        self,
        tmp_path: Path,
        barrier: object | None = None,
        extra: str = "",
        lookup: object = None,
    ) -> None:
        self.tmp = tmp_path
        passwd = tmp_path / "passwd"
        passwd.write_text(
            f"alice@example.test:{{PLAIN}}x::::{tmp_path}/home/alice::\n"
            f"bob@example.test:{{PLAIN}}x:::::: mail=maildir:{tmp_path}/bob-mail\n"
        )
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        config = Config.from_text(
            "myhostname = mx.example.test\nmynetworks = 127.0.0.0/8\n"
            "message_size_limit = 1000\npymta_lmtpd_recipient_limit = 3\n" + extra
        )
        table = {"carol@example.test": "example.test/carol/", "dave@example.test": "dave"}

        def virtual(address: str) -> str | None:
            if lookup is not None:
                raise TableError("table down")
            return table.get(address)

        users = RecipientDirectory(
            PasswdFile(str(passwd), self.clock), virtual, str(tmp_path / "vmail"), "+"
        )
        writer = MaildirDelivery(barrier or ImmediateSyncBarrier(), self.clock, "mx", pid=7)  # type: ignore[arg-type]
        self.factory = LMTPServerFactory(config, users, FinalDelivery(writer), self.clock)

    def connect(self, peer: object = None) -> tuple[LMTPServerProtocol, StringTransport]:
        proto = self.factory.buildProtocol(None)
        transport = StringTransport(
            peerAddress=peer or IPv4Address("TCP", "127.0.0.1", 40000)  # type: ignore[arg-type]
        )
        proto.makeConnection(transport)
        return proto, transport

    def maildir_files(self, path: Path) -> list[bytes]:
        new = path / "new"
        return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []


def talk(proto: LMTPServerProtocol, transport: StringTransport, data: bytes) -> list[str]:
    transport.clear()
    proto.dataReceived(data)
    return transport.value().decode().splitlines()


SESSION = (
    b"LHLO client.example\r\n"
    b"MAIL FROM:<sender@example.org>\r\n"
    b"RCPT TO:<alice@example.test>\r\n"
    b"RCPT TO:<bob@example.test>\r\n"
    b"DATA\r\n"
    b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\n"
)


def test_one_reply_per_recipient_after_data_and_saved_to_maildirs(tmp_path: Path) -> None:
    """Two recipients: after the end of data the server answers twice, in
    RCPT order, each 250 naming its recipient; each Maildir holds the
    message with Return-Path, Delivered-To and Received first, dot-unstuffed
    and with LF line ends."""
    s = Setup(tmp_path)
    proto, transport = s.connect()
    assert transport.value().startswith(b"220 mx.example.test LMTP")
    lines = talk(proto, transport, SESSION)
    assert lines[-2].startswith("250 2.0.0 <alice@example.test> ")
    assert lines[-1].startswith("250 2.0.0 <bob@example.test> ")
    assert sum(1 for x in lines if x.startswith("354")) == 1
    (alice,) = s.maildir_files(tmp_path / "home" / "alice")
    (bob,) = s.maildir_files(tmp_path / "bob-mail")
    assert alice.startswith(
        b"Return-Path: <sender@example.org>\nDelivered-To: alice@example.test\n"
    )
    assert b"Received: from client.example ([127.0.0.1])\n\tby mx.example.test with LMTP" in alice
    assert alice.endswith(b"Subject: hi\n\n.leading dot\nbody\n")
    assert b"Delivered-To: bob@example.test\n" in bob


def test_250_only_after_the_sync(tmp_path: Path) -> None:
    """No 250 before the group-commit sync of the Maildir file completed;
    then the file is in new/ and the answer goes out."""
    barrier = ManualBarrier()
    s = Setup(tmp_path, barrier=barrier)
    proto, transport = s.connect()
    lines = talk(proto, transport, SESSION)
    assert not any(x.startswith("250 2.0.0 <") for x in lines)
    assert s.maildir_files(tmp_path / "home" / "alice") == []
    transport.clear()
    barrier.release()
    lines = transport.value().decode().splitlines()
    assert [x[:30] for x in lines] == [
        "250 2.0.0 <alice@example.test>",
        "250 2.0.0 <bob@example.test> s",
    ]
    assert len(s.maildir_files(tmp_path / "home" / "alice")) == 1


def test_commands_pipelined_after_data_wait_for_the_answers(tmp_path: Path) -> None:
    """A second transaction pipelined behind the first end of data is read
    only after the first's answers went out: replies keep command order."""
    barrier = ManualBarrier()
    s = Setup(tmp_path, barrier=barrier)
    proto, transport = s.connect()
    talk(proto, transport, SESSION + b"MAIL FROM:<>\r\nRCPT TO:<carol@example.test>\r\n")
    transport.clear()
    barrier.release()
    lines = transport.value().decode().splitlines()
    assert lines[0].startswith("250 2.0.0 <alice")
    assert lines[1].startswith("250 2.0.0 <bob")
    assert lines[2:] == ["250 2.1.0 OK", "250 2.1.5 OK"]


def test_unknown_user_refused_at_rcpt_and_no_answer_after_data(tmp_path: Path) -> None:
    """An address no userdb knows is 550 5.1.1 at RCPT; DATA then answers
    only for the accepted recipient (RFC 2033 section 4.2)."""
    s = Setup(tmp_path)
    proto, transport = s.connect()
    lines = talk(
        proto,
        transport,
        b"LHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<nobody@example.test>\r\n"
        b"RCPT TO:<carol@example.test>\r\nDATA\r\nx\r\n.\r\n",
    )
    assert any(x.startswith("550 5.1.1 <nobody@example.test>") for x in lines)
    after = lines[lines.index("354 OK") + 1 :]
    assert len(after) == 1 and after[0].startswith("250 2.0.0 <carol@example.test>")
    assert len(s.maildir_files(tmp_path / "vmail" / "example.test" / "carol")) == 1


def test_extension_finds_the_user(tmp_path: Path) -> None:
    """alice+news@ is delivered to alice's mailbox (recipient_delimiter)."""
    s = Setup(tmp_path)
    proto, transport = s.connect()
    lines = talk(
        proto,
        transport,
        b"LHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice+news@example.test>\r\n"
        b"DATA\r\nx\r\n.\r\n",
    )
    assert lines[-1].startswith("250 2.0.0 <alice+news@example.test>")
    assert len(s.maildir_files(tmp_path / "home" / "alice")) == 1


def test_mbox_value_and_lookup_failure(tmp_path: Path) -> None:
    """A virtual_mailbox_maps value that is no Maildir is no LMTP mailbox
    (550); a table that fails is 451 4.3.0, never 550."""
    s = Setup(tmp_path)
    proto, transport = s.connect()
    lines = talk(proto, transport, b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<dave@example.test>\r\n")
    assert lines[-1].startswith("550 5.1.1")
    s = Setup(tmp_path, lookup=True)
    proto, transport = s.connect()
    lines = talk(proto, transport, b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<carol@example.test>\r\n")
    assert lines[-1].startswith("451 4.3.0 <carol@example.test>")


def test_sequence_errors(tmp_path: Path) -> None:
    """HELO/EHLO are not LMTP; MAIL needs LHLO, RCPT needs MAIL, DATA needs
    an accepted recipient (503), a nested MAIL is refused."""
    s = Setup(tmp_path)
    proto, transport = s.connect()
    assert talk(proto, transport, b"EHLO c\r\n")[0].startswith("500 5.5.1")
    assert talk(proto, transport, b"MAIL FROM:<>\r\n")[0].startswith("503 5.5.1")
    lines = talk(proto, transport, b"LHLO c\r\n")
    assert "250-PIPELINING" in lines and "250-ENHANCEDSTATUSCODES" in lines
    assert talk(proto, transport, b"RCPT TO:<alice@example.test>\r\n")[0].startswith("503")
    talk(proto, transport, b"MAIL FROM:<>\r\n")
    assert talk(proto, transport, b"MAIL FROM:<>\r\n")[0].startswith("503 5.5.1 Error: nested")
    assert talk(proto, transport, b"DATA\r\n")[0].startswith("503 5.5.1 Error: no valid")
    assert talk(proto, transport, b"RCPT TO:<bad address>\r\n")[0].startswith("501")
    assert talk(proto, transport, b"RSET\r\n") == ["250 2.0.0 OK"]
    assert talk(proto, transport, b"QUIT\r\n") == ["221 2.0.0 Bye"]
    assert transport.disconnecting


def test_recipient_limit(tmp_path: Path) -> None:
    """The fourth RCPT past pymta_lmtpd_recipient_limit = 3 is 452 4.5.3."""
    s = Setup(tmp_path)
    proto, transport = s.connect()
    rcpts = b"RCPT TO:<alice@example.test>\r\n" * 4
    lines = talk(proto, transport, b"LHLO c\r\nMAIL FROM:<>\r\n" + rcpts)
    assert lines[-1] == "452 4.5.3 Error: too many recipients"


def test_oversized_message_refused_per_recipient(tmp_path: Path) -> None:
    """Content over message_size_limit is 552 5.3.4 for each recipient and
    nothing is written; the session goes on."""
    s = Setup(tmp_path)
    proto, transport = s.connect()
    body = b"x" * 70 + b"\r\n"
    lines = talk(
        proto,
        transport,
        b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
        + body * 40
        + b".\r\nNOOP\r\n",
    )
    assert lines[-2].startswith("552 5.3.4 <alice@example.test>")
    assert lines[-1] == "250 2.0.0 OK"
    assert s.maildir_files(tmp_path / "home" / "alice") == []
    # Far over the limit: the content is dropped while it streams in.
    lines = talk(
        proto,
        transport,
        b"MAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n" + body * 400 + b".\r\n",
    )
    assert lines[-1].startswith("552 5.3.4")


def test_declared_size_over_limit(tmp_path: Path) -> None:
    """MAIL FROM with SIZE= over message_size_limit is refused at once."""
    s = Setup(tmp_path)
    proto, transport = s.connect()
    lines = talk(proto, transport, b"LHLO c\r\nMAIL FROM:<> SIZE=5000\r\n")
    assert lines[-1].startswith("552 5.3.4")


def test_end_of_data_split_across_reads_and_empty_message(tmp_path: Path) -> None:
    """CR LF . CR LF split over several reads ends the data; an empty
    message (``.`` right after 354) is a message of delivery headers only;
    a bare LF . LF does not end the data (no smuggling)."""
    s = Setup(tmp_path)
    proto, transport = s.connect()
    talk(proto, transport, b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    for piece in (b"a\n.\nb\r", b"\n", b".", b"\r", b"\n"):
        proto.dataReceived(piece)
    assert transport.value().decode().splitlines()[-1].startswith("250 2.0.0 <alice")
    (message,) = s.maildir_files(tmp_path / "home" / "alice")
    assert message.endswith(b"a\n.\nb\n")
    lines = talk(proto, transport, b"MAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n.\r\n")
    assert lines[-1].startswith("250 2.0.0")


def test_delivered_to_loop_bounces_that_recipient(tmp_path: Path) -> None:
    """A message already delivered to the recipient (Delivered-To) is 550
    5.4.6 for that recipient only."""
    s = Setup(tmp_path)
    proto, transport = s.connect()
    lines = talk(
        proto,
        transport,
        b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
        b"DATA\r\nDelivered-To: alice@example.test\r\n\r\nx\r\n.\r\n",
    )
    assert lines[-2].startswith("550 5.4.6 <alice@example.test>")
    assert lines[-1].startswith("250 2.0.0 <bob@example.test>")


def test_write_failure_is_a_temporary_answer(tmp_path: Path) -> None:
    """A Maildir that cannot be written (a file where the directory should
    be) gets 451 for that recipient, never 250."""
    s = Setup(tmp_path)
    (tmp_path / "bob-mail").write_text("in the way")
    proto, transport = s.connect()
    lines = talk(
        proto,
        transport,
        b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nx\r\n.\r\n",
    )
    assert lines[-1].startswith("451 4.2.0 <bob@example.test>")


def test_client_outside_networks_refused(tmp_path: Path) -> None:
    """A TCP client outside pymta_lmtpd_networks gets 554 5.7.1 and is
    disconnected; a UNIX-socket client is served."""
    s = Setup(tmp_path)
    _, transport = s.connect(IPv4Address("TCP", "192.0.2.1", 1))
    assert transport.value().startswith(b"554 5.7.1")
    assert transport.disconnecting
    _, transport = s.connect(UNIXAddress(b"/tmp/sock"))
    assert transport.value().startswith(b"220 ")


def test_long_line_and_idle_timeout(tmp_path: Path) -> None:
    """A command line over line_length_limit is 500 5.5.2 and skipped to its
    end; silence for pymta_lmtpd_timeout is 421 4.4.2 and a disconnect."""
    s = Setup(tmp_path)
    proto, transport = s.connect()
    lines = talk(proto, transport, b"NOOP " + b"x" * 5000)
    assert lines == ["500 5.5.2 Error: line too long"]
    assert talk(proto, transport, b"yyy\r\nNOOP\r\n") == ["250 2.0.0 OK"]
    transport.clear()
    s.clock.advance(301)
    assert transport.value() == b"421 4.4.2 Error: timeout exceeded\r\n"
    assert transport.disconnecting


def test_too_many_errors_end_the_session(tmp_path: Path) -> None:
    """Twenty bad commands end the session with 421 4.7.0."""
    s = Setup(tmp_path)
    proto, transport = s.connect()
    lines = talk(proto, transport, b"BOGUS\r\n" * 25)
    assert lines[-1] == "421 4.7.0 Error: too many errors"
    assert transport.disconnecting


def test_to_internal() -> None:
    """Dot-unstuffing and CR LF to LF, a dot line at the very start too."""
    assert to_internal(b"..a\r\nb\r\n...\r\n") == b".a\nb\n..\n"


def test_lhlo_name_cannot_inject_headers(tmp_path: Path) -> None:
    """A LHLO argument with a bare CR or control characters reaches the
    Received: header as printable ASCII only."""
    s = Setup(tmp_path)
    proto, transport = s.connect()
    talk(
        proto,
        transport,
        b"LHLO evil\rX-Injected: yes\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\n"
        b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n",
    )
    (message,) = s.maildir_files(tmp_path / "home" / "alice")
    assert b"\r" not in message and b"\nX-Injected" not in message
    assert b"Received: from evil?X-Injected:?yes ([127.0.0.1])" in message
