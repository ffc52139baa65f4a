"""dane: DANE (RFC 7672) and certificate fingerprints for the SMTP client.

Mirrors Postfix's DANE support (smtp_tls_security_level ``dane`` and
``dane-only``, tls_dane.c) and level ``fingerprint``. Two jobs:

:func:`host_policy` turns a destination's ``dane`` / ``dane-only`` policy
into the policy of one MX host before the client connects (RFC 7672
section 2.2), from DNS answers whose DNSSEC status the resolver reports
(:mod:`pymta.dns.names`, ``smtp_dns_support_level = dnssec``):

- the MX and address answers that named the host were not secure, or the
  TLSA answer for ``_PORT._tcp.HOST`` is not secure, or it securely says
  there are no TLSA records: ``dane`` falls back to ``may`` (opportunistic
  TLS, as RFC 7672 and Postfix do); ``dane-only`` defers (4.7.5);
- the TLSA lookup fails (SERVFAIL, timeout): the host is skipped, 4.7.5
  ("TLSA lookup error"), as RFC 7672 section 2.2.1 requires — a failed
  lookup must not become a weaker policy;
- secure TLSA records of which none is usable (PKIX-TA/EE usages 0 and 1
  are not for SMTP, section 3.1.3; unknown selectors or matching types):
  ``dane`` uses mandatory unauthenticated TLS (``encrypt``), ``dane-only``
  defers;
- usable records: level ``dane`` with them (``tlsa``) and the names a
  DANE-TA chain must carry (the MX host name, and the next-hop domain when
  there was no MX; section 3.2.2).

:func:`verified` judges the chain a server presented, after the
handshake: a DANE-EE(3) record matches the server's own certificate (its
full DER form with selector 0, its SubjectPublicKeyInfo with 1; exact,
SHA-256 or SHA-512 per the matching type), with no name or date check
(section 3.1.1); a DANE-TA(2) record matches a certificate of the chain
(usually the issuing CA), from which the server's certificate must chain
(OpenSSL verifies signatures and dates, the matched certificate being the
trust anchor) and carry one of the names (section 3.1.2). At level
``fingerprint`` the digest (``smtp_tls_fingerprint_digest``) of the
server's certificate or of its public key must be one of the policy's
``match`` values (``AB:CD:...``, case and colons ignored). A chain that
does not match defers (4.7.5), logged by the caller as Postfix does.

CNAMEs are not expanded into TLSA base domains: the MX host name is the
base domain. Untrusted input: DNS answers and the server's certificates
(parsed by OpenSSL and cryptography, compared by digest).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from OpenSSL import crypto
from service_identity import VerificationError
from service_identity.cryptography import verify_certificate_ip_address

from pymta.delivery.smtp_chat import SessionError
from pymta.delivery.smtp_tls import TLSPolicy
from pymta.dns.interface import OK, SERVFAIL, IDNSResolver
from pymta.dns.mx import Host
from pymta.dns.tlsa import CERT, DANE_EE, DANE_TA, FULL, SHA2_256, SHA2_512, TLSARecord, usable
from pymta.tls_ccert import fingerprint

DANE_LEVELS = ("dane", "dane-only")


async def host_policy(
    resolver: IDNSResolver, policy: TLSPolicy, host: Host, port: int, domain: str
) -> TLSPolicy:
    """The policy of ``host`` under a dane/dane-only ``policy`` (module doc);
    SessionError (4.7.5, next host) when the host must not be used."""
    only = policy.level == "dane-only"
    where = f"{host.name}[{host.address}]:{port}"

    def fallback(why: str) -> TLSPolicy:
        if only:
            raise SessionError("4.7.5", f"no usable DANE TLSA records for {where}: {why}")
        return replace(policy, level="may", match=(), source=f"dane: {why}")

    if not host.secure:
        return fallback("non-DNSSEC destination")
    qname = f"_{port}._tcp.{host.name}"
    answer = await resolver.lookup(qname, "TLSA")
    if answer.status == SERVFAIL:
        raise SessionError("4.7.5", f"TLSA lookup error for {host.name}:{port}")
    if not answer.authentic:
        return fallback(f"insecure TLSA answer for {qname}")
    if answer.status != OK:
        return fallback(f"no TLSA records for {qname}")
    records = usable([r for r in answer.records if isinstance(r, TLSARecord)])
    if not records:
        if only:
            raise SessionError("4.7.5", f"no usable TLSA records for {where}")
        # RFC 7672 section 2.2: unusable records still mean TLS is wanted.
        return replace(policy, level="encrypt", match=(), source="dane: unusable TLSA records")
    names = (host.name,) if host.preference >= 0 else (host.name, domain)
    return replace(policy, level="dane", match=names, source="dane", tlsa=records)


def _selected(cert: x509.Certificate, selector: int) -> bytes:
    if selector == CERT:
        return cert.public_bytes(serialization.Encoding.DER)
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _digest(data: bytes, matching: int) -> bytes:
    if matching == SHA2_256:
        return hashlib.sha256(data).digest()
    if matching == SHA2_512:
        return hashlib.sha512(data).digest()
    assert matching == FULL
    return data


def tlsa_matches(record: TLSARecord, cert: x509.Certificate) -> bool:
    """Whether ``record``'s data is the certificate's selected part, digested."""
    found = _digest(_selected(cert, record.selector), record.matching)
    return hmac.compare_digest(found, record.data)


def _chains_to(leaf: Any, anchor: Any, intermediates: Sequence[Any]) -> bool:
    """OpenSSL's path check from ``leaf`` to ``anchor`` (a trust anchor that
    need not be self-signed: PARTIAL_CHAIN), signatures and dates."""
    store = crypto.X509Store()
    store.add_cert(anchor)
    store.set_flags(crypto.X509StoreFlags.PARTIAL_CHAIN)
    try:
        crypto.X509StoreContext(store, leaf, list(intermediates)).verify_certificate()
    except crypto.X509StoreContextError:
        return False
    return True


def _certificate_names(cert: x509.Certificate) -> list[str]:
    """The DNS names of subjectAltName, else the subject's common names."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        found = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return [str(a.value).lower().rstrip(".") for a in found]
    return [name.lower().rstrip(".") for name in san.get_values_for_type(x509.DNSName)]


