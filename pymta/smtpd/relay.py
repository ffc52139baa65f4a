"""The destination a recipient really goes to: the heart of relay control.

Mirrors Postfix's trivial-rewrite resolve_addr as used by
``reject_unauth_destination`` (smtpd_check.c permit_auth_destination). The
address is untrusted network input. Postfix strips a domain that is local
(mydestination) and resolves again what is left, so with its defaults
``user%other@ourdomain`` (allow_percent_hack), ``"user@other"@ourdomain``
(resolve_dequoted_address), ``user@other@ourdomain`` and
``other!user@ourdomain`` (swap_bangpath) all go to ``other``. A recipient
whose final local part still holds a routing operator (``@``, ``%``, ``!``)
for a domain that is not local is "routed": its destination is uncertain
and it is never ours. Nothing here logs or writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pymta.address import normalize_domain, split_address, unquote_local
from pymta.config.config import Config

__all__ = ["Destination", "effective_domain", "resolve_destination"]

_MAX_ROUNDS = 20


@dataclass(frozen=True)
class Destination:
    """Where a recipient goes: the domain, its address class, and whether
    its local part still carries routing operators (source routing)."""

    domain: str
    address_class: str
    local: str
    routed: bool


def resolve_destination(
    address: str,
    address_class: Callable[[str], str],
    *,
    myorigin: str,
    allow_percent_hack: bool = True,
    swap_bangpath: bool = True,
    resolve_dequoted_address: bool = True,
) -> Destination:
    """Resolve ``address`` the way Postfix's trivial-rewrite does for relay checks."""
    local, domain = split_address(address)
    if resolve_dequoted_address:
        # Resolve the internal form: quotes no longer hide @, % or !.
        local, domain = split_address(unquote_local(local) + ("@" + domain if domain else ""))
        quoted = False
    else:
        quoted = '"' in local
    for _ in range(_MAX_ROUNDS):
        if not domain:
            if not quoted and swap_bangpath and "!" in local:
                site, _, user = local.partition("!")
                local, domain = user, site
                continue
            if not quoted and allow_percent_hack and "%" in local:
                user, _, site = local.rpartition("%")
                local, domain = user, site
                continue
            domain = myorigin
        try:
            domain = normalize_domain(domain)
        except ValueError:
            return Destination(domain, "default", local, True)
        klass = address_class(domain)
        if klass == "local" and _has_route(local, quoted):
            # user@other@ourdomain: strip our domain and resolve the rest.
            rest_local, rest_domain = split_address(local)
            if (
                rest_domain
                or (swap_bangpath and "!" in rest_local)
                or (allow_percent_hack and "%" in rest_local)
            ):
                local, domain = rest_local, rest_domain
                continue
            return Destination(domain, "local", local, False)
        routed = klass != "local" and _has_route(local, quoted)
        return Destination(domain, klass, local, routed)
    return Destination(domain, "default", local, True)


def _has_route(local: str, quoted: bool) -> bool:
    if quoted:
        return False
    return "@" in local or "%" in local or "!" in local


def effective_domain(
    address: str, config: Config, address_class: Callable[[str], str]
) -> Destination:
    """:func:`resolve_destination` with allow_percent_hack, swap_bangpath,
    resolve_dequoted_address and myorigin from ``config``."""
    return resolve_destination(
        address,
        address_class,
        myorigin=config.get("myorigin"),
        allow_percent_hack=config.get_bool("allow_percent_hack"),
        swap_bangpath=config.get_bool("swap_bangpath"),
        resolve_dequoted_address=config.get_bool("resolve_dequoted_address"),
    )
