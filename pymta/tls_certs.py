"""tls_certs: a server's certificates and keys, loaded into an OpenSSL context.

Mirrors Postfix's tls_certkey.c. Two forms, as in Postfix:

- ``smtpd_tls_chain_files`` (Postfix 3.4): a list of PEM files, together
  holding one or more private keys, each directly followed by its
  certificate and then the intermediates (or the chain first, then its
  key). One key of each type (RSA, ECDSA, Ed25519...): OpenSSL then picks
  the certificate the client can verify (an ECDSA certificate for clients
  that offer ECDSA, RSA for the others). When set, it replaces the
  ``cert_file``/``key_file`` pairs.
- ``smtpd_tls_cert_file`` + ``smtpd_tls_key_file`` (the certificate file
  holds the chain after the leaf), and optionally a second pair
  ``smtpd_tls_eccert_file`` + ``smtpd_tls_eckey_file`` for an ECDSA
  certificate next to an RSA one.

:class:`CertSource` remembers which files it read and their stamps (inode,
size, mtime), so that :mod:`pymta.tls` can notice a renewal and load the
new files for new connections. Untrusted input: none (the files are the
administrator's); errors are ConfigErrors naming the parameter and file.
Writes nothing except an anonymous in-memory file (memfd) to hand one chain
to OpenSSL, which reads chains only from files.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from pymta.config.errors import ConfigError

__all__ = ["CertSource", "Stamp", "openssl_reason", "stamps"]

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.DOTALL)
_KEY_LABELS = {b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY"}

Stamp = tuple[int, int, int] | None


def stamps(paths: Sequence[str]) -> tuple[Stamp, ...]:
    """(inode, size, mtime_ns) of each path, None for one that is missing:
    a renewal by rename (certbot's symlinks) or by rewrite both change it."""
    result: list[Stamp] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            result.append(None)
        else:
            result.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(result)


@dataclass
class _Group:
    key: Any = None
    key_pem: bytes = b""
    certs: list[bytes] = field(default_factory=list)


def _key_kind(key: Any) -> str:
    return type(key).__name__.lstrip("_").replace("PrivateKey", "") or "key"


def _read(path: str, what: str, parameter: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}", parameter=parameter) from None


def parse_chain_files(paths: Sequence[str], parameter: str) -> list[_Group]:
    """The (key, certificate chain) groups of Postfix chain files, in order."""
    groups: list[_Group] = []
    current: _Group | None = None
    for path in paths:
        data = _read(path, "chain file", parameter)
        for match in _PEM_BLOCK.finditer(data):
            label, block = match.group(1), match.group(0)
            if label in _KEY_LABELS:
                key = _load_key(block, path, parameter)
                if current is not None and current.key is None:
                    # The chain came first: this is its key.
                    current.key, current.key_pem = key, block
                    current = None
                else:
                    current = _Group(key, block)
                    groups.append(current)
            elif label == b"CERTIFICATE":
                if current is None:
                    current = _Group()
                    groups.append(current)
                current.certs.append(block)
            elif label == b"ENCRYPTED PRIVATE KEY":
                raise ConfigError(
                    f"{path}: encrypted private keys are not supported", parameter=parameter
                )
    if any(group.key is None for group in groups):
        raise ConfigError(
            f"a certificate chain in {', '.join(paths)} has no private key", parameter=parameter
        )
    if not groups:
        raise ConfigError(
            f"no private key and certificate in {', '.join(paths)}", parameter=parameter
        )
    kinds: set[str] = set()
    for group in groups:
        if not group.certs:
            raise ConfigError(
                f"a private key in {', '.join(paths)} is not followed by its certificate",
                parameter=parameter,
            )
        leaf = x509.load_pem_x509_certificate(group.certs[0])
        if leaf.public_key() != group.key.public_key():
            raise ConfigError(
                f"a private key in {', '.join(paths)} does not match the certificate after it "
                f"({leaf.subject.rfc4514_string()})",
                parameter=parameter,
            )
        kind = _key_kind(group.key)
        if kind in kinds:
            raise ConfigError(
                f"two {kind} keys in {', '.join(paths)}: one key of each type",
                parameter=parameter,
            )
        kinds.add(kind)
    return groups


def _load_key(block: bytes, path: str, parameter: str) -> Any:
    try:
        return serialization.load_pem_private_key(block, None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{path}: bad private key: {e}", parameter=parameter) from None


def _use_chain(ctx: SSL.Context, pem: bytes) -> None:
    """Load a leaf and its intermediates into the slot of its key type.
    OpenSSL keeps a chain per key type only through
    SSL_CTX_use_certificate_chain_file, hence the in-memory file."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("pymta-chain", 0)
        try:
            os.write(fd, pem)
            ctx.use_certificate_chain_file(f"/proc/self/fd/{fd}".encode())
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile() as f:  # pragma: no cover - not Linux
        f.write(pem)
        f.flush()
        ctx.use_certificate_chain_file(f.name.encode())


def openssl_reason(error: SSL.Error) -> str:
    """The reasons of an OpenSSL error queue ([(lib, func, reason), ...]) as text."""
    reasons = [str(entry[2]) for entry in (error.args[0] if error.args else []) if len(entry) > 2]
    return "; ".join(r for r in reasons if r) or str(error)


@dataclass(frozen=True)
class CertSource:
    """Where one context's certificates come from (see module doc).

    ``pairs`` is a list of (cert_file, key_file, cert_parameter,
    key_parameter); ``chain_files`` replaces them when not empty.
    """

    pairs: tuple[tuple[str, str, str, str], ...] = ()
    chain_files: tuple[str, ...] = ()
    chain_parameter: str = "smtpd_tls_chain_files"

    @property
    def files(self) -> tuple[str, ...]:
        if self.chain_files:
            return self.chain_files
        return tuple(path for cert, key, _, _ in self.pairs for path in (cert, key))

    def describe(self) -> str:
        return ", ".join(dict.fromkeys(self.files))

    def load(self, ctx: SSL.Context) -> None:
        """Put every certificate and key into ``ctx``; ConfigError else."""
        if self.chain_files:
            for group in parse_chain_files(self.chain_files, self.chain_parameter):
                try:
                    _use_chain(ctx, b"".join(group.certs))
                    ctx.use_privatekey(group.key)
                except SSL.Error as e:
                    raise ConfigError(
                        f"cannot load {self.describe()}: {openssl_reason(e)}",
                        parameter=self.chain_parameter,
                    ) from None
            return
        for cert_file, key_file, cert_parameter, key_parameter in self.pairs:
            # Read both files first: OpenSSL's own error for a missing file
            # is a tuple that names neither the file nor the reason.
            _read(cert_file, "certificate", cert_parameter)
            _read(key_file, "private key", key_parameter)
            step = (cert_parameter, f"cannot load certificate {cert_file}")
            try:
                ctx.use_certificate_chain_file(cert_file.encode())
                step = (key_parameter, f"cannot load private key {key_file}")
                ctx.use_privatekey_file(key_file.encode())
                step = (
                    key_parameter,
                    f"private key {key_file} does not match certificate {cert_file}",
                )
                ctx.check_privatekey()
            except SSL.Error as e:
                raise ConfigError(f"{step[1]}: {openssl_reason(e)}", parameter=step[0]) from None
