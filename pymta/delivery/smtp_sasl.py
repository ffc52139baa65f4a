"""smtp_sasl: the SMTP client's AUTH — credentials per destination, PLAIN and LOGIN.

Mirrors Postfix's smtp_sasl_glue.c. With ``smtp_sasl_auth_enable = yes``
the password is looked up in ``smtp_sasl_password_maps`` (value
``user:password``) by the next hop as written (``[mx.example]:587``),
then without the port, then the bare host name, then the name of the host
connected to. Mechanisms the server offers are used in the order PLAIN,
LOGIN, unless the security options forbid them: ``noplaintext`` forbids
both (Postfix's meaning; note that Postfix's default has it, so a relay
login needs ``smtp_sasl_tls_security_options = noanonymous``).
``smtp_sasl_security_options`` applies to a plain-text connection and
``smtp_sasl_tls_security_options`` to a TLS one; and pymta never sends a
password over a connection without TLS unless ``pymta_smtp_sasl_cleartext
= yes``. Untrusted input:
the server's 334 challenges (only LOGIN's two prompts are expected).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from pymta.delivery.lookup import Lookup


@dataclass(frozen=True)
class SASLCredentials:
    username: str
    password: str


def credentials_for(table: Lookup, nexthop: str, host: str) -> SASLCredentials | None:
    keys = [nexthop]
    bracketed = (
        nexthop.rsplit(":", 1)[0] if nexthop.startswith("[") and "]:" in nexthop else nexthop
    )
    keys.append(bracketed)
    keys.append(bracketed.strip("[]"))
    keys.append(host)
    for key in keys:
        if not key:
            continue
        value = table.lookup(key)
        if value:
            user, _, password = value.partition(":")
            return SASLCredentials(user, password)
    return None


def usable_mechanisms(offered: str, options: list[str], cleartext_ok: bool = True) -> list[str]:
    """The mechanisms to try, in order, of those offered and not forbidden."""
    offered_set = {m.upper() for m in offered.split()}
    forbidden = {o.lower() for o in options}
    order = ["PLAIN", "LOGIN"]
    if "noplaintext" in forbidden or not cleartext_ok:
        order = []
    return [m for m in order if m in offered_set]


def plain_response(creds: SASLCredentials) -> str:
    """RFC 4616: authzid NUL authcid NUL passwd, base64."""
    raw = b"\0" + creds.username.encode() + b"\0" + creds.password.encode()
    return base64.b64encode(raw).decode("ascii")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")
