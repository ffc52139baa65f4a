"""main.cf syntax, $name expansion and the typed getters of Config."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymta.config.config import Config, split_list
from pymta.config.errors import ConfigError
from pymta.config.main_cf import parse_main_cf


def test_continuation_lines_and_comments() -> None:
    """Indented lines continue a parameter across comments and blank lines; '#' is a comment."""
    settings = parse_main_cf(
        "# comment\nmydestination = a,\n    b,\n# inside\n\n  c\nmyorigin = x\n", "main.cf"
    )
    assert [(s.name, s.value, s.lineno) for s in settings] == [
        ("mydestination", "a, b, c", 2),
        ("myorigin", "x", 7),
    ]


def test_later_setting_wins() -> None:
    """A parameter set twice takes the later value, and reports the later line."""
    config = Config.from_text("myorigin = a\nmyorigin = b\n", "main.cf")
    assert config.get("myorigin") == "b"
    source = config.source("myorigin")
    assert source is not None and source.lineno == 2


@pytest.mark.parametrize(
    ("text", "lineno"),
    [("no equals sign\n", 1), ("a = 1\nbad name = 2\n", 2), ("  leading = continuation\n", 1)],
)
def test_malformed_lines_name_file_and_line(text: str, lineno: int) -> None:
    """A line that is not 'name = value' is a ConfigError naming file and line."""
    with pytest.raises(ConfigError) as info:
        parse_main_cf(text, "/etc/pymta/main.cf")
    assert (info.value.filename, info.value.lineno) == ("/etc/pymta/main.cf", lineno)


def test_expansion_forms() -> None:
    """$name, ${name}, $(name), ${name?x}, ${name:x} and $$ expand as in Postfix."""
    config = Config.from_text(
        "myhostname = mx.example.org\n"
        "a = $myhostname/${myhostname}/$(myhostname)\n"
        "b = ${myhostname?set}${nosuch?set}\n"
        "c = ${nosuch:empty}${myhostname:empty}\n"
        "d = $$HOME\n"
    )
    assert config.get("a") == "mx.example.org/mx.example.org/mx.example.org"
    assert config.get("b") == "set"
    assert config.get("c") == "emptymx.example.org"
    assert config.get("d") == "$HOME"


def test_expansion_is_lazy_and_uses_defaults() -> None:
    """A default referring to another parameter follows that parameter's explicit value."""
    config = Config.from_text("myhostname = mx.example.org\n")
    assert config.get("myorigin") == "mx.example.org"
    assert config.get("mydomain") == "example.org"
    assert config.get("smtpd_banner") == "mx.example.org ESMTP Postfix"


def test_expansion_loop_is_an_error_naming_the_parameter() -> None:
    """A recursive expansion is a ConfigError naming the parameter, file and line."""
    config = Config.from_text("a = $b\nb = x $a\n", "main.cf")
    with pytest.raises(ConfigError) as info:
        config.get("a")
    assert info.value.parameter == "a"
    assert (info.value.filename, info.value.lineno) == ("main.cf", 1)
    assert "recursive" in info.value.message


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("300s", 300.0),
        ("10m", 600.0),
        ("4h", 14400.0),
        ("5d", 432000.0),
        ("1w", 604800.0),
        ("10ms", 0.01),
    ],
)
def test_time_units(value: str, seconds: float) -> None:
    """Time values take Postfix's s, m, h, d and w units, and ms (pymta)."""
    assert Config.from_text(f"queue_run_delay = {value}\n").get_time("queue_run_delay") == seconds


def test_time_without_unit_uses_the_parameters_default_unit() -> None:
    """A bare number is in the parameter's default unit: days for maximal_queue_lifetime."""
    config = Config.from_text("maximal_queue_lifetime = 2\nqueue_run_delay = 2\n")
    assert config.get_time("maximal_queue_lifetime") == 2 * 86400.0
    assert config.get_time("queue_run_delay") == 2.0


def test_bad_values_name_file_line_and_expected_form() -> None:
    """Typed getters raise a ConfigError with file, line, parameter and the expected form."""
    config = Config.from_text(
        "message_size_limit = lots\nsmtpd_helo_required = maybe\nqueue_run_delay = soon\n",
        "/etc/pymta/main.cf",
    )
    with pytest.raises(ConfigError, match=r"line 1: message_size_limit: .*whole number"):
        config.get_int("message_size_limit")
    with pytest.raises(ConfigError, match=r"line 2: smtpd_helo_required: .*yes or no"):
        config.get_bool("smtpd_helo_required")
    with pytest.raises(ConfigError, match=r"line 3: queue_run_delay: .*time like"):
        config.get_time("queue_run_delay")


