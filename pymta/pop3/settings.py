"""pop3d's parameters, read once from main.cf (and master.cf ``-o`` overrides).

``pop3d_timeout`` (600s)
    Idle time before the server says ``-ERR Disconnected for inactivity.``
    and closes (RFC 1939 section 3 asks for at least 10 minutes).
``pop3d_hard_error_limit`` (10)
    Bad commands (unknown, wrong state, bad syntax, overlong) before the
    server closes the session, like Postfix's smtpd_hard_error_limit.
``pop3d_line_length_limit`` (2048)
    The longest command line accepted. RFC 2449 allows 255 octets; clients
    sending longer AUTH responses exist, so the default is lenient.
``pop3d_tls_security_level`` ($smtpd_tls_security_level)
    none: no STLS; may: offer STLS; encrypt: no login of any kind before
    TLS. Certificates: ``pop3d_tls_cert_file``, ``pop3d_tls_key_file``.
``pop3d_tls_wrappermode`` (no)
    TLS from the first byte (port 995); the listener wraps the socket.
``pop3d_plaintext_auth_networks`` ($mynetworks)
    Clients that may use USER/PASS and AUTH PLAIN without TLS; loopback
    always may (Dovecot's disable_plaintext_auth with login_trusted_networks).
    ``0.0.0.0/0 [::]/0`` allows every client.
``pop3d_enable_apop`` (no)
    Offer APOP (a banner timestamp). Only users whose password is stored
    PLAIN/CLEAR can use it.
``pop3d_max_login_ip_connections`` (20)
    Connections from one client address (IPv6: its /64) that have not
    logged in yet; one more gets ``-ERR [SYS/TEMP]`` instead of the
    greeting and is closed (pymta.preauth). 0: no limit.
``pop3d_auth_attempt_limit`` (3)
    Failed logins in one session before it is closed.
``pop3d_no_flag_updates`` (no)
    Dovecot's ``pop3_no_flag_updates``: with yes, a session neither moves
    the messages it showed from ``new/`` to ``cur/`` when it ends nor marks
    the ones it sent whole ``\\Seen`` at QUIT (less disk work; IMAP clients
    then still see POP3-downloaded mail as recent and unseen).
"""

from __future__ import annotations

from dataclasses import dataclass

from pymta.config.config import Config
from pymta.config.expand import expand

_FALLBACK = {
    "pop3d_enable_apop": "no",
    "pop3d_auth_attempt_limit": "3",
    "pop3d_no_flag_updates": "no",
}


_YES = ("yes", "true", "on", "1")


def _get(config: Config, name: str) -> str:
    """A value, with this module's default when the defaults table lacks the name."""
    if config.raw(name) is not None:
        return config.get(name)
    return expand(_FALLBACK.get(name, ""), config.raw, (name,))


@dataclass(frozen=True)
class POP3Settings:
    """Everything the protocol needs from the configuration."""

    timeout: float = 600.0
    hard_error_limit: int = 10
    line_length_limit: int = 2048
    tls_required: bool = False
    enable_apop: bool = False
    auth_attempt_limit: int = 3
    mark_seen: bool = True  # \\Seen for messages sent whole, at QUIT
    claim_recent: bool = True  # move what was shown out of new/ at the end
    max_login_ip_connections: int = 20  # connections before login per client; 0: no limit
    hostname: str = "localhost"

    @classmethod
    def from_config(cls, config: Config) -> POP3Settings:
        level = config.get("pop3d_tls_security_level").strip().lower()
        apop = _get(config, "pop3d_enable_apop").strip().lower() in _YES
        no_flag_updates = _get(config, "pop3d_no_flag_updates").strip().lower() in _YES
        try:
            attempts = int(_get(config, "pop3d_auth_attempt_limit"))
        except ValueError:
            attempts = 3
        return cls(
            timeout=config.get_time("pop3d_timeout"),
            hard_error_limit=max(1, config.get_int("pop3d_hard_error_limit")),
            line_length_limit=max(256, config.get_int("pop3d_line_length_limit")),
            tls_required=level == "encrypt",
            enable_apop=apop,
            auth_attempt_limit=max(1, attempts),
            mark_seen=not no_flag_updates,
            claim_recent=not no_flag_updates,
            max_login_ip_connections=max(0, config.get_int("pop3d_max_login_ip_connections")),
            hostname=config.get("myhostname"),
        )
