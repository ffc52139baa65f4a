"""dkimcheck: DKIM signatures (RFC 6376, RFC 8463) verified and made, through dkimpy.

dkimpy (maintained by Scott Kitterman; DKIM, ARC, rsa-sha256 and
ed25519-sha256) does the canonicalisation and cryptography. pymta gives
it a ``dnsfunc`` that asks the worker thread's
:class:`~pymta.mailauth.resolver.Lookup`.

Verification: every DKIM-Signature is checked on its own (RFC 6376 6.1);
each gives pass, fail (the signature or body hash does not verify, or the
key is missing or unusable — dkimpy does not tell these apart), temperror
(the key lookup timed out) or permerror (the signature header is
malformed). Signatures beyond the first 10 are not checked (a bound on
the work a message can cause; 6.1 allows limiting it).

ARC (RFC 8617) validation: the chain of ARC sets as a whole is pass,
fail, none (no ARC-Seal) or temperror (a key lookup timed out). It is
reported, not acted on: a receiver trusts a chain only from sealers it
knows (RFC 8617 7.2), and pymta keeps no such list yet.

ARC sealing (:func:`arc_seal`, RFC 8617 5.1): the next ARC set over a
message that carries our Authentication-Results, its cv= taken from our
arc= result. dkimpy parses the A-R with the authres package.

Signing: relaxed/relaxed canonicalisation (survives the re-folding of
headers by forwarders), the header fields RFC 6376 5.4.1 recommends that
the message has, From signed once more than it occurs (oversigning: a
second From added later breaks the signature), ``t=`` the signing time.
The DKIM-Signature is prepended to the message.

RSA in OpenSSL: dkimpy signs RSA with Python integers (``pow`` with the
CRT), about 6.5 ms per message for a 2048-bit key on the development
machine. pymta replaces dkimpy's ``RSASSA_PKCS1_v1_5_sign`` once, at
import, with the same RFC 8017 operation done by ``cryptography``
(OpenSSL), for SHA-256; PKCS#1 v1.5 signatures are deterministic, so the
bytes are the ones dkimpy would have made (a test compares them), only
sooner. Other digests fall back to dkimpy's own code.

Untrusted input: the message and the DNS answers. Writes and logs nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from pymta.mailauth.keytable import Signer
from pymta.mailauth.resolver import DNSTempError, Lookup, txt_values

MAX_SIGNATURES = 10
_SIGNATURE = re.compile(rb"^dkim-signature[ \t]*:", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class DKIMResult:
    result: str  # pass | fail | temperror | permerror
    domain: str
    selector: str
    signature_b: str  # the start of b= (RFC 6008 header.b)
    algorithm: str
    reason: str = ""


_python_rsa_sign = dkim.RSASSA_PKCS1_v1_5_sign
_openssl_keys: dict[int, rsa.RSAPrivateKey] = {}


def _openssl_rsa_sign(digest: Any, private_key: dict[str, int]) -> bytes:
    """dkimpy's RSASSA_PKCS1_v1_5_sign(hash, key dict), done by OpenSSL."""
    if digest.name.lower() != "sha256":
        result: bytes = _python_rsa_sign(digest, private_key)
        return result
    key = _openssl_keys.get(private_key["modulus"])
    if key is None:
        numbers = rsa.RSAPrivateNumbers(
            p=private_key["prime1"],
            q=private_key["prime2"],
            d=private_key["privateExponent"],
            dmp1=private_key["exponent1"],
            dmq1=private_key["exponent2"],
            iqmp=private_key["coefficient"],
            public_numbers=rsa.RSAPublicNumbers(
                private_key["publicExponent"], private_key["modulus"]
            ),
        )
        key = numbers.private_key()
        if len(_openssl_keys) >= 64:  # the keys of the key table: few; bound it anyway
            _openssl_keys.clear()
        _openssl_keys[private_key["modulus"]] = key
    return key.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


dkim.RSASSA_PKCS1_v1_5_sign = _openssl_rsa_sign


class _TempFail(Exception):
    pass


