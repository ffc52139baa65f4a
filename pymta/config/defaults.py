"""The table of every parameter pymta implements, with Postfix's defaults.

Mirrors Postfix's mail_params.h / postconf -d. Each entry names the kind of
value so that an invalid setting is caught at start with the expected form.
pymta-only parameters start with ``pymta_`` and are documented here too.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    _p("config_directory", "/etc/postfix", "str", "where main.cf and master.cf live"),
    _p("queue_directory", "/var/spool/postfix", "str", "the root of the mail queue"),
    _p("data_directory", "/var/lib/postfix", "str", "where caches and generated keys live"),
    _p("mail_owner", "postfix", "str", "the owner of the queue"),
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
    _p("alias_maps", "hash:/etc/aliases", "list", "tables that expand local addresses"),
    _p("alias_database", "hash:/etc/aliases", "list", "tables that newaliases rebuilds"),
    _p("virtual_mailbox_domains", "$virtual_mailbox_maps", "list", "domains of virtual mailboxes"),
    _p("virtual_mailbox_maps", "", "list", "user@domain to mailbox path under virtual_mailbox_base"),
    _p("virtual_mailbox_base", "", "str", "prefix of virtual mailbox paths"),
    _p("virtual_alias_maps", "$virtual_maps", "list", "address to address(es) rewriting"),
    _p("virtual_maps", "", "list", "obsolete name of virtual_alias_maps"),
    _p("virtual_alias_domains", "$virtual_alias_maps", "list", "domains served only by aliases"),
    _p("virtual_alias_recursion_limit", "1000", "int", "depth limit of virtual alias expansion"),
    _p("virtual_alias_expansion_limit", "1000", "int", "how many addresses one alias may yield"),
    _p("sender_canonical_maps", "", "list", "rewriting of sender addresses"),
    _p("recipient_canonical_maps", "", "list", "rewriting of recipient addresses"),
    _p("canonical_maps", "", "list", "rewriting of sender and recipient addresses"),
    _p("recipient_delimiter", "", "str", "characters that separate user from extension"),
    _p("message_size_limit", "10240000", "int", "largest message accepted, in bytes"),
    _p("header_size_limit", "102400", "int", "largest message header kept, in bytes"),
    _p("line_length_limit", "2048", "int", "longest SMTP command line accepted"),
    _p("smtpd_recipient_limit", "1000", "int", "recipients accepted per message"),
    _p("smtpd_timeout", "300s", "time", "idle time before smtpd disconnects"),
    _p("smtpd_banner", "$myhostname ESMTP $mail_name", "str", "text of the 220 greeting"),
    _p("mail_name", "Postfix", "str", "the mail system's name in banners and DSNs"),
    _p(
        "smtpd_recipient_restrictions",
        "",
        "list",
        "restrictions applied at RCPT TO",
    ),
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
    _p("smtpd_delay_reject", "yes", "bool", "wait until RCPT TO before rejecting"),
    _p("smtpd_helo_required", "no", "bool", "require HELO/EHLO before MAIL"),
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
    _p("disable_vrfy_command", "no", "bool", "reject VRFY"),
    _p("smtpd_client_connection_count_limit", "50", "int", "connections per client"),
    _p("smtpd_tls_security_level", "", "str", "none, may or encrypt"),
    _p("smtpd_tls_cert_file", "", "str", "PEM certificate of smtpd"),
    _p("smtpd_tls_key_file", "$smtpd_tls_cert_file", "str", "PEM private key of smtpd"),
    _p("smtpd_tls_received_header", "no", "bool", "record the TLS protocol in Received"),
    _p("smtpd_tls_loglevel", "0", "int", "TLS logging detail"),
    _p("smtpd_sasl_auth_enable", "no", "bool", "offer AUTH"),
    _p("minimal_backoff_time", "300s", "time", "least time between delivery attempts"),
    _p("maximal_backoff_time", "4000s", "time", "most time between delivery attempts"),
    _p("queue_run_delay", "300s", "time", "how often the deferred queue is scanned"),
    _p("maximal_queue_lifetime", "5d", "time", "how long deferred mail is kept", "d"),
    _p("bounce_queue_lifetime", "5d", "time", "how long a deferred bounce is kept", "d"),
    _p("delay_warning_time", "0h", "time", "when to send a delay notice (0: never)", "h"),
    _p("default_destination_concurrency_limit", "20", "int", "parallel deliveries per destination"),
    _p("default_destination_recipient_limit", "50", "int", "recipients per delivery"),
    _p("default_process_limit", "100", "int", "default maxproc of master.cf services"),
    _p("local_destination_concurrency_limit", "2", "int", "parallel local deliveries per user"),
    _p("local_destination_recipient_limit", "1", "int", "recipients per local delivery"),
    _p("virtual_destination_concurrency_limit", "$default_destination_concurrency_limit", "int",
       "parallel virtual deliveries"),
    _p("virtual_destination_recipient_limit", "$default_destination_recipient_limit", "int",
       "recipients per virtual delivery"),
    _p("local_transport", "local:$myhostname", "str", "transport for mydestination"),
    _p("virtual_transport", "virtual", "str", "transport for virtual_mailbox_domains"),
    _p("relay_transport", "relay", "str", "transport for relay_domains"),
    _p("default_transport", "smtp", "str", "transport for all other domains"),
    _p("relay_domains", "", "list", "domains this host relays to"),
    _p("relayhost", "", "str", "next hop for non-local mail"),
    _p("notify_classes", "resource, software", "list", "problems reported to postmaster"),
    _p("bounce_notice_recipient", "postmaster", "str", "recipient of bounce notices"),
    _p("2bounce_notice_recipient", "postmaster", "str", "recipient of undeliverable bounces"),
    _p("delay_notice_recipient", "postmaster", "str", "recipient of delay notices"),
    _p("error_notice_recipient", "postmaster", "str", "recipient of error notices"),
    _p("bounce_size_limit", "50000", "int", "how much of the original a bounce returns"),
    _p("hopcount_limit", "50", "int", "Received headers before a mail loop is declared"),
    _p("empty_address_recipient", "MAILER-DAEMON", "str", "recipient of mail to <>"),
    _p("double_bounce_sender", "double-bounce", "str", "sender of postmaster notices"),
    _p("mail_spool_directory", "/var/mail", "str", "where local mailboxes live"),
    _p("allow_percent_hack", "yes", "bool", "rewrite user%domain to user@domain"),
    _p("swap_bangpath", "yes", "bool", "rewrite site!user to user@site"),
    _p("append_dot_mydomain", "no", "bool", "append .$mydomain to host names"),
    _p("append_at_myorigin", "yes", "bool", "append @$myorigin to bare local parts"),
    _p("resolve_dequoted_address", "yes", "bool", "resolve after removing quotes"),
    _p("propagate_unmatched_extensions", "canonical, virtual", "list",
       "where unmatched address extensions are kept"),
    _p("owner_request_special", "yes", "bool", "owner-list aliases set the sender"),
    _p("allow_mail_to_commands", "alias, forward", "list", "where |command delivery is allowed"),
    _p("allow_mail_to_files", "alias, forward", "list", "where /file delivery is allowed"),
    _p("virtual_minimum_uid", "100", "int", "lowest uid the virtual agent delivers as"),
    _p("virtual_uid_maps", "", "list", "uid of virtual mailboxes"),
    _p("virtual_gid_maps", "", "list", "gid of virtual mailboxes"),
    _p("virtual_mailbox_limit", "51200000", "int", "largest mbox file the virtual agent writes"),
    _p("virtual_mailbox_lock", "fcntl, dotlock", "list", "how mbox files are locked"),
    _p("biff", "no", "bool", "notify the biff service"),
    _p("compatibility_level", "0", "str", "backwards-compatible defaults level"),
    _p("smtputf8_enable", "yes", "bool", "offer SMTPUTF8"),
    _p("pymta_sync_method", "syncfs", "str",
       "pymta: how group commit makes files durable: syncfs (one sync per batch) or fsync"),
    _p("pymta_processes", "1", "int",
       "pymta: reactor processes sharing the listening sockets and the queue"),
]

DEFAULTS: dict[str, Param] = {p.name: p for p in _PARAMS}
