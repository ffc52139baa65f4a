"""dmarc: the DMARC verdict (RFC 7489) from the SPF and DKIM results.

Policy discovery (RFC 7489 6.6.3): the TXT records at ``_dmarc.FROM``,
else at ``_dmarc.ORG`` where ORG is the organisational domain of the
RFC5322.From domain, found with the Public Suffix List (publicsuffixlist:
the list bundled with the package and updated by its releases; maintained
and used by checkdmarc and others). Exactly one record starting with
``v=DMARC1`` is a policy; none or several is no policy. ``sp=`` applies
when the record came from the organisational domain of a subdomain.

Identifier alignment (3.1): a DKIM ``pass`` whose d= and an SPF ``pass``
whose MAIL FROM domain aligns with the From domain — strict (``s``) the
same name, relaxed (``r``, the default) the same organisational domain.
DMARC passes if either aligns. A DNS failure during discovery is
``temperror``; a message without exactly one From address is
``permerror`` (6.6.1). ``pct`` is not applied (its removal in DMARCbis
makes every failing message subject to the policy).

Untrusted input: the From header and the DNS answers. Writes and logs
nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from pymta.mailauth.resolver import DNSTempError, Lookup, txt_values

POLICIES = ("none", "quarantine", "reject")


@dataclass(frozen=True)
class DMARCResult:
    result: str  # pass | fail | none | temperror | permerror
    header_from: str
    policy: str = "none"  # the policy to apply: none | quarantine | reject
    reason: str = ""


@functools.lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """The registrable domain (RFC 7489 3.2), or the name itself for a public suffix."""
    domain = domain.lower().rstrip(".")
    return _psl().privatesuffix(domain) or domain


def _aligned(a: str, b: str, mode: str) -> bool:
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if mode == "s":
        return a == b
    return organizational_domain(a) == organizational_domain(b)


def _parse(record: bytes) -> dict[str, str] | None:
    try:
        text = record.decode("ascii")
    except UnicodeDecodeError:
        return None
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), value.strip())
    if tags.get("v") != "DMARC1" or not text.lstrip().startswith("v"):
        return None
    return tags


def _discover(lookup: Lookup, domain: str) -> tuple[dict[str, str] | None, bool]:
    """(record tags, found at the organisational domain rather than at domain)."""
    names = [domain]
    org = organizational_domain(domain)
    if org != domain:
        names.append(org)
    for name in names:
        records = [t for t in (_parse(r) for r in txt_values(lookup, f"_dmarc.{name}")) if t]
        if len(records) == 1:
            return records[0], name != domain
        if len(records) > 1:
            return None, False  # 6.6.3: several records is no policy
    return None, False


def check_dmarc(
    lookup: Lookup,
    from_domains: list[str],
    spf_mailfrom: tuple[str, str],
    dkim_passes: Iterable[str],
) -> DMARCResult:
    """``spf_mailfrom`` is (result, domain); ``dkim_passes`` the d= of passing signatures."""
    if len(from_domains) != 1 or not from_domains[0]:
        return DMARCResult("permerror", "", reason="not exactly one From address")
    domain = from_domains[0].lower().rstrip(".")
    try:
        tags, inherited = _discover(lookup, domain)
    except DNSTempError as e:
        return DMARCResult("temperror", domain, reason=str(e))
    if tags is None:
        return DMARCResult("none", domain)
    policy = tags.get("p", "").lower()
    if inherited and tags.get("sp", "").lower() in POLICIES:
        policy = tags["sp"].lower()
    if policy not in POLICIES:
        # 6.6.3: an invalid p= with a rua= is p=none; without one, no policy.
        if "rua" not in tags:
            return DMARCResult("none", domain)
        policy = "none"
    adkim = tags.get("adkim", "r").lower()[:1]
    aspf = tags.get("aspf", "r").lower()[:1]
    spf_result, spf_domain = spf_mailfrom
    if any(_aligned(d, domain, adkim) for d in dkim_passes):
        return DMARCResult("pass", domain, "none", "DKIM aligned")
    if spf_result == "pass" and spf_domain and _aligned(spf_domain, domain, aspf):
        return DMARCResult("pass", domain, "none", "SPF aligned")
    return DMARCResult("fail", domain, policy, f"no aligned SPF or DKIM pass, p={policy}")
