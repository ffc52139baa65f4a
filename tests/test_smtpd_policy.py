"""The policy delegation client (pymta.smtpd.policy) against tiny policy
servers on loopback: the request attributes, the action, the timeout and
the default action when the server is silent or absent."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol

from pymta.config.errors import ConfigError
from pymta.smtpd.policy import PolicyService, encode_request, parse_endpoint


class _Server(Protocol):
    def __init__(self, answer: bytes | None, seen: list[bytes]) -> None:
        self.answer = answer
        self.seen = seen
        self.buf = b""

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        if self.buf.endswith(b"\n\n"):
            self.seen.append(self.buf)
            if self.answer is not None:
                self.transport.write(self.answer)  # type: ignore[union-attr]


def _listen(answer: bytes | None, seen: list[bytes]) -> Any:
    from twisted.internet import reactor

    factory = Factory.forProtocol(lambda: _Server(answer, seen))
    return reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]


def _service(port: int, timeout: float = 5) -> PolicyService:
    from twisted.internet import reactor

    return PolicyService(
        f"inet:127.0.0.1:{port}",
        reactor,
        reactor,
        timeout,
        2,
        "451 4.3.5 Server configuration problem",
    )


def test_request_is_name_value_lines_and_an_empty_line() -> None:
    """Attributes go out one per line; a CR/LF from the client cannot start a new one."""
    assert encode_request({"request": "smtpd_access_policy", "helo_name": "a\r\naction=OK"}) == (
        b"request=smtpd_access_policy\nhelo_name=a  action=OK\n\n"
    )


def test_bad_endpoint_is_a_config_error() -> None:
    """Only inet:host:port and unix:/path are policy services."""
    with pytest.raises(ConfigError):
        parse_endpoint("tcp:127.0.0.1", None)


@pytest_twisted.ensureDeferred
async def test_action_is_returned() -> None:
    """The server's action= comes back; the request ends with an empty line."""
    seen: list[bytes] = []
    port = _listen(b"action=DEFER_IF_PERMIT Greylisted\x07 here\n\n", seen)
    try:
        service = _service(port.getHost().port)
        answer = await service.query({"request": "smtpd_access_policy", "recipient": "a@b"})
    finally:
        await defer.maybeDeferred(port.stopListening)
    assert answer == ("DEFER_IF_PERMIT Greylisted  here", "")
    assert seen == [b"request=smtpd_access_policy\nrecipient=a@b\n\n"]


@pytest_twisted.ensureDeferred
async def test_silent_server_times_out_to_default_action() -> None:
    """A server that never answers: after the timeout, each of the two tries,
    the default action (451 4.3.5), not a hang."""
    seen: list[bytes] = []
    port = _listen(None, seen)
    try:
        service = _service(port.getHost().port, timeout=0.2)
        action, why = await service.query({"request": "smtpd_access_policy"})
    finally:
        await defer.maybeDeferred(port.stopListening)
    assert action == "451 4.3.5 Server configuration problem"
    assert why == "timeout"
    assert len(seen) == 2


@pytest.mark.parametrize(
    ("action", "then", "reply"),
    [
        (
            "DEFER_IF_PERMIT wait",
            "permit",
            "450 4.7.1 <user@example.com>: Recipient address rejected: wait",
        ),
        (
            "DEFER_IF_PERMIT wait",
            "reject",
            "554 5.7.1 <user@example.com>: Recipient address rejected: Access denied",
        ),
        (
            "DEFER_IF_REJECT wait",
            "reject",
            "450 4.7.1 <user@example.com>: Recipient address rejected: wait",
        ),
        ("DEFER_IF_REJECT wait", "permit", "250 2.1.5 Ok"),
        ("PREPEND X-Greylist: yes", "permit", "250 2.1.5 Ok"),
    ],
)
def test_conditional_deferrals(action: str, then: str, reply: str) -> None:
    """Postfix's DEFER_IF_PERMIT / DEFER_IF_REJECT (as a policy server or an
    access map answers them): the deferral replaces a later pass / 5xx."""
    from pymta.smtpd.testing import DictTable, SMTPHarness

    table = DictTable("inline:p", {"user@example.com": action})
    h = SMTPHarness(
        f"smtpd_recipient_restrictions = check_recipient_access inline:p, {then}\n",
        peer="198.51.100.7",
        tables={"inline:p": table},
    )
    h.send("EHLO client.example\nMAIL FROM:<s@sender.example>\n")
    assert h.send("RCPT TO:<user@example.com>\n") == [reply]
