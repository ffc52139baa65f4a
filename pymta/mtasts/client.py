"""client: MTA-STS in the smtp client — which MX hosts, which TLS (RFC 8461 section 4).

:class:`MTASTS` is what the smtp agent holds when ``pymta_mta_sts = yes``
(smtp only; lmtp never). Its three hooks:

- :meth:`MTASTS.tls_policy` is a :data:`~pymta.delivery.smtp_tls.PolicyHook`:
  asked only when ``smtp_tls_policy_maps`` has no entry for the next hop
  (the administrator's table wins, as with Postfix and
  postfix-mta-sts-resolver), and only for next hops found by MX lookup
  (``[host]`` and IP literals have no MTA-STS). It fires with an
  :class:`MTASTSPolicy` when the domain has a policy in mode ``enforce``
  (level ``verify`` with ``match=hostname``: TLS required, the chain checked
  against ``smtp_tls_CAfile`` or the system's CAs, the certificate valid
  for the MX host's name; a main.cf level that already authenticates the
  server, ``verify``, ``secure`` or ``fingerprint``, stays) or ``testing``
  (main.cf's level unchanged), and None otherwise. When main.cf's level
  is ``dane`` or ``dane-only`` the level stays (RFC 8461 section 2: DANE
  wins where the domain has secure TLSA records) and :meth:`host_policy`
  applies MTA-STS to each host DANE leaves without usable TLSA records.
- :meth:`MTASTS.hosts` keeps, under ``enforce``, only the MX hosts whose
  names match the policy's ``mx`` patterns (4.1); none left defers
  ``4.7.5``. Under ``testing`` every host stays and each one that would
  not be used is logged.
- :meth:`MTASTS.check_session`, under ``testing``, judges a session that
  was set up under main.cf's level as ``enforce`` would have (TLS used,
  chain and host name valid) and logs what would have failed; the mail
  goes on.

Log lines (Postfix style, keyed by queue id)::

    QID: MTA-STS policy of example.com: MX host mx9.example.net is not permitted (mode enforce)
    QID: MTA-STS policy of example.com (testing): would not deliver to
         mx.example.com[192.0.2.1]:25: certificate does not name mx.example.com

Untrusted input: the peer's certificate (judged by OpenSSL and
service-identity). Writes nothing but the cache (through discovery).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from OpenSSL import SSL, crypto
from service_identity import VerificationError
from service_identity.cryptography import verify_certificate_hostname
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from pymta.delivery.smtp_tls import TLSPolicy, main_cf_policy
from pymta.dns.mx import Host
from pymta.maillog import maillog
from pymta.mtasts.policy import Policy

_log = Logger()

#: main.cf levels under which DANE decides per host before MTA-STS
DANE_LEVELS = ("dane", "dane-only")

#: levels that do not authenticate the server: enforce raises them to verify
#: (main.cf verify, secure and fingerprint already authenticate it and stay)
UNAUTHENTICATED = ("none", "may", "encrypt", *DANE_LEVELS)


class PolicySource(Protocol):
    """Where policies come from (:class:`~pymta.mtasts.discovery.PolicyDiscovery`)."""

    def policy(self, domain: str) -> Deferred[Policy | None]: ...


@dataclass(frozen=True)
class MTASTSPolicy(TLSPolicy):
    """A destination's TLS policy that came from its MTA-STS policy ``sts``."""

    sts: Policy | None = None

    @property
    def enforced(self) -> bool:
        return self.sts is not None and self.sts.mode == "enforce"


def enforced_policy() -> TLSPolicy:
    """RFC 8461 4.2: TLS with a certificate chained to a trusted CA and
    valid for the MX host name."""
    return TLSPolicy("verify", ("hostname",), source="mta-sts")


