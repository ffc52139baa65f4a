"""service: cleanup's mail authentication step — verify inbound, sign outbound.

Called by cleanup(8) (pymta.cleanup.cleanup) after the headers are final
and before the queue file is written, so smtpd's 250 covers the message
as signed or marked. Which mail gets what:

- **verified** (``pymta_mailauth_verify = yes``): mail from an SMTP client
  outside ``mynetworks`` that did not authenticate. SPF of MAIL FROM and
  HELO, every DKIM signature, the ARC chain (reported), DMARC; forged Authentication-Results headers
  claiming ``$myhostname`` are removed, then one is prepended. With
  ``pymta_mailauth_dmarc_reject = yes`` a DMARC ``fail`` under ``p=reject``
  is refused at end of DATA: ``550 5.7.1 Message rejected: DMARC policy of
  DOMAIN (...)``; a DMARC temperror never rejects (RFC 7489 6.6.3).
- **signed** (``pymta_dkim_key_table`` and ``pymta_dkim_signing_table``
  set): all other mail (local submissions, ``mynetworks``, authenticated
  clients) whose From address has an entry in the signing table.
- **ARC-sealed** (``pymta_arc_key = DOMAIN:SELECTOR:KEYFILE``, an RSA
  key): mail the local agent forwards (.forward, envelope attribute
  ``forwarded_from``) that carries the Authentication-Results we added
  when it arrived, and verified mail that a virtual alias sends on to
  another domain during the SMTP session (cleanup says so: ``forwarding``),
  so the next hop can trust our verdict (RFC 8617).

The checks and the signing run in the reactor's thread pool, at most
``pymta_mailauth_concurrency`` at a time (the rest wait in order), because
their DNS lookups block and RSA costs CPU; the reactor never waits.

Logs (maillog, keyed by queue id, as OpenDKIM's lines):
``QID: DKIM-Signature field added (s=SEL, d=DOMAIN)``,
``QID: ARC-Seal field added (s=SEL, d=DOMAIN)``,
``QID: Authentication-Results: spf=... dkim=... dmarc=...``, and
``QID: reject: DMARC policy of DOMAIN ...``. Untrusted input: the message,
the envelope and DNS. Writes nothing itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, DeferredSemaphore, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from pymta.cleanup.interface import CleanupRejected
from pymta.config import Config, ConfigError
from pymta.mailauth import authresults, dkimcheck, dmarc, spfcheck
from pymta.mailauth.keys import KeyError_, load_key
from pymta.mailauth.keytable import Signer, SigningTable, load_key_table
from pymta.mailauth.resolver import DnspythonLookup, Lookup
from pymta.maillog import maillog
from pymta.netmatch import NetworkList
from pymta.queue.model import Envelope

_log = Logger(namespace="pymta.mailauth")

T = TypeVar("T")
#: runs a blocking function away from the reactor; fires with its result.
Runner = Callable[[Callable[[], T]], "Deferred[T]"]

LOCAL_PROTOCOLS = ("local", "sendmail", "pickup")


@dataclass
class Outcome:
    """What the worker thread decided; logged and acted on in the reactor thread."""

    message: bytes
    logs: list[tuple[str, LogLevel]] = field(default_factory=list)
    reject: CleanupRejected | None = None


def _arc_sealer(value: str) -> Signer | None:
    """``DOMAIN:SELECTOR:KEYFILE`` (an RSA key) -> the sealer, None when empty."""
    if not value:
        return None
    parts = value.split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise ConfigError(
            f"bad value {value!r}: expected DOMAIN:SELECTOR:KEYFILE", parameter="pymta_arc_key"
        )
    domain, selector, path = parts
    try:
        with open(path, "rb") as f:
            key = load_key(f.read(), path)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}", parameter="pymta_arc_key") from None
    except KeyError_ as e:
        raise ConfigError(str(e), parameter="pymta_arc_key") from None
    if key.key_type != "rsa":
        raise ConfigError(f"{path}: ARC seals with RSA only (RFC 8617)", parameter="pymta_arc_key")
    return Signer(domain.lower(), selector, key)


class MailAuth:
    """Verify or sign one message at a time per worker (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        *,
        run: Runner[Any],
        lookup: Lookup | None = None,
        mynetworks: NetworkList | None = None,
    ) -> None:
        self._authserv_id = config.get("myhostname")
        self._verify = config.get_bool("pymta_mailauth_verify")
        self._dmarc_reject = config.get_bool("pymta_mailauth_dmarc_reject")
        key_table = config.get("pymta_dkim_key_table")
        signing_table = config.get("pymta_dkim_signing_table")
        self._signing: SigningTable | None = None
        if key_table and signing_table:
            self._signing = SigningTable(signing_table, load_key_table(key_table))
        self._arc = _arc_sealer(config.get("pymta_arc_key"))
        self._lookup = lookup or DnspythonLookup.from_config(config)
        self._mynetworks = mynetworks or NetworkList(config.get_list("mynetworks"))
        self._run = run
        self._semaphore = DeferredSemaphore(max(1, config.get_int("pymta_mailauth_concurrency")))

    @classmethod
    def from_config(cls, config: Config, reactor: Any) -> MailAuth | None:
        """The step for cleanup, or None when neither verifying nor signing is set."""
        if (
            not config.get_bool("pymta_mailauth_verify")
            and not (config.get("pymta_dkim_key_table") and config.get("pymta_dkim_signing_table"))
            and not config.get("pymta_arc_key")
        ):
            return None
        pool = reactor.getThreadPool()
        return cls(config, run=lambda f: deferToThreadPool(reactor, pool, f))

    @property
    def verifying(self) -> bool:
        return self._verify

    @property
    def signing(self) -> bool:
        return self._signing is not None

    def is_inbound(self, envelope: Envelope) -> bool:
        """From an outside, unauthenticated SMTP client (the mail we verify)."""
        attrs = envelope.attributes
        address = attrs.get("client_address", "")
        if not address or attrs.get("protocol", "").lower() in LOCAL_PROTOCOLS:
            return False
        if attrs.get("sasl_username"):
            return False
        return not self._mynetworks.contains(address)

    def process(
        self, qid: str, envelope: Envelope, message: bytes, *, forwarding: bool = False
    ) -> Deferred[bytes]:
        """Fire with the message to queue (marked or signed), or errback
        CleanupRejected. ``forwarding``: inbound mail that a virtual alias
        sends on to another domain (ARC-sealed after our verdict)."""
        inbound = self.is_inbound(envelope)
        outbound_work = self._signing is not None or self._arc is not None
        if (inbound and not self._verify) or (not inbound and not outbound_work):
            return succeed(message)
        if inbound:

            def work(envelope: Envelope, message: bytes) -> Outcome:
                return self._check(envelope, message, seal=forwarding)

        else:
            work = self._sign
        d: Deferred[Outcome] = self._semaphore.run(self._run, lambda: work(envelope, message))
        return d.addCallback(self._finish, qid).addErrback(self._crashed, qid)

    def _crashed(self, failure: Failure, qid: str) -> bytes:
        if failure.check(CleanupRejected):
            failure.raiseException()
        # A bug, not the message's fault: log it and let the client retry.
        maillog("cleanup", f"{qid}: warning: mail authentication failed", LogLevel.warn)
        _log.failure("mailauth failed for {qid}", failure, qid=qid)
        raise CleanupRejected(451, "4.3.0", "Error: internal error")

    def _finish(self, outcome: Outcome, qid: str) -> bytes:
        for line, level in outcome.logs:
            maillog("cleanup", f"{qid}: {line}", level)
        if outcome.reject is not None:
            raise outcome.reject
        return outcome.message

    # --- in a worker thread -------------------------------------------------

    def _sign(self, envelope: Envelope, message: bytes) -> Outcome:
        outcome = self._dkim_sign(message)
        if envelope.attributes.get("forwarded_from"):
            self._seal(outcome)
        return outcome

    def _seal(self, outcome: Outcome) -> None:
        """Prepend an ARC set over our Authentication-Results, when configured."""
        if self._arc is None:
            return
        try:
            arc_set = dkimcheck.arc_seal(outcome.message, self._arc, self._authserv_id)
        except Exception as e:
            outcome.logs.append((f"warning: ARC sealing failed: {e}", LogLevel.warn))
        else:
            if arc_set:
                outcome.message = arc_set + outcome.message
                line = f"ARC-Seal field added (s={self._arc.selector}, d={self._arc.domain})"
                outcome.logs.append((line, LogLevel.info))

    def _dkim_sign(self, message: bytes) -> Outcome:
        if self._signing is None:
            return Outcome(message)
        addresses = authresults.from_addresses(message)
        if len(addresses) != 1:
            return Outcome(message)
        signer = self._signing.find(addresses[0])
        if signer is None:
            return Outcome(message)
        try:
            header = dkimcheck.sign(message, signer)
        except Exception as e:
            # Unsigned mail is still mail: deliver it and say why.
            return Outcome(message, [(f"warning: DKIM signing failed: {e}", LogLevel.warn)])
        line = f"DKIM-Signature field added (s={signer.selector}, d={signer.domain})"
        return Outcome(header + message, [(line, LogLevel.info)])

    def _spf(self, envelope: Envelope) -> tuple[spfcheck.SPFResult, spfcheck.SPFResult]:
        attrs = envelope.attributes
        helo_name = attrs.get("helo_name", "")
        try:
            return spfcheck.check_spf(
                self._lookup, attrs.get("client_address", ""), envelope.sender, helo_name
            )
        except Exception as e:
            # pyspf raising on odd input: no verdict, so no policy acts on it.
            reason = f"{type(e).__name__}: {e}"
            return (
                spfcheck.SPFResult("temperror", "mailfrom", envelope.sender, reason),
                spfcheck.SPFResult("temperror", "helo", helo_name, reason),
            )

    def _check(self, envelope: Envelope, message: bytes, *, seal: bool = False) -> Outcome:
        logs: list[tuple[str, LogLevel]] = []
        message, removed = authresults.remove_forged(message, self._authserv_id)
        if removed:
            logs.append(
                (f"removed {removed} forged Authentication-Results header(s)", LogLevel.info)
            )
        mailfrom, helo = self._spf(envelope)
        signatures = dkimcheck.verify_all(self._lookup, message)
        verdict = dmarc.check_dmarc(
            self._lookup,
            authresults.from_domains(message),
            (mailfrom.result, mailfrom.domain),
            [s.domain for s in signatures if s.result == "pass"],
        )
        arc, _ = dkimcheck.verify_arc(self._lookup, message)
        header = authresults.format_header(
            self._authserv_id, [mailfrom, helo], signatures, verdict, arc
        )
        summary = " ".join(
            [
                f"spf={mailfrom.result}",
                *(f"dkim={s.result} (d={s.domain})" for s in signatures),
                f"arc={arc}",
                f"dmarc={verdict.result}",
            ]
        )
        logs.append((f"Authentication-Results: {summary}", LogLevel.info))
        outcome = Outcome(header + message, logs)
        if self._dmarc_reject and verdict.result == "fail" and verdict.policy == "reject":
            text = f"Message rejected: DMARC policy of {verdict.header_from} ({verdict.reason})"
            logs.append((f"reject: {text}; from=<{envelope.sender}>", LogLevel.info))
            outcome.reject = CleanupRejected(550, "5.7.1", text)
        elif seal:
            self._seal(outcome)
        return outcome
