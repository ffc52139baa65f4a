"""SMTP command lines and ESMTP parameters through smtpd on a StringTransport.

The input is what a client sends: cut into chunks as a network might
deliver them, fed to one smtpd session (``pymta.smtpd.testing``'s
harness: fake cleanup and resolver, task.Clock, STARTTLS offered), then
time runs on so that delays and timeouts fire, and the connection drops.
The first input byte also picks the client: untrusted (203.0.113.5) or in
mynetworks.

Documented errors: none. smtpd answers every input with replies; an
exception out of the protocol, or one it catches and logs (answered
``451 4.3.0``), is a finding. Checked besides: every reply line is
``NNN`` followed by space or ``-`` and ends in CRLF, and the line count
smtpd hands cleanup with each message is the content's number of LF.
"""

from __future__ import annotations

import re

from fuzz.common import Finding, LoggedFailures, chunks
from pymta.smtpd.testing import SMTPHarness
from pymta.tls import ServerTLS

EXPECTED: tuple[type[BaseException], ...] = ()

_REPLY_LINE = re.compile(rb"\d{3}[ -][^\r\n]*\r\n")


def seeds() -> list[bytes]:
    """Sessions from tests/test_smtpd_protocol.py (first byte: chunking and client)."""
    sessions = [
        b"EHLO client.example\r\nMAIL FROM:<s@sender.example> BODY=8BITMIME SIZE=100\r\n"
        b"RCPT TO:<user@example.com>\r\nRCPT TO:<elsewhere@remote.example>\r\nDATA\r\n"
        b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\nQUIT\r\n",
        b"HELO old.example\r\nMAIL FROM:<>\r\nRCPT TO:<user@example.com>\r\nDATA\r\nx\r\n.\r\n",
        b"EHLO c\r\nMAIL FROM:<a@b.example> RET=HDRS ENVID=QQ314159\r\n"
        b"RCPT TO:<user@example.com> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;user@example.com\r\n"
        b"VRFY user@example.com\r\nNOOP\r\nRSET\r\nHELP\r\nQUIT\r\n",
        b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRSET\r\nSTARTTLS\r\nMAIL FROM:<evil@x.example>\r\n",
        b"EHLO c\r\nMAIL FROM:<j\xc3\xb6ran@ex\xc3\xa4mple.com> SMTPUTF8\r\n"
        b'RCPT TO:<"john doe"@example.com>\r\nDATA\r\n\r\n.\r\n',
    ]
    return [bytes([0]) + s for s in sessions] + [bytes([0x81]) + sessions[0]]


def _tls() -> ServerTLS:
    # A ServerTLS that only says STARTTLS may be offered: the transport
    # records startTLS instead of doing a handshake (as the tests do).
    tls = object.__new__(ServerTLS)
    tls.required = False
    return tls


def one_input(data: bytes) -> None:
    trusted = bool(data[:1]) and data[0] & 0x80
    with LoggedFailures():
        h = SMTPHarness(
            "mynetworks = 203.0.113.0/24\n" if trusted else "",
            tls=_tls(),
        )
        replies = [h.transport.value()]
        h.transport.clear()
        for chunk in chunks(data):
            if h.transport.disconnecting:
                break
            h.protocol.dataReceived(chunk)
        for _ in range(4):
            h.clock.advance(600)
        replies.append(h.transport.value())
        h.protocol.connectionLost(None)
    for (_, content), lines in zip(h.cleanup.received, h.cleanup.lines, strict=True):
        # The DATA reader's count names the Maildir file's ,W= size.
        counted = content.count(b"\n")
        if lines != counted:
            raise Finding(f"line count {lines} for content with {counted} LF")
    out = b"".join(replies)
    position = 0
    while position < len(out):
        m = _REPLY_LINE.match(out, position)
        if m is None:
            raise Finding(f"malformed reply at {position}: {out[position : position + 80]!r}")
        position = m.end()