class MTASTS:
    """The smtp client's MTA-STS (see the module doc)."""

    def __init__(
        self, discovery: PolicySource, config: Any, cafile: str = "", service: str = "smtp"
    ) -> None:
        self.discovery = discovery
        self._config = config
        self._cafile = cafile
        self._service = service
        self._store: crypto.X509Store | None = None
        self._context: SSL.Context | None = None

    # the PolicyHook ----------------------------------------------------------

    def tls_policy(self, nexthop: str, domain: str) -> Deferred[TLSPolicy | None]:
        if nexthop.strip().startswith("[") or _is_literal(domain):
            d: Deferred[TLSPolicy | None] = Deferred()
            d.callback(None)
            return d
        return self.discovery.policy(domain).addCallback(self._to_tls)

    def _to_tls(self, sts: Policy | None) -> TLSPolicy | None:
        if sts is None:
            return None
        base = main_cf_policy(self._config, "smtp")
        if (
            sts.mode == "enforce"
            and base.level in UNAUTHENTICATED
            and base.level not in DANE_LEVELS
        ):
            chosen = enforced_policy()
        else:
            chosen = base
        return MTASTSPolicy(
            chosen.level,
            chosen.match,
            source="mta-sts",
            ciphers=chosen.ciphers,
            protocols=chosen.protocols,
            sts=sts,
        )

    # hosts and sessions ------------------------------------------------------

    def hosts(
        self, policy: TLSPolicy, domain: str, hosts: Sequence[Host], queue_id: str
    ) -> list[Host]:
        """The hosts that may be tried (enforce) or all of them (testing),
        logging each host the policy does not permit."""
        if not isinstance(policy, MTASTSPolicy) or policy.sts is None:
            return list(hosts)
        sts = policy.sts
        kept: list[Host] = []
        refused: list[str] = []
        for host in hosts:
            if sts.permits(host.name):
                kept.append(host)
            elif host.name not in refused:
                refused.append(host.name)
        for name in refused:
            if sts.mode == "enforce":
                text = f"MX host {name} is not permitted (mode enforce)"
                maillog(self._service, f"{queue_id}: MTA-STS policy of {domain}: {text}")
            else:
                text = f"would not deliver to MX host {name}: not in the policy's mx"
                maillog(self._service, f"{queue_id}: MTA-STS policy of {domain} (testing): {text}")
        return kept if sts.mode == "enforce" else list(hosts)

    def host_policy(self, policy: TLSPolicy) -> TLSPolicy:
        """The policy of one MX host: under enforce, MTA-STS's verified TLS
        unless DANE gave the host usable TLSA records (DANE's per-host
        policy keeps the MTA-STS policy it was made from: dane's ``may``
        fallback and ``encrypt`` for unusable records become ``verify``);
        any other policy as is."""
        if isinstance(policy, MTASTSPolicy) and policy.enforced and not policy.tlsa:
            if policy.level in UNAUTHENTICATED:
                return enforced_policy()
        return policy

    def check_session(
        self,
        policy: TLSPolicy,
        domain: str,
        transport: Any,
        tls: str,
        host: Host,
        relay: str,
        queue_id: str,
    ) -> None:
        """Under ``testing``: log what enforce would have refused in this
        session. The chain is judged in a worker thread (OpenSSL may read
        the system's CA directory); the line follows when it is done."""
        if not isinstance(policy, MTASTSPolicy) or policy.sts is None:
            return
        if policy.sts.mode != "testing" or not policy.sts.permits(host.name):
            return  # a host outside the policy was logged by hosts()

        def report(problem: str) -> None:
            if problem:
                maillog(
                    self._service,
                    f"{queue_id}: MTA-STS policy of {domain} (testing): "
                    f"would not deliver to {relay}: {problem}",
                )

        chain = _peer_chain(transport) if tls else None
        if chain is None:
            report("TLS was not used")
        elif not chain:
            report("no server certificate")
        else:
            judged = deferToThread(self.chain_problem, chain, host.name)
            judged.addCallback(report)
            judged.addErrback(lambda f: _log.failure("MTA-STS testing check", f))

    def chain_problem(self, chain: Sequence[crypto.X509], name: str) -> str:
        """Why a peer's chain (leaf first) would fail enforce for the MX host
        ``name`` (not trusted, or not naming it), or ''."""
        context = crypto.X509StoreContext(self._trust_store(), chain[0], list(chain[1:]))
        try:
            context.verify_certificate()
        except crypto.X509StoreContextError as e:
            return f"certificate not trusted: {e}"
        try:
            verify_certificate_hostname(chain[0].to_cryptography(), name)
        except VerificationError:
            return f"certificate does not name {name}"
        return ""

    def _trust_store(self) -> crypto.X509Store:
        if self._store is None:
            # The store of a context loads the same trust the sessions use;
            # the context is kept because its store lives and dies with it.
            self._context = SSL.Context(SSL.TLS_CLIENT_METHOD)
            if self._cafile:
                self._context.load_verify_locations(self._cafile)
            else:
                self._context.set_default_verify_paths()
            self._store = self._context.get_cert_store()
        if self._store is None:
            raise RuntimeError("OpenSSL gave no certificate store")
        return self._store


def _peer_chain(transport: Any) -> list[crypto.X509] | None:
    """The peer's certificate chain of a TLS transport; None without TLS."""
    try:
        handle = transport.getHandle()
    except Exception:
        return None
    if not isinstance(handle, SSL.Connection):
        return None
    return list(handle.get_peer_cert_chain() or [])


def _is_literal(domain: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(domain.strip("[]").removeprefix("ipv6:"))
    except ValueError:
        return False
    return True
