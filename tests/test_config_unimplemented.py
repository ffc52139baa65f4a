"""The configuration never lies: every listed parameter is read by pymta's
code, and a Postfix parameter pymta does not implement is a warning or, where
ignoring it would matter, an error at start and in ``pymta check``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pymta.cli.main import main as pymta_main
from pymta.config.config import Config
from pymta.config.defaults import DEFAULTS
from pymta.config.errors import ConfigError
from pymta.config.master_cf import parse_master_cf
from pymta.config.unimplemented import (
    REFUSE,
    UNIMPLEMENTED,
    WARN,
)
from pymta.config.validate import validate

PACKAGE = Path(__file__).resolve().parent.parent / "pymta"

#: Files that name every parameter without acting on one.
_TABLES = {"config/defaults.py", "config/unimplemented.py", "config/validate.py"}


def _code() -> str:
    return "\n".join(
        path.read_text()
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).as_posix() not in _TABLES
    )


def _read_by_code(name: str, code: str) -> bool:
    """The name is quoted in the code, or made from a family prefix and a
    quoted suffix of two words or more (``f"{prefix}_tls_cert_file"``,
    ``param_name(protocol, "bind_address")``, ``p("helo_timeout")``), or is
    the ``$name`` in the default of a parameter that is read (virtual_maps)."""
    if re.search(r"[\"']" + re.escape(name) + r"[\"']", code):
        return True
    parts = name.split("_")
    for i in range(1, len(parts) - 1):
        suffix = re.escape("_".join(parts[i:]))
        if re.search(r"[\"'}]_?" + suffix + r"[\"']", code):
            return True
    return any(
        re.search(r"\$\{?" + re.escape(name) + r"\b", param.default) and _read_by_code(other, code)
        for other, param in DEFAULTS.items()
        if other != name
    )


def test_every_listed_parameter_is_read_by_the_code() -> None:
    """postconf -d lists only what some part of pymta reads: a parameter in
    the defaults table that no module names is a promise nobody keeps."""
    code = _code()
    unread = sorted(name for name in DEFAULTS if not _read_by_code(name, code))
    assert unread == []


#: A configuration getter called with a literal parameter name.
_GETTER = re.compile(
    r"\b(?:config|cfg|derived|self\._config|self\.config)"
    r"\.get(?:_int|_time|_bool|_list|_str|_size)?\(\s*\"([a-z0-9_]+)\""
)


def test_every_parameter_the_code_reads_is_listed() -> None:
    """The other way round: a parameter some part reads by name is in the
    defaults table, never in the table of unimplemented ones (whose
    setting is then answered with "not implemented; ignored" although the
    code acts on it - qmgr_message_active_limit once was)."""
    read = set(_GETTER.findall(_code()))
    assert read, "the pattern finds the code's reads"
    assert sorted(read - set(DEFAULTS)) == []


def test_no_parameter_is_both_listed_and_unimplemented() -> None:
    """A parameter is either implemented (defaults table) or not (the table
    of unimplemented ones), never both."""
    assert sorted(set(DEFAULTS) & set(UNIMPLEMENTED)) == []
    assert {e.action for e in UNIMPLEMENTED.values()} <= {WARN, REFUSE}


def test_harmless_settings_are_silent() -> None:
    """Debian's stock main.cf values that match what pymta does (biff = no,
    compatibility_level = 3.6, the defaults) give no warning."""
    config = Config.from_text(
        "biff = no\ncompatibility_level = 3.6\nmailbox_size_limit = 0\n"
        "smtpd_tls_received_header = yes\nmail_owner = postfix\n",
        "main.cf",
    )
    assert validate(config, None) == []


def test_an_inert_setting_is_a_warning_with_file_and_line() -> None:
    """biff = yes is ignored and says so, naming file and line."""
    config = Config.from_text("myorigin = x\nbiff = yes\n", "/etc/pymta/main.cf")
    assert validate(config, None) == [
        "/etc/pymta/main.cf, line 2: biff is not implemented by pymta; ignored "
        "(pymta has no biff service)"
    ]


@pytest.mark.parametrize(
    "setting",
    [
        "milter_header_checks = regexp:/etc/pymta/milter_header_checks",
        "receive_override_options = no_address_mappings",
        "disable_dns_lookups = yes",
        "smtp_tls_wrappermode = yes",
        "virtual_uid_maps = static:5000",
        "soft_bounce = yes",
        "mailbox_command_maps = hash:/etc/postfix/mailbox_commands",
    ],
)
def test_a_setting_that_would_matter_stops_the_start(setting: str) -> None:
    """A parameter whose absence would accept mail meant to be refused, send
    mail elsewhere or weaken protection is refused, naming file and line."""
    config = Config.from_text(f"myorigin = x\n{setting}\n", "/etc/pymta/main.cf")
    with pytest.raises(ConfigError) as caught:
        validate(config, None)
    name = setting.partition(" =")[0]
    text = str(caught.value)
    assert text.startswith("/etc/pymta/main.cf, line 2: ")
    assert text.startswith(f"/etc/pymta/main.cf, line 2: {name}: not implemented by pymta (set to ")


def test_master_cf_override_that_would_matter_stops_the_start() -> None:
    """A service override of a refused parameter (soft_bounce) is refused,
    naming master.cf's line."""
    master = parse_master_cf(
        "smtp inet n - y - - smtpd\n"
        "submissions inet n - y - - smtpd\n"
        "  -o syslog_name=postfix/submissions\n"
        "  -o soft_bounce=yes\n",
        "/etc/pymta/master.cf",
    )
    with pytest.raises(ConfigError) as caught:
        validate(Config.from_text("myorigin = x\n"), master)
    text = str(caught.value)
    assert text.startswith(
        "/etc/pymta/master.cf, line 4: soft_bounce: service submissions: "
        "not implemented by pymta (set to 'yes'): "
    )


