"""tlsa: TLSA records (RFC 6698, RFC 7671) as values, and which ones SMTP uses.

A :class:`TLSARecord` is one ``usage selector matching data`` record, as
``_25._tcp.mx.example.net`` publishes it. :func:`from_rdata` reads the
wire form (twisted.names hands TLSA, type 52, over as unknown raw data);
:func:`parse` the presentation form (``3 1 1 ab12...``, for tests and
tables). :func:`usable` keeps what RFC 7672 section 3.1 lets an SMTP
client use: usages DANE-TA(2) and DANE-EE(3), selectors Cert(0) and
SPKI(1), matching types Full(0), SHA2-256(1) and SHA2-512(2) with data of
the digest's length. PKIX-TA(0) and PKIX-EE(1) are not usable for SMTP
(section 3.1.3), nor are unknown parameters: a host that publishes only
such records gets mandatory unauthenticated TLS (section 2.2).

Untrusted input: the record data (length-checked; never more than bytes
compared to digests).
"""

from __future__ import annotations

from dataclasses import dataclass

#: certificate usages (RFC 7218 names)
PKIX_TA, PKIX_EE, DANE_TA, DANE_EE = 0, 1, 2, 3
#: selectors
CERT, SPKI = 0, 1
#: matching types and the digest length each needs (0: any length)
FULL, SHA2_256, SHA2_512 = 0, 1, 2
_DIGEST_LENGTH = {FULL: 0, SHA2_256: 32, SHA2_512: 64}

TLSA_TYPE = 52


@dataclass(frozen=True)
class TLSARecord:
    usage: int
    selector: int
    matching: int
    data: bytes

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.matching} {self.data.hex()}"


def from_rdata(rdata: bytes) -> TLSARecord:
    """The wire form (RFC 6698 section 2.1); ValueError when it is short."""
    if len(rdata) < 4:
        raise ValueError("TLSA record shorter than 4 bytes")
    return TLSARecord(rdata[0], rdata[1], rdata[2], bytes(rdata[3:]))


def parse(text: str) -> TLSARecord:
    """``3 1 1 ABCD...`` (hex may be split by blanks); ValueError when bad."""
    words = text.split()
    if len(words) < 4:
        raise ValueError(f"bad TLSA record {text!r}")
    return TLSARecord(
        int(words[0]), int(words[1]), int(words[2]), bytes.fromhex("".join(words[3:]))
    )


def is_usable(record: TLSARecord) -> bool:
    """DANE-TA or DANE-EE with a known selector and a well-formed digest."""
    if record.usage not in (DANE_TA, DANE_EE) or record.selector not in (CERT, SPKI):
        return False
    length = _DIGEST_LENGTH.get(record.matching)
    if length is None or not record.data:
        return False
    return length == 0 or len(record.data) == length


def usable(records: tuple[TLSARecord, ...] | list[TLSARecord]) -> tuple[TLSARecord, ...]:
    """The records an SMTP client may use (see module doc), in order."""
    return tuple(r for r in records if is_usable(r))
