"""validate(): unknown parameters are warnings, invalid values and loops are errors."""

from __future__ import annotations

import pytest

from pymta.config.config import Config
from pymta.config.errors import ConfigError
from pymta.config.master_cf import parse_master_cf
from pymta.config.validate import validate
from tests.test_config_master_cf import STOCK_MASTER_CF


def test_clean_configuration_has_no_warnings() -> None:
    """Known parameters with valid values give no warnings."""
    config = Config.from_text(
        "myhostname = mx.example.org\nmessage_size_limit = 1000\nsmtpd_timeout = 5m\n"
        "smtpd_helo_required = yes\n",
        "main.cf",
    )
    assert validate(config, parse_master_cf(STOCK_MASTER_CF, "master.cf")) == []


def test_unknown_parameter_is_a_warning_with_file_and_line() -> None:
    """A parameter nobody knows or uses is a warning naming file, line and parameter."""
    config = Config.from_text("myorigin = x\n\nfoo = bar\n", "/etc/pymta/main.cf")
    assert validate(config, None) == ["/etc/pymta/main.cf, line 3: unknown parameter foo"]


def test_user_defined_parameter_used_elsewhere_is_known() -> None:
    """A main.cf parameter referenced as $name (from main.cf or a master.cf -o) is no warning."""
    config = Config.from_text(
        "mua_client_restrictions = permit_sasl_authenticated, reject\n"
        "helper = x\nmyorigin = $helper\n",
        "main.cf",
    )
    master = parse_master_cf(
        "submission inet n - n - - smtpd -o smtpd_client_restrictions=$mua_client_restrictions\n"
    )
    assert validate(config, master) == []
    assert validate(config, None) == ["main.cf, line 1: unknown parameter mua_client_restrictions"]


def test_restriction_class_names_are_known() -> None:
    """Names listed in smtpd_restriction_classes are parameters, not unknown ones."""
    config = Config.from_text(
        "smtpd_restriction_classes = strict\nstrict = reject_unknown_sender_domain\n"
    )
    assert validate(config, None) == []


def test_service_parameters_are_known_only_for_master_cf_services() -> None:
    """relay_destination_concurrency_limit is known when master.cf runs 'relay' with smtp."""
    config = Config.from_text("relay_destination_concurrency_limit = 5\n", "main.cf")
    master = parse_master_cf(STOCK_MASTER_CF, "master.cf")
    assert validate(config, master) == []
    assert validate(config, []) == [
        "main.cf, line 1: unknown parameter relay_destination_concurrency_limit"
    ]


def test_unknown_override_in_master_cf_is_a_warning_with_its_line() -> None:
    """An unknown -o name warns with the master.cf line of that -o."""
    master = parse_master_cf(
        "submission inet n - n - - smtpd\n  -o syslog_name=sub\n  -o smtpd_frobnicate=yes\n",
        "/etc/pymta/master.cf",
    )
    assert validate(Config.from_text(""), master) == [
        "/etc/pymta/master.cf, line 3: service submission: unknown parameter smtpd_frobnicate"
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("message_size_limit = 10M", "expected a size in bytes"),
        ("message_size_limit = -1", "expected a size in bytes"),
        ("smtpd_recipient_limit = many", "expected a whole number"),
        ("smtpd_helo_required = perhaps", "expected yes or no"),
        ("smtpd_timeout = 5 minutes", "expected a time like"),
        ("smtpd_forbid_bare_newline = sometimes", "expected one of no, normalize, reject"),
        ("smtpd_tls_security_level = mandatory", "expected one of '', none, may, encrypt"),
        ("inet_protocols = ipv5", "expected all, ipv4 or ipv6"),
        ("relay_destination_concurrency_limit = lots", "expected a whole number"),
    ],
)
def test_invalid_value_is_an_error_naming_file_line_parameter_and_form(
    line: str, expected: str
) -> None:
    """An explicitly set invalid value raises ConfigError with file, line, parameter, form."""
    config = Config.from_text(f"myorigin = x\n{line}\n", "/etc/pymta/main.cf")
    with pytest.raises(ConfigError) as info:
        validate(config, parse_master_cf(STOCK_MASTER_CF, "master.cf"))
    assert info.value.filename == "/etc/pymta/main.cf"
    assert info.value.lineno == 2
    assert info.value.parameter == line.split()[0]
    assert expected in info.value.message


def test_invalid_value_through_expansion_is_caught() -> None:
    """A value that becomes invalid only after $name expansion is an error too."""
    config = Config.from_text("limit = ten\nmessage_size_limit = $limit\n", "main.cf")
    with pytest.raises(ConfigError) as info:
        validate(config, None)
    assert (info.value.parameter, info.value.lineno) == ("message_size_limit", 2)


def test_first_invalid_value_in_file_order_is_reported() -> None:
    """With several bad values, the first one in the file is the one reported."""
    config = Config.from_text("smtpd_timeout = never\nmessage_size_limit = big\n", "main.cf")
    with pytest.raises(ConfigError) as info:
        validate(config, None)
    assert info.value.parameter == "smtpd_timeout"


def test_expansion_loop_is_an_error() -> None:
    """A $name loop among explicit parameters stops the start, naming file and line."""
    config = Config.from_text("myorigin = $myhostname\nmyhostname = $myorigin\n", "main.cf")
    with pytest.raises(ConfigError) as info:
        validate(config, None)
    assert info.value.filename == "main.cf"
    assert info.value.lineno == 1
    assert "recursive" in info.value.message


def test_invalid_override_is_an_error_naming_master_cf_line() -> None:
    """A bad -o value is a ConfigError naming master.cf, the line of the -o and the service."""
    master = parse_master_cf(
        "submission inet n - n - - smtpd\n  -o smtpd_timeout=forever\n", "/etc/pymta/master.cf"
    )
    with pytest.raises(ConfigError) as info:
        validate(Config.from_text(""), master)
    assert (info.value.filename, info.value.lineno) == ("/etc/pymta/master.cf", 2)
    assert info.value.parameter == "smtpd_timeout"
    assert "submission" in info.value.message


def test_stock_master_cf_overrides_validate() -> None:
    """The stock relay service's -o syslog_name=postfix/$service_name is valid and known."""
    master = parse_master_cf(STOCK_MASTER_CF, "master.cf")
    assert validate(Config.from_text(""), master) == []


def test_intake_log_size_is_off_or_big_enough() -> None:
    """pymta_queue_intake_log_size is 0 (off) or at least the log's
    minimum; a size in between is an error naming file and line."""
    assert validate(Config.from_text("pymta_queue_intake_log_size = 0\n", "main.cf"), None) == []
    with pytest.raises(ConfigError) as info:
        validate(Config.from_text("\npymta_queue_intake_log_size = 4096\n", "main.cf"), None)
    assert info.value.lineno == 2
    assert "at least" in str(info.value)
