"""Password schemes: known vectors, round trips, cross-checks with openssl."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pymta.auth.schemes import SchemeError, StoredPassword, make_hash, verify
from pymta.auth.shacrypt import sha_crypt, sha_crypt_verify

# From Drepper's specification "Unix crypt using SHA-256 and SHA-512".
SPEC_VECTORS = [
    ("$5$saltstring", "Hello world!", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"),
    (
        "$5$rounds=10000$saltstringsaltstring",
        "Hello world!",
        "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA",
    ),
    (
        "$6$saltstring",
        "Hello world!",
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
    ),
    (
        "$6$rounds=10000$saltstringsaltstring",
        "Hello world!",
        "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/"
        "UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
    ),
    (
        "$6$rounds=1400$anotherlongsaltstring",
        "a very much longer text to encrypt.  This one even stretches over morethan one line.",
        "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1",
    ),
    (
        "$5$rounds=10$roundstoolow",
        "the minimum number is still observed",
        "$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC",
    ),
]


@pytest.mark.parametrize(("setting", "password", "expected"), SPEC_VECTORS)
def test_sha_crypt_spec_vectors(setting: str, password: str, expected: str) -> None:
    """SHA-crypt reproduces the specification's published test vectors (incl. rounds clamping)."""
    assert sha_crypt(password, setting) == expected
    assert sha_crypt_verify(password, expected)
    assert not sha_crypt_verify(password + "x", expected)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
@pytest.mark.parametrize("variant", ["-5", "-6"])
@pytest.mark.parametrize("password", ["secret", "p\u00e4ssw\u00f6rd", "x" * 80, "a:b c$d"])
def test_sha_crypt_matches_openssl(variant: str, password: str) -> None:
    """Hashes made by `openssl passwd -5/-6` (glibc-compatible) verify; wrong passwords fail."""
    out = (
        subprocess.run(
            ["openssl", "passwd", variant, "-salt", "Zq1.wE/3", "-stdin"],
            input=password.encode(),
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    assert sha_crypt(password, out) == out
    scheme = "SHA256-CRYPT" if variant == "-5" else "SHA512-CRYPT"
    assert verify(password, StoredPassword.parse("{" + scheme + "}" + out))
    assert not verify(password + "!", StoredPassword.parse(out))


@pytest.mark.parametrize(
    "scheme", ["ARGON2ID", "ARGON2I", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "PLAIN", "CLEAR"]
)
def test_round_trip_every_scheme(scheme: str) -> None:
    """A hash made for every creatable scheme verifies its password and rejects others."""
    stored = make_hash("correct horse", scheme, cost=4 if scheme == "BLF-CRYPT" else None)
    assert str(stored).startswith("{" + scheme + "}")
    again = StoredPassword.parse(str(stored))
    assert verify("correct horse", again)
    assert not verify("correct horsf", again)
    assert not verify("", again)


def test_argon2_cheap_parameters_recorded_in_hash() -> None:
    """argon2 parameters are taken from the stored hash, so cheap test hashes verify."""
    stored = make_hash("pw", "ARGON2ID", cost=1, memory_cost=64)
    assert "$argon2id$" in stored.value and "m=64,t=1" in stored.value
    assert verify("pw", stored)


def test_dovecot_blf_crypt_2y_hash() -> None:
    """A Dovecot-style $2y$ bcrypt hash verifies, and BLF-CRYPT is written as $2y$."""
    stored = make_hash("pw", "BLF-CRYPT", cost=4)
    assert stored.value.startswith("$2y$04$")
    assert verify("pw", stored)


def test_bcrypt_long_password_truncated_like_crypt_blowfish() -> None:
    """bcrypt passwords longer than 72 bytes are truncated (as Dovecot does), not an error."""
    stored = make_hash("y" * 100, "BLF-CRYPT", cost=4)
    assert verify("y" * 72, stored)
    assert verify("y" * 90, stored)
    assert not verify("y" * 71, stored)


def test_sniffing_without_scheme_prefix() -> None:
    """Hashes without a {SCHEME} prefix are recognised by their crypt prefix."""
    assert StoredPassword.parse("$6$abc$def").scheme == "SHA512-CRYPT"
    assert StoredPassword.parse("$5$abc$def").scheme == "SHA256-CRYPT"
    assert StoredPassword.parse("$2y$05$xx").scheme == "BLF-CRYPT"
    assert StoredPassword.parse("$argon2id$v=19$x").scheme == "ARGON2ID"
    assert StoredPassword.parse("{plain}x") == StoredPassword("PLAIN", "x")


@pytest.mark.parametrize(
    "field",
    ["{MD5-CRYPT}$1$abc$def", "{SHA512-CRYPT}nodollar", "{ARGON2ID}garbage", "{BLF-CRYPT}junk"],
)
def test_unusable_hash_is_scheme_error(field: str) -> None:
    """An unknown scheme or malformed hash is a SchemeError, never a match or a crash."""
    with pytest.raises(SchemeError):
        verify("pw", StoredPassword.parse(field))


def test_unknown_scheme_cannot_be_created() -> None:
    """make_hash refuses schemes it cannot write."""
    with pytest.raises(SchemeError):
        make_hash("pw", "CRAM-MD5")
