"""The table of every parameter pymta implements, with Postfix's defaults.

Mirrors Postfix's mail_params.h and ``postconf -d``. Each entry names the kind
of value (str, int, bool, time, size, list) so that an invalid setting is
caught at start with the expected form; ``postconf -d`` prints this table.
pymta-only parameters start with ``pymta_``, ``pop3d_`` or ``imapd_`` and
say "pymta:" in their meaning.

Where pymta's default differs from Postfix 3.7's compiled-in one it is the
newer Postfix default (e.g. ``smtpd_forbid_bare_newline = normalize`` as in
Postfix 3.9), or it drops Postfix's load-dependent ``${stress?...}`` form.

Service parameters: Postfix also knows ``<service><suffix>`` for every
master.cf service that runs a delivery agent (local, virtual, smtp, lmtp,
error, pipe) or spawn, e.g. ``relay_destination_concurrency_limit``, whose
default is ``$default_destination_concurrency_limit``. :data:`SERVICE_SUFFIXES`
lists them and :func:`service_parameters` makes their table entries.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

KINDS = ("str", "int", "bool", "time", "size", "list")


@dataclass(frozen=True)
class Param:
    """One parameter: its Postfix default, the kind of value, a one-line meaning."""

    name: str
    default: str
    kind: str  # "str" | "int" | "bool" | "time" | "size" | "list"
    doc: str
    time_unit: str = "s"  # default unit of a "time" value without a suffix


def _p(name: str, default: str, kind: str, doc: str, time_unit: str = "s") -> Param:
    return Param(name, default, kind, doc, time_unit)


_PARAMS: list[Param] = [
    # --- installation, identity, logging -------------------------------
    _p("config_directory", "/etc/postfix", "str", "where main.cf and master.cf live"),
    _p("queue_directory", "/var/spool/postfix", "str", "the root of the mail queue"),
    _p("data_directory", "/var/lib/postfix", "str", "where caches and generated keys live"),
    _p("myhostname", "", "str", "the fully-qualified name of this host (default: the system's)"),
    _p("mydomain", "", "str", "the domain of this host (default: myhostname less its first label)"),
    _p("myorigin", "$myhostname", "str", "the domain appended to bare local parts"),
    _p(
        "mydestination",
        "$myhostname, localhost.$mydomain, localhost",
        "list",
        "the domains delivered by the local transport",
    ),
    _p("mynetworks", "127.0.0.0/8 [::1]/128", "list", "trusted client networks"),
    _p("inet_interfaces", "all", "list", "addresses the SMTP listeners bind"),
    _p("inet_protocols", "all", "list", "ipv4, ipv6 or all"),
    _p("proxy_interfaces", "", "list", "addresses this host receives mail on through a proxy"),
    _p("mail_name", "Postfix", "str", "the mail system's name in banners and DSNs"),
    _p("syslog_name", "postfix", "str", "the name that prefixes every log line"),
    _p("maillog_file", "", "str", "file that receives mail log lines ('': only twistd's log)"),
    _p("service_name", "", "str", "the master.cf name of the running service (read-only)"),
    _p("process_name", "", "str", "the name of the running program (read-only)"),
    # --- master.cf services ----------------------------------------------
    _p("default_process_limit", "100", "int", "default maxproc of master.cf services"),
    _p("service_throttle_time", "60s", "time", "pause before restarting a failing service"),
    # --- address classes and rewriting -----------------------------------
    _p("default_database_type", "hash", "str", "table type of postmap and newaliases"),
    _p("alias_maps", "hash:/etc/aliases", "list", "tables that expand local addresses"),
    _p("alias_database", "hash:/etc/aliases", "list", "tables that newaliases rebuilds"),
    _p(
        "local_recipient_maps",
        "proxy:unix:passwd.byname $alias_maps",
        "list",
        "tables of the valid recipients in mydestination",
    ),
    _p("virtual_mailbox_domains", "$virtual_mailbox_maps", "list", "domains of virtual mailboxes"),
    _p(
        "virtual_mailbox_maps", "", "list", "user@domain to mailbox path under virtual_mailbox_base"
    ),
    _p("virtual_mailbox_base", "", "str", "prefix of virtual mailbox paths"),
    _p("virtual_alias_maps", "$virtual_maps", "list", "address to address(es) rewriting"),
    _p("virtual_maps", "", "list", "obsolete name of virtual_alias_maps"),
    _p("virtual_alias_domains", "$virtual_alias_maps", "list", "domains served only by aliases"),
    _p("virtual_alias_recursion_limit", "1000", "int", "depth limit of virtual alias expansion"),
    _p("virtual_alias_expansion_limit", "1000", "int", "how many addresses one alias may yield"),
    _p("relay_domains", "", "list", "domains this host relays to"),
    _p("relay_recipient_maps", "", "list", "tables of the valid recipients in relay_domains"),
    _p("relayhost", "", "str", "next hop for non-local mail"),
    _p("transport_maps", "", "list", "recipient or domain to transport:nexthop"),
    _p("local_transport", "local:$myhostname", "str", "transport for mydestination"),
    _p("virtual_transport", "virtual", "str", "transport for virtual_mailbox_domains"),
    _p("relay_transport", "relay", "str", "transport for relay_domains"),
    _p("default_transport", "smtp", "str", "transport for all other domains"),
    _p("sender_canonical_maps", "", "list", "rewriting of sender addresses"),
    _p("recipient_canonical_maps", "", "list", "rewriting of recipient addresses"),
    _p("canonical_maps", "", "list", "rewriting of sender and recipient addresses"),
    _p(
        "canonical_classes",
        "envelope_sender, envelope_recipient, header_sender, header_recipient",
        "list",
        "the addresses canonical_maps rewrites",
    ),
    _p(
        "sender_canonical_classes",
        "envelope_sender, header_sender",
        "list",
        "the addresses sender_canonical_maps rewrites",
    ),
    _p(
        "recipient_canonical_classes",
        "envelope_recipient, header_recipient",
        "list",
        "the addresses recipient_canonical_maps rewrites",
    ),
    _p("masquerade_domains", "", "list", "domains whose subdomains are hidden in addresses"),
    _p(
        "masquerade_classes",
        "envelope_sender, header_sender, header_recipient",
        "list",
        "the addresses masquerade_domains rewrites",
    ),
    _p("masquerade_exceptions", "", "list", "local parts never masqueraded"),
    _p(
        "local_header_rewrite_clients",
        "permit_inet_interfaces",
        "list",
        "clients whose message header addresses are rewritten",
    ),
    _p("recipient_delimiter", "", "str", "characters that separate user from extension"),
    _p("allow_percent_hack", "yes", "bool", "rewrite user%domain to user@domain"),
    _p("swap_bangpath", "yes", "bool", "rewrite site!user to user@site"),
    _p("append_dot_mydomain", "no", "bool", "append .$mydomain to host names"),
    _p("append_at_myorigin", "yes", "bool", "append @$myorigin to bare local parts"),
    _p("resolve_dequoted_address", "yes", "bool", "resolve after removing quotes"),
    _p(
        "propagate_unmatched_extensions",
        "canonical, virtual",
        "list",
        "where unmatched address extensions are kept",
    ),
    _p(
        "parent_domain_matches_subdomains",
        "debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,"
        "qmqpd_authorized_clients,relay_domains,smtpd_access_maps",
        "list",
        "features where a domain name also matches its subdomains",
    ),
    _p("owner_request_special", "yes", "bool", "owner-list aliases set the sender"),
    _p("double_bounce_sender", "double-bounce", "str", "sender of postmaster notices"),
    # --- size limits -------------------------------------------------------
    _p("message_size_limit", "10240000", "size", "largest message accepted, in bytes"),
    _p("header_size_limit", "102400", "size", "largest message header kept, in bytes"),
    _p("queue_minfree", "0", "size", "free bytes the queue file system must keep"),
    _p("line_length_limit", "2048", "int", "longest SMTP command line accepted"),
    _p("hopcount_limit", "50", "int", "Received headers before a mail loop is declared"),
    # --- cleanup: header/body checks, automatic BCC ------------------------
    _p("header_checks", "", "list", "tables of actions for the message's own headers"),
    _p("mime_header_checks", "$header_checks", "list", "tables of actions for MIME headers"),
    _p(
        "nested_header_checks",
        "$header_checks",
        "list",
        "tables of actions for the headers of attached messages",
    ),
    _p("body_checks", "", "list", "tables of actions for message body lines"),
    _p("body_checks_size_limit", "51200", "size", "bytes per body part that body_checks see"),
    _p("always_bcc", "", "str", "address that receives a copy of every message from outside"),
    _p("sender_bcc_maps", "", "list", "copy address by envelope sender"),
    _p("recipient_bcc_maps", "", "list", "copy address by envelope recipient"),
    # --- smtpd: the SMTP server --------------------------------------------
    _p("smtpd_banner", "$myhostname ESMTP $mail_name", "str", "text of the 220 greeting"),
    _p("smtpd_timeout", "300s", "time", "idle time before smtpd disconnects"),
    _p("smtpd_recipient_limit", "1000", "int", "recipients accepted per message"),
    _p("smtpd_recipient_restrictions", "", "list", "restrictions applied at RCPT TO"),
    _p(
        "smtpd_relay_restrictions",
        "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination",
        "list",
        "relay control applied at RCPT TO before smtpd_recipient_restrictions",
    ),
    _p("smtpd_client_restrictions", "", "list", "restrictions applied at connect"),
    _p("smtpd_helo_restrictions", "", "list", "restrictions applied at HELO/EHLO"),
    _p("smtpd_sender_restrictions", "", "list", "restrictions applied at MAIL FROM"),
    _p("smtpd_data_restrictions", "", "list", "restrictions applied at DATA"),
    _p("smtpd_end_of_data_restrictions", "", "list", "restrictions applied after the message"),
    _p("smtpd_restriction_classes", "", "list", "names of restriction groups defined in main.cf"),
    _p("smtpd_null_access_lookup_key", "<>", "str", "access map key of the null sender"),
    _p("smtpd_delay_reject", "yes", "bool", "wait until RCPT TO before rejecting"),
    _p("smtpd_helo_required", "no", "bool", "require HELO/EHLO before MAIL"),
    _p("strict_rfc821_envelopes", "no", "bool", "require <> around MAIL/RCPT addresses"),
    _p("smtpd_reject_unlisted_recipient", "yes", "bool", "reject unknown local/virtual users"),
    _p("smtpd_reject_unlisted_sender", "no", "bool", "reject unknown senders in our domains"),
    _p("smtpd_hard_error_limit", "20", "int", "errors before smtpd disconnects"),
    _p("smtpd_soft_error_limit", "10", "int", "errors before smtpd slows down"),
    _p("smtpd_error_sleep_time", "1s", "time", "delay before an error reply"),
    _p("smtpd_junk_command_limit", "100", "int", "NOOP/VRFY/RSET/ETRN before disconnect"),
    _p("smtpd_forbid_bare_newline", "normalize", "str", "no, normalize or reject bare LF"),
    _p(
        "smtpd_forbid_bare_newline_exclusions",
        "$mynetworks",
        "list",
        "clients exempt from smtpd_forbid_bare_newline",
    ),
    _p("smtpd_forbid_unauth_pipelining", "yes", "bool", "disconnect clients that pipeline early"),
    _p("smtpd_discard_ehlo_keywords", "", "list", "EHLO keywords not announced"),
    _p("disable_vrfy_command", "no", "bool", "reject VRFY"),
    _p("smtpd_client_connection_count_limit", "50", "int", "connections per client"),
    _p(
        "smtpd_client_connection_rate_limit",
        "0",
        "int",
        "connections per client and anvil_rate_time_unit (0: no limit)",
    ),
    _p(
        "smtpd_client_message_rate_limit",
        "0",
        "int",
        "MAIL commands per client and anvil_rate_time_unit (0: no limit)",
    ),
    _p(
        "smtpd_client_recipient_rate_limit",
        "0",
        "int",
        "RCPT commands per client and anvil_rate_time_unit (0: no limit)",
    ),
    _p(
        "smtpd_client_new_tls_session_rate_limit",
        "0",
        "int",
        "STARTTLS commands per client and anvil_rate_time_unit (0: no limit)",
    ),
    _p(
        "smtpd_client_auth_rate_limit",
        "0",
        "int",
        "AUTH commands per client and anvil_rate_time_unit (0: no limit)",
    ),
    _p("anvil_rate_time_unit", "60s", "time", "the time unit of the client rate limits"),
    _p(
        "smtpd_client_event_limit_exceptions",
        "$mynetworks",
        "list",
        "clients exempt from the connection and rate limits",
    ),
    _p("unknown_local_recipient_reject_code", "550", "int", "reply to unknown local users"),
    _p("unknown_virtual_mailbox_reject_code", "550", "int", "reply to unknown virtual users"),
    _p("unknown_relay_recipient_reject_code", "550", "int", "reply to unknown relay recipients"),
    _p("smtpd_peername_lookup", "yes", "bool", "look up the client name (forward-confirmed)"),
    _p("unknown_client_reject_code", "450", "int", "reply when the client has no (confirmed) name"),
    _p("unknown_hostname_reject_code", "450", "int", "reply when the HELO name is not in DNS"),
    _p(
        "unknown_address_reject_code",
        "450",
        "int",
        "reply when a sender/recipient domain is not in DNS",
    ),
    _p("invalid_hostname_reject_code", "501", "int", "reply to a HELO name with bad syntax"),
    _p("maps_rbl_reject_code", "554", "int", "reply to a client listed by a DNSBL"),
    _p("rbl_reply_maps", "", "list", "tables: DNSBL domain -> reply template"),
    _p("smtpd_policy_service_timeout", "100s", "time", "time limit of one policy query"),
    _p("smtpd_policy_service_try_limit", "2", "int", "tries of one policy query"),
    _p(
        "smtpd_policy_service_default_action",
        "451 4.3.5 Server configuration problem",
        "str",
        "the action when the policy service cannot answer",
    ),
    _p(
        "default_rbl_reply",
        "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using "
        "$rbl_domain${rbl_reason?; $rbl_reason}",
        "str",
        "reply template of DNSBL rejects",
    ),
    # --- postscreen (pymta.postscreen: screening before smtpd) -------------
    _p(
        "smtpd_service_name",
        "smtpd",
        "str",
        "the master.cf pass service postscreen hands clients to",
    ),
    _p(
        "postscreen_greet_wait",
        "6s",
        "time",
        "how long postscreen waits for a client to talk first",
    ),
    _p(
        "postscreen_greet_banner",
        "$smtpd_banner",
        "str",
        "text of postscreen's 220- teaser line ('': send none)",
    ),
    _p(
        "postscreen_greet_action",
        "ignore",
        "str",
        "a client that talks before its turn: ignore, enforce (550 to RCPT) or drop (521)",
    ),
    _p("postscreen_greet_ttl", "1d", "time", "how long a passed pregreet test is remembered"),
    _p(
        "postscreen_dnsbl_sites",
        "",
        "list",
        "DNS lists with result filters and weights: zen.example*3 list.example=127.0.0.2*2",
    ),
    _p("postscreen_dnsbl_threshold", "1", "int", "the DNSBL score that fails the DNSBL test"),
    _p(
        "postscreen_dnsbl_whitelist_threshold",
        "0",
        "int",
        "old name of postscreen_dnsbl_allowlist_threshold",
    ),
    _p(
        "postscreen_dnsbl_allowlist_threshold",
        "$postscreen_dnsbl_whitelist_threshold",
        "int",
        "a score at or below this (negative) value skips the other tests (0: off)",
    ),
    _p(
        "postscreen_dnsbl_action",
        "ignore",
        "str",
        "a client over the DNSBL threshold: ignore, enforce (550 to RCPT) or drop (521)",
    ),
    _p(
        "postscreen_dnsbl_reply_map",
        "",
        "str",
        "table: DNSBL domain -> the name postscreen's reply shows instead",
    ),
    _p("postscreen_dnsbl_timeout", "10s", "time", "time limit of one DNSBL query"),
    _p("postscreen_dnsbl_ttl", "1h", "time", "old name of postscreen_dnsbl_max_ttl"),
    _p("postscreen_dnsbl_min_ttl", "60s", "time", "the shortest time a DNSBL pass is remembered"),
    _p(
        "postscreen_dnsbl_max_ttl",
        "$postscreen_dnsbl_ttl",
        "time",
        "the longest time a DNSBL pass is remembered (answers without a TTL: this)",
    ),
    _p(
        "postscreen_access_list",
        "permit_mynetworks",
        "list",
        "permit_mynetworks and cidr: tables of permit, reject or dunno, tried first",
    ),
    _p(
        "postscreen_blacklist_action",
        "ignore",
        "str",
        "old name of postscreen_denylist_action",
    ),
    _p(
        "postscreen_denylist_action",
        "$postscreen_blacklist_action",
        "str",
        "a client the access list rejects: ignore, enforce (550 to RCPT) or drop (521)",
    ),
    _p(
        "postscreen_cache_map",
        "btree:$data_directory/postscreen_cache",
        "str",
        "the file of clients that passed (pymta's own text format; '': memory only)",
    ),
    _p(
        "postscreen_cache_retention_time",
        "7d",
        "time",
        "how long an expired client stays in the cache (then it is logged NEW again)",
    ),
    _p(
        "postscreen_cache_cleanup_interval",
        "12h",
        "time",
        "how often the cache file is rewritten without entries past retention (0: never)",
    ),
    _p(
        "postscreen_client_connection_count_limit",
        "$smtpd_client_connection_count_limit",
        "int",
        "connections one client may have open in postscreen at once",
    ),
    _p(
        "postscreen_command_count_limit",
        "20",
        "int",
        "commands postscreen's refusing SMTP engine takes before it hangs up",
    ),
    _p(
        "postscreen_command_time_limit",
        "300s",
        "time",
        "time limit of one command in postscreen's refusing SMTP engine",
    ),
    _p(
        "postscreen_helo_required",
        "$smtpd_helo_required",
        "bool",
        "postscreen's refusing SMTP engine wants HELO/EHLO before MAIL",
    ),
    _p(
        "postscreen_disable_vrfy_command",
        "$disable_vrfy_command",
        "bool",
        "postscreen's refusing SMTP engine refuses VRFY as disabled",
    ),
    # --- smtpd TLS and SASL ------------------------------------------------
    _p("smtpd_tls_security_level", "", "str", "none, may or encrypt"),
    _p("smtpd_use_tls", "no", "bool", "obsolete: smtpd_tls_security_level = may"),
    _p("smtpd_enforce_tls", "no", "bool", "obsolete: smtpd_tls_security_level = encrypt"),
    _p("smtpd_tls_wrappermode", "no", "bool", "TLS from the first byte (port 465)"),
    _p("smtpd_sasl_auth_enable", "no", "bool", "offer SMTP AUTH"),
    _p(
        "smtpd_sasl_type",
        "pymta",
        "str",
        "SASL server: pymta (the passdb of pymta_passdb; Postfix's default is cyrus) or dovecot",
    ),
    _p(
        "smtpd_sasl_path",
        "smtpd",
        "str",
        "Dovecot auth socket: inet:host:port, or a path (relative: to queue_directory)",
    ),
    _p(
        "smtpd_tls_auth_only",
        "yes",
        "bool",
        "offer AUTH only over TLS (pymta's default; Postfix's is no)",
    ),
    _p("smtpd_sasl_security_options", "noanonymous", "list", "SASL mechanisms refused"),
    _p(
        "smtpd_sasl_tls_security_options",
        "$smtpd_sasl_security_options",
        "list",
        "SASL mechanisms refused over TLS",
    ),
    _p("smtpd_sasl_authenticated_header", "no", "bool", "put the SASL login in Received"),
    _p("smtpd_sasl_exceptions_networks", "", "list", "clients not offered AUTH"),
    _p("broken_sasl_auth_clients", "no", "bool", "also announce AUTH=mechanisms"),
    _p("smtpd_sender_login_maps", "", "list", "sender address to the logins that may use it"),
    _p("smtpd_tls_cert_file", "", "str", "PEM certificate of smtpd"),
    _p("smtpd_tls_key_file", "$smtpd_tls_cert_file", "str", "PEM private key of smtpd"),
    _p("smtpd_tls_eccert_file", "", "str", "PEM ECDSA certificate of smtpd, next to the RSA one"),
    _p("smtpd_tls_eckey_file", "$smtpd_tls_eccert_file", "str", "PEM ECDSA private key of smtpd"),
    _p(
        "smtpd_tls_chain_files",
        "",
        "list",
        "PEM files of keys each followed by its certificate chain (replaces cert/key files)",
    ),
    _p("smtpd_tls_ask_ccert", "no", "bool", "ask TLS clients for a certificate"),
    _p(
        "smtpd_tls_req_ccert",
        "no",
        "bool",
        "at level encrypt, end sessions without a trusted client certificate (421 4.7.1)",
    ),
    _p("smtpd_tls_CAfile", "", "str", "CAs that client certificates are verified against"),
    _p(
        "smtpd_tls_fingerprint_digest",
        "sha256",
        "str",
        "digest of client certificate fingerprints (md5 before Postfix 3.6)",
    ),
    _p(
        "relay_clientcerts",
        "",
        "list",
        "client certificate fingerprints permit_tls_clientcerts permits",
    ),
    _p("tls_server_sni_maps", "", "str", "TLS SNI name to chain files (a certificate per name)"),
    _p(
        "smtpd_tls_protocols",
        ">=TLSv1",
        "list",
        "TLS protocols at opportunistic TLS (pymta offers TLSv1.2 and TLSv1.3 at most)",
    ),
    _p(
        "smtpd_tls_mandatory_protocols",
        ">=TLSv1",
        "list",
        "TLS protocols at smtpd_tls_security_level = encrypt",
    ),
    _p("smtpd_tls_ciphers", "medium", "str", "cipher grade at opportunistic TLS (TLS 1.2)"),
    _p("smtpd_tls_mandatory_ciphers", "medium", "str", "cipher grade at mandatory TLS (TLS 1.2)"),
    _p("smtpd_tls_exclude_ciphers", "", "list", "ciphers never used (TLS 1.2)"),
    _p(
        "smtpd_tls_mandatory_exclude_ciphers",
        "",
        "list",
        "ciphers also excluded at mandatory TLS (TLS 1.2)",
    ),
    _p(
        "tls_high_cipherlist", "aNULL:-aNULL:HIGH:@STRENGTH", "str", "OpenSSL ciphers of grade high"
    ),
    _p(
        "tls_medium_cipherlist",
        "aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH",
        "str",
        "OpenSSL ciphers of grade medium",
    ),
    _p(
        "tls_low_cipherlist",
        "aNULL:-aNULL:HIGH:MEDIUM:LOW:+RC4:@STRENGTH",
        "str",
        "OpenSSL ciphers of grade low (OpenSSL 3 has no LOW ciphers)",
    ),
    _p(
        "tls_export_cipherlist",
        "aNULL:-aNULL:HIGH:MEDIUM:LOW:EXPORT:+RC4:@STRENGTH",
        "str",
        "OpenSSL ciphers of grade export (OpenSSL 3 has no EXPORT ciphers)",
    ),
    # --- smtp: the SMTP client ----------------------------------------------
    _p("smtp_helo_name", "$myhostname", "str", "name sent in EHLO/HELO"),
    _p("smtp_bind_address", "", "str", "local IPv4 address of outgoing connections"),
    _p("smtp_bind_address6", "", "str", "local IPv6 address of outgoing connections"),
    _p("smtp_connect_timeout", "30s", "time", "time limit of a TCP connection"),
    _p("smtp_helo_timeout", "300s", "time", "time limit of the greeting and EHLO reply"),
    _p("smtp_mail_timeout", "300s", "time", "time limit of the MAIL FROM reply"),
    _p("smtp_rcpt_timeout", "300s", "time", "time limit of the RCPT TO reply"),
    _p("smtp_data_init_timeout", "120s", "time", "time limit of the DATA reply"),
    _p("smtp_data_xfer_timeout", "180s", "time", "time limit of sending the message"),
    _p("smtp_data_done_timeout", "600s", "time", "time limit of the final reply"),
    _p("smtp_quit_timeout", "300s", "time", "time limit of the QUIT reply"),
    _p("smtp_starttls_timeout", "300s", "time", "time limit of the TLS handshake"),
    _p("smtp_mx_address_limit", "5", "int", "MX addresses tried per delivery"),
    _p("smtp_mx_session_limit", "2", "int", "SMTP sessions tried per delivery"),
    _p("smtp_skip_5xx_greeting", "yes", "bool", "try the next MX after a 5xx greeting"),
    _p("smtp_never_send_ehlo", "no", "bool", "send HELO only"),
    _p("smtp_connection_cache_on_demand", "yes", "bool", "reuse connections under load"),
    _p("smtp_connection_cache_destinations", "", "list", "destinations whose connections are kept"),
    _p("smtp_connection_cache_time_limit", "2s", "time", "how long an idle connection is kept"),
    _p("smtp_connection_reuse_count_limit", "0", "int", "messages per connection (0: no limit)"),
    _p("smtp_connection_reuse_time_limit", "300s", "time", "age limit of a reused connection"),
    _p("smtp_tcp_port", "smtp", "str", "port of next hops without one"),
    _p("smtp_rset_timeout", "20s", "time", "time limit of the RSET reply"),
    _p(
        "pymta_dns_servers",
        "",
        "list",
        "pymta: DNS servers (host, host:port, [v6]:port) of the SMTP client ('': /etc/resolv.conf)",
    ),
    _p(
        "smtp_tls_security_level",
        "",
        "str",
        "none, may, encrypt, fingerprint, verify, secure, dane or dane-only "
        "(pymta: '' without smtp_use_tls means may)",
    ),
    _p(
        "smtp_dns_support_level",
        "",
        "str",
        "enabled, or dnssec: believe the AD bit of a loopback validating resolver (DANE)",
    ),
    _p("smtp_tls_cert_file", "", "str", "PEM client certificate (then its chain) shown to servers"),
    _p("smtp_tls_key_file", "$smtp_tls_cert_file", "str", "PEM private key of smtp_tls_cert_file"),
    _p(
        "smtp_tls_chain_files",
        "",
        "list",
        "PEM files with the client's key and certificate chain (replaces cert/key_file)",
    ),
    _p(
        "smtp_tls_fingerprint_digest",
        "sha256",
        "str",
        "digest of server certificate fingerprints at level fingerprint",
    ),
    _p(
        "smtp_tls_fingerprint_cert_match",
        "",
        "list",
        "server certificate (or public key) fingerprints accepted at level fingerprint",
    ),
    _p("smtp_use_tls", "no", "bool", "obsolete: smtp_tls_security_level = may"),
    _p("smtp_enforce_tls", "no", "bool", "obsolete: smtp_tls_security_level = encrypt"),
    _p("smtp_tls_CAfile", "", "str", "CA certificates for server verification"),
    _p("smtp_tls_protocols", ">=TLSv1", "list", "TLS protocols at level may (TLSv1.2+)"),
    _p(
        "smtp_tls_mandatory_protocols",
        ">=TLSv1",
        "list",
        "TLS protocols at levels encrypt, verify and secure (TLSv1.2+)",
    ),
    _p("smtp_tls_ciphers", "medium", "str", "cipher grade at level may (TLS 1.2)"),
    _p("smtp_tls_mandatory_ciphers", "medium", "str", "cipher grade at mandatory TLS"),
    _p("smtp_tls_exclude_ciphers", "", "list", "ciphers never used (TLS 1.2)"),
    _p(
        "smtp_tls_mandatory_exclude_ciphers",
        "",
        "list",
        "ciphers also excluded at mandatory TLS (TLS 1.2)",
    ),
    _p("smtp_tls_policy_maps", "", "list", "TLS security level per destination"),
    _p("smtp_tls_verify_cert_match", "hostname", "list", "names matched at level verify"),
    _p(
        "smtp_tls_secure_cert_match",
        "nexthop, dot-nexthop",
        "list",
        "names matched at level secure",
    ),
    _p("smtp_sasl_auth_enable", "no", "bool", "authenticate to the server"),
    _p("smtp_sasl_password_maps", "", "list", "destination to user:password"),
    _p(
        "smtp_sasl_security_options", "noplaintext, noanonymous", "list", "SASL mechanisms not used"
    ),
    _p(
        "smtp_sasl_tls_security_options",
        "$smtp_sasl_security_options",
        "list",
        "SASL mechanisms not used over TLS",
    ),
    _p(
        "pymta_smtp_sasl_cleartext",
        "no",
        "bool",
        "pymta: let the SMTP client send a PLAIN/LOGIN password without TLS",
    ),
    _p(
        "pymta_mta_sts",
        "no",
        "bool",
        "pymta: MTA-STS (RFC 8461) for the smtp client: enforce or test the policies of "
        "recipient domains",
    ),
    _p(
        "pymta_mta_sts_cache_file",
        "$data_directory/mta_sts_cache",
        "str",
        "pymta: the file that keeps MTA-STS policies across restarts",
    ),
    _p("pymta_mta_sts_cache_size", "10000", "int", "pymta: MTA-STS policies kept (domains)"),
    _p(
        "pymta_mta_sts_timeout",
        "10s",
        "time",
        "pymta: time limit of one MTA-STS policy fetch (DNS, HTTPS, body)",
    ),
    _p("lmtp_connect_timeout", "0s", "time", "time limit of an LMTP connection"),
    # --- mail authentication (pymta.mailauth; Postfix uses milters) ---
    _p(
        "pymta_mailauth_verify",
        "no",
        "bool",
        "pymta: check SPF, DKIM and DMARC of mail from outside mynetworks and add "
        "Authentication-Results",
    ),
    _p(
        "pymta_mailauth_dmarc_reject",
        "no",
        "bool",
        "pymta: reject at end of DATA (550 5.7.1) mail failing DMARC under p=reject",
    ),
    _p("pymta_mailauth_dns_timeout", "5s", "time", "pymta: limit of one SPF/DKIM/DMARC lookup"),
    _p("pymta_mailauth_concurrency", "4", "int", "pymta: messages verified or signed at once"),
    _p(
        "pymta_dkim_key_table",
        "",
        "str",
        "pymta: OpenDKIM KeyTable file: KEYNAME DOMAIN:SELECTOR:KEYFILE",
    ),
    _p(
        "pymta_dkim_signing_table",
        "",
        "str",
        "pymta: OpenDKIM SigningTable file ([refile:]path): From PATTERN KEYNAME",
    ),
    _p(
        "pymta_arc_key",
        "",
        "str",
        "pymta: DOMAIN:SELECTOR:KEYFILE (RSA) that ARC-seals verified mail forwarded by .forward",
    ),
    # --- SRS (pymta.rewrite.srs, pymta.cleanup.srs; Postfix sites use postsrsd) ---
    _p(
        "pymta_srs_domain",
        "",
        "str",
        "pymta: the domain of SRS addresses (one we receive mail for); empty: no SRS",
    ),
    _p(
        "pymta_srs_secrets",
        "",
        "str",
        "pymta: postsrsd's secrets file: one secret per line, the first signs",
    ),
    _p(
        "pymta_srs_exclude_domains",
        "",
        "list",
        "pymta: sender domains (and their subdomains) never rewritten to SRS",
    ),
    _p("pymta_srs_max_age", "21", "int", "pymta: days an SRS0 address reverses"),
    # --- milters (pymta.milter; Postfix's MILTER_README) ---------------------
    _p("smtpd_milters", "", "list", "milters asked at each SMTP stage of mail from smtpd"),
    _p("non_smtpd_milters", "", "list", "milters asked about mail that does not come from smtpd"),
    _p(
        "milter_default_action",
        "tempfail",
        "str",
        "what a milter that is down or fails means: accept, reject, tempfail or quarantine",
    ),
    _p("milter_protocol", "6", "str", "the milter protocol version offered: 2, 3, 4 or 6"),
    _p("milter_connect_timeout", "30s", "time", "time limit of connecting to a milter"),
    _p("milter_command_timeout", "30s", "time", "time limit of a milter's answer to a command"),
    _p(
        "milter_content_timeout",
        "300s",
        "time",
        "time limit of a milter's answer to a header, body chunk or end of message",
    ),
    _p(
        "milter_connect_macros",
        "j {daemon_name} {daemon_addr} v _",
        "str",
        "macros sent with the connect event",
    ),
    _p(
        "milter_helo_macros",
        "{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}",
        "str",
        "macros sent with HELO/EHLO",
    ),
    _p(
        "milter_mail_macros",
        "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}",
        "str",
        "macros sent with MAIL FROM",
    ),
    _p(
        "milter_rcpt_macros",
        "i {rcpt_addr} {rcpt_host} {rcpt_mailer}",
        "str",
        "macros sent with RCPT TO",
    ),
    _p("milter_data_macros", "i", "str", "macros sent with DATA"),
    _p("milter_end_of_header_macros", "i", "str", "macros sent at the end of the headers"),
    _p("milter_end_of_data_macros", "i", "str", "macros sent at the end of the message"),
    _p("milter_macro_daemon_name", "$myhostname", "str", "the {daemon_name} macro"),
    _p("milter_macro_v", "$mail_name", "str", "the v macro (Postfix: $mail_name $mail_version)"),
    # --- lmtp: the same client with LHLO (Postfix's lmtp_* twins) --------------
    _p("lmtp_lhlo_name", "$myhostname", "str", "name sent in LHLO"),
    _p("lmtp_lhlo_timeout", "300s", "time", "time limit of the greeting and LHLO reply"),
    _p("lmtp_starttls_timeout", "300s", "time", "time limit of the TLS handshake"),
    _p("lmtp_mail_timeout", "300s", "time", "time limit of the MAIL FROM reply"),
    _p("lmtp_rcpt_timeout", "300s", "time", "time limit of the RCPT TO reply"),
    _p("lmtp_data_init_timeout", "120s", "time", "time limit of the DATA reply"),
    _p("lmtp_data_xfer_timeout", "180s", "time", "time limit of sending the message"),
    _p("lmtp_data_done_timeout", "600s", "time", "time limit of the final replies"),
    _p("lmtp_rset_timeout", "20s", "time", "time limit of the RSET reply"),
    _p("lmtp_quit_timeout", "300s", "time", "time limit of the QUIT reply"),
    _p("lmtp_mx_address_limit", "5", "int", "addresses tried per delivery"),
    _p("lmtp_mx_session_limit", "2", "int", "LMTP sessions tried per delivery"),
    _p("lmtp_skip_5xx_greeting", "yes", "bool", "try the next host after a 5xx greeting"),
    _p("lmtp_tcp_port", "24", "str", "port of next hops without one"),
    _p("lmtp_bind_address", "", "str", "local IPv4 address of outgoing connections"),
    _p("lmtp_bind_address6", "", "str", "local IPv6 address of outgoing connections"),
    _p("lmtp_connection_cache_on_demand", "yes", "bool", "reuse connections under load"),
    _p("lmtp_connection_cache_destinations", "", "list", "destinations whose connections are kept"),
    _p("lmtp_connection_cache_time_limit", "2s", "time", "how long an idle connection is kept"),
    _p("lmtp_connection_reuse_count_limit", "0", "int", "messages per connection (0: no limit)"),
    _p("lmtp_connection_reuse_time_limit", "300s", "time", "age limit of a reused connection"),
    _p(
        "lmtp_tls_security_level",
        "",
        "str",
        "none, may, encrypt, fingerprint, verify or secure",
    ),
    _p("lmtp_tls_cert_file", "", "str", "PEM client certificate (then its chain) shown to servers"),
    _p("lmtp_tls_key_file", "$lmtp_tls_cert_file", "str", "PEM private key of lmtp_tls_cert_file"),
    _p(
        "lmtp_tls_chain_files",
        "",
        "list",
        "PEM files with the client's key and certificate chain (replaces cert/key_file)",
    ),
    _p(
        "lmtp_tls_fingerprint_digest",
        "sha256",
        "str",
        "digest of server certificate fingerprints at level fingerprint",
    ),
    _p(
        "lmtp_tls_fingerprint_cert_match",
        "",
        "list",
        "server certificate (or public key) fingerprints accepted at level fingerprint",
    ),
    _p("lmtp_use_tls", "no", "bool", "obsolete: lmtp_tls_security_level = may"),
    _p("lmtp_enforce_tls", "no", "bool", "obsolete: lmtp_tls_security_level = encrypt"),
    _p("lmtp_tls_CAfile", "", "str", "CA certificates for server verification"),
    _p("lmtp_tls_protocols", ">=TLSv1", "list", "TLS protocols at level may (TLSv1.2+)"),
    _p(
        "lmtp_tls_mandatory_protocols",
        ">=TLSv1",
        "list",
        "TLS protocols at levels encrypt, verify and secure (TLSv1.2+)",
    ),
    _p("lmtp_tls_ciphers", "medium", "str", "cipher grade at level may (TLS 1.2)"),
    _p("lmtp_tls_mandatory_ciphers", "medium", "str", "cipher grade at mandatory TLS"),
    _p("lmtp_tls_exclude_ciphers", "", "list", "ciphers never used (TLS 1.2)"),
    _p(
        "lmtp_tls_mandatory_exclude_ciphers",
        "",
        "list",
        "ciphers also excluded at mandatory TLS (TLS 1.2)",
    ),
    _p("lmtp_tls_policy_maps", "", "list", "TLS security level per destination"),
    _p("lmtp_tls_verify_cert_match", "hostname", "list", "names matched at level verify"),
    _p("lmtp_tls_secure_cert_match", "nexthop", "list", "names matched at level secure"),
    _p("lmtp_sasl_auth_enable", "no", "bool", "authenticate to the server"),
    _p("lmtp_sasl_password_maps", "", "list", "destination to user:password"),
    _p(
        "lmtp_sasl_security_options", "noplaintext, noanonymous", "list", "SASL mechanisms not used"
    ),
    _p(
        "lmtp_sasl_tls_security_options",
        "$lmtp_sasl_security_options",
        "list",
        "SASL mechanisms not used over TLS",
    ),
    # --- queue and qmgr -------------------------------------------------------
    _p("minimal_backoff_time", "300s", "time", "least time between delivery attempts"),
    _p("maximal_backoff_time", "4000s", "time", "most time between delivery attempts"),
    _p("queue_run_delay", "300s", "time", "how often the deferred queue is scanned"),
    _p("maximal_queue_lifetime", "5d", "time", "how long deferred mail is kept", "d"),
    _p("bounce_queue_lifetime", "5d", "time", "how long a deferred bounce is kept", "d"),
    _p("delay_warning_time", "0h", "time", "when to send a delay notice (0: never)", "h"),
    _p("defer_transports", "", "list", "transports whose mail is held until flushed"),
    _p("qmgr_message_active_limit", "20000", "int", "messages in the active queue at most"),
    _p(
        "qmgr_message_recipient_limit",
        "20000",
        "int",
        "recipients of active messages in memory at most",
    ),
    _p("initial_destination_concurrency", "5", "int", "first concurrency per destination"),
    _p("default_destination_concurrency_limit", "20", "int", "parallel deliveries per destination"),
    _p("default_destination_recipient_limit", "50", "int", "recipients per delivery"),
    _p(
        "default_destination_concurrency_positive_feedback",
        "1",
        "str",
        "concurrency increase after a success",
    ),
    _p(
        "default_destination_concurrency_negative_feedback",
        "1",
        "str",
        "concurrency decrease after a failure",
    ),
    _p(
        "default_destination_concurrency_failed_cohort_limit",
        "1",
        "int",
        "failed sessions before a destination is throttled",
    ),
    _p("default_destination_rate_delay", "0s", "time", "pause between deliveries per destination"),
    _p("local_destination_concurrency_limit", "2", "int", "parallel local deliveries per user"),
    _p("local_destination_recipient_limit", "1", "int", "recipients per local delivery"),
    _p("command_time_limit", "1000s", "time", "time limit of delivery to a command"),
    # --- bounce ----------------------------------------------------------------
    _p("notify_classes", "resource, software", "list", "problems reported to postmaster"),
    _p("2bounce_notice_recipient", "postmaster", "str", "recipient of undeliverable bounces"),
    _p("bounce_size_limit", "50000", "size", "how much of the original a bounce returns"),
    # --- local and virtual delivery -------------------------------------------
    _p("allow_mail_to_commands", "alias, forward", "list", "where |command delivery is allowed"),
    _p("allow_mail_to_files", "alias, forward", "list", "where /file delivery is allowed"),
    _p("mail_spool_directory", "/var/mail", "str", "where local(8) writes Unix users' mbox files"),
    _p("home_mailbox", "", "str", "mailbox relative to the user's home (Maildir/ ends in /)"),
    _p("mailbox_command", "", "str", "command that delivers to Unix users' mailboxes"),
    _p("mailbox_transport", "", "str", "transport[:nexthop] for Unix users' mailboxes"),
    _p("fallback_transport", "", "str", "transport[:nexthop] for recipients not in passwd"),
    _p("luser_relay", "", "str", "address that receives mail for unknown local users"),
    _p(
        "forward_path",
        "$home/.forward${recipient_delimiter}${extension}, $home/.forward",
        "str",
        ".forward files local(8) looks for, first found wins",
    ),
    _p("default_privs", "nobody", "str", "user that alias commands and files run as"),
    _p("mailbox_delivery_lock", "fcntl, dotlock", "list", "how local(8) locks mbox files"),
    _p("mailbox_size_limit", "51200000", "size", "largest mbox file local(8) writes (0: none)"),
    _p("virtual_mailbox_limit", "51200000", "size", "largest mbox file the virtual agent writes"),
    _p("virtual_mailbox_lock", "fcntl, dotlock", "list", "how mbox files are locked"),
    _p(
        "virtual_destination_concurrency_limit",
        "$default_destination_concurrency_limit",
        "int",
        "parallel virtual deliveries",
    ),
    _p(
        "virtual_destination_recipient_limit",
        "$default_destination_recipient_limit",
        "int",
        "recipients per virtual delivery",
    ),
    # --- submission and queue commands ---------------------------------------
    _p("smtputf8_enable", "yes", "bool", "offer SMTPUTF8"),
    _p(
        "authorized_submit_users",
        "static:anyone",
        "list",
        "users who may submit mail with sendmail (names, !name, /file, type:table)",
    ),
    _p(
        "pymta_maildrop_count_limit",
        "10000",
        "int",
        "pymta: maildrop files beyond which pickup warns and sendmail refuses (0: no limit)",
    ),
    _p(
        "pymta_pickup_concurrency",
        "16",
        "int",
        "pymta: maildrop files pickup reads and hands to cleanup at once",
    ),
    # --- pymta only ------------------------------------------------------------
    _p(
        "pymta_sync_method",
        "syncfs",
        "str",
        "pymta: how group commit makes files durable: syncfs (one sync per batch;"
        " a batch of one write fsyncs it) or fsync (every file and directory)",
    ),
    _p(
        "pymta_queue_intake_log_size",
        "16777216",
        "size",
        "pymta: bytes of the queue's intake log, which makes an accepted message durable"
        " without a journal commit (0: off; used only when one reactor process serves the queue)",
    ),
    _p(
        "pymta_queue_intake_checkpoint_time",
        "1s",
        "time",
        "pymta: the age of the intake log's oldest record at which a syncfs of the queue"
        " makes its files durable and frees the log",
    ),
    _p(
        "pymta_mailbox_sync_delay",
        "10ms",
        "time",
        "pymta: how long a mailbox write may wait for others to share its sync",
    ),
    _p(
        "pymta_processes",
        "1",
        "int",
        "pymta: reactor processes sharing the listening sockets and the queue (0: one per CPU)",
    ),
    _p(
        "pymta_listen_backlog",
        "0",
        "int",
        "pymta: listen queue of an inet service (0: the kernel's net.core.somaxconn)",
    ),
    _p(
        "pymta_tls_create_self_signed",
        "no",
        "bool",
        "pymta: make a self-signed smtpd_tls_cert_file/key_file on start when missing",
    ),
    _p(
        "pymta_passdb",
        "passwd-file:$config_directory/passwd",
        "str",
        "pymta: the password database of POP3, IMAP and SMTP AUTH (Dovecot passwd-file)",
    ),
    _p(
        "pymta_auth_failure_delay",
        "2s",
        "time",
        "pymta: delay of a failed login's reply, and the first penalty before the next check",
    ),
    _p(
        "pymta_auth_failure_max_delay",
        "15s",
        "time",
        "pymta: longest penalty before the next check of a client or user that failed",
    ),
    _p(
        "pymta_auth_client_concurrency_limit",
        "10",
        "int",
        "pymta: login attempts of one client in progress at a time; more are refused",
    ),
    _p(
        "pymta_auth_client_ipv4_prefix_length",
        "32",
        "int",
        "pymta: the IPv4 network a client counts as for login penalties",
    ),
    _p(
        "pymta_auth_client_ipv6_prefix_length",
        "64",
        "int",
        "pymta: the IPv6 network a client counts as for login penalties",
    ),
    _p("pop3d_timeout", "600s", "time", "pymta: idle time before pop3d disconnects"),
    _p("pop3d_enable_apop", "no", "bool", "pymta: offer APOP (works only for PLAIN/CLEAR users)"),
    _p(
        "pop3d_no_flag_updates",
        "no",
        "bool",
        "pymta: as Dovecot's pop3_no_flag_updates: yes leaves messages in new/ and not \\Seen",
    ),
    _p(
        "pop3d_auth_attempt_limit",
        "3",
        "int",
        "pymta: failed logins before pop3d closes the session",
    ),
    _p(
        "smtpd_forbidden_commands",
        "CONNECT, GET, POST",
        "list",
        "commands that end the SMTP session at once (HTTP proxies, web clients)",
    ),
    _p(
        "unknown_virtual_alias_reject_code",
        "550",
        "int",
        "reply code for a recipient in a virtual alias domain that has no alias",
    ),
    _p("pop3d_hard_error_limit", "10", "int", "pymta: bad commands before pop3d disconnects"),
    _p("pop3d_line_length_limit", "2048", "int", "pymta: longest POP3 command line accepted"),
    _p(
        "pop3d_tls_security_level",
        "$smtpd_tls_security_level",
        "str",
        "pymta: none, may (offer STLS) or encrypt (require it before login)",
    ),
    _p("pop3d_tls_cert_file", "$smtpd_tls_cert_file", "str", "pymta: PEM certificate of pop3d"),
    _p("pop3d_tls_key_file", "$smtpd_tls_key_file", "str", "pymta: PEM private key of pop3d"),
    _p(
        "pop3d_tls_chain_files",
        "$smtpd_tls_chain_files",
        "list",
        "pymta: pop3d's smtpd_tls_chain_files",
    ),
    _p(
        "pop3d_tls_protocols",
        "$smtpd_tls_protocols",
        "list",
        "pymta: pop3d's smtpd_tls_protocols",
    ),
    _p(
        "pop3d_tls_mandatory_protocols",
        "$smtpd_tls_mandatory_protocols",
        "list",
        "pymta: pop3d's smtpd_tls_mandatory_protocols",
    ),
    _p(
        "pop3d_tls_ciphers",
        "$smtpd_tls_ciphers",
        "str",
        "pymta: pop3d's smtpd_tls_ciphers",
    ),
    _p(
        "pop3d_tls_mandatory_ciphers",
        "$smtpd_tls_mandatory_ciphers",
        "str",
        "pymta: pop3d's smtpd_tls_mandatory_ciphers",
    ),
    _p(
        "pop3d_tls_exclude_ciphers",
        "$smtpd_tls_exclude_ciphers",
        "list",
        "pymta: pop3d's smtpd_tls_exclude_ciphers",
    ),
    _p(
        "pop3d_tls_mandatory_exclude_ciphers",
        "$smtpd_tls_mandatory_exclude_ciphers",
        "list",
        "pymta: pop3d's smtpd_tls_mandatory_exclude_ciphers",
    ),
    _p(
        "pop3d_plaintext_auth_networks",
        "$mynetworks",
        "list",
        "pymta: clients that may log in without TLS (loopback always may)",
    ),
    _p("imapd_timeout", "1800s", "time", "pymta: idle time before imapd disconnects"),
    _p("imapd_hard_error_limit", "10", "int", "pymta: bad commands before imapd disconnects"),
    _p("imapd_line_length_limit", "65536", "int", "pymta: longest IMAP command line accepted"),
    _p(
        "imapd_tls_security_level",
        "$smtpd_tls_security_level",
        "str",
        "pymta: none, may (offer STARTTLS) or encrypt (require it before login)",
    ),
    _p("pop3d_tls_wrappermode", "no", "bool", "pymta: TLS from the first byte (port 995)"),
    _p("imapd_tls_wrappermode", "no", "bool", "pymta: TLS from the first byte (port 993)"),
    _p("imapd_tls_cert_file", "$smtpd_tls_cert_file", "str", "pymta: PEM certificate of imapd"),
    _p("imapd_tls_key_file", "$smtpd_tls_key_file", "str", "pymta: PEM private key of imapd"),
    _p(
        "imapd_tls_chain_files",
        "$smtpd_tls_chain_files",
        "list",
        "pymta: imapd's smtpd_tls_chain_files",
    ),
    _p(
        "imapd_tls_protocols",
        "$smtpd_tls_protocols",
        "list",
        "pymta: imapd's smtpd_tls_protocols",
    ),
    _p(
        "imapd_tls_mandatory_protocols",
        "$smtpd_tls_mandatory_protocols",
        "list",
        "pymta: imapd's smtpd_tls_mandatory_protocols",
    ),
    _p(
        "imapd_tls_ciphers",
        "$smtpd_tls_ciphers",
        "str",
        "pymta: imapd's smtpd_tls_ciphers",
    ),
    _p(
        "imapd_tls_mandatory_ciphers",
        "$smtpd_tls_mandatory_ciphers",
        "str",
        "pymta: imapd's smtpd_tls_mandatory_ciphers",
    ),
    _p(
        "imapd_tls_exclude_ciphers",
        "$smtpd_tls_exclude_ciphers",
        "list",
        "pymta: imapd's smtpd_tls_exclude_ciphers",
    ),
    _p(
        "imapd_tls_mandatory_exclude_ciphers",
        "$smtpd_tls_mandatory_exclude_ciphers",
        "list",
        "pymta: imapd's smtpd_tls_mandatory_exclude_ciphers",
    ),
    _p(
        "imapd_plaintext_auth_networks",
        "$mynetworks",
        "list",
        "pymta: clients that may log in without TLS (loopback always may)",
    ),
    _p(
        "imapd_login_timeout",
        "60s",
        "time",
        "pymta: idle time before login before imapd disconnects",
    ),
    _p(
        "imapd_max_literal_size",
        "$message_size_limit",
        "int",
        "pymta: largest IMAP literal (APPEND message), refused before it is read",
    ),
    _p(
        "imapd_max_login_ip_connections",
        "20",
        "int",
        "pymta: connections not logged in yet from one client address (0: no limit)",
    ),
    _p(
        "imapd_max_userip_connections",
        "10",
        "int",
        "pymta: logged-in IMAP sessions of one user from one address (Dovecot's "
        "mail_max_userip_connections; 0: no limit)",
    ),
    _p(
        "pop3d_max_userip_connections",
        "10",
        "int",
        "pymta: logged-in POP3 sessions of one user from one address (Dovecot's "
        "mail_max_userip_connections; 0: no limit)",
    ),
    _p(
        "pop3d_max_login_ip_connections",
        "20",
        "int",
        "pymta: connections not logged in yet from one client address (0: no limit)",
    ),
    _p(
        "imapd_auth_attempt_limit",
        "3",
        "int",
        "pymta: failed logins before imapd closes the session",
    ),
    # --- lmtpd (pymta.lmtpd: LMTP server into the mail store) ----------
    _p(
        "pymta_lmtpd_networks",
        "$mynetworks",
        "list",
        "pymta: TCP clients lmtpd serves (UNIX socket clients: as its mode allows)",
    ),
    _p("pymta_lmtpd_timeout", "300s", "time", "pymta: idle time before lmtpd disconnects"),
    _p(
        "pymta_lmtpd_recipient_limit",
        "1000",
        "int",
        "pymta: recipients lmtpd accepts per message (452 4.5.3 after that)",
    ),
    _p(
        "pymta_lmtpd_socket_mode",
        "0666",
        "str",
        "pymta: permissions of an lmtpd UNIX socket (octal)",
    ),
    # --- Sieve (pymta.sieve: filtering at final delivery) ----------------
    _p(
        "pymta_sieve_enable",
        "yes",
        "bool",
        "pymta: run the user's active Sieve script (~/.dovecot.sieve) at final delivery",
    ),
    _p(
        "pymta_sieve_global_dir",
        "",
        "str",
        "pymta: where include :global scripts are (Pigeonhole's sieve_global)",
    ),
    _p(
        "pymta_sieve_max_script_size",
        "1048576",
        "size",
        "pymta: largest Sieve script run or accepted (Pigeonhole's sieve_max_script_size)",
    ),
    _p(
        "pymta_sieve_max_actions",
        "32",
        "int",
        "pymta: actions one Sieve run may take (Pigeonhole's sieve_max_actions)",
    ),
    _p(
        "pymta_sieve_max_redirects",
        "4",
        "int",
        "pymta: redirects one Sieve run may take (Pigeonhole's sieve_max_redirects)",
    ),
    # --- quotas (pymta.quota) ---------------------------------------------
    _p(
        "pymta_quota_rule",
        "",
        "str",
        "pymta: default mailbox quota, Dovecot's quota_rule (*:storage=1G); empty: none",
    ),
    _p(
        "pymta_quota_full_action",
        "defer",
        "str",
        "pymta: mail over quota: defer (4.2.2, retried) or bounce (5.2.2)",
    ),
    _p(
        "pymta_quota_warning",
        "80 95",
        "list",
        "pymta: percentages of the quota at which the user gets a warning mail",
    ),
    _p(
        "pymta_managesieve_timeout",
        "600s",
        "time",
        "pymta: idle time before managesieved disconnects",
    ),
]

DEFAULTS: dict[str, Param] = {p.name: p for p in _PARAMS}

# Postfix's postconf_service.c: master.cf service names of these programs
# get service parameters; suffix -> (the parameter giving its default, kind).
_DELIVERY_SUFFIXES: dict[str, tuple[str, str]] = {
    "_initial_destination_concurrency": ("initial_destination_concurrency", "int"),
    "_destination_concurrency_limit": ("default_destination_concurrency_limit", "int"),
    "_destination_recipient_limit": ("default_destination_recipient_limit", "int"),
    "_destination_concurrency_positive_feedback": (
        "default_destination_concurrency_positive_feedback",
        "str",
    ),
    "_destination_concurrency_negative_feedback": (
        "default_destination_concurrency_negative_feedback",
        "str",
    ),
    "_destination_concurrency_failed_cohort_limit": (
        "default_destination_concurrency_failed_cohort_limit",
        "int",
    ),
    "_destination_rate_delay": ("default_destination_rate_delay", "time"),
}
_TIME_LIMIT: dict[str, tuple[str, str]] = {"_time_limit": ("command_time_limit", "time")}

#: suffix -> (default parameter, kind), per master.cf command.
SERVICE_SUFFIXES: dict[str, dict[str, tuple[str, str]]] = {
    "local": _DELIVERY_SUFFIXES,
    "error": _DELIVERY_SUFFIXES,
    "virtual": _DELIVERY_SUFFIXES,
    "smtp": _DELIVERY_SUFFIXES,
    "lmtp": _DELIVERY_SUFFIXES,
    "pipe": {**_TIME_LIMIT, **_DELIVERY_SUFFIXES},
    "spawn": _TIME_LIMIT,
}

#: every suffix that can make a service parameter, whatever the command.
ALL_SERVICE_SUFFIXES: dict[str, tuple[str, str]] = {**_TIME_LIMIT, **_DELIVERY_SUFFIXES}


def service_parameters(services: Iterable[tuple[str, str]]) -> dict[str, Param]:
    """Table entries of the service parameters of (service name, command) pairs.

    A name already in :data:`DEFAULTS` (``local_destination_recipient_limit``)
    keeps its built-in default, as in Postfix.
    """
    table: dict[str, Param] = {}
    for service, command in services:
        for suffix, (base, kind) in SERVICE_SUFFIXES.get(command, {}).items():
            name = service + suffix
            if name in DEFAULTS or name in table:
                continue
            unit = DEFAULTS[base].time_unit
            doc = f"{base} for the master.cf service {service}"
            table[name] = Param(name, f"${base}", kind, doc, unit)
    return table


def service_parameter_default(name: str) -> Param | None:
    """The entry of ``<transport><suffix>`` for any transport name, or None.

    Lets parts ask for ``<transport>_destination_concurrency_limit`` of any
    transport (qmgr does) without knowing master.cf.
    """
    if name.startswith("default_"):
        return None
    # Longest suffix first: _destination_recipient_limit before _recipient_limit.
    for suffix in sorted(ALL_SERVICE_SUFFIXES, key=len, reverse=True):
        base, kind = ALL_SERVICE_SUFFIXES[suffix]
        if name.endswith(suffix) and len(name) > len(suffix):
            service = name[: -len(suffix)]
            unit = DEFAULTS[base].time_unit
            return Param(name, f"${base}", kind, f"{base} for the transport {service}", unit)
    return None
