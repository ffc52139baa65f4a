"""SHA-256-crypt and SHA-512-crypt (``$5$`` / ``$6$``), verify and hash.

Implements Ulrich Drepper's public specification "Unix crypt using SHA-256
and SHA-512" (the algorithm of glibc's crypt(3), Dovecot's SHA256-CRYPT and
SHA512-CRYPT schemes) with hashlib, because Python's crypt module is gone
in 3.13. pymta reads these hashes so that existing Dovecot passwd-files keep
working; new passwords are hashed with ARGON2ID or BLF-CRYPT.

Untrusted input: the stored hash (from the passwd-file) and the password
(from the network). A malformed hash is a ValueError, never a crash. Rounds
are clamped to the specification's 1000..999,999,999; a stored hash with an
absurd round count is refused above ``MAX_VERIFY_ROUNDS`` so that one bad
line cannot pin a thread for minutes.
"""

from __future__ import annotations

import hashlib
import hmac

_B64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DEFAULT_ROUNDS = 5000
_MIN_ROUNDS = 1000
_MAX_ROUNDS = 999_999_999
MAX_VERIFY_ROUNDS = 10_000_000
_SALT_MAX = 16

# Byte order of the final encoding, three bytes (most significant first) to
# four characters; from the specification's b64_from_24bit calls.
_ORDER_256: tuple[tuple[int, ...], ...] = (
    (0, 10, 20), (21, 1, 11), (12, 22, 2), (3, 13, 23), (24, 4, 14),
    (15, 25, 5), (6, 16, 26), (27, 7, 17), (18, 28, 8), (9, 19, 29),
    (31, 30),
)  # fmt: skip
_ORDER_512: tuple[tuple[int, ...], ...] = (
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4),
    (47, 5, 26), (6, 27, 48), (28, 49, 7), (50, 8, 29), (9, 30, 51),
    (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13), (56, 14, 35),
    (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19),
    (62, 20, 41), (63,),
)  # fmt: skip


def _encode(digest: bytes, order: tuple[tuple[int, ...], ...]) -> str:
    out: list[str] = []
    for group in order:
        value = 0
        for index in group:
            value = (value << 8) | digest[index]
        # a full group gives 4 characters; the short tail groups 3 (two
        # bytes) or 2 (one byte), as b64_from_24bit(..., n) in the spec.
        count = {3: 4, 2: 3, 1: 2}[len(group)]
        for _ in range(count):
            out.append(_B64[value & 0x3F])
            value >>= 6
    return "".join(out)


def _repeat(block: bytes, length: int) -> bytes:
    """block repeated to exactly length bytes (the spec's P and S sequences)."""
    whole, rest = divmod(length, len(block))
    return block * whole + block[:rest]


def _digest(password: bytes, salt: bytes, rounds: int, algorithm: str) -> bytes:
    new = getattr(hashlib, algorithm)
    plen = len(password)

    b = new(password + salt + password).digest()
    a = new(password + salt)
    a.update(_repeat(b, plen))
    i = plen
    while i > 0:
        a.update(b if i & 1 else password)
        i >>= 1
    a_sum = a.digest()

    p = _repeat(new(password * plen).digest(), plen) if plen else b""
    s = _repeat(new(salt * (16 + a_sum[0])).digest(), len(salt))

    c = a_sum
    for r in range(rounds):
        h = new()
        h.update(p if r & 1 else c)
        if r % 3:
            h.update(s)
        if r % 7:
            h.update(p)
        h.update(c if r & 1 else p)
        c = h.digest()
    return c


def _parse(setting: str) -> tuple[str, str, int, bool, str]:
    """(prefix, salt, rounds, rounds_given, rest) from a ``$5$``/``$6$`` string."""
    if setting.startswith("$5$"):
        prefix = "$5$"
    elif setting.startswith("$6$"):
        prefix = "$6$"
    else:
        raise ValueError("not a SHA-crypt hash")
    body = setting[3:]
    rounds = _DEFAULT_ROUNDS
    rounds_given = False
    if body.startswith("rounds="):
        number, sep, body = body[len("rounds=") :].partition("$")
        if not sep or not number.isdigit():
            raise ValueError("bad rounds= in SHA-crypt hash")
        rounds = max(_MIN_ROUNDS, min(_MAX_ROUNDS, int(number)))
        rounds_given = True
    salt, _, rest = body.partition("$")
    return prefix, salt[:_SALT_MAX], rounds, rounds_given, rest


def sha_crypt(password: str | bytes, setting: str) -> str:
    """The full crypt string for password under setting (``$6$[rounds=N$]salt[$...]``)."""
    if isinstance(password, str):
        password = password.encode("utf-8")
    prefix, salt, rounds, rounds_given, _ = _parse(setting)
    if rounds > MAX_VERIFY_ROUNDS:
        raise ValueError(f"SHA-crypt rounds {rounds} above the limit {MAX_VERIFY_ROUNDS}")
    if prefix == "$5$":
        digest = _digest(password, salt.encode("utf-8"), rounds, "sha256")
        encoded = _encode(digest, _ORDER_256)
    else:
        digest = _digest(password, salt.encode("utf-8"), rounds, "sha512")
        encoded = _encode(digest, _ORDER_512)
    rounds_part = f"rounds={rounds}$" if rounds_given else ""
    return f"{prefix}{rounds_part}{salt}${encoded}"


def sha_crypt_verify(password: str | bytes, stored: str) -> bool:
    """True when password matches the stored ``$5$``/``$6$`` hash (constant-time compare)."""
    computed = sha_crypt(password, stored)
    return hmac.compare_digest(computed.encode("ascii"), stored.encode("utf-8", "replace"))


def make_setting(algorithm: str, salt: str, rounds: int | None = None) -> str:
    """A setting string for sha_crypt: algorithm is ``sha256`` or ``sha512``."""
    prefix = {"sha256": "$5$", "sha512": "$6$"}[algorithm]
    rounds_part = "" if rounds is None else f"rounds={rounds}$"
    return f"{prefix}{rounds_part}{salt}$"
