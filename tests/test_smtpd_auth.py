"""SMTP AUTH (RFC 4954): PLAIN and LOGIN against the real passwd-file checker,
on a StringTransport with task.Clock — offering, the exchange, failures with
their delays, relaying once authenticated, sender login maps, the log."""

from __future__ import annotations

from base64 import b64encode
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from pymta.auth.checker import PasswdFileChecker
from pymta.auth.passwdfile import PasswdFile
from pymta.auth.throttle import LoginThrottle
from pymta.config.config import Config
from pymta.config.errors import ConfigError
from pymta.smtpd.sasl import SaslSettings, decode_plain
from pymta.smtpd.testing import DictTable, LogCapture, SMTPHarness
from pymta.tls import ServerTLS

EHLO = "EHLO client.example\n"
RELAY_CONFIG = (
    "smtpd_sasl_auth_enable = yes\n"
    "smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination\n"
)


def _b64(text: str) -> str:
    return b64encode(text.encode()).decode()


def _plain(user: str, password: str, authzid: str = "") -> str:
    return b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


def _run_now(f: Callable[[], Any]) -> defer.Deferred[Any]:
    return defer.succeed(f())


@pytest.fixture
def maillog_lines() -> Iterator[list[str]]:
    with LogCapture() as capture:
        yield capture.maillog


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def checker(tmp_path: Path, clock: Clock) -> PasswdFileChecker:
    """The real passwd-file checker, hashing inline, with Dovecot-style delays."""
    path = tmp_path / "passwd"
    path.write_text("alice@example.test:{PLAIN}alice-secret\nbob@example.test:{PLAIN}bob-pw\n")
    throttle = LoginThrottle(clock, base=2.0, cap=15.0)
    return PasswdFileChecker(PasswdFile(str(path), clock), clock, throttle, _run_now)


def _harness(
    checker: PasswdFileChecker, clock: Clock, extra: str = "", tls: bool = False, **kw: Any
) -> SMTPHarness:
    context = None
    if tls:
        context = object.__new__(ServerTLS)
        context.required = False
    return SMTPHarness(RELAY_CONFIG + extra, checker=checker, clock=clock, tls=context, **kw)


def test_auth_is_offered_only_after_starttls_by_default(
    checker: PasswdFileChecker, clock: Clock
) -> None:
    """smtpd_tls_auth_only (pymta's default yes): no AUTH in EHLO before TLS,
    and AUTH there is 530 5.7.0; after STARTTLS, AUTH PLAIN LOGIN is offered."""
    h = _harness(checker, clock, tls=True)
    assert not any("AUTH" in line for line in h.send(EHLO))
    assert h.send(f"AUTH PLAIN {_plain('alice@example.test', 'alice-secret')}\n") == [
        "530 5.7.0 Must issue a STARTTLS command first"
    ]
    h.send("STARTTLS\n")
    assert "250-AUTH PLAIN LOGIN" in h.send(EHLO)


def test_auth_plain_with_initial_response_permits_relaying(
    checker: PasswdFileChecker, clock: Clock, maillog_lines: list[str]
) -> None:
    """AUTH PLAIN with SASL-IR answers 235; permit_sasl_authenticated then
    lets mail for another domain through, and the envelope, the with-protocol
    and smtpd's client= line carry the login."""
    h = _harness(checker, clock, "smtpd_tls_auth_only = no\n")
    assert "250-AUTH PLAIN LOGIN" in h.send(EHLO)
    assert h.send(f"AUTH PLAIN {_plain('alice@example.test', 'alice-secret')}\n") == [
        "235 2.7.0 Authentication successful"
    ]
    h.converse(
        """
        C: MAIL FROM:<alice@example.test> AUTH=<alice@example.test>
        S: 250 2.1.0 Ok
        C: RCPT TO:<friend@elsewhere.example>
        S: 250 2.1.5 Ok
        C: DATA
        S: 354 *
        C: Subject: hi
        C:
        C: hello
        C: .
        S: 250 2.0.0 Ok: queued as QID1
        """
    )
    envelope, _ = h.cleanup.received[0]
    assert envelope.attributes["sasl_username"] == "alice@example.test"
    assert envelope.attributes["protocol"] == "ESMTPA"
    assert (
        "smtpd: QID1: client=unknown[203.0.113.5], sasl_method=PLAIN, "
        "sasl_username=alice@example.test"
    ) in maillog_lines


def test_auth_login_exchange(checker: PasswdFileChecker, clock: Clock) -> None:
    """AUTH LOGIN: 334 Username:, 334 Password:, then 235 (base64 prompts)."""
    h = _harness(checker, clock, "smtpd_tls_auth_only = no\n")
    h.send(EHLO)
    assert h.send("AUTH LOGIN\n") == ["334 VXNlcm5hbWU6"]
    assert h.send(_b64("bob@example.test") + "\n") == ["334 UGFzc3dvcmQ6"]
    assert h.send(_b64("bob-pw") + "\n") == ["235 2.7.0 Authentication successful"]
    assert h.protocol.session.sasl_method == "LOGIN"


