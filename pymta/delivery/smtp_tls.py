"""smtp_tls: the SMTP client's TLS policy per destination, and its contexts.

Mirrors Postfix's smtp_tls_policy.c. Levels (``smtp_tls_security_level``,
or per destination through ``smtp_tls_policy_maps``):

- ``none``: never STARTTLS;
- ``may`` (pymta's default when the level is empty: opportunistic):
  STARTTLS when offered, certificate not checked; a server without
  STARTTLS gets plain text;
- ``encrypt``: STARTTLS required (else defer ``4.7.4``), certificate not
  checked;
- ``verify`` / ``secure``: STARTTLS required and the chain checked against
  ``smtp_tls_CAfile`` (the system's trust store when empty), then the
  certificate's names against the match list (``smtp_tls_verify_cert_match``,
  default the MX host name; ``smtp_tls_secure_cert_match``, default the
  next-hop domain and names under it; or ``match=``; see
  :func:`reference_names`); a failure defers ``4.7.5``;
- ``fingerprint``: STARTTLS required, the server's certificate or public
  key must have one of the digests (``smtp_tls_fingerprint_cert_match`` or
  ``match=``, ``smtp_tls_fingerprint_digest``);
- ``dane`` / ``dane-only`` (RFC 7672; needs ``smtp_dns_support_level =
  dnssec``): each MX host's TLSA records decide, see
  :mod:`pymta.delivery.dane`, which also judges fingerprints.

The levels without their prerequisites (dane without DNSSEC, fingerprint
without a digest) stop the start (:func:`check_main_cf`), never becoming a
weaker level. The client certificate (``smtp_tls_cert_file`` /
``smtp_tls_key_file`` or ``smtp_tls_chain_files``,
:class:`ClientCertificate`) is offered to servers that ask, and renewed
files are read again without a restart.

A policy table entry is ``level [match=name:name...] [ciphers=grade]
[protocols=list]`` looked up by the next hop as written
(``[mx.example]:587``), then the bare domain, then its parent domains as
``.parent``; any other attribute makes the entry an error (the mail is
deferred). The one policy object, :class:`TLSPolicy`, comes from that
table first, then from the agent's :data:`PolicyHook` list (MTA-STS), then
from main.cf. The obsolete ``smtp_enforce_tls`` /
``smtp_use_tls`` apply when the level is empty, as in Postfix. The lmtp
client reads the ``lmtp_*`` twins (an empty level is none there). Protocols
and TLS 1.2 ciphers: ``smtp_tls_protocols``, ``smtp_tls_ciphers`` and
``smtp_tls_exclude_ciphers`` at level may, their ``mandatory_`` twins at
encrypt, verify and secure (Postfix's syntax and grades,
:mod:`pymta.tls_grades`); never below TLS 1.2. Untrusted input: none here (the handshake is
judged by OpenSSL and service-identity).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.x509 import load_pem_x509_certificate
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

from pymta.config import Config, ConfigError
from pymta.delivery.lookup import Lookup
from pymta.tls_certs import Stamp, parse_chain_files, stamps
from pymta.tls_grades import TLSSettings, settings_for

_log = Logger()

LEVELS = ("none", "may", "encrypt", "fingerprint", "verify", "secure", "dane", "dane-only")
REQUIRED = ("encrypt", "fingerprint", "verify", "secure", "dane", "dane-only")
#: levels whose chain OpenSSL checks against the trusted CAs
PKIX = ("verify", "secure")
#: levels whose check pymta makes after the handshake (pymta.delivery.dane)
MATCHED = ("fingerprint", "dane")
VERIFIED = PKIX + MATCHED


@dataclass(frozen=True)
class TLSPolicy:
    """The TLS policy of one destination (or of one MX host of it).

    One object for every source of policy: ``smtp_tls_policy_maps`` (the
    administrator's word, first), a :data:`PolicyHook` such as MTA-STS
    (next), the main.cf level (last); DANE then turns a ``dane`` or
    ``dane-only`` level into the policy of each MX host (its TLSA records,
    or ``may`` when the DNS answers are not DNSSEC-secure).

    - ``level``: one of :data:`LEVELS`;
    - ``match``: names the certificate must carry (verify, secure; Postfix's
      ``hostname``, ``nexthop``, ``dot-nexthop`` or literal names, a name
      starting with ``.`` matching any subdomain), or the certificate
      digests of level fingerprint;
    - ``source``: who said so, for the logs (``main.cf``,
      ``smtp_tls_policy_maps``, ``mta-sts``, ``dane``);
    - ``ciphers`` / ``protocols``: a policy's own ``ciphers=`` grade and
      ``protocols=`` list ('' means main.cf's);
    - ``tlsa``: the host's usable TLSA records (level dane, after the
      lookups; RFC 7672 usages 2 and 3 only).
    """

    level: str
    match: tuple[str, ...] = field(default=())
    source: str = "main.cf"
    ciphers: str = ""
    protocols: str = ""
    tlsa: tuple[Any, ...] = field(default=())

    @property
    def required(self) -> bool:
        """A session without TLS defers (4.7.4)."""
        return self.level in REQUIRED

    @property
    def verified(self) -> bool:
        """The peer's certificate is checked (a failure defers 4.7.5)."""
        return self.level in VERIFIED


#: Another source of a destination's policy (MTA-STS): called with
#: ``(nexthop, domain)`` when ``smtp_tls_policy_maps`` has no entry for it;
#: fires with the TLSPolicy that replaces the main.cf level (its ``source``
#: naming the hook, e.g. ``mta-sts``), or None when it has nothing to say.
#: It must not errback: a source that cannot decide answers what its own
#: rules say then (a cached policy, or None), never an accidental may.
PolicyHook = Callable[[str, str], Deferred[TLSPolicy | None]]


def default_level(config: Config, prefix: str = "smtp") -> str:
    """The main.cf level; empty means may for smtp (pymta) and none for lmtp."""
    level = config.get(f"{prefix}_tls_security_level").strip().lower()
    if not level:
        if config.get_bool(f"{prefix}_enforce_tls"):
            level = "encrypt"
        elif f"{prefix}_use_tls" in config.explicit():
            level = "may" if config.get_bool(f"{prefix}_use_tls") else "none"
        else:
            level = "may" if prefix == "smtp" else "none"
    return _check(level, f"{prefix}_tls_security_level", prefix)


def check_main_cf(config: Config, prefix: str = "smtp") -> None:
    """What the start refuses (ConfigError) rather than turn into a weaker
    level: a bad level; dane without ``smtp_dns_support_level = dnssec``
    (Postfix falls back to may with a warning; pymta never does so
    silently); fingerprint without a fingerprint to match; a bad digest."""
    level = default_level(config, prefix)
    _digest_name(config, prefix)
    support = config.get("smtp_dns_support_level").strip().lower()
    if support not in ("", "enabled", "dnssec"):
        raise ConfigError(
            f"bad value {support!r}: pymta always looks up hosts in DNS "
            "(expected enabled or dnssec)",
            parameter="smtp_dns_support_level",
        )
    if level in ("dane", "dane-only") and support != "dnssec":
        raise ConfigError(
            f"TLS level {level} needs smtp_dns_support_level = dnssec (TLSA records "
            "are only believed from a DNSSEC-validating resolver on loopback)",
            parameter=f"{prefix}_tls_security_level",
        )
    if level == "fingerprint":
        digests = config.get_list(f"{prefix}_tls_fingerprint_cert_match")
        if not digests:
            raise ConfigError(
                f"TLS level fingerprint needs {prefix}_tls_fingerprint_cert_match",
                parameter=f"{prefix}_tls_security_level",
            )
        for digest in digests:
            _check_digest(digest, f"{prefix}_tls_fingerprint_cert_match")


def dane_usable(config: Config) -> bool:
    """Whether this smtp client can do DANE (DNSSEC answers it trusts)."""
    return config.get("smtp_dns_support_level").strip().lower() == "dnssec"


def _digest_name(config: Config, prefix: str) -> str:
    name = config.get(f"{prefix}_tls_fingerprint_digest").strip().lower()
    if name not in FINGERPRINT_DIGESTS:
        raise ConfigError(
            f"bad digest {name!r}: expected one of {', '.join(FINGERPRINT_DIGESTS)}",
            parameter=f"{prefix}_tls_fingerprint_digest",
        )
    return name


def fingerprint_digest(config: Config, prefix: str = "smtp") -> str:
    """``smtp_tls_fingerprint_digest`` (sha256 by default, as Postfix 3.6)."""
    return _digest_name(config, prefix)


FINGERPRINT_DIGESTS = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")


def _check_digest(text: str, parameter: str) -> str:
    value = text.replace(":", "")
    try:
        bytes.fromhex(value)
    except ValueError:
        value = ""
    if not value:
        raise ConfigError(f"bad fingerprint {text!r}: expected hex bytes", parameter=parameter)
    return text


def _check(level: str, parameter: str, prefix: str = "smtp") -> str:
    if prefix == "lmtp" and level in ("dane", "dane-only"):
        # LMTP next hops are not found through MX records; Postfix's lmtp
        # does DANE only with lmtp_dns_support_level, which pymta lacks.
        raise ConfigError(
            f"TLS level {level} is not implemented by pymta's lmtp client "
            "(use verify, secure or fingerprint)",
            parameter=parameter,
        )
    if level not in LEVELS:
        raise ConfigError(
            f"bad TLS level {level!r}: expected one of {', '.join(LEVELS)}", parameter=parameter
        )
    return level


#: policy table attributes pymta acts on (Postfix's others, such as
#: ``tafile=`` or ``servername=``, make the entry an error: deferred, never
#: quietly weaker)
ATTRIBUTES = ("match", "ciphers", "protocols")


def parse_policy(value: str, source: str = "smtp_tls_policy_maps") -> TLSPolicy:
    """``verify match=hostname:nexthop ciphers=high`` -> TLSPolicy.

    As Postfix's smtp_tls_policy.c: names in ``match=`` are separated by
    ``:``, digests of level fingerprint (which contain ``:``) by ``|``, and
    several ``match=`` attributes add up. ValueError (or ConfigError) for
    an entry Postfix would also refuse."""
    words = value.split()
    if not words:
        raise ValueError("empty TLS policy")
    level = _check(words[0].lower(), source, source.split("_")[0])
    match: list[str] = []
    attributes: dict[str, str] = {}
    for word in words[1:]:
        name, equals, arg = word.partition("=")
        name = name.lower()
        if not equals or name not in ATTRIBUTES:
            raise ValueError(f"unsupported TLS policy attribute {word!r}")
        if name == "match":
            separator = "|" if level == "fingerprint" else ":"
            match.extend(m.strip() for m in arg.split(separator) if m.strip())
        else:
            attributes[name] = arg
    if level == "fingerprint":
        if not match:
            raise ValueError("TLS level fingerprint without match= fingerprints")
        for digest in match:
            _check_digest(digest, source)
    return TLSPolicy(
        level,
        tuple(match),
        source=source,
        ciphers=attributes.get("ciphers", ""),
        protocols=attributes.get("protocols", ""),
    )


def policy_for(
    nexthop: str, domain: str, config: Config, table: Lookup | None, prefix: str = "smtp"
) -> TLSPolicy:
    """The policy of one destination from the table, else the main.cf level."""
    found = table_policy(nexthop, domain, table, f"{prefix}_tls_policy_maps")
    return found if found is not None else main_cf_policy(config, prefix)


def table_policy(
    nexthop: str, domain: str, table: Lookup | None, source: str = "smtp_tls_policy_maps"
) -> TLSPolicy | None:
    """The table's entry for the next hop as written, the bare domain, then
    its parents as ``.parent``; None when it has none. TableError,
    ValueError or ConfigError when the table or the entry is bad."""
    if table is None:
        return None
    keys = [nexthop, domain]
    labels = domain.split(".")
    keys.extend("." + ".".join(labels[i:]) for i in range(1, len(labels)))
    for key in keys:
        if not key:
            continue
        value = table.lookup(key)
        if value:
            return parse_policy(value, source)
    return None


def main_cf_policy(config: Config, prefix: str = "smtp") -> TLSPolicy:
    """The level of main.cf with its ``*_cert_match`` names."""
    level = default_level(config, prefix)
    kind = level if level in ("secure", "fingerprint") else "verify"
    match = f"{prefix}_tls_{kind}_cert_match"
    return TLSPolicy(level, tuple(config.get_list(match)), source="main.cf")


def grades_of(
    policy: TLSPolicy, config: Config, prefix: str = "smtp"
) -> dict[bool, TLSSettings] | None:
    """The protocols and ciphers of a policy with its own ``ciphers=`` or
    ``protocols=`` (they replace the main.cf grade and list of both kinds,
    as in Postfix); None when it has neither (the agent's own apply).
    ConfigError for a bad grade or list."""
    overrides: dict[str, str] = {}
    for kind in ("", "mandatory_"):
        if policy.ciphers:
            overrides[f"{prefix}_tls_{kind}ciphers"] = policy.ciphers
        if policy.protocols:
            overrides[f"{prefix}_tls_{kind}protocols"] = policy.protocols
    if not overrides:
        return None
    return client_grades(config.with_overrides(overrides, policy.source), prefix)


def load_trust(cafile: str) -> Any:
    """The trust root: the certificates of a PEM file, or the platform's."""
    if not cafile:
        return ssl.platformTrust()
    with open(cafile, "rb") as f:
        pem = f.read()
    marker = b"-----BEGIN CERTIFICATE-----"
    certificates = [ssl.Certificate.loadPEM(marker + part) for part in pem.split(marker)[1:]]
    if not certificates:
        raise ConfigError(f"no certificate in {cafile!r}", parameter="smtp_tls_CAfile")
    return ssl.trustRootFromCertificates(certificates)


_TWISTED_VERSION = {
    SSL.TLS1_2_VERSION: ssl.TLSVersion.TLSv1_2,
    SSL.TLS1_3_VERSION: ssl.TLSVersion.TLSv1_3,
}


def client_context(
    policy: TLSPolicy,
    peer_name: str,
    trust: Any = None,
    grades: TLSSettings | None = None,
    identity: ClientIdentity | None = None,
) -> Any:
    """The connection creator for ``transport.startTLS``: verifying the
    chain and ``peer_name`` at verify/secure, accepting any certificate
    otherwise (Postfix's opportunistic TLS does not authenticate).
    ``grades`` are the protocols and TLS 1.2 ciphers of the policy's kind
    (``smtp_tls_mandatory_*`` when TLS is required, else ``smtp_tls_*``);
    without them TLS 1.2 and later with Twisted's ciphers. ``identity``
    is the certificate shown to a server that asks for one."""
    options: dict[str, Any] = {"raiseMinimumTo": ssl.TLSVersion.TLSv1_2}
    if grades is not None:
        options = {
            "raiseMinimumTo": _TWISTED_VERSION[grades.min_version],
            "lowerMaximumSecurityTo": _TWISTED_VERSION[grades.max_version],
            "acceptableCiphers": ssl.AcceptableCiphers.fromOpenSSLCipherString(grades.ciphers),
        }
    if identity is not None:
        options.update(identity.options())
    if policy.level in PKIX:
        # OpenSSL checks the chain in the handshake (a failure defers 4.7.5);
        # the names are Postfix's match list, checked after it
        # (pymta.delivery.dane.names_verified).
        chained = ssl.CertificateOptions(
            trustRoot=trust if trust is not None else ssl.platformTrust(), **options
        )
        return _WithServerName(chained, peer_name)
    unchecked = ssl.CertificateOptions(verify=False, **options)
    if policy.level == "dane":
        # RFC 7672 section 8.1: a DANE client sends the TLSA base domain as SNI.
        return _WithServerName(unchecked, peer_name)
    return unchecked


def reference_names(policy: TLSPolicy, hostname: str, nexthop: str) -> tuple[str, ...]:
    """The names a verify/secure certificate may carry, from the policy's
    match list as Postfix reads it: ``hostname`` (the MX host), ``nexthop``
    (the next-hop domain), ``dot-nexthop`` (any name under it), other words
    literally (``.example.com``: any name under example.com). An empty list
    is Postfix's default: hostname at verify, nexthop and dot-nexthop at
    secure."""
    match = policy.match or (
        ("nexthop", "dot-nexthop") if policy.level == "secure" else ("hostname",)
    )
    names: list[str] = []
    for word in match:
        key = word.lower()
        if key == "hostname":
            names.append(hostname)
        elif key == "nexthop":
            names.append(nexthop)
        elif key == "dot-nexthop":
            names.append("." + nexthop)
        else:
            names.append(key)
    return tuple(dict.fromkeys(n.lower().rstrip(".") for n in names if n))


@implementer(IOpenSSLClientConnectionCreator)
class _WithServerName:
    """A client connection of ``options`` that sends ``name`` as SNI (the
    caller checks the certificate's names, or TLSA records, after the
    handshake)."""

    def __init__(self, options: Any, name: str) -> None:
        self.options = options
        self.name = name

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self.options.getContext(), None)
        connection.set_app_data(tlsProtocol)
        connection.set_connect_state()
        if self.name and not _is_address(self.name):  # RFC 6066: no SNI for addresses
            connection.set_tlsext_host_name(self.name.encode("idna"))
        return connection


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ClientIdentity:
    """The certificate the client presents to servers that ask (pyOpenSSL
    objects, as CertificateOptions takes them): key, certificate, and the
    intermediates sent after it."""

    key: Any
    certificate: Any
    chain: tuple[Any, ...] = ()

    def options(self) -> dict[str, Any]:
        return {
            "privateKey": self.key,
            "certificate": self.certificate,
            "extraCertChain": list(self.chain),
        }