def test_split_list_keeps_braced_groups() -> None:
    """Lists split on commas and white space, but inline:{ ... } stays one item."""
    assert split_list("a, b  c,,d") == ["a", "b", "c", "d"]
    assert split_list("inline:{ a=b, c=d }, hash:/x") == ["inline:{ a=b, c=d }", "hash:/x"]


def test_service_parameters_default_to_their_base() -> None:
    """<transport>_destination_concurrency_limit defaults to the default_ parameter."""
    config = Config.from_text("default_destination_concurrency_limit = 7\n")
    assert config.get_int("relay_destination_concurrency_limit") == 7
    assert config.get_int("relay_destination_recipient_limit") == 50
    assert config.get_int("local_destination_recipient_limit") == 1
    assert config.get_time("maildrop_time_limit") == 1000.0
    assert config.raw("nosuch") is None


def test_with_overrides_leaves_the_original_alone() -> None:
    """master.cf overrides make a new Config; the main.cf one is unchanged."""
    config = Config.from_text("smtpd_banner = main\n")
    derived = config.with_overrides({"smtpd_banner": "sub"})
    assert (config.get("smtpd_banner"), derived.get("smtpd_banner")) == ("main", "sub")


def test_load_names_a_missing_file(tmp_path: Path) -> None:
    """Config.load of a directory without main.cf is a ConfigError naming the file."""
    with pytest.raises(ConfigError) as info:
        Config.load(tmp_path)
    assert info.value.filename == str(tmp_path / "main.cf")


def test_load_sets_config_directory(tmp_path: Path) -> None:
    """Config.load records the directory it read as config_directory, as postconf -c does."""
    (tmp_path / "main.cf").write_text("alias_maps = texthash:$config_directory/aliases\n")
    config = Config.load(tmp_path)
    assert config.get("alias_maps") == f"texthash:{tmp_path}/aliases"


def test_default_hostname_is_the_system_name_with_localdomain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without myhostname, a host name without a dot gets .localdomain, as in Postfix."""
    import socket

    monkeypatch.setattr(socket, "gethostname", lambda: "vm")
    config = Config()
    assert config.get("myhostname") == "vm.localdomain"
    assert config.get("mydomain") == "localdomain"


def test_myhostname_from_an_explicit_mydomain() -> None:
    """``myhostname = mail.$mydomain`` (a common Postfix setting) expands with
    mydomain set, and mydomain's default follows an explicit myhostname."""
    config = Config.from_text("myhostname = mail.$mydomain\nmydomain = example.org\n")
    assert config.get("myhostname") == "mail.example.org"
    assert config.get("myorigin") == "mail.example.org"
    config = Config.from_text("myhostname = mx.$site\nsite = example.net\n")
    assert config.get("mydomain") == "example.net"


@pytest.mark.parametrize("name", ["myhostname", "mydomain", "myorigin"])
def test_myhostname_from_the_default_mydomain_is_a_loop_error(name: str) -> None:
    """``myhostname = mail.$mydomain`` with mydomain unset: mydomain's default
    is $myhostname minus its first component, a loop Postfix reports too; a
    ConfigError naming the file and line of myhostname (it used to recurse
    until RecursionError)."""
    config = Config.from_text("# site\nmyhostname = mail.$mydomain\n", "/etc/pymta/main.cf")
    with pytest.raises(ConfigError) as info:
        config.get(name)
    assert (info.value.filename, info.value.lineno) == ("/etc/pymta/main.cf", 2)
    assert info.value.parameter == "myhostname"
    assert "recursive parameter expansion: mydomain -> myhostname -> mydomain" in str(info.value)


def test_main_cf_that_is_not_utf8_is_an_error_naming_the_line(tmp_path: Path) -> None:
    """A main.cf holding a byte that is not UTF-8 is a ConfigError naming the
    file and the line of that byte, not UnicodeDecodeError."""
    (tmp_path / "main.cf").write_bytes(b"myhostname = mx.example.org\n\nmyorigin = caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        Config.load(tmp_path)
    assert (info.value.filename, info.value.lineno) == (str(tmp_path / "main.cf"), 3)
    assert "not UTF-8" in info.value.message