def test_failed_auth_waits_the_penalty_and_then_answers_535(
    checker: PasswdFileChecker, clock: Clock, maillog_lines: list[str]
) -> None:
    """A wrong password is answered only after the throttle's delay, with
    535 5.7.8, and logged as Postfix logs it; later input waits its turn."""
    h = _harness(checker, clock, "smtpd_tls_auth_only = no\n")
    h.send(EHLO)
    assert h.send(f"AUTH PLAIN {_plain('alice@example.test', 'wrong')}\nNOOP\n") == []
    clock.advance(2.0)
    assert h.take() == [
        "535 5.7.8 Error: authentication failed: authentication failure",
        "250 2.0.0 Ok",
    ]
    assert (
        # (the maillog file writes it with Postfix's "warning: " prefix)
        "smtpd: unknown[203.0.113.5]: SASL PLAIN authentication failed: authentication failure"
    ) in maillog_lines
    assert h.protocol.session.sasl_username == ""


def test_cancel_and_bad_input(checker: PasswdFileChecker, clock: Clock) -> None:
    """'*' aborts (501 5.7.0), bad base64 is 501 5.5.2, an unknown mechanism
    535, AUTH twice 503, AUTH inside a transaction 503, AUTH before EHLO 503."""
    h = _harness(checker, clock, "smtpd_tls_auth_only = no\n")
    assert h.send("AUTH PLAIN\n") == ["503 5.5.1 Error: send EHLO first"]
    h.send(EHLO)
    assert h.send("AUTH LOGIN\n") == ["334 VXNlcm5hbWU6"]
    assert h.send("*\n") == ["501 5.7.0 Authentication aborted"]
    assert h.send("AUTH PLAIN !!!\n") == ["501 5.5.2 Cannot decode response"]
    assert h.send("AUTH CRAM-MD5\n") == [
        "535 5.7.8 Error: authentication failed: Invalid authentication mechanism"
    ]
    assert h.send("MAIL FROM:<a@b.example>\n") == ["250 2.1.0 Ok"]
    assert h.send("AUTH PLAIN\n") == ["503 5.5.1 Error: MAIL transaction in progress"]
    h.send("RSET\n")
    assert h.send("AUTH PLAIN\n") == ["334 "]
    assert h.send(_plain("bob@example.test", "bob-pw") + "\n") == [
        "235 2.7.0 Authentication successful"
    ]
    assert h.send("AUTH PLAIN\n") == ["503 5.5.1 Error: already authenticated"]


def test_proxy_authorization_is_refused(checker: PasswdFileChecker, clock: Clock) -> None:
    """PLAIN with an authzid other than the login (acting as another user) is refused."""
    h = _harness(checker, clock, "smtpd_tls_auth_only = no\n")
    h.send(EHLO)
    reply = h.send(f"AUTH PLAIN {_plain('bob@example.test', 'bob-pw', 'alice@example.test')}\n")
    assert reply == ["535 5.7.8 Error: authentication failed: authorization identity refused"]


def test_unauthenticated_relay_is_still_refused(checker: PasswdFileChecker, clock: Clock) -> None:
    """Without AUTH the same client cannot relay: AUTH opens nothing by itself."""
    h = _harness(checker, clock, "smtpd_tls_auth_only = no\n")
    h.send(EHLO)
    h.send("MAIL FROM:<a@b.example>\n")
    assert h.send("RCPT TO:<friend@elsewhere.example>\n")[0].startswith("554 5.7.1")


def test_starttls_forgets_a_login(checker: PasswdFileChecker, clock: Clock) -> None:
    """A login made before STARTTLS is forgotten with the rest (RFC 3207 4.2)."""
    h = _harness(checker, clock, "smtpd_tls_auth_only = no\n", tls=True)
    h.send(EHLO)
    h.send(f"AUTH PLAIN {_plain('alice@example.test', 'alice-secret')}\n")
    assert h.protocol.session.sasl_username
    h.send("STARTTLS\n")
    assert h.protocol.session.sasl_username == ""


def test_auth_disabled_and_exceptions(checker: PasswdFileChecker, clock: Clock) -> None:
    """Without smtpd_sasl_auth_enable AUTH is 503; a client in
    smtpd_sasl_exceptions_networks is not offered AUTH either."""
    h = SMTPHarness(checker=checker, clock=clock)
    h.send(EHLO)
    assert h.send("AUTH PLAIN\n") == ["503 5.5.1 Error: authentication not enabled"]
    h = _harness(
        checker,
        clock,
        "smtpd_tls_auth_only = no\nsmtpd_sasl_exceptions_networks = 203.0.113.0/24\n",
    )
    assert not any("AUTH" in line for line in h.send(EHLO))
    assert h.send("AUTH PLAIN\n") == ["503 5.5.1 Error: authentication not enabled"]