def _dnsfunc(lookup: Lookup) -> Any:
    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            values = txt_values(lookup, text.rstrip("."))
        except DNSTempError as e:
            raise _TempFail(str(e)) from None
        return values[0] if values else None

    return dnsfunc


def verify_all(lookup: Lookup, message: bytes) -> list[DKIMResult]:
    """One result per DKIM-Signature (in header order), [] for an unsigned message."""
    count = len(_SIGNATURE.findall(message.split(b"\n\n", 1)[0]))
    if not count:
        return []
    dnsfunc = _dnsfunc(lookup)
    results = []
    for index in range(min(count, MAX_SIGNATURES)):
        tags: dict[bytes, bytes] = {}
        try:
            verifier = dkim.DKIM(message, logger=_quiet_logger(), minkey=1024)
            sig_header = [v for k, v in verifier.headers if k.lower() == b"dkim-signature"][index]
            tags = dkim.util.parse_tag_value(sig_header)
            ok = verifier.verify(idx=index, dnsfunc=dnsfunc)
            result, reason = ("pass", "") if ok else ("fail", "signature did not verify")
        except _TempFail as e:
            result, reason = "temperror", str(e)
        except (dkim.ValidationError, dkim.KeyFormatError) as e:
            result, reason = "fail", str(e)
        except Exception as e:
            # A malformed message or signature (dkimpy raises MessageFormatError,
            # InvalidTagValueList, binascii.Error, ...): hostile input, not a bug.
            result, reason = "permerror", f"{type(e).__name__}: {e}"
        results.append(
            DKIMResult(
                result,
                _tag(tags, b"d").lower(),
                _tag(tags, b"s"),
                re.sub(r"\s+", "", _tag(tags, b"b"))[:8],
                _tag(tags, b"a"),
                reason,
            )
        )
    return results


_ARC_SEAL = re.compile(rb"^arc-seal[ \t]*:", re.IGNORECASE | re.MULTILINE)


def verify_arc(lookup: Lookup, message: bytes) -> tuple[str, str]:
    """(pass | fail | none | temperror, reason) for the message's ARC chain."""
    if not _ARC_SEAL.search(message.split(b"\n\n", 1)[0]):
        return "none", ""
    try:
        cv, _results, reason = dkim.arc_verify(
            message, logger=_quiet_logger(), dnsfunc=_dnsfunc(lookup)
        )
    except _TempFail as e:
        return "temperror", str(e)
    except Exception as e:
        return "fail", f"{type(e).__name__}: {e}"
    return cv.decode("ascii", "replace"), str(reason)


def _tag(tags: dict[bytes, bytes], name: bytes) -> str:
    return tags.get(name, b"").decode("ascii", "replace").strip()


def sign(message: bytes, signer: Signer) -> bytes:
    """The DKIM-Signature header (LF line endings, folded) for ``message``."""
    d = dkim.DKIM(message, logger=_quiet_logger(), linesep=b"\n")
    header: bytes = d.sign(
        signer.selector.encode(),
        signer.domain.encode("idna"),
        signer.key.private,
        signature_algorithm=signer.key.algorithm,
        canonicalize=(b"relaxed", b"relaxed"),
    )
    return header


def arc_seal(message: bytes, sealer: Signer, authserv_id: str) -> bytes:
    """The next ARC set (ARC-Seal, ARC-Message-Signature,
    ARC-Authentication-Results; RFC 8617 5.1) for a message carrying our
    Authentication-Results, whose arc= result becomes the seal's cv=; b""
    when there is no A-R of ours to seal. rsa-sha256 only (RFC 8617 4.1)."""
    headers: list[bytes] = dkim.arc_sign(
        message,
        sealer.selector.encode(),
        sealer.domain.encode("idna"),
        sealer.key.private,
        authserv_id.encode(),
        logger=_quiet_logger(),
        linesep=b"\n",
    )
    return b"".join(headers)


class _QuietLogger:
    """dkimpy logs every failure through logging; pymta reports the result instead."""

    def debug(self, *args: Any, **kwargs: Any) -> None:
        pass

    info = warning = error = debug

    def isEnabledFor(self, level: int) -> bool:
        return False


def _quiet_logger() -> Any:
    return _QuietLogger()
