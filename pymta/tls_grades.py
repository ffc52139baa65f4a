"""tls_grades: Postfix's TLS protocol lists and cipher grades as OpenSSL settings.

Mirrors Postfix's tls_protocol_mask() and tls_set_ciphers() (tls_misc.c).
Used by the servers (:mod:`pymta.tls`) and the SMTP client
(:mod:`pymta.delivery.smtp_tls`); untrusted input: none (main.cf values).

Protocols (``smtpd_tls_protocols``, ``smtpd_tls_mandatory_protocols``,
``smtp_tls_*``): Postfix's syntax, names separated by commas or spaces:
``TLSv1.2 TLSv1.3`` (only these), ``!SSLv2, !SSLv3`` (all but these),
``>=TLSv1.2`` and ``<=TLSv1.3`` (bounds), mixed freely. pymta's floor is
TLS 1.2: OpenSSL 3 allows TLS 1.0 and 1.1 only at security level 0, which
pymta never sets (a Postfix on OpenSSL 3 at its default level behaves the
same), so a list is intersected with TLS 1.2 and 1.3. A list that leaves
neither, or names an unknown protocol, stops the start.

Ciphers (``smtpd_tls_ciphers``, ``smtpd_tls_mandatory_ciphers``): a grade,
``high``, ``medium``, ``low`` or ``export``, names the OpenSSL cipher string
in ``tls_high_cipherlist``, ``tls_medium_cipherlist``, ``tls_low_cipherlist``
or ``tls_export_cipherlist`` (Postfix's defaults; OpenSSL 3 has no LOW or
EXPORT ciphers left, so those two grades give what medium gives); each name
in ``smtpd_tls_exclude_ciphers`` (and at mandatory TLS
``smtpd_tls_mandatory_exclude_ciphers``) is appended as ``:!name``. The
``null`` grade (no encryption) is refused: OpenSSL 3 offers NULL ciphers
only at security level 0. As in Postfix, the grades and exclusions shape TLS
1.2 only; TLS 1.3 always uses OpenSSL's TLS 1.3 suites (all AEAD).

Which pair applies: the ``mandatory`` parameters when TLS is required
(``smtpd_tls_security_level = encrypt``; on the client encrypt, verify and
secure), the others when it is opportunistic (may), as in Postfix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from OpenSSL import SSL

from pymta.config.config import Config
from pymta.config.errors import ConfigError

__all__ = ["GRADES", "TLSSettings", "cipher_string", "protocol_range", "settings_for"]

_SPLIT = re.compile(r"[\s,:]+")

# Postfix's protocol names, lower-cased, in order; pymta offers the last two.
_ORDER = ("sslv2", "sslv3", "tlsv1", "tlsv1.1", "tlsv1.2", "tlsv1.3")
_OPENSSL_VERSION = {"tlsv1.2": SSL.TLS1_2_VERSION, "tlsv1.3": SSL.TLS1_3_VERSION}
_OFFERED = ("tlsv1.2", "tlsv1.3")

#: The grades a cipher parameter may name, and the parameter holding each
#: grade's OpenSSL cipher string.
GRADES = {
    "high": "tls_high_cipherlist",
    "medium": "tls_medium_cipherlist",
    "low": "tls_low_cipherlist",
    "export": "tls_export_cipherlist",
}


def protocol_range(value: str, parameter: str) -> tuple[int, int]:
    """The (minimum, maximum) OpenSSL protocol versions a Postfix protocol
    list allows within TLS 1.2 to 1.3; ConfigError when it allows neither or
    names an unknown protocol."""
    included: set[str] = set()
    excluded: set[str] = set()
    low, high = 0, len(_ORDER) - 1
    for item in (i for i in _SPLIT.split(value.strip().lower()) if i):
        for prefix in ("!", ">=", "<="):
            if item.startswith(prefix):
                name = item[len(prefix) :]
                break
        else:
            prefix, name = "", item
        if name not in _ORDER:
            raise ConfigError(
                f"unknown TLS protocol {name!r} in {value!r}: expected SSLv2, SSLv3, "
                "TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3",
                parameter=parameter,
            )
        position = _ORDER.index(name)
        if prefix == "!":
            excluded.add(name)
        elif prefix == ">=":
            low = max(low, position)
        elif prefix == "<=":
            high = min(high, position)
        else:
            included.add(name)
    allowed = [
        name
        for position, name in enumerate(_ORDER)
        if name in _OFFERED
        and low <= position <= high
        and name not in excluded
        and (not included or name in included)
    ]
    if not allowed:
        raise ConfigError(
            f"{value!r} allows neither TLSv1.2 nor TLSv1.3, the only protocols "
            "pymta offers (TLS 1.0 and 1.1 need OpenSSL security level 0)",
            parameter=parameter,
        )
    return _OPENSSL_VERSION[allowed[0]], _OPENSSL_VERSION[allowed[-1]]


def cipher_string(config: Config, grade_parameter: str, exclude_parameters: list[str]) -> str:
    """The OpenSSL TLS 1.2 cipher string of the grade in ``grade_parameter``
    less the names in each of ``exclude_parameters``; ConfigError for an
    unknown grade, ``null``, or a string OpenSSL matches no cipher with."""
    grade = config.get(grade_parameter).strip().lower()
    if grade == "null":
        raise ConfigError(
            "the null grade (no encryption) is not offered: OpenSSL 3 allows "
            "NULL ciphers only at security level 0",
            parameter=grade_parameter,
        )
    if grade not in GRADES:
        raise ConfigError(
            f"bad value {grade!r}: expected high, medium, low or export",
            parameter=grade_parameter,
        )
    ciphers = config.get(GRADES[grade]).strip()
    for name in exclude_parameters:
        for item in (i for i in _SPLIT.split(config.get(name).strip()) if i):
            ciphers += f":!{item}"
    try:
        SSL.Context(SSL.TLS_METHOD).set_cipher_list(ciphers.encode("ascii"))
    except (SSL.Error, UnicodeEncodeError):
        raise ConfigError(
            f"{GRADES[grade]} with the exclusions gives no cipher OpenSSL knows: {ciphers!r}",
            parameter=grade_parameter,
        ) from None
    return ciphers


@dataclass(frozen=True)
class TLSSettings:
    """The protocol range and TLS 1.2 cipher string of one TLS endpoint."""

    min_version: int
    max_version: int
    ciphers: str

    def apply(self, ctx: SSL.Context) -> None:
        ctx.set_min_proto_version(self.min_version)
        ctx.set_max_proto_version(self.max_version)
        ctx.set_cipher_list(self.ciphers.encode("ascii"))


def settings_for(config: Config, prefix: str, mandatory: bool) -> TLSSettings:
    """The settings of ``prefix`` (smtpd, smtp, lmtp, pop3d, imapd): its
    ``mandatory_`` parameters when TLS is required, else the others."""
    if mandatory:
        protocols = f"{prefix}_tls_mandatory_protocols"
        grade = f"{prefix}_tls_mandatory_ciphers"
        excludes = [f"{prefix}_tls_exclude_ciphers", f"{prefix}_tls_mandatory_exclude_ciphers"]
    else:
        protocols = f"{prefix}_tls_protocols"
        grade = f"{prefix}_tls_ciphers"
        excludes = [f"{prefix}_tls_exclude_ciphers"]
    low, high = protocol_range(config.get(protocols), protocols)
    ciphers = cipher_string(config, grade, excludes)
    return TLSSettings(low, high, ciphers)