def test_broken_clients_and_security_options(checker: PasswdFileChecker, clock: Clock) -> None:
    """broken_sasl_auth_clients adds AUTH=PLAIN LOGIN; noplaintext before TLS
    leaves nothing to offer."""
    h = _harness(checker, clock, "smtpd_tls_auth_only = no\nbroken_sasl_auth_clients = yes\n")
    ehlo = h.send(EHLO)
    assert "250-AUTH PLAIN LOGIN" in ehlo and "250-AUTH=PLAIN LOGIN" in ehlo
    h = _harness(
        checker, clock, "smtpd_tls_auth_only = no\nsmtpd_sasl_security_options = noplaintext\n"
    )
    assert not any("AUTH" in line for line in h.send(EHLO))


SENDER_LOGINS = {
    "alice@example.test": "alice@example.test",
    "shared@example.test": "alice@example.test, bob@example.test",
}


def test_reject_sender_login_mismatch(checker: PasswdFileChecker, clock: Clock) -> None:
    """With smtpd_sender_login_maps: bob may not send as alice (553 'not owned
    by user'), may send as a shared address, an unauthenticated client may
    not use an owned address ('not logged in'), and <> is exempt."""
    extra = (
        "smtpd_tls_auth_only = no\nsmtpd_sender_login_maps = texthash:logins\n"
        "smtpd_sender_restrictions = reject_sender_login_mismatch\nsmtpd_delay_reject = no\n"
    )
    tables = {"texthash:logins": DictTable("logins", SENDER_LOGINS)}
    h = _harness(checker, clock, extra, tables=tables)
    h.send(EHLO)
    assert h.send("MAIL FROM:<alice@example.test>\n") == [
        "553 5.7.1 <alice@example.test>: Sender address rejected: not logged in"
    ]
    assert h.send("MAIL FROM:<>\n") == ["250 2.1.0 Ok"]
    h.send("RSET\n")
    h.send(f"AUTH PLAIN {_plain('bob@example.test', 'bob-pw')}\n")
    assert h.send("MAIL FROM:<alice@example.test>\n") == [
        "553 5.7.1 <alice@example.test>: Sender address rejected: not owned by user "
        "bob@example.test"
    ]
    assert h.send("MAIL FROM:<shared@example.test>\n") == ["250 2.1.0 Ok"]


def test_login_mismatch_without_maps_stops_the_start(
    checker: PasswdFileChecker, clock: Clock
) -> None:
    """A login-mismatch restriction with no smtpd_sender_login_maps would do
    nothing: the start stops instead."""
    with pytest.raises(ConfigError, match="needs smtpd_sender_login_maps"):
        _harness(checker, clock, "smtpd_sender_restrictions = reject_sender_login_mismatch\n")


def test_decode_plain_and_settings() -> None:
    """RFC 4616's three fields; the Cyrus SASL type is refused, not ignored."""
    assert decode_plain(b"\0alice\0pw") == ("", "alice", "pw")
    with pytest.raises(ValueError):
        decode_plain(b"alice\0pw")
    config = Config.from_text("smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = cyrus\n")
    with pytest.raises(ConfigError, match="smtpd_sasl_type = cyrus is not implemented"):
        SaslSettings.from_config(config)


class HeldChecker:
    """A cred checker whose answers the test gives: each check's Deferred
    is kept, and its cancellation recorded."""

    credentialInterfaces = ()

    def __init__(self) -> None:
        self.pending: list[defer.Deferred[bytes]] = []
        self.cancelled = 0

    def requestAvatarId(self, credentials: object) -> defer.Deferred[bytes]:
        def cancel(_d: defer.Deferred[bytes]) -> None:
            self.cancelled += 1

        d: defer.Deferred[bytes] = defer.Deferred(cancel)
        self.pending.append(d)
        return d


def test_a_client_that_leaves_withdraws_its_waiting_check(clock: Clock) -> None:
    """A hang-up while the password check waits (its penalty) cancels the
    check, so the client's turn goes back to its other attempts."""
    checker = HeldChecker()
    h = SMTPHarness(RELAY_CONFIG + "smtpd_tls_auth_only = no\n", checker=checker, clock=clock)  # type: ignore[arg-type]
    h.send(EHLO)
    assert h.send(f"AUTH PLAIN {_plain('alice@example.test', 'x')}\n") == []
    h.protocol.connectionLost(None)
    assert checker.cancelled == 1


def test_too_many_attempts_is_a_temporary_refusal(clock: Clock) -> None:
    """pymta_auth_client_concurrency_limit's refusal is 454 4.7.0, not 535."""
    from twisted.python.failure import Failure

    from pymta.auth.errors import TooManyLoginAttempts

    checker = HeldChecker()
    h = SMTPHarness(RELAY_CONFIG + "smtpd_tls_auth_only = no\n", checker=checker, clock=clock)  # type: ignore[arg-type]
    h.send(EHLO)
    h.send(f"AUTH PLAIN {_plain('alice@example.test', 'x')}\n")
    checker.pending[0].errback(Failure(TooManyLoginAttempts()))
    assert h.take() == ["454 4.7.0 Too many authentication attempts from your address, try later"]
