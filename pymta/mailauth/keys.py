"""keys: DKIM private keys — generate, load, and the public key's DNS record.

Key files, as OpenDKIM and dkimpy write them: RSA keys in PEM (PKCS#1
``BEGIN RSA PRIVATE KEY`` or PKCS#8 ``BEGIN PRIVATE KEY``); Ed25519 keys
(RFC 8463) as dkimpy's base64 of the 32-byte seed, or PKCS#8 PEM.
:func:`load_key` turns any of them into what dkimpy signs with.

The DNS record (RFC 6376 3.6.1, RFC 8463 4): ``v=DKIM1; k=rsa|ed25519;
p=BASE64``, at ``SELECTOR._domainkey.DOMAIN``; :func:`txt_record` splits
it into the 255-byte character strings DNS carries.

Untrusted input: none (key files belong to the administrator). Writes only
through :func:`write_key` (mode 0600, never over an existing file).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

KEY_TYPES = ("rsa", "ed25519")


class KeyError_(Exception):
    """A key file that cannot be read or parsed."""


@dataclass(frozen=True)
class SigningKey:
    """A private key ready for dkimpy: ``algorithm`` is the a= tag value."""

    key_type: str  # "rsa" | "ed25519"
    private: bytes  # PKCS#1 PEM (rsa) or the base64 seed (ed25519)
    public_b64: str  # the p= value of the DNS record

    @property
    def algorithm(self) -> bytes:
        return b"rsa-sha256" if self.key_type == "rsa" else b"ed25519-sha256"


def generate_key(key_type: str = "rsa", bits: int = 2048) -> SigningKey:
    """A new key; RSA of ``bits`` (RFC 8301: at least 1024, 2048 advised)."""
    if key_type == "rsa":
        return _from_rsa(rsa.generate_private_key(public_exponent=65537, key_size=bits))
    if key_type == "ed25519":
        return _from_ed25519(ed25519.Ed25519PrivateKey.generate())
    raise ValueError(f"unknown key type {key_type!r}: expected rsa or ed25519")


def load_key(data: bytes, source: str = "key") -> SigningKey:
    """Parse a key file's content (any of the forms in the module docstring)."""
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text, password=None)
        except (ValueError, TypeError) as e:
            raise KeyError_(f"{source}: not a usable PEM private key: {e}") from None
        if isinstance(key, rsa.RSAPrivateKey):
            return _from_rsa(key)
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return _from_ed25519(key)
        raise KeyError_(f"{source}: only RSA and Ed25519 keys sign DKIM")
    try:
        seed = base64.b64decode(text, validate=True)
    except ValueError:
        raise KeyError_(f"{source}: neither PEM nor a base64 Ed25519 key") from None
    if len(seed) != 32:
        raise KeyError_(f"{source}: an Ed25519 key is 32 bytes, this one {len(seed)}")
    return _from_ed25519(ed25519.Ed25519PrivateKey.from_private_bytes(seed))


def _from_rsa(key: rsa.RSAPrivateKey) -> SigningKey:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    # RFC 6376 3.6.1: p= is the DER SubjectPublicKeyInfo (what OpenDKIM publishes).
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return SigningKey("rsa", pem, base64.b64encode(public).decode())


def _from_ed25519(key: ed25519.Ed25519PrivateKey) -> SigningKey:
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    # RFC 8463 4.2: p= is the bare 32-byte public key.
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return SigningKey("ed25519", base64.b64encode(seed), base64.b64encode(public).decode())


def record_value(key: SigningKey) -> str:
    """The TXT record's value: ``v=DKIM1; k=...; p=...``."""
    return f"v=DKIM1; k={key.key_type}; p={key.public_b64}"


def txt_record(key: SigningKey, domain: str, selector: str) -> str:
    """The zone-file line, the value cut into quoted strings of 255 bytes at most."""
    value = record_value(key)
    strings = " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
    return f"{selector}._domainkey.{domain}. IN TXT ( {strings} )"


def write_key(key: SigningKey, path: str) -> None:
    """Write the private key readable by its owner only (0600), refusing to overwrite."""
    data = key.private if key.key_type == "rsa" else key.private + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
