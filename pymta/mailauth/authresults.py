"""authresults: the Authentication-Results header (RFC 8601), and forged ones removed.

One header, prepended, with authserv-id = $myhostname::

    Authentication-Results: mx.example.org;
    \tspf=pass smtp.mailfrom=alice@example.com;
    \tspf=none smtp.helo=mail.example.com;
    \tdkim=pass header.d=example.com header.s=sel header.a=rsa-sha256 header.b=AbCdEf12;
    \tarc=none;
    \tdmarc=pass header.from=example.com

``dkim=none`` when the message has no signature. Any Authentication-Results
header already in the message whose authserv-id is ours is removed first
(RFC 8601 5: a forged one would otherwise be trusted by our own Sieve
rules and clients); others' headers stay.

Also :func:`from_domains`: the domains of the addresses in the From
header(s), for DMARC and for choosing a signing key.

Untrusted input: the message (property values we write are cleaned of
anything outside RFC 8601's value syntax). Writes and logs nothing.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Iterable

from pymta.mailauth.dkimcheck import DKIMResult
from pymta.mailauth.dmarc import DMARCResult
from pymta.mailauth.spfcheck import SPFResult

_FIELD = re.compile(rb"\n(?![ \t])")
_COMMENT = re.compile(r"\([^()]*\)")
_UNSAFE = re.compile(r"[^A-Za-z0-9.@_+=/!#$%&'*^`{|}~-]")


def header_block(message: bytes) -> tuple[bytes, bytes]:
    """(header block including its last LF, the rest from the blank line on)."""
    if message.startswith(b"\n"):
        return b"", message
    end = message.find(b"\n\n")
    if end < 0:
        return message, b""
    return message[: end + 1], message[end + 1 :]


def fields(block: bytes) -> list[bytes]:
    """The header fields of a block, each with its continuation lines and LF."""
    if not block:
        return []
    return [f + b"\n" for f in _FIELD.split(block.rstrip(b"\n"))]


def remove_forged(message: bytes, authserv_id: str) -> tuple[bytes, int]:
    """The message without A-R headers claiming ``authserv_id``, and how many went."""
    block, rest = header_block(message)
    kept, removed = [], 0
    for field in fields(block):
        name, _, value = field.partition(b":")
        if name.strip().lower() == b"authentication-results":
            text = _COMMENT.sub(" ", value.decode("utf-8", "replace"))
            claimed = text.split(";", 1)[0].split()
            if claimed and claimed[0].lower().rstrip(".") == authserv_id.lower().rstrip("."):
                removed += 1
                continue
        kept.append(field)
    if not removed:
        return message, 0
    return b"".join(kept) + rest, removed


def from_addresses(message: bytes) -> list[str]:
    """The addresses in the From header(s)."""
    block, _ = header_block(message)
    values = []
    for field in fields(block):
        name, _, value = field.partition(b":")
        if name.strip().lower() == b"from":
            values.append(value.decode("utf-8", "replace").replace("\n", " "))
    return [addr for _, addr in email.utils.getaddresses(values) if addr]


def from_domains(message: bytes) -> list[str]:
    return [a.rpartition("@")[2].lower() for a in from_addresses(message)]


def _value(text: str) -> str:
    return _UNSAFE.sub("", text)[:255] or "unknown"


def format_header(
    authserv_id: str,
    spf: Iterable[SPFResult],
    dkim: list[DKIMResult],
    dmarc: DMARCResult | None,
    arc: str | None = None,
) -> bytes:
    parts = []
    for s in spf:
        prop = "smtp.mailfrom" if s.identity == "mailfrom" else "smtp.helo"
        parts.append(f"spf={s.result} {prop}={_value(s.domain_of)}")
    if not dkim:
        parts.append("dkim=none")
    for d in dkim:
        text = f"dkim={d.result} header.d={_value(d.domain)} header.s={_value(d.selector)}"
        if d.algorithm:
            text += f" header.a={_value(d.algorithm)}"
        if d.signature_b:
            text += f" header.b={_value(d.signature_b)}"
        parts.append(text)
    if arc is not None:
        parts.append(f"arc={_value(arc)}")
    if dmarc is not None:
        text = f"dmarc={dmarc.result}"
        if dmarc.result == "fail":
            text += f" (p={dmarc.policy})"
        if dmarc.header_from:
            text += f" header.from={_value(dmarc.header_from)}"
        parts.append(text)
    body = ";\n\t".join([authserv_id, *parts])
    return f"Authentication-Results: {body}\n".encode()
