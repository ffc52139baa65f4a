"""The defaults table: complete, well-formed, and Postfix's."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from pymta.config.config import Config
from pymta.config.defaults import (
    DEFAULTS,
    KINDS,
    SERVICE_SUFFIXES,
    service_parameter_default,
    service_parameters,
)
from pymta.config.unimplemented import lookup as unimplemented_lookup
from pymta.config.validate import check_value

# The parameters the core-mail-path issue requires, and the ones of this brief.
REQUIRED = """
myhostname mydomain myorigin mydestination mynetworks inet_interfaces config_directory
queue_directory alias_maps alias_database virtual_mailbox_domains virtual_mailbox_maps
virtual_mailbox_base virtual_alias_maps sender_canonical_maps recipient_canonical_maps
recipient_delimiter message_size_limit smtpd_recipient_limit smtpd_timeout smtpd_banner
smtpd_recipient_restrictions smtpd_hard_error_limit smtpd_forbid_bare_newline
minimal_backoff_time maximal_backoff_time queue_run_delay maximal_queue_lifetime
bounce_queue_lifetime default_destination_concurrency_limit notify_classes
2bounce_notice_recipient syslog_name maillog_file smtpd_tls_cert_file smtpd_tls_key_file
smtpd_tls_security_level smtp_tls_security_level smtp_connect_timeout transport_maps
local_recipient_maps pymta_passdb
""".split()

# Deliberate differences from Debian's Postfix 3.7 ``postconf -d``, with the reason.
DIFFERENT_ON_PURPOSE = {
    "myhostname",  # computed
    "mydomain",  # computed
    "mynetworks",  # computed from the interfaces by Postfix
    "syslog_name",  # no multi-instance support
    "process_name",  # set per program
    "biff",  # pymta has no comsat service
    "import_environment",  # no postlogd
    "alias_maps",  # no NIS
    "relay_domains",  # compatibility_level >= 2 value
    "append_dot_mydomain",  # compatibility_level >= 1 value
    "smtputf8_enable",  # compatibility_level >= 1 value
    "smtpd_relay_restrictions",  # compatibility_level >= 1 value
    "smtpd_tls_fingerprint_digest",  # compatibility_level >= 3.6 value
    "smtp_tls_fingerprint_digest",  # the same
    "lmtp_tls_fingerprint_digest",  # the same
    "smtpd_forbidden_commands",  # inline regexp tables not supported in this list
    "smtpd_timeout",  # no ${stress?...}
    "smtpd_hard_error_limit",  # no ${stress?...}
    "smtpd_junk_command_limit",  # no ${stress?...}
    "smtpd_starttls_timeout",  # no ${stress?...}
    "smtpd_client_event_limit_exceptions",  # no legacy name
    "smtpd_forbid_bare_newline",  # Postfix 3.9's default
    "smtpd_forbid_unauth_pipelining",  # Postfix 3.9's default
    "smtpd_sasl_type",  # pymta's own SASL server (the passdb), not Cyrus
    "smtpd_tls_auth_only",  # no clear-text passwords by default (Dovecot's choice)
    "milter_macro_v",  # pymta has no mail_version parameter
    "postscreen_greet_wait",  # no ${stress?...}
    "postscreen_command_time_limit",  # no ${stress?...}
    # Postfix's ${old_name?{$old_name}:{default}} written as $old_name, whose
    # own default is Postfix's (pymta's expansion has no ${name?{..}:{..}}).
    "postscreen_denylist_action",
    "postscreen_dnsbl_allowlist_threshold",
    "postscreen_dnsbl_max_ttl",
}


def test_required_parameters_are_in_the_table() -> None:
    """Every parameter the issue lists has a table entry."""
    assert [name for name in REQUIRED if name not in DEFAULTS] == []


def test_every_entry_is_well_formed() -> None:
    """Each entry has a known kind, a one-line meaning, and a default unit for times."""
    for name, param in DEFAULTS.items():
        assert param.name == name
        assert param.kind in KINDS, name
        assert param.doc and "\n" not in param.doc, name
        assert param.time_unit in "smhdw", name


def test_every_default_is_valid_for_its_kind() -> None:
    """Every default value, expanded, passes its own kind's validation."""
    config = Config.from_text("myhostname = mx.example.org\n")
    for name, param in DEFAULTS.items():
        check_value(config, name, param)


