"""tls_ccert: the client certificate of an SMTP session, as Postfix's smtpd sees it.

Mirrors Postfix's tls_server.c / smtpd_check.c client-certificate pieces.
With ``smtpd_tls_ask_ccert = yes`` (or ``smtpd_tls_req_ccert = yes``) the
server asks for a certificate in the TLS handshake; a client may send none,
and one that does not verify against ``smtpd_tls_CAfile`` is still
accepted, only not trusted (Postfix never fails a handshake over it).

What smtpd keeps (:class:`ClientCert`): the certificate fingerprint and
public-key fingerprint (``smtpd_tls_fingerprint_digest`` of the DER
certificate, of the DER SubjectPublicKeyInfo; upper-case hex bytes joined
by ``:``, Postfix's form, which is what ``relay_clientcerts`` tables list),
the subject and issuer common names, and whether the chain verified.

Restrictions: ``permit_tls_clientcerts`` permits when either fingerprint is
a key of a ``relay_clientcerts`` table; ``permit_tls_all_clientcerts``
permits any trusted certificate. ``smtpd_tls_req_ccert = yes`` (only at
``smtpd_tls_security_level = encrypt``) ends a session without a trusted
certificate with Postfix's ``421 4.7.1`` after the handshake.

Untrusted input: the certificate (parsed by OpenSSL and cryptography).
Writes nothing, logs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

__all__ = ["DIGESTS", "ClientCert", "client_cert", "fingerprint", "verify_callback"]

#: smtpd_tls_fingerprint_digest values.
DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "md5": hashes.MD5,
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

# The attribute a failed verification leaves on the pyOpenSSL connection.
_UNTRUSTED = "pymta_ccert_untrusted"


@dataclass(frozen=True)
class ClientCert:
    """What one session's client certificate says (see module doc)."""

    fingerprint: str
    pubkey_fingerprint: str
    subject: str
    issuer: str
    trusted: bool


def fingerprint(data: bytes, digest: str) -> str:
    """Postfix's form: ``AB:CD:...`` of the digest of data."""
    h = hashes.Hash(DIGESTS[digest]())
    h.update(data)
    return ":".join(f"{b:02X}" for b in h.finalize())


def verify_callback(conn: SSL.Connection, cert: Any, errnum: int, depth: int, ok: int) -> bool:
    """Accept every client certificate, remembering one that did not verify
    (asking is not requiring: Postfix judges trust after the handshake)."""
    if not ok:
        setattr(conn, _UNTRUSTED, True)
    return True


def _common_name(name: x509.Name) -> str:
    found = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = found[0].value if found else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def client_cert(transport: Any, digest: str) -> ClientCert | None:
    """The client certificate of a TLS transport, or None (no TLS, no
    certificate sent, handshake not finished)."""
    try:
        conn = transport.getHandle()
    except Exception:
        return None
    if not isinstance(conn, SSL.Connection):
        return None
    peer = conn.get_peer_certificate(as_cryptography=True)
    if peer is None:
        return None
    public = peer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return ClientCert(
        fingerprint=fingerprint(peer.public_bytes(serialization.Encoding.DER), digest),
        pubkey_fingerprint=fingerprint(public, digest),
        subject=_common_name(peer.subject),
        issuer=_common_name(peer.issuer),
        trusted=not getattr(conn, _UNTRUSTED, False),
    )
