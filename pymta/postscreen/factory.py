"""The postscreen listener's factory, and how pymta.service builds it.

Mirrors the master.cf shape of Postfix's postscreen(8)::

    smtp      inet  n       -       y       -       1       postscreen
    smtpd     pass  -       -       y       -       -       smtpd

The ``inet`` line is postscreen's listener; the ``pass`` line named by
``smtpd_service_name`` (default ``smtpd``) is the smtpd that clients are
handed to, with that line's ``-o`` overrides. Postfix passes the socket to
a separate smtpd process; pymta hands the connected transport to an smtpd
session in the same reactor (:meth:`SMTPServerProtocol.take_over`), so a
passed client costs no file descriptor passing and no second accept, and
with ``pymta_processes`` above 1 every reactor process runs its own
postscreen on the shared listening socket, each handing off to its own
smtpd. The temporary allowlist is one file for all of them
(:mod:`pymta.postscreen.cache`).

The factory starts the cache when its port starts listening (never in
``pymta check``, which binds nothing) and stops it with the port. A
missing ``pass`` service, or one with ``smtpd_tls_wrappermode = yes``
(postscreen speaks cleartext SMTP first), is a ConfigError naming the
postscreen line. Writes: the cache file. Logs: through the sessions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import ServerFactory

from pymta.config.config import Config
from pymta.config.errors import ConfigError
from pymta.config.master_cf import MasterService, load_master
from pymta.dns.deadline import DeadlineResolver
from pymta.dns.interface import IDNSResolver
from pymta.postscreen.cache import PostscreenCache, Runner, shared_cache
from pymta.postscreen.protocol import PostscreenProtocol
from pymta.postscreen.settings import OpenTable, PostscreenSettings


class SessionParts(Protocol):
    """What postscreen uses of :class:`pymta.sessions.SessionParts` (a
    Protocol, so that the sessions table and this module do not import
    each other)."""

    reactor: Any

    def dns(self) -> IDNSResolver: ...


__all__ = ["PostscreenFactory", "postscreen_factory"]


class PostscreenFactory(ServerFactory):
    """Builds a :class:`PostscreenProtocol` per connection; holds what they share."""

    noisy = False  # no "Starting factory" lines: the listener logs its start

    def __init__(
        self,
        settings: PostscreenSettings,
        smtpd: Any,
        dns: IDNSResolver,
        cache: PostscreenCache,
        clock: IReactorTime,
    ) -> None:
        self.settings = settings
        #: The factory of the smtpd that passed clients get (its buildProtocol
        #: makes an SMTPServerProtocol, possibly behind the metrics counter).
        self.smtpd = smtpd
        #: DNSBL lookups, each bounded by postscreen_dnsbl_timeout.
        self.dns: IDNSResolver = DeadlineResolver(dns, clock, settings.dnsbl_timeout)
        self.cache = cache
        self.clock = clock
        #: Open connections per client address while in postscreen.
        self.connections: dict[str, int] = {}

    def buildProtocol(self, addr: IAddress) -> PostscreenProtocol:  # type: ignore[override]
        return PostscreenProtocol(self)

    def startFactory(self) -> None:
        self.cache.start()

    def stopFactory(self) -> None:
        self.cache.stop()


def _pass_service(svc: MasterService, config: Config) -> MasterService:
    """The ``pass`` service postscreen hands clients to (smtpd_service_name)."""
    wanted = svc.service_config(config).get("smtpd_service_name").strip()
    directory = config.get("config_directory")
    found = None
    for other in load_master(directory):
        if other.name == wanted and other.type == "pass":
            found = other
    if found is None or found.program != "smtpd":
        raise ConfigError(
            f"service {svc.name!r} (postscreen): no '{wanted} pass ... smtpd' service "
            f"to hand clients to (smtpd_service_name = {wanted})",
            svc.filename,
            svc.lineno,
        )
    if found.service_config(config).get_bool("smtpd_tls_wrappermode"):
        raise ConfigError(
            f"service {found.name!r}: smtpd_tls_wrappermode = yes behind postscreen, which "
            "greets in cleartext: give the implicit-TLS port its own inet smtpd line",
            found.filename,
            found.lineno,
        )
    return found


def postscreen_factory(
    svc: MasterService,
    config: Config,
    parts: SessionParts,
    smtpd_factory: Callable[[MasterService, Config, Any], Any],
    open_table: OpenTable | None = None,
) -> PostscreenFactory:
    """The factory of a master.cf ``postscreen`` listener: its settings
    (with the line's ``-o`` overrides) and, from ``smtpd_factory``
    (:func:`pymta.sessions.session_factory`), the smtpd of the pass service."""
    from twisted.internet.threads import deferToThreadPool

    svc_config = svc.service_config(config)
    if open_table is None:
        from pymta.tables import open_table as open_any

        open_table = functools.partial(open_any, config=svc_config)
    settings = PostscreenSettings(svc_config, open_table)
    smtpd = smtpd_factory(_pass_service(svc, config), config, parts)
    reactor = parts.reactor
    run: Runner = functools.partial(deferToThreadPool, reactor, reactor.getThreadPool())
    cache = shared_cache(
        settings.cache_map,
        reactor,
        run,
        settings.cache_retention,
        settings.cache_cleanup_interval,
    )
    return PostscreenFactory(settings, smtpd, parts.dns(), cache, reactor)
