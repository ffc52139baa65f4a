"""Postfix parameters that pymta knows but does not implement, and what a
setting of one does.

Mirrors nothing in Postfix: it is how pymta keeps its configuration honest
(docs/architecture.md, invariant 6). Postfix's own main.cf files set these
parameters, so pymta must recognise them; it must also never pretend to act
on them. Each entry says which values change nothing because pymta already
behaves that way (its default, and values such as ``biff = no``), and what
any other value does at start:

- ``warn``: pymta ignores it, and says so once with file and line
  ("not implemented by pymta; ignored"). For parameters whose absence
  changes neither what mail is accepted, where it goes, nor how it is
  protected: process tuning, logging detail, caches, reply-code choices.
- ``refuse``: the start stops (and ``pymta check`` fails) with file, line
  and the reason. For parameters whose absence would accept mail the
  administrator meant to refuse, send mail elsewhere, or weaken
  protection: content checks, rate limits, TLS settings stricter than
  pymta's own, AUTH, wrapper modes, uid maps, local delivery routes.

The defaults table (:mod:`pymta.config.defaults`) lists only what pymta's
code acts on; ``postconf -d`` prints that table. These entries keep
Postfix's default so that a ``$name`` reference to one still expands as in
Postfix. Nothing here is read at run time except by :mod:`validate`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

WARN = "warn"
REFUSE = "refuse"


@dataclass(frozen=True)
class Unimplemented:
    """One Postfix parameter pymta does not implement (see module doc)."""

    name: str
    default: str
    action: str  # WARN or REFUSE
    why: str
    #: Values (normalised: lower case, list items joined by one space) that
    #: change nothing; the default is always one.
    harmless: tuple[str, ...] = ()
    #: A test of harmlessness for values with a syntax.
    harmless_if: Callable[[str], bool] | None = None

    def is_harmless(self, value: str) -> bool:
        normal = normalise(value)
        if normal == normalise(self.default) or normal in self.harmless:
            return True
        return self.harmless_if is not None and self.harmless_if(value)


_SPLIT = re.compile(r"[\s,]+")


def normalise(value: str) -> str:
    """Lower case, list separators reduced to one space."""
    return " ".join(item for item in _SPLIT.split(value.strip().lower()) if item)


def _static_id(value: str) -> int | None:
    """N of ``static:N``: a uid or gid map that names one id (None else)."""
    kind, _, number = value.strip().partition(":")
    return int(number) if kind == "static" and number.isdigit() else None


def _w(name: str, default: str, why: str, *harmless: str) -> Unimplemented:
    return Unimplemented(name, default, WARN, why, tuple(normalise(h) for h in harmless))


def _r(name: str, default: str, why: str, *harmless: str) -> Unimplemented:
    return Unimplemented(name, default, REFUSE, why, tuple(normalise(h) for h in harmless))


_TLS_PROTOCOLS = "pymta offers TLS 1.2 and 1.3 only and cannot narrow that further yet"
_TLS_CIPHERS = "pymta offers forward-secret AEAD ciphers only and cannot change that yet"
_LOCAL = "pymta's local agent has no per-user table of this (use the main parameter)"
_PROCESS = "pymta's reactor processes live as long as the server"
_SCHEDULER = "pymta's queue manager has no preemptive scheduler to tune"
_SERVICE = "pymta's parts are not separate master.cf services"
_DEEP = "postscreen's deep protocol tests are not implemented"
_QUEUES = "postscreen hands clients to smtpd in its own process: there is no queue to smtpd"

_ENTRIES: list[Unimplemented] = [
    # --- installation, identity, processes -----------------------------
    _r(
        "mail_owner",
        "postfix",
        "pymta runs as the user twistd runs it as: use twistd's -u and -g",
    ),
    _r(
        "setgid_group",
        "postdrop",
        "pymta's maildrop is mode 1733 and needs no set-gid postdrop: the file owner is the sender",
    ),
    _w(
        "sendmail_path",
        "/usr/sbin/sendmail",
        "pymta never runs sendmail itself: point /usr/sbin/sendmail at pymta-sendmail",
    ),
    _w("newaliases_path", "/usr/bin/newaliases", "use 'pymta newaliases'"),
    _w("mailq_path", "/usr/bin/mailq", "use 'pymta mailq'"),
    _w(
        "syslog_facility",
        "mail",
        "pymta logs to maillog_file or twistd's log, not to syslog",
    ),
    _w(
        "maillog_file_prefixes",
        "/var, /dev/stdout",
        "pymta accepts any maillog_file path (the embedded default's is relative)",
    ),
    _w("compatibility_level", "0", "pymta's defaults are always the newest ones", "3.6", "3.7"),
    _r("soft_bounce", "no", "pymta bounces hard failures: soft_bounce is not implemented"),
    _w("biff", "no", "pymta has no biff service"),
    _w(
        "import_environment",
        "MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ XAUTHORITY DISPLAY LANG=C",
        "pymta keeps the environment twistd was started with",
    ),
    _w(
        "export_environment",
        "TZ MAIL_CONFIG LANG",
        "commands get the environment pymta.delivery.command builds",
    ),
    _w("max_idle", "100s", _PROCESS),
    _w("max_use", "100", _PROCESS),
    _w("daemon_timeout", "18000s", _PROCESS),
    _w("ipc_timeout", "3600s", _PROCESS),
    # --- addresses, rewriting, routing -----------------------------------
    _w("virtual_alias_address_length_limit", "1000", "not enforced"),
    _r("sender_dependent_relayhost_maps", "", "mail would go to relayhost instead"),
    _r("sender_dependent_default_transport_maps", "", "mail would go to default_transport"),
    _r("fallback_relay", "", "mail would be deferred instead of going to the fallback"),
    _r("smtp_fallback_relay", "$fallback_relay", "mail would be deferred instead"),
    # --- milters (pymta.milter implements the rest) -------------------------
    _r("milter_header_checks", "", "header checks of milter-added headers are not implemented"),
    _w("milter_macro_defaults", "", "macros without a value are not sent"),
    _w("milter_unknown_command_macros", "", "unknown commands are not sent to milters"),
    _w("expand_owner_alias", "no", "owner- aliases receive the errors unexpanded"),
    _w("empty_address_recipient", "MAILER-DAEMON", "not implemented"),
    _w("show_user_unknown_table_name", "yes", "'user unknown' replies never name the table"),
    _w("enable_original_recipient", "yes", "pymta always keeps the original recipient"),
    _w("remote_header_rewrite_domain", "", "not implemented"),
    _r(
        "receive_override_options",
        "",
        "the processing it would skip (address mappings, checks) would still run",
    ),
    # --- content ----------------------------------------------------------
    _w("header_address_token_limit", "10240", "not enforced"),
    _w("message_strip_characters", "", "not implemented"),
    _w("always_add_missing_headers", "no", "not implemented"),
    _w("undisclosed_recipients_header", "", "not implemented"),
    _w(
        "message_drop_headers",
        "bcc, content-length, resent-bcc, return-path",
        "pymta's cleanup keeps these headers",
    ),
    _w("duplicate_filter_limit", "1000", "not enforced"),
    # --- smtpd --------------------------------------------------------------
    _w("smtpd_recipient_overshoot_limit", "1000", "not enforced"),
    _w("smtpd_etrn_restrictions", "", "pymta's smtpd has no ETRN"),
    _w("smtpd_reject_footer", "", "not implemented"),
    _w("smtpd_client_port_logging", "no", "not implemented"),
    _w("relay_domains_reject_code", "554", "pymta's replies use Postfix's default codes"),
    _w("access_map_reject_code", "554", "pymta's replies use Postfix's default codes"),
    _w("smtpd_tls_dh1024_param_file", "", "pymta uses OpenSSL's built-in key exchange groups"),
    _w("smtpd_tls_CApath", "", "use smtpd_tls_CAfile"),
    _w("smtpd_tls_session_cache_database", "", "pymta keeps no TLS session cache"),
    _w("smtpd_tls_session_cache_timeout", "3600s", "pymta keeps no TLS session cache"),
    _w("smtpd_starttls_timeout", "300s", "the handshake is bounded by smtpd_timeout"),
    _w(
        "smtpd_tls_received_header",
        "no",
        "pymta always records the TLS protocol and cipher in Received",
        "yes",
    ),
    _w("smtpd_tls_loglevel", "0", "pymta logs each TLS session's protocol and cipher"),
    _w("smtpd_sasl_local_domain", "", "pymta's SASL user names are the passdb's, unchanged"),
    # --- postscreen (pymta.postscreen does the tests before the greeting) --
    _r(
        "postscreen_pipelining_enable",
        "no",
        "postscreen's deep protocol tests (after the greeting) are not implemented",
    ),
    _r(
        "postscreen_non_smtp_command_enable",
        "no",
        "postscreen's deep protocol tests (after the greeting) are not implemented",
    ),
    _r(
        "postscreen_bare_newline_enable",
        "no",
        "postscreen's deep protocol tests (after the greeting) are not implemented",
    ),
    _w("postscreen_pipelining_action", "enforce", _DEEP),
    _w("postscreen_pipelining_ttl", "30d", _DEEP),
    _w("postscreen_non_smtp_command_action", "drop", _DEEP),
    _w("postscreen_non_smtp_command_ttl", "30d", _DEEP),
    _w("postscreen_bare_newline_action", "ignore", _DEEP),
    _w("postscreen_bare_newline_ttl", "30d", _DEEP),
    _w("postscreen_forbidden_commands", "$smtpd_forbidden_commands", _DEEP),
    _r(
        "postscreen_upstream_proxy_protocol",
        "",
        "postscreen cannot read the haproxy protocol: client addresses would be the proxy's",
    ),
    _w("postscreen_upstream_proxy_timeout", "5s", "no haproxy protocol"),
    _r(
        "postscreen_allowlist_interfaces",
        "static:all",
        "postscreen allowlists clients on every local address",
    ),
    _r(
        "postscreen_whitelist_interfaces",
        "static:all",
        "postscreen allowlists clients on every local address",
    ),
    _w(
        "postscreen_tls_security_level",
        "$smtpd_tls_security_level",
        "postscreen's refusing SMTP engine offers no STARTTLS (smtpd behind it does)",
    ),
    _w("postscreen_use_tls", "$smtpd_use_tls", "postscreen's refusing engine offers no STARTTLS"),
    _w(
        "postscreen_enforce_tls",
        "$smtpd_enforce_tls",
        "postscreen's refusing engine offers no STARTTLS",
    ),
    _w("postscreen_discard_ehlo_keywords", "$smtpd_discard_ehlo_keywords", "not implemented"),
    _w(
        "postscreen_discard_ehlo_keyword_address_maps",
        "$smtpd_discard_ehlo_keyword_address_maps",
        "not implemented",
    ),
    _w("postscreen_command_filter", "$smtpd_command_filter", "not implemented"),
    _w(
        "postscreen_expansion_filter",
        "$smtpd_expansion_filter",
        "postscreen's replies are fixed texts",
    ),
    _w("postscreen_reject_footer", "$smtpd_reject_footer", "postscreen's replies are fixed texts"),
    _w(
        "postscreen_reject_footer_maps",
        "$smtpd_reject_footer_maps",
        "postscreen's replies are fixed texts",
    ),
    _w("postscreen_pre_queue_limit", "$default_process_limit", _QUEUES),
    _w("postscreen_post_queue_limit", "$default_process_limit", _QUEUES),
    _w("postscreen_watchdog_timeout", "10s", "pymta's postscreen runs in the reactor"),
    _w("dnsblog_service_name", "dnsblog", _SERVICE),
    _w("tlsproxy_service_name", "tlsproxy", _SERVICE),
    # --- the smtp and lmtp clients ------------------------------------------
    _w("smtp_host_lookup", "dns", "pymta looks up hosts in DNS only"),
    _r("disable_dns_lookups", "no", "pymta looks up hosts in DNS only"),
    _w("smtp_address_preference", "any", "pymta tries addresses in the order DNS gives them"),
    _w("smtp_always_send_ehlo", "yes", "pymta always sends EHLO unless smtp_never_send_ehlo"),
    _w("smtp_line_length_limit", "998", "pymta sends lines as they were received"),
    _r("smtp_tls_wrappermode", "no", "pymta's smtp client has no implicit TLS"),
    _w("smtp_tls_CApath", "", "use smtp_tls_CAfile (or the system's trust store)"),
    _w("smtp_tls_loglevel", "0", "pymta logs each TLS session's protocol and cipher"),
    _w("smtp_tls_servername", "", "pymta sends no SNI name"),
    _w("smtp_tls_session_cache_database", "", "pymta keeps no TLS session cache"),
    _w("smtp_tls_note_starttls_offer", "no", "not implemented"),
    # --- queue manager --------------------------------------------------------
    _w("enable_long_queue_ids", "no", "pymta's queue ids have one form"),
    _w("hash_queue_names", "deferred, defer", "pymta's queues are not hashed"),
    _w("hash_queue_depth", "1", "pymta's queues are not hashed"),
    _w("confirm_delay_cleared", "no", "not implemented"),
    _w("qmgr_clog_warn_time", "300s", "not implemented"),
    _w("transport_retry_time", "60s", "not implemented"),
    _w("default_transport_rate_delay", "0s", _SCHEDULER),
    _w("default_recipient_limit", "20000", _SCHEDULER),
    _w("default_extra_recipient_limit", "1000", _SCHEDULER),
    _w("default_recipient_refill_limit", "100", _SCHEDULER),
    _w("default_recipient_refill_delay", "5s", _SCHEDULER),
    _w("default_delivery_slot_cost", "5", _SCHEDULER),
    _w("default_delivery_slot_loan", "3", _SCHEDULER),
    _w("default_delivery_slot_discount", "50", _SCHEDULER),
    _w("default_minimum_delivery_slots", "3", _SCHEDULER),
    _w("cleanup_service_name", "cleanup", _SERVICE),
    _w("bounce_service_name", "bounce", _SERVICE),
    _w("defer_service_name", "defer", _SERVICE),
    _w("trace_service_name", "trace", _SERVICE),
    _w("bounce_template_file", "", "pymta's DSN texts are built in"),
    _w("bounce_notice_recipient", "postmaster", "postmaster notices are not implemented"),
    _w("delay_notice_recipient", "postmaster", "postmaster notices are not implemented"),
    _w("error_notice_recipient", "postmaster", "postmaster notices are not implemented"),
    # --- local delivery -------------------------------------------------------
    _r("mailbox_command_maps", "", _LOCAL),
    _r("mailbox_transport_maps", "", _LOCAL),
    _r("fallback_transport_maps", "", _LOCAL),
    _w("local_command_shell", "", "commands run with /bin/sh -c"),
    _w("prepend_delivered_header", "command, file, forward", "not configurable"),
    _w("virtual_minimum_uid", "100", "pymta delivers as its own user"),
    Unimplemented(
        "virtual_uid_maps",
        "",
        REFUSE,
        "virtual mailboxes are written as pymta's own user",
        (),
        lambda value: _static_id(value) == os.geteuid(),
    ),
    Unimplemented(
        "virtual_gid_maps",
        "",
        REFUSE,
        "virtual mailboxes are written as pymta's own group",
        (),
        lambda value: _static_id(value) == os.getegid(),
    ),
    _w("authorized_mailq_users", "static:anyone", "file permissions decide who lists the queue"),
    _w("authorized_flush_users", "static:anyone", "file permissions decide who flushes"),
]

UNIMPLEMENTED: dict[str, Unimplemented] = {e.name: e for e in _ENTRIES}

#: Postfix's per-transport twins of the scheduler parameters above
#: (``smtp_recipient_limit`` of ``default_recipient_limit``).
SERVICE_SUFFIXES: dict[str, str] = {
    "_recipient_limit": "default_recipient_limit",
    "_extra_recipient_limit": "default_extra_recipient_limit",
    "_recipient_refill_limit": "default_recipient_refill_limit",
    "_recipient_refill_delay": "default_recipient_refill_delay",
    "_delivery_slot_cost": "default_delivery_slot_cost",
    "_delivery_slot_loan": "default_delivery_slot_loan",
    "_delivery_slot_discount": "default_delivery_slot_discount",
    "_minimum_delivery_slots": "default_minimum_delivery_slots",
    "_transport_rate_delay": "default_transport_rate_delay",
}


def lookup(name: str) -> Unimplemented | None:
    """The entry of name, or of the scheduler parameter a per-transport
    twin stands for (``relay_delivery_slot_cost``); None if pymta does not
    know name as unimplemented. ``_destination_recipient_limit`` is
    implemented and never matches ``_recipient_limit``."""
    entry = UNIMPLEMENTED.get(name)
    if entry is not None or name.endswith("_destination_recipient_limit"):
        return entry
    for suffix, base in SERVICE_SUFFIXES.items():
        if name.endswith(suffix) and len(name) > len(suffix):
            return UNIMPLEMENTED[base]
    return None


def judge(name: str, value: str) -> Unimplemented | None:
    """The entry of name when value is not harmless (None: nothing to say)."""
    entry = lookup(name)
    if entry is None or entry.is_harmless(value):
        return None
    return entry
