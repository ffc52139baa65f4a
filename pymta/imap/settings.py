"""imapd's parameters, read once from main.cf (and master.cf ``-o`` overrides).

``imapd_timeout`` (1800s)
    Idle time of an authenticated session before ``* BYE`` (RFC 3501
    section 5.4 asks for at least 30 minutes). IDLE keeps a session alive:
    it gets ``* OK Still here`` instead.
``imapd_login_timeout`` (60s)
    Idle time before login (Dovecot's login processes are as impatient).
``imapd_hard_error_limit`` (10)
    Bad commands before ``* BYE Too many invalid IMAP commands.``
``imapd_line_length_limit`` (65536)
    The longest command line (outside literals); RFC 7162 suggests at
    least 8192 octets.
``imapd_max_literal_size`` (50m, like message_size_limit)
    The largest literal (an APPEND message); refused before it is read.
``imapd_tls_security_level`` ($smtpd_tls_security_level)
    none: no STARTTLS; may: offer it; encrypt: no login before TLS.
``imapd_plaintext_auth_networks`` ($mynetworks)
    Clients that may LOGIN / AUTHENTICATE PLAIN without TLS; loopback
    always may. Others see LOGINDISABLED (RFC 3501 6.2.3).
``imapd_tls_wrappermode`` (no)
    IMAPS (port 993): TLS from the first byte; STARTTLS is not offered.
``imapd_auth_attempt_limit`` (3)
    Failed logins in one session before it is closed.
``imapd_max_login_ip_connections`` (20)
    Connections from one client address (IPv6: its /64) that have not
    logged in yet; one more gets ``* BYE`` instead of the greeting and is
    closed (pymta.preauth). 0: no limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from pymta.config.config import Config


def _int(config: Config, name: str, default: int) -> int:
    try:
        return config.get_int(name)
    except Exception:
        return default


def _time(config: Config, name: str, default: float) -> float:
    try:
        return config.get_time(name)
    except Exception:
        return default


@dataclass(frozen=True)
class IMAPSettings:
    """Everything the protocol needs from the configuration."""

    timeout: float = 1800.0
    login_timeout: float = 60.0
    hard_error_limit: int = 10
    line_length_limit: int = 65536
    max_literal_size: int = 50 * 1024 * 1024
    tls_required: bool = False
    auth_attempt_limit: int = 3
    max_login_ip_connections: int = 20  # connections before login per client; 0: no limit
    hostname: str = "localhost"

    @property
    def command_limit(self) -> int:
        return self.max_literal_size + 4 * self.line_length_limit

    @classmethod
    def from_config(cls, config: Config) -> IMAPSettings:
        level = config.get("imapd_tls_security_level").strip().lower()
        return cls(
            timeout=_time(config, "imapd_timeout", 1800.0),
            login_timeout=_time(config, "imapd_login_timeout", 60.0),
            hard_error_limit=max(1, _int(config, "imapd_hard_error_limit", 10)),
            line_length_limit=max(1024, _int(config, "imapd_line_length_limit", 65536)),
            max_literal_size=max(1024, _int(config, "imapd_max_literal_size", 50 * 1024 * 1024)),
            tls_required=level == "encrypt",
            auth_attempt_limit=max(1, _int(config, "imapd_auth_attempt_limit", 3)),
            max_login_ip_connections=max(0, _int(config, "imapd_max_login_ip_connections", 20)),
            hostname=config.get("myhostname"),
        )
