"""How the smtp client words a failed STARTTLS handshake (Postfix's
"Server certificate not verified" for an untrusted chain)."""

from __future__ import annotations

from OpenSSL import SSL
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure

from pymta.delivery.smtp_chat import handshake_failure


def test_an_untrusted_chain_is_not_verified() -> None:
    """OpenSSL's error stack for a refused chain becomes Postfix's words."""
    error = SSL.Error(
        [("SSL routines", "tls_process_server_certificate", "certificate verify failed")]
    )
    assert handshake_failure(Failure(error)) == "Server certificate not verified"


def test_other_failures_keep_their_message() -> None:
    """A connection lost mid-handshake says so; no reason at all too."""
    assert "was lost" in handshake_failure(Failure(ConnectionLost()))
    assert handshake_failure(None) == "connection lost"
