"""One connection in postscreen: the tests before the greeting, then smtpd or not.

Mirrors Postfix's postscreen.c and postscreen_early.c. In order:

1. ``CONNECT from [addr]:port to [addr]:port``.
2. ``postscreen_access_list``: ``permit`` logs ``ALLOWLISTED`` and hands
   the client to smtpd at once; ``reject`` logs ``DENYLISTED`` and applies
   ``postscreen_denylist_action`` (drop: ``521 5.3.2 Service currently
   unavailable``; enforce: the same text with 550 to every RCPT, in
   postscreen's own engine; ignore: go on).
3. ``postscreen_client_connection_count_limit`` (allowlisted clients
   excepted): ``421 4.7.0 Error: too many connections from addr``.
4. The temporary allowlist (:mod:`pymta.postscreen.cache`): a client whose
   every test is still valid logs ``PASS OLD`` and goes to smtpd.
5. The tests still due, together, for ``postscreen_greet_wait``: the
   pregreet test sends the first line of a multi-line greeting
   (``220-`` + ``postscreen_greet_banner``) and watches for input, which a
   conforming client never sends before the last line (RFC 5321 section
   4.2: a client waits for the whole reply); the DNSBL test asks every
   list at once (:mod:`pymta.postscreen.dnsbl`). Input logs ``PREGREET n
   after t from [addr]:port: text`` and applies ``postscreen_greet_action``
   (drop: ``521 5.5.1 Protocol error``; enforce: 550 to every RCPT;
   ignore: the client is not allowlisted for it). The wait ends early once
   every test is decided: a pregreet seen and the lists answered, or a
   DNSWL score at or below ``postscreen_dnsbl_allowlist_threshold``
   (which also passes the pregreet test, for the DNSBL's TTL).
6. At the end of the wait: a score at or above
   ``postscreen_dnsbl_threshold`` logs ``DNSBL rank N for [addr]:port`` and
   applies ``postscreen_dnsbl_action`` (``521``/``550 5.7.1 Service
   unavailable; client [addr] blocked using NAME``, NAME through
   ``postscreen_dnsbl_reply_map``). Passes go into the cache (none when a
   test failed with enforce or drop); ``PASS NEW`` when every test passed.
7. The client goes to smtpd (the second line, ``220 banner``, is smtpd's
   own greeting), or to postscreen's refusing engine
   (:mod:`pymta.postscreen.engine`) after an ``enforce``.

The hand-off is in-process: the connected transport gets an smtpd
protocol (:meth:`SMTPServerProtocol.take_over`), with the bytes a client
sent early, so that smtpd's own pipelining check sees them as Postfix's
smtpd sees the bytes postscreen only peeked at. A client that hangs up
during the wait logs ``HANGUP after t from [addr]:port in tests before SMTP
handshake``; every connection postscreen ends itself logs ``DISCONNECT``.

Untrusted input: everything the client sends (logged escaped, at most 100
characters) and the DNS answers. Reading stops after the first pregreet
bytes until the connection is handed on, so a client cannot make
postscreen buffer more than one read. Writes only the cache (through it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from pymta.maillog import maillog
from pymta.output import send
from pymta.postscreen.cache import CacheEntry
from pymta.postscreen.dnsbl import DnsblQuery
from pymta.postscreen.engine import SERVICE, RefusingEngine
from pymta.postscreen.settings import DENY_REPLY, DROP, ENFORCE, PERMIT, REJECT
from pymta.smtpd.protocol import escape

if TYPE_CHECKING:
    from pymta.postscreen.parts import ScreeningParts

__all__ = ["PostscreenProtocol"]

_PEEK = 100  # what a PREGREET line shows of the input (Postfix: %.100s)


def _endpoint(address: Any) -> tuple[str, int]:
    host = str(getattr(address, "host", "unknown"))
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, int(getattr(address, "port", 0) or 0)


class PostscreenProtocol(Protocol):
    """One client in postscreen; see the module docstring."""

    def __init__(self, factory: ScreeningParts) -> None:
        self.factory = factory
        self.address = ""
        self.client = ""  # [address]:port
        self._started = 0.0
        self._counted = False
        self._released = False  # handed on, or ended by postscreen
        self._timer: IDelayedCall | None = None
        self._query: DnsblQuery | None = None
        self._dnsbl_done = False
        self._pregreet_todo = False
        self._dnsbl_todo = False
        self._pregreet_seen = False
        self._pregreet_passed = False  # by the DNSWL allowlist
        self._enforce: str | None = None  # the refusal the engine will give
        self._early = b""
        self._paused = False
        self._concluding = False
        self._entry = CacheEntry()

    # -- connection ---------------------------------------------------------------

    def connectionMade(self) -> None:
        f = self.factory
        settings = f.settings
        assert self.transport is not None
        self.address, port = _endpoint(self.transport.getPeer())
        local, local_port = _endpoint(self.transport.getHost())
        self.client = f"[{self.address}]:{port}"
        self._started = f.clock.seconds()
        maillog(SERVICE, f"CONNECT from {self.client} to [{local}]:{local_port}")

        verdict, problem = settings.access.verdict(self.address)
        if problem:
            maillog(SERVICE, f"warning: {problem}")
        if verdict == PERMIT:
            maillog(SERVICE, f"ALLOWLISTED {self.client}")
            self._hand_off()
            return
        if verdict == REJECT:
            maillog(SERVICE, f"DENYLISTED {self.client}")
            if settings.denylist_action == DROP:
                self._drop(f"521 {DENY_REPLY}")
                return
            if settings.denylist_action == ENFORCE:
                self._enforce = f"550 {DENY_REPLY}"

        count = f.connections.get(self.address, 0) + 1
        f.connections[self.address] = count
        self._counted = True
        if settings.connection_count_limit and count > settings.connection_count_limit:
            maillog(SERVICE, f"NOQUEUE: reject: CONNECT from {self.client}: too many connections")
            self._drop(f"421 4.7.0 Error: too many connections from {self.address}")
            return

        now = self._started
        entry = f.cache.get(self.address) or CacheEntry()
        self._entry = entry
        self._pregreet_todo = entry.pregreet <= now
        self._dnsbl_todo = bool(settings.sites) and entry.dnsbl <= now
        if not (self._pregreet_todo or self._dnsbl_todo) and self._enforce is None:
            maillog(SERVICE, f"PASS OLD {self.client}")
            self._hand_off()
            return
        self._early_tests()

    def _early_tests(self) -> None:
        f = self.factory
        settings = f.settings
        if self._pregreet_todo and settings.teaser:
            send(self.transport, settings.teaser)
        self._timer = f.clock.callLater(settings.greet_wait, self._greet_wait_over)
        if self._dnsbl_todo:
            self._query = DnsblQuery(f.dns, settings.sites, self.address, self._dnsbl_answered)
            if self._dnsbl_done:  # every answer was at hand
                self._dnsbl_answered()
                return
        if self._early_done():  # nothing to wait for (a denylisted client's cached passes)
            self._conclude()

    def dataReceived(self, data: bytes) -> None:
        if self._released:
            return
        self._early += data
        if not self._paused:
            # One read is all postscreen looks at; the rest waits in the
            # socket for smtpd (or for the refusing engine).
            self._paused = True
            transport: Any = self.transport
            transport.pauseProducing()
        if self._pregreet_seen or not self._pregreet_todo:
            return
        self._pregreet_seen = True
        settings = self.factory.settings
        elapsed = self.factory.clock.seconds() - self._started
        maillog(
            SERVICE,
            f"PREGREET {len(data)} after {elapsed:.2f} from {self.client}: {escape(data)[:_PEEK]}",
        )
        if settings.greet_action == DROP:
            self._drop("521 5.5.1 Protocol error")
            return
        if settings.greet_action == ENFORCE and self._enforce is None:
            self._enforce = "550 5.5.1 Protocol error"
        if self._early_done():
            self._conclude()

    def _dnsbl_answered(self) -> None:
        self._dnsbl_done = True
        query = self._query
        if query is None or self._released:
            return  # answered inside DnsblQuery(): _early_tests goes on
        settings = self.factory.settings
        threshold = settings.allowlist_threshold
        if (
            threshold < 0
            and query.score <= threshold
            and query.score < settings.dnsbl_threshold
            and self._enforce is None
            and not self._pregreet_seen
        ):
            # postscreen's psc_whitelist_non_dnsbl: a DNSWL-listed client
            # skips the other tests for as long as the DNSBL pass lasts.
            self._pregreet_passed = True
        if self._early_done():
            # Not from inside the resolver's callback chain.
            self.factory.clock.callLater(0, self._conclude)

    def _early_done(self) -> bool:
        pregreet_done = not self._pregreet_todo or self._pregreet_seen or self._pregreet_passed
        dnsbl_done = not self._dnsbl_todo or self._dnsbl_done
        return pregreet_done and dnsbl_done

    def _greet_wait_over(self) -> None:
        self._timer = None
        self._conclude()

    # -- the verdict --------------------------------------------------------------

    def _conclude(self) -> None:
        if self._released or self._concluding:
            return
        self._concluding = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        settings = self.factory.settings
        now = self.factory.clock.seconds()
        pregreet, dnsbl = self._entry.pregreet, self._entry.dnsbl
        passed = failed = False
        if self._pregreet_todo:
            if self._pregreet_seen:
                failed = failed or settings.greet_action != "ignore"
            elif not self._pregreet_passed:  # (allowlisted: given the DNSBL's TTL below)
                passed = True
                pregreet = now + settings.greet_ttl
        if self._dnsbl_todo:
            query = self._query
            assert query is not None
            query.cancel()
            if query.score < settings.dnsbl_threshold:
                passed = True
                ttl = query.ttl(settings.dnsbl_min_ttl, settings.dnsbl_max_ttl)
                dnsbl = now + ttl
                if self._pregreet_passed:
                    pregreet = max(pregreet, now + ttl)
            else:
                maillog(SERVICE, f"DNSBL rank {query.score} for {self.client}")
                top = query.top_site
                name = settings.dnsbl_name(top.domain if top is not None else "")
                text = f"5.7.1 Service unavailable; client [{self.address}] blocked using {name}"
                if settings.dnsbl_action == DROP:
                    self._drop(f"521 {text}")
                    return
                if settings.dnsbl_action == ENFORCE:
                    failed = True
                    if self._enforce is None:
                        self._enforce = f"550 {text}"
        if self._enforce is not None:
            failed = True
        if passed and not failed:
            all_passed = (not self._pregreet_todo or pregreet > now) and (
                not self._dnsbl_todo or dnsbl > now
            )
            if all_passed:
                maillog(SERVICE, f"PASS NEW {self.client}")
            self.factory.cache.update(self.address, CacheEntry(pregreet, dnsbl))
        if self._enforce is not None:
            self._to_engine(self._enforce)
        else:
            self._hand_off()

    # -- where the connection goes ------------------------------------------------

    def _release(self, keep_count: bool = False) -> None:
        self._released = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._query is not None:
            self._query.cancel()
        if not keep_count:
            self._uncount()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            f = self.factory
            left = f.connections.get(self.address, 1) - 1
            if left > 0:
                f.connections[self.address] = left
            else:
                f.connections.pop(self.address, None)

    def _resume(self, transport: Any) -> None:
        if self._paused:
            self._paused = False
            if not transport.disconnecting:  # (smtpd may have hung up at once)
                transport.resumeProducing()

    def _hand_off(self) -> None:
        """Give the connection to smtpd (Postfix: the socket goes to the
        ``smtpd pass`` service)."""
        self._release()
        transport = self.transport
        assert transport is not None
        smtpd = self.factory.smtpd.buildProtocol(transport.getPeer())
        early, self._early = self._early, b""
        smtpd.take_over(transport, early)
        self._resume(transport)

    def _to_engine(self, reply: str) -> None:
        # Still postscreen's connection: it counts until the engine ends it.
        self._release(keep_count=True)
        transport = self.transport
        assert transport is not None
        engine = RefusingEngine(self.factory, self.client, reply, self._started, self._uncount)
        early, self._early = self._early, b""
        engine.take_over(transport, early)
        self._resume(transport)

    def _drop(self, reply: str) -> None:
        self._release()
        transport = self.transport
        assert transport is not None
        send(transport, f"{reply}\r\n".encode())
        transport.loseConnection()
        maillog(SERVICE, f"DISCONNECT {self.client}")

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._released:
            return
        self._release()
        elapsed = self.factory.clock.seconds() - self._started
        maillog(
            SERVICE,
            f"HANGUP after {elapsed:.2f} from {self.client} in tests before SMTP handshake",
        )
        maillog(SERVICE, f"DISCONNECT {self.client}")
