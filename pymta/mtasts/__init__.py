"""mtasts: SMTP MTA Strict Transport Security (RFC 8461) for the smtp client.

Postfix sites get MTA-STS from postfix-mta-sts-resolver, a policy daemon
behind ``smtp_tls_policy_maps``; pymta builds the same behaviour in,
switched on by ``pymta_mta_sts = yes`` (smtp only, never lmtp). The parts:

- :mod:`pymta.mtasts.policy` — the TXT record and the policy text as values,
  MX pattern matching;
- :mod:`pymta.mtasts.fetch` — the policy over verified HTTPS (no redirects,
  64 KiB, ``text/plain``, ``pymta_mta_sts_timeout``);
- :mod:`pymta.mtasts.cache` — policies in memory and in
  ``pymta_mta_sts_cache_file`` (atomic writes, ``pymta_mta_sts_cache_size``
  domains), so a restart keeps them;
- :mod:`pymta.mtasts.discovery` — TXT id, cache and fetch together: the
  policy in force for a domain;
- :mod:`pymta.mtasts.client` — what the smtp agent does with it: which MX
  hosts, which TLS level, what ``testing`` logs.

:func:`from_config` builds the smtp agent's :class:`~pymta.mtasts.client.MTASTS`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from pymta.config import Config
from pymta.dns.interface import IDNSResolver
from pymta.mtasts.cache import PolicyCache
from pymta.mtasts.client import MTASTS
from pymta.mtasts.discovery import PolicyDiscovery
from pymta.mtasts.fetch import PolicyFetcher


def from_config(
    config: Config,
    reactor: Any,
    clock: IReactorTime,
    dns: IDNSResolver,
    trust: Any = None,
    service: str = "smtp",
    port: int = 443,
) -> MTASTS:
    """The MTA-STS of one smtp service: its cache file, fetcher and
    discovery. ``trust`` is the smtp client's (``smtp_tls_CAfile``, None:
    the system's); ``port`` is for tests only (RFC 8461: 443)."""
    protocols = {p.lower() for p in config.get_list("inet_protocols")}
    ipv6 = not protocols or bool(protocols & {"all", "ipv6"})
    fetcher = PolicyFetcher(
        reactor,
        clock,
        dns,
        trust=trust,
        timeout=config.get_time("pymta_mta_sts_timeout"),
        port=port,
        ipv6=ipv6,
    )
    cache = PolicyCache(
        config.get("pymta_mta_sts_cache_file"), config.get_int("pymta_mta_sts_cache_size")
    )
    discovery = PolicyDiscovery(dns, fetcher, cache, clock, service)
    return MTASTS(discovery, config, config.get("smtp_tls_CAfile").strip(), service)


__all__ = ["MTASTS", "from_config"]