def _name_matches(cert_name: str, reference: str) -> bool:
    """Postfix's match_servername: ``.example.com`` matches any name under
    example.com (a wildcard certificate for it too); other names exactly,
    or by a ``*.`` wildcard certificate name one label up."""
    if reference.startswith("."):
        return len(cert_name) > len(reference) and cert_name.endswith(reference)
    if cert_name == reference:
        return True
    if cert_name.startswith("*.") and "." in reference:
        return reference.split(".", 1)[1] == cert_name[2:]
    return False


def _has_name(cert: x509.Certificate, names: Sequence[str]) -> bool:
    """The certificate carries one of ``names`` (an address: as an IP SAN)."""
    cert_names = _certificate_names(cert)
    for reference in names:
        try:
            address = ipaddress.ip_address(reference)
        except ValueError:
            if any(_name_matches(n, reference) for n in cert_names):
                return True
            continue
        try:
            verify_certificate_ip_address(cert, str(address))
        except VerificationError:
            continue
        return True
    return False


def names_verified(policy: TLSPolicy, chain: Sequence[Any]) -> bool:
    """verify/secure: the server's certificate (whose chain OpenSSL already
    checked) carries one of the policy's names (already expanded by
    :func:`~pymta.delivery.smtp_tls.reference_names`)."""
    return bool(chain) and _has_name(chain[0].to_cryptography(), policy.match)


def dane_verified(policy: TLSPolicy, chain: Sequence[Any]) -> bool:
    """Whether the server's chain (pyOpenSSL certificates, its own first)
    satisfies one of the policy's TLSA records (module doc)."""
    if not chain:
        return False
    certs = [c.to_cryptography() for c in chain]
    leaf = certs[0]
    for record in policy.tlsa:
        if record.usage == DANE_EE and tlsa_matches(record, leaf):
            return True
        if record.usage != DANE_TA:
            continue
        for index, cert in enumerate(certs):
            if not tlsa_matches(record, cert):
                continue
            anchored = index == 0 or _chains_to(chain[0], chain[index], chain[1:index])
            if anchored and _has_name(leaf, policy.match):
                return True
    return False


def normal_digest(text: str) -> str:
    """``ab:cd:..`` / ``ABCD..`` -> ``ABCD..``; ValueError when not hex."""
    value = text.replace(":", "").upper()
    bytes.fromhex(value)
    if not value:
        raise ValueError("empty fingerprint")
    return value


def fingerprint_verified(policy: TLSPolicy, chain: Sequence[Any], digest: str) -> bool:
    """Whether the server's certificate, or its public key, has one of the
    policy's fingerprints (``digest`` names the algorithm)."""
    if not chain:
        return False
    leaf = chain[0].to_cryptography()
    wanted = {normal_digest(m) for m in policy.match}
    found = {fingerprint(_selected(leaf, selector), digest).replace(":", "") for selector in (0, 1)}
    return bool(wanted & found)
