"""srs: the Sender Rewriting Scheme, in postsrsd's format and with its secrets.

Mirrors what Postfix sites get from postsrsd (libsrs2's format): a sender
``user@host`` forwarded through ``$pymta_srs_domain`` becomes

    SRS0=HHHH=TT=host=user@srs.domain

where TT is the day (two base32 characters, days since 1970 modulo 1024)
and HHHH the first four base64 characters of HMAC-SHA1(secret, "TT" +
"host" + "user", all lower-cased). A sender that is already SRS0 at
another forwarder becomes SRS1 (``SRS1=HHHH=host==HHHH=TT=...@srs.domain``,
hashed over host and the rest), so the chain does not grow with each hop;
an SRS1 sender keeps its first forwarder. Reversal checks the hash with
every secret (case-insensitively, as postsrsd) and, for SRS0, that the day
is at most ``pymta_srs_max_age`` days old.

The secrets file is postsrsd's: one secret per line, the first signs, all
verify (so a secret can be rotated in). An address pymta wrote reverses
with postsrsd given the same secret and domain, and the reverse.

Untrusted input: the addresses to reverse (from the network). Writes
nothing; logs nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from pymta.address import split_address
from pymta.config import Config, ConfigError
from pymta.config.validate import config_error

_TIME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_DAY = 86400
_SLOTS = 1024  # two base32 characters
_HASH_LENGTH = 4
_SEPARATORS = "=-+"


class SRSError(ValueError):
    """An address that looks like SRS but does not reverse (the reason says why)."""


def timestamp(now: float) -> str:
    day = int(now) // _DAY
    return _TIME_CHARS[(day >> 5) & 31] + _TIME_CHARS[day & 31]


def _day_of(stamp: str) -> int:
    value = 0
    for char in stamp.upper():
        index = _TIME_CHARS.find(char)
        if index < 0:
            raise SRSError("bad timestamp character")
        value = (value << 5) | index
    return value


def is_srs(local: str) -> bool:
    return local[:4].upper() in ("SRS0", "SRS1") and local[4:5] in _SEPARATORS


class SRS:
    """Forward and reverse addresses with ``secrets`` at ``domain``."""

    def __init__(self, secrets: list[bytes], domain: str, max_age: int = 21) -> None:
        if not secrets:
            raise ValueError("no SRS secret")
        self.secrets = secrets
        self.domain = domain.lower()
        self.max_age = max_age

    @classmethod
    def from_config(cls, config: Config) -> SRS | None:
        """The codec of pymta_srs_domain / pymta_srs_secrets, None when off;
        a ConfigError naming the file and line of the setting at fault."""
        try:
            return cls._from_config(config)
        except ConfigError as e:
            if e.filename or not e.parameter:
                raise
            raise config_error(config, e.parameter, e.message) from None

    @classmethod
    def _from_config(cls, config: Config) -> SRS | None:
        domain = config.get("pymta_srs_domain").strip()
        if not domain:
            return None
        path = config.get("pymta_srs_secrets").strip()
        if not path:
            raise ConfigError(
                "needs pymta_srs_secrets, postsrsd's secrets file", parameter="pymta_srs_domain"
            )
        try:
            with open(path, "rb") as f:
                secrets = [line.strip() for line in f.read().splitlines() if line.strip()]
        except OSError as e:
            raise ConfigError(
                f"cannot read {path}: {e.strerror}", parameter="pymta_srs_secrets"
            ) from None
        if not secrets:
            raise ConfigError(f"{path}: no secret in the file", parameter="pymta_srs_secrets")
        return cls(secrets, domain, config.get_int("pymta_srs_max_age"))

    def _hash(self, secret: bytes, *parts: str) -> str:
        mac = hmac.new(secret, digestmod=hashlib.sha1)
        for part in parts:
            mac.update(part.lower().encode("utf-8", "surrogateescape"))
        return base64.b64encode(mac.digest()).decode()[:_HASH_LENGTH]

    def _check(self, given: str, *parts: str) -> None:
        if len(given) < _HASH_LENGTH:
            raise SRSError("hash too short")
        given = given[:_HASH_LENGTH].lower()
        for secret in self.secrets:
            if hmac.compare_digest(self._hash(secret, *parts).lower(), given):
                return
        raise SRSError("hash invalid")

    def forward(self, sender: str, now: float) -> str:
        """The SRS form of ``sender`` at our domain."""
        local, host = split_address(sender)
        secret = self.secrets[0]
        if local[:4].upper() == "SRS1" and local[4:5] in _SEPARATORS:
            # Keep the first forwarder: re-sign SRS1=HASH=host=rest.
            parts = local[5:].split("=", 2)
            if len(parts) == 3 and all(parts[1:]):
                _, first_host, rest = parts
                digest = self._hash(secret, first_host, rest)
                return f"SRS1={digest}={first_host}={rest}@{self.domain}"
        if local[:4].upper() == "SRS0" and local[4:5] in _SEPARATORS:
            rest = local[4:]  # the separator included, as libsrs2 hashes it
            digest = self._hash(secret, host, rest)
            return f"SRS1={digest}={host}={rest}@{self.domain}"
        stamp = timestamp(now)
        digest = self._hash(secret, stamp, host, local)
        return f"SRS0={digest}={stamp}={host}={local}@{self.domain}"

    def reverse(self, address: str, now: float) -> str | None:
        """The address an SRS address at our domain stands for; None when it
        is not one; SRSError when it is but does not verify."""
        local, domain = split_address(address)
        if domain.lower() != self.domain or not is_srs(local):
            return None
        if local[:4].upper() == "SRS1":
            parts = local[5:].split("=", 2)
            if len(parts) != 3 or not all(parts):
                raise SRSError("malformed SRS1 address")
            digest, host, rest = parts
            self._check(digest, host, rest)
            return f"SRS0{rest}@{host}"
        parts = local[5:].split("=", 3)
        if len(parts) != 4 or not all(parts):
            raise SRSError("malformed SRS0 address")
        digest, stamp, host, user = parts
        if len(stamp) != 2:
            raise SRSError("bad timestamp")
        then = _day_of(stamp)
        today = (int(now) // _DAY) % _SLOTS
        while today < then:
            today += _SLOTS
        if today > then + self.max_age:
            raise SRSError("timestamp out of date")
        self._check(digest, stamp, host, user)
        return f"{user}@{host}"