def client_identity(config: Config, prefix: str = "smtp") -> ClientIdentity | None:
    """``smtp_tls_chain_files``, else ``smtp_tls_cert_file`` (the leaf then
    its intermediates) with ``smtp_tls_key_file`` (empty: the cert file),
    as Postfix reads them; None when neither is set. ConfigError for a file
    that cannot be read, a key that does not match, or more than one key
    (Postfix's client may hold an RSA and an ECDSA one; pymta's presents
    one certificate)."""
    files = identity_files(config, prefix)
    return load_identity(*files, prefix=prefix) if files is not None else None


def identity_files(config: Config, prefix: str = "smtp") -> tuple[list[str], str] | None:
    """The files of the client certificate (key first) and the parameter
    that named them; None when there is none."""
    chain_parameter = f"{prefix}_tls_chain_files"
    paths = config.get_list(chain_parameter)
    if paths:
        return paths, chain_parameter
    cert = config.get(f"{prefix}_tls_cert_file").strip()
    key = config.get(f"{prefix}_tls_key_file").strip() or cert
    if not cert:
        if key:
            raise ConfigError(
                f"{prefix}_tls_key_file without {prefix}_tls_cert_file",
                parameter=f"{prefix}_tls_key_file",
            )
        return None
    # The key first, then the chain: the order parse_chain_files reads.
    return ([key, cert] if key != cert else [cert]), f"{prefix}_tls_cert_file"