def test_every_reference_in_a_default_is_a_known_parameter() -> None:
    """A $name in a default names a parameter in the table (no typos)."""
    local_names = {"home", "extension", "recipient_delimiter"}  # local(8) expansions
    # default_rbl_reply's names are expanded per reject (smtpd_check.c).
    local_names |= {"rbl_code", "rbl_class", "rbl_what", "rbl_domain", "rbl_reason"}
    for param in DEFAULTS.values():
        for ref in re.findall(r"\$\{?([A-Za-z0-9_]+)", param.default):
            assert ref in DEFAULTS or ref in local_names, (param.name, ref)


def test_pymta_only_parameters_say_so() -> None:
    """Parameters Postfix does not have are marked 'pymta:' in their meaning."""
    for name, param in DEFAULTS.items():
        if name.startswith(("pymta_", "pop3d_", "imapd_")):
            assert param.doc.startswith("pymta:"), name


def test_service_parameters_of_delivery_services() -> None:
    """master.cf delivery services get Postfix's service parameters, defaulting to $default_*."""
    table = service_parameters([("relay", "smtp"), ("maildrop", "pipe"), ("pickup", "pickup")])
    assert table["relay_destination_concurrency_limit"].default == (
        "$default_destination_concurrency_limit"
    )
    assert table["relay_initial_destination_concurrency"].default == (
        "$initial_destination_concurrency"
    )
    assert table["maildrop_time_limit"].default == "$command_time_limit"
    assert "relay_time_limit" not in table
    assert not any(name.startswith("pickup_") for name in table)


def test_builtin_service_parameter_keeps_its_own_default() -> None:
    """local_destination_recipient_limit keeps its built-in default of 1, as in Postfix."""
    assert "local_destination_recipient_limit" not in service_parameters([("local", "local")])
    assert DEFAULTS["local_destination_recipient_limit"].default == "1"


def test_service_parameter_default_picks_the_longest_suffix() -> None:
    """relay_destination_recipient_limit is a destination limit, not the
    scheduler's _recipient_limit (which pymta does not implement)."""
    param = service_parameter_default("relay_destination_recipient_limit")
    assert param is not None and param.default == "$default_destination_recipient_limit"
    assert service_parameter_default("relay_recipient_limit") is None
    entry = unimplemented_lookup("relay_recipient_limit")
    assert entry is not None and entry.name == "default_recipient_limit"
    assert unimplemented_lookup("relay_destination_recipient_limit") is None
    assert service_parameter_default("nosuch") is None
    assert service_parameter_default("default_destination_concurrency_limitx") is None


def test_every_service_suffix_has_a_base_in_the_table() -> None:
    """Each service-parameter suffix names a default parameter that exists."""
    for suffixes in SERVICE_SUFFIXES.values():
        for base, _kind in suffixes.values():
            assert base in DEFAULTS, base


@pytest.mark.skipif(shutil.which("postconf") is None, reason="Postfix's postconf not installed")
def test_defaults_match_postfix() -> None:
    """Every default that pymta shares with Postfix equals Postfix's own postconf -d."""
    out = subprocess.run(["postconf", "-d"], capture_output=True, text=True, check=True).stdout
    real = {}
    for line in out.splitlines():
        name, _, value = line.partition("=")
        real[name.strip()] = value.strip()
    mismatches = {
        name: (param.default, real[name])
        for name, param in DEFAULTS.items()
        if name in real and name not in DIFFERENT_ON_PURPOSE and real[name] != param.default
    }
    assert mismatches == {}
