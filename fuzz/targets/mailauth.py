"""Mail authentication: SPF, DKIM, DMARC and ARC over hostile messages and DNS records.

The input is three DNS records and a message, one per line before the
message: the SPF record of the sender's domain, its DMARC record and the
DKIM key record of selector ``s``; the rest is the message (LF line ends,
as cleanup queues it). They go through pymta.mailauth's whole inbound
check (MailAuth._check, as a pool thread runs it: forged
Authentication-Results removed, SPF for MAIL FROM and HELO, every
DKIM-Signature, DMARC, ARC) with a memory DNS zone, and the outbound
From-address parsing signing uses. Documented errors: none — a check
gives a result (permerror and temperror included) for any message; an
exception is a finding, since the server would answer it with a 451 for
every copy of that message. Checked besides: the Authentication-Results
header it prepends is one well-formed header field.
"""

from __future__ import annotations

import re

from twisted.internet.defer import maybeDeferred

from fuzz.common import Finding
from pymta.config import Config
from pymta.mailauth import authresults
from pymta.mailauth.resolver import MemoryLookup
from pymta.mailauth.service import MailAuth
from pymta.queue.model import Envelope, Recipient

EXPECTED: tuple[type[BaseException], ...] = ()

_CONFIG = Config.from_text("myhostname = mx.example.net\npymta_mailauth_verify = yes\n")
_HEADER = re.compile(rb"Authentication-Results: [^\n]*\n([ \t][^\n]*\n)*")

_MESSAGE = (
    b"From: Joe <joe@fuzz.example>\nTo: x@example.net\nSubject: hi\n"
    b"Authentication-Results: mx.example.net; spf=pass\n"
    b"DKIM-Signature: v=1; a=rsa-sha256; d=fuzz.example; s=s; c=relaxed/relaxed;\n"
    b" h=from:to:subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA\n"
    b"\nbody\n"
)


def seeds() -> list[bytes]:
    """Records and messages of the kinds tests/test_mailauth.py uses."""
    return [
        b"v=spf1 ip4:192.0.2.0/24 -all\nv=DMARC1; p=reject\nv=DKIM1; k=rsa; p=MIGfMA0G\n"
        + _MESSAGE,
        b"v=spf1 include:x.fuzz.example ~all\nv=DMARC1; p=quarantine; sp=none; adkim=s\n"
        b"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n" + _MESSAGE,
        b"v=spf1 a mx ptr exists:%{i}.x.fuzz.example redirect=fuzz.example\n\n\n"
        b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=fuzz.example; s=s; b=AA==\n" + _MESSAGE,
    ]


def one_input(data: bytes) -> None:
    lines = data.split(b"\n", 3)
    while len(lines) < 4:
        lines.append(b"")
    spf, dmarc, key, message = lines
    zone = MemoryLookup()
    for name, record in (
        ("fuzz.example", spf),
        ("_dmarc.fuzz.example", dmarc),
        ("s._domainkey.fuzz.example", key),
    ):
        if record:
            zone.add(name, "TXT", record)
    zone.add("fuzz.example", "A", "192.0.2.1")
    zone.add("fuzz.example", "MX", (10, "fuzz.example"))
    auth = MailAuth(_CONFIG, run=maybeDeferred, lookup=zone)
    envelope = Envelope(
        "joe@fuzz.example",
        [Recipient("x@example.net")],
        attributes={"client_address": "192.0.2.1", "helo_name": "fuzz.example"},
    )
    outcome = auth._check(envelope, message)
    authresults.from_addresses(message)
    added = outcome.message[: len(outcome.message) - len(message)]
    if added and not _HEADER.fullmatch(added):
        # The forged header was removed first, so compare with what is prepended.
        head = outcome.message.split(b"\n", 1)[0]
        if not _HEADER.match(outcome.message):
            raise Finding(f"malformed Authentication-Results: {head[:200]!r}")
