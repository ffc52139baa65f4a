"""Certificates for the DANE and fingerprint tests (no tests here).

:func:`make_pki` writes, under a directory, a CA and a server certificate
it signed for given DNS names (EC P-256, valid two days), and returns the
objects with the digests a TLSA record or a fingerprint entry names:
``tlsa("3 1 1")`` is the presentation form of a record for the server's
public key, ``tlsa("2 0 1")`` one for the CA certificate.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class PKI:
    ca: x509.Certificate
    server: x509.Certificate
    ca_file: Path
    cert_file: Path  # the server's certificate, then the CA's (the chain it sends)
    key_file: Path

    def tlsa(self, kind: str) -> str:
        """``"3 1 1"`` -> ``"3 1 1 <hex>"`` for the server (usage 3) or CA (2)."""
        usage, selector, matching = (int(w) for w in kind.split())
        cert = self.server if usage in (1, 3) else self.ca
        if selector == 0:
            data = cert.public_bytes(serialization.Encoding.DER)
        else:
            data = cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        if matching == 1:
            data = hashlib.sha256(data).digest()
        elif matching == 2:
            data = hashlib.sha512(data).digest()
        return f"{kind} {data.hex()}"

    def fingerprint(self, digest: str = "sha256", public_key: bool = False) -> str:
        """Postfix's ``AB:CD:..`` fingerprint of the server's certificate or key."""
        data = (
            self.server.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            if public_key
            else self.server.public_bytes(serialization.Encoding.DER)
        )
        return ":".join(f"{b:02X}" for b in hashlib.new(digest, data).digest())


def make_pki(
    directory: Path, names: list[str], ca_name: str = "pymta DANE test CA", client: bool = False
) -> PKI:
    """A CA and a certificate for ``names`` (a TLS client's with ``client``)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(ca_name))
        .issuer_name(_name(ca_name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    found = PKI(
        ca, server, directory / "ca.pem", directory / "server.pem", directory / "server.key"
    )
    found.ca_file.write_bytes(ca.public_bytes(pem))
    found.cert_file.write_bytes(server.public_bytes(pem) + ca.public_bytes(pem))
    found.key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    found.key_file.chmod(0o600)
    return found