def test_per_transport_scheduler_twins_are_unimplemented_too() -> None:
    """relay_delivery_slot_cost stands for default_delivery_slot_cost: a warning."""
    config = Config.from_text("relay_delivery_slot_cost = 9\n", "main.cf")
    master = parse_master_cf("relay unix - - n - - smtp\n", "master.cf")
    assert validate(config, master) == [
        "main.cf, line 1: relay_delivery_slot_cost is not implemented by pymta; ignored "
        "(pymta's queue manager has no preemptive scheduler to tune)"
    ]


def test_uid_maps_naming_pymtas_own_ids_are_harmless() -> None:
    """virtual_uid_maps = static:N where N is the uid pymta runs as says what
    pymta does anyway (a configuration shared with Postfix); another uid is
    refused."""
    import os

    config = Config.from_text(
        f"virtual_uid_maps = static:{os.geteuid()}\nvirtual_gid_maps = static:{os.getegid()}\n"
    )
    assert validate(config, None) == []
    other = Config.from_text(f"virtual_uid_maps = static:{os.geteuid() + 1}\n")
    with pytest.raises(ConfigError):
        validate(other, None)


def test_unimplemented_parameters_still_expand_to_postfix_defaults() -> None:
    """$mime_header_checks expands as in Postfix (to $header_checks' value)."""
    config = Config.from_text("x = [$mail_spool_directory]\n")
    assert config.get("x") == "[/var/mail]"


def test_check_fails_on_a_refused_parameter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pymta check agrees with the start: it exits 1 and names the line."""
    (tmp_path / "main.cf").write_text("myorigin = x\nfallback_relay = x.example\n")
    (tmp_path / "master.cf").write_text("smtp inet n - n - - smtpd\n")
    assert pymta_main(["check", "-c", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "main.cf, line 2: fallback_relay: not implemented by pymta (set to 'x.example')" in err