def load_identity(paths: list[str], parameter: str, prefix: str = "smtp") -> ClientIdentity:
    groups = parse_chain_files(paths, parameter)
    if len(groups) > 1:
        raise ConfigError(
            f"{', '.join(paths)} hold {len(groups)} keys; pymta's {prefix} client "
            "presents one certificate",
            parameter=parameter,
        )
    group = groups[0]
    certificates = [
        crypto.X509.from_cryptography(load_pem_x509_certificate(pem)) for pem in group.certs
    ]
    return ClientIdentity(
        crypto.PKey.from_cryptography_key(group.key), certificates[0], tuple(certificates[1:])
    )


class ClientCertificate:
    """The client certificate, renewed without a restart: at most once per
    ``interval`` seconds a delivery stats the files (as the servers'
    certificates are, :class:`pymta.tls.ServerTLS`); when they changed they
    are read again, and a renewal that cannot be loaded (a half-written
    key) is logged while the previous certificate stays in use."""

    def __init__(
        self,
        config: Config,
        prefix: str = "smtp",
        clock: Callable[[], float] = time.monotonic,
        interval: float = 1.0,
    ) -> None:
        self._files = identity_files(config, prefix)
        self._prefix = prefix
        self._clock = clock
        self._interval = interval
        self._checked = clock()
        self._identity: ClientIdentity | None = None
        self._stamp: tuple[Stamp, ...] = ()
        if self._files is not None:
            self._stamp = stamps(self._files[0])
            self._identity = load_identity(*self._files, prefix=prefix)

    def current(self) -> ClientIdentity | None:
        if self._files is None:
            return None
        now = self._clock()
        if now - self._checked < self._interval:
            return self._identity
        self._checked = now
        stamp = stamps(self._files[0])
        if stamp == self._stamp:
            return self._identity
        self._stamp = stamp
        try:
            self._identity = load_identity(*self._files, prefix=self._prefix)
        except ConfigError as e:
            _log.error(
                "client TLS certificate files changed but cannot be loaded; "
                "keeping the previous certificate: {error}",
                error=str(e),
            )
        else:
            _log.info(
                "reloaded client TLS certificate from {files}", files=", ".join(self._files[0])
            )
        return self._identity


def client_grades(config: Config, prefix: str = "smtp") -> dict[bool, TLSSettings]:
    """The settings of opportunistic (False) and mandatory (True) TLS of the
    smtp or lmtp client; ConfigError for a bad protocol list or grade."""
    return {
        False: settings_for(config, prefix, mandatory=False),
        True: settings_for(config, prefix, mandatory=True),
    }
