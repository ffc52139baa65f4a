"""The DNSBL test of one client: every list asked at once, answers summed.

Mirrors Postfix's postscreen_dnsbl.c (and the dnsblog(8) service it asks):
for each ``postscreen_dnsbl_sites`` domain one A query of the client's
reversed address (``5.113.0.203.zen.example``; IPv6 as 32 nibbles), each
site entry whose result filter matches an answer adds its weight to the
score (several entries may share a domain and its one query). A list that
fails, times out (``postscreen_dnsbl_timeout``) or answers NXDOMAIN adds
nothing. The score is whatever has been answered when the caller asks
(:attr:`DnsblQuery.score`): as in Postfix, a greet wait that ends before a
slow list answers decides without it. :meth:`DnsblQuery.ttl` is how long
a pass may be remembered: the smallest TTL of the answers, between
``postscreen_dnsbl_min_ttl`` and ``postscreen_dnsbl_max_ttl``, and only
``postscreen_dnsbl_min_ttl`` when a list failed or did not answer.

Untrusted input: the DNS answers (only addresses are compared). Writes and
logs nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from pymta.dns.interface import DNSAnswer, IDNSResolver
from pymta.postscreen.settings import WeightedSite
from pymta.smtpd.peername import reverse_labels

__all__ = ["DnsblQuery"]


class DnsblQuery:
    """The DNSBL lookups of one connection; ``on_done`` runs once every
    list answered (or timed out)."""

    def __init__(
        self,
        resolver: IDNSResolver,
        sites: list[WeightedSite],
        address: str,
        on_done: Callable[[], None],
    ) -> None:
        self._sites = sites
        self._on_done: Callable[[], None] | None = on_done
        self.score = 0
        #: The site that added the largest weight (what a refusal names).
        self.top_site: WeightedSite | None = None
        self._ttls: list[int] = []
        self._failed = False  # a list answered SERVFAIL or timed out
        domains = sorted({site.domain for site in sites})
        self._waiting = len(domains)
        try:
            owner = reverse_labels(address)
        except ValueError:
            owner = ""
        if not owner or not domains:
            self._waiting = 0
            self._finish()
            return
        for domain in domains:
            resolver.lookup(f"{owner}.{domain}", "A").addCallback(self._answered, domain)

    @property
    def done(self) -> bool:
        return self._waiting == 0

    def cancel(self) -> None:
        """The connection is gone: answers that still come are dropped."""
        self._on_done = None

    def ttl(self, min_ttl: float, max_ttl: float) -> float:
        """How long a pass may be kept: the smallest TTL of the answers,
        between min_ttl and max_ttl; min_ttl when a list failed or has not
        answered (the client passed without its word: ask again soon)."""
        if self._failed or self._waiting:
            return min_ttl
        known = [t for t in self._ttls if t > 0]
        return max(min_ttl, min(min(known, default=max_ttl), max_ttl))

    def _answered(self, answer: DNSAnswer, domain: str) -> None:
        if answer.temporary:
            self._failed = True
        else:
            self._ttls.append(answer.ttl)
        if answer.ok:
            for site in self._sites:
                if site.domain != domain:
                    continue
                if any(isinstance(r, str) and site.site.matches(r) for r in answer.records):
                    self.score += site.weight
                    if self.top_site is None or site.weight > self.top_site.weight:
                        self.top_site = site
        self._waiting -= 1
        if self._waiting == 0:
            self._finish()

    def _finish(self) -> None:
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done()
