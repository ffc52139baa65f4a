"""discovery: the MTA-STS policy in force for a domain (RFC 8461 sections 3.3 and 5.1).

:class:`PolicyDiscovery` ``.policy(domain)`` fires with the domain's
:class:`~pymta.mtasts.policy.Policy` (mode ``enforce`` or ``testing``) or
None, never errbacks. For each delivery it looks up the TXT record
``_mta-sts.<domain>`` (through the smtp client's DNS cache) and then:

- a valid record whose id equals the cached entry's, the entry still
  fresh: the cached policy, without any HTTPS;
- a new id, or the cached entry expired: the policy is fetched over HTTPS
  (:mod:`pymta.mtasts.fetch`) and cached; a policy in mode ``none``
  is cached too (it is how a domain withdraws its policy) and gives None;
- the fetch fails, or the text is not a valid policy: the fresh cached
  policy if there is one (5.1: a policy host that is down, or an attacker
  blocking it, must not turn enforcement off), else None; the same id is
  not fetched again for :data:`RETRY_FAILED` seconds (5 minutes), so a
  silent policy host does not cost every delivery the fetch's time limit;
- no valid TXT record (NXDOMAIN, no record, several ``v=STSv1`` records,
  or a lookup failure): the fresh cached policy if there is one, else
  None (3.3: "if no live policy can be discovered ... but a valid
  (non-expired) policy exists in the sender's cache, the sender MUST
  apply that cached policy").

Concurrent deliveries to one domain share one discovery. Untrusted input:
the TXT records and the policy text (parsed by :mod:`pymta.mtasts.policy`).
Writes through the cache only. Logs each new policy and each failed fetch
(``smtp: MTA-STS policy for example.com: ...``).
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from pymta.dns.interface import IDNSResolver
from pymta.maillog import maillog
from pymta.mtasts.cache import CachedPolicy, PolicyCache
from pymta.mtasts.policy import Policy, parse_policy, parse_record

_log = Logger()


#: seconds before a policy id whose fetch failed is fetched again
RETRY_FAILED = 300.0

#: domains whose failed fetches are remembered at most (oldest forgotten)
FAILED_LIMIT = 10000


class Fetcher(Protocol):
    def fetch(self, domain: str) -> Deferred[str]: ...


class PolicyDiscovery:
    """One smtp client's MTA-STS discovery (see the module doc)."""

    def __init__(
        self,
        dns: IDNSResolver,
        fetcher: Fetcher,
        cache: PolicyCache,
        clock: IReactorTime,
        service: str = "smtp",
    ) -> None:
        self._dns = dns
        self._fetcher = fetcher
        self.cache = cache
        self._clock = clock
        self._service = service
        self._pending: dict[str, list[Deferred[Policy | None]]] = {}
        #: domain -> (policy id whose fetch failed, when it may be tried again)
        self._failed: dict[str, tuple[str, float]] = {}

    def policy(self, domain: str) -> Deferred[Policy | None]:
        """The policy to apply to mail for ``domain`` (None: no MTA-STS)."""
        domain = domain.rstrip(".").lower()
        waiter: Deferred[Policy | None] = Deferred()
        waiting = self._pending.get(domain)
        if waiting is not None:
            waiting.append(waiter)
            return waiter
        self._pending[domain] = [waiter]
        Deferred.fromCoroutine(self._discover(domain)).addBoth(self._answered, domain)
        return waiter

    def _answered(self, result: Policy | Failure | None, domain: str) -> None:
        policy = None
        if isinstance(result, Failure):  # a bug: logged with its traceback, no policy
            _log.failure("MTA-STS discovery for {domain}", result, domain=domain)
        else:
            policy = result
        for waiter in self._pending.pop(domain, []):
            waiter.callback(policy)

    def _log(self, domain: str, text: str, level: LogLevel = LogLevel.info) -> None:
        maillog(self._service, f"MTA-STS policy for {domain}: {text}", level)

    async def _discover(self, domain: str) -> Policy | None:
        await self.cache.load()
        cached = self.cache.get(domain)
        now = self._clock.seconds()
        if cached is not None and not cached.fresh(now):
            cached = None  # 5.1: never used after max_age
        answer = await self._dns.lookup("_mta-sts." + domain, "TXT")
        policy_id = parse_record(str(r) for r in answer.records) if answer.ok else None
        if policy_id is None:
            return _applied(cached)
        if cached is not None and cached.policy_id == policy_id:
            return _applied(cached)
        failed = self._failed.get(domain)
        if failed is not None and failed[0] == policy_id and now < failed[1]:
            return _applied(cached)
        try:
            text = await self._fetcher.fetch(domain)
            fetched = parse_policy(text)
        except Exception as e:  # FetchError, PolicyError: the reason is logged
            if cached is not None:
                self._log(
                    domain,
                    f"cannot fetch policy id {policy_id}: {e}; using the cached policy "
                    f"id {cached.policy_id} (mode {cached.policy.mode})",
                    LogLevel.warn,
                )
            else:
                self._log(domain, f"cannot fetch policy id {policy_id}: {e}", LogLevel.warn)
            self._remember_failure(domain, policy_id, now)
            return _applied(cached)
        self._failed.pop(domain, None)
        entry = CachedPolicy(policy_id, fetched, now)
        self.cache.put(domain, entry)
        self._log(
            domain,
            f"id={policy_id} mode={fetched.mode} max_age={fetched.max_age} "
            f"mx={','.join(fetched.mx) or '-'}",
        )
        return _applied(entry)

    def _remember_failure(self, domain: str, policy_id: str, now: float) -> None:
        self._failed.pop(domain, None)
        while len(self._failed) >= FAILED_LIMIT:
            del self._failed[next(iter(self._failed))]
        self._failed[domain] = (policy_id, now + RETRY_FAILED)


def _applied(entry: CachedPolicy | None) -> Policy | None:
    if entry is None or entry.policy.mode == "none":
        return None
    return entry.policy
