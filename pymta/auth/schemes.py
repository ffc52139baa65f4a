"""Password schemes in Dovecot's ``{SCHEME}hash`` notation: verify and hash.

Mirrors Dovecot's password schemes (doc: "Password Schemes"): ARGON2ID and
ARGON2I (argon2-cffi), BLF-CRYPT (bcrypt), SHA512-CRYPT and SHA256-CRYPT
(verify only, for existing Dovecot files; see pymta.auth.shacrypt), PLAIN
and CLEAR (clear text, for tests and APOP). A hash without a ``{SCHEME}``
prefix is recognised by its crypt(3) prefix (``$argon2id$``, ``$2y$``,
``$6$``...), as Dovecot's CRYPT scheme would.

Untrusted input: the password (from the network) and the stored hash (from
the passwd-file). Every function here is blocking CPU work: callers run it
off the reactor thread. A stored hash that cannot be understood never
matches; :func:`verify` raises :class:`SchemeError` for it so the caller can
log the bad line.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

import argon2
import bcrypt

from pymta.auth.shacrypt import make_setting, sha_crypt, sha_crypt_verify

# Dovecot scheme names; the first is what `pymta passwd` writes by default.
DEFAULT_SCHEME = "ARGON2ID"
HASH_SCHEMES = ("ARGON2ID", "ARGON2I", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT")
CLEAR_SCHEMES = ("PLAIN", "CLEAR")
# What `pymta passwd -s` may create. SHA*-CRYPT are offered for sites that
# still need them (they are weaker than argon2/bcrypt but not broken).
CREATABLE_SCHEMES = (*HASH_SCHEMES, *CLEAR_SCHEMES)

_BCRYPT_MAX = 72  # bcrypt uses only the first 72 bytes; crypt_blowfish truncates silently


class SchemeError(ValueError):
    """A stored password whose scheme is unknown or whose hash is malformed."""


@dataclass(frozen=True)
class StoredPassword:
    """A passwd-file password field split into scheme and value."""

    scheme: str
    value: str

    @classmethod
    def parse(cls, field: str) -> StoredPassword:
        """Split ``{SCHEME}value``; without braces the scheme is sniffed from the hash."""
        if field.startswith("{"):
            end = field.find("}")
            if end > 1:
                return cls(field[1:end].upper(), field[end + 1 :])
        return cls(_sniff(field), field)

    def __str__(self) -> str:
        return f"{{{self.scheme}}}{self.value}"

    @property
    def is_clear(self) -> bool:
        """True when the secret itself is stored (PLAIN/CLEAR): APOP can use it."""
        return self.scheme in CLEAR_SCHEMES


def _sniff(value: str) -> str:
    if value.startswith("$argon2id$"):
        return "ARGON2ID"
    if value.startswith("$argon2i$"):
        return "ARGON2I"
    if value.startswith(("$2a$", "$2b$", "$2y$")):
        return "BLF-CRYPT"
    if value.startswith("$6$"):
        return "SHA512-CRYPT"
    if value.startswith("$5$"):
        return "SHA256-CRYPT"
    return "CRYPT"


def _argon2_hasher(
    time_cost: int | None, memory_cost: int | None, kind: argon2.Type
) -> argon2.PasswordHasher:
    defaults = argon2.PasswordHasher()
    return argon2.PasswordHasher(
        time_cost=time_cost or defaults.time_cost,
        memory_cost=memory_cost or defaults.memory_cost,
        parallelism=defaults.parallelism,
        hash_len=defaults.hash_len,
        salt_len=defaults.salt_len,
        type=kind,
    )


def verify(password: str, stored: StoredPassword) -> bool:
    """True when password matches stored; SchemeError when stored is unusable."""
    secret = password.encode("utf-8")
    scheme = stored.scheme
    try:
        if scheme in ("ARGON2ID", "ARGON2I"):
            try:
                return argon2.PasswordHasher().verify(stored.value, secret)
            except argon2.exceptions.VerifyMismatchError:
                return False
            except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError) as e:
                raise SchemeError(f"bad {scheme} hash: {e}") from None
        if scheme == "BLF-CRYPT":
            return bcrypt.checkpw(secret[:_BCRYPT_MAX], stored.value.encode("ascii"))
        if scheme in ("SHA512-CRYPT", "SHA256-CRYPT"):
            prefix = "$6$" if scheme == "SHA512-CRYPT" else "$5$"
            if not stored.value.startswith(prefix):
                raise SchemeError(f"bad {scheme} hash: expected {prefix}")
            return sha_crypt_verify(secret, stored.value)
        if scheme in CLEAR_SCHEMES:
            return hmac.compare_digest(secret, stored.value.encode("utf-8"))
    except SchemeError:
        raise
    except (ValueError, UnicodeError) as e:
        raise SchemeError(f"bad {scheme} hash: {e}") from None
    raise SchemeError(f"unsupported password scheme {scheme}")


def make_hash(
    password: str,
    scheme: str = DEFAULT_SCHEME,
    *,
    cost: int | None = None,
    memory_cost: int | None = None,
) -> StoredPassword:
    """Hash password with scheme, as ``doveadm pw -s SCHEME`` does.

    cost is the argon2 time cost, the bcrypt log2 rounds or the SHA-crypt
    rounds; memory_cost is argon2's KiB. None takes each library's default.
    """
    scheme = scheme.upper()
    secret = password.encode("utf-8")
    if scheme in ("ARGON2ID", "ARGON2I"):
        kind = argon2.Type.ID if scheme == "ARGON2ID" else argon2.Type.I
        return StoredPassword(scheme, _argon2_hasher(cost, memory_cost, kind).hash(secret))
    if scheme == "BLF-CRYPT":
        salt = bcrypt.gensalt(rounds=cost or 12, prefix=b"2b")
        value = bcrypt.hashpw(secret[:_BCRYPT_MAX], salt).decode("ascii")
        # Dovecot writes $2y$ (crypt_blowfish's name for the same algorithm).
        return StoredPassword(scheme, "$2y$" + value[4:])
    if scheme in ("SHA512-CRYPT", "SHA256-CRYPT"):
        crypt_salt = "".join(secrets.choice(_SALT_CHARS) for _ in range(16))
        algorithm = "sha512" if scheme == "SHA512-CRYPT" else "sha256"
        setting = make_setting(algorithm, crypt_salt, cost)
        return StoredPassword(scheme, sha_crypt(secret, setting))
    if scheme in CLEAR_SCHEMES:
        return StoredPassword(scheme, password)
    raise SchemeError(f"cannot create passwords of scheme {scheme}")


_SALT_CHARS = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
