"""postscreen: screening SMTP clients before an smtpd session costs anything.

Mirrors Postfix's postscreen(8) with its tests before the greeting. The
master.cf shape is Postfix's stock one::

    smtp      inet  n       -       y       -       1       postscreen
    smtpd     pass  -       -       y       -       -       smtpd

The pieces:

- :mod:`pymta.postscreen.settings` — the ``postscreen_*`` parameters,
  weighted DNSBL sites, the access list;
- :mod:`pymta.postscreen.protocol` — one connection: access list, cache,
  pregreet and DNSBL tests, the verdict, the hand-off to smtpd;
- :mod:`pymta.postscreen.dnsbl` — one client's DNSBL score;
- :mod:`pymta.postscreen.cache` — the temporary allowlist file;
- :mod:`pymta.postscreen.engine` — the SMTP engine that refuses the mail
  of clients that failed a test with ``enforce``;
- :mod:`pymta.postscreen.factory` — the listener's factory, built by
  pymta.service from the ``inet`` line and its ``pass`` smtpd.

The deep protocol tests after the greeting (``postscreen_pipelining_enable``,
``postscreen_non_smtp_command_enable``, ``postscreen_bare_newline_enable``)
are not implemented: setting one to ``yes`` stops the start
(pymta.config.unimplemented). Logs, as Postfix's postscreen: ``CONNECT``,
``ALLOWLISTED``, ``DENYLISTED``, ``PREGREET``, ``DNSBL rank``, ``PASS
NEW``, ``PASS OLD``, ``HANGUP``, ``DISCONNECT``, ``NOQUEUE: reject``.
"""

from pymta.postscreen.factory import PostscreenFactory, postscreen_factory

__all__ = ["PostscreenFactory", "postscreen_factory"]
