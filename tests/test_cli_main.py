"""The pymta command: dispatch, -c and MAIL_CONFIG, missing commands, check."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from pymta.cli import main as cli
from tests.test_config_master_cf import STOCK_MASTER_CF, UNCHROOTED_MASTER_CF


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], str]]:
    """A fake command module 'pymta_fake_cmd' registered as the command 'fake'."""
    calls: list[tuple[list[str], str]] = []
    module = types.ModuleType("pymta_fake_cmd")

    def run(args: list[str], config_dir: str) -> int:
        calls.append((args, config_dir))
        return 3

    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pymta_fake_cmd", module)
    monkeypatch.setitem(cli.COMMAND_TABLE, "fake", "pymta_fake_cmd:run")
    return calls


def test_dispatches_with_the_global_c_directory(
    recorder: list[tuple[list[str], str]],
) -> None:
    """pymta -c DIR CMD ARGS calls the command's run(ARGS, DIR) and returns its status."""
    assert cli.main(["-c", "/x", "fake", "-q", "key"]) == 3
    assert recorder == [(["-q", "key"], "/x")]


def test_mail_config_is_the_default_directory(
    recorder: list[tuple[list[str], str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without -c the command gets $MAIL_CONFIG."""
    monkeypatch.setenv("MAIL_CONFIG", "/from/env")
    cli.main(["fake"])
    assert recorder == [([], "/from/env")]


def test_command_options_are_passed_through(recorder: list[tuple[list[str], str]]) -> None:
    """Options after the command (its own -c included) go to the command untouched."""
    cli.main(["-c", "/x", "fake", "-c", "/y", "-n"])
    assert recorder == [(["-c", "/y", "-n"], "/x")]


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown command is 'pymta: fatal: unknown command' and exit status 1."""
    assert cli.main(["frobnicate"]) == 1
    assert capsys.readouterr().err.startswith("pymta: fatal: unknown command: 'frobnicate'")


def test_command_whose_module_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A registered command whose module is absent gives a clear error, not a traceback."""
    monkeypatch.setitem(cli.COMMAND_TABLE, "ghost", "pymta.cli.no_such_module:run")
    assert cli.main(["ghost"]) == 1
    err = capsys.readouterr().err
    assert "pymta: fatal: command 'ghost' is not available" in err
    assert "pymta.cli.no_such_module" in err


def test_command_whose_dependency_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A command module that needs an uninstalled library names that library."""
    (tmp_path / "pymta_needs_dep.py").write_text("import no_such_library_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMAND_TABLE, "dep", "pymta_needs_dep:run")
    assert cli.main(["dep"]) == 1
    assert "needs the Python module 'no_such_library_xyz'" in capsys.readouterr().err


def test_no_command_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    """pymta alone is a fatal error with the usage; help lists every command."""
    assert cli.main([]) == 1
    assert "usage: pymta [-c DIR] COMMAND" in capsys.readouterr().err
    assert cli.main(["help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMAND_TABLE:
        assert name in out


def test_bad_global_option(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown option before the command is a fatal usage error."""
    assert cli.main(["-z", "postconf"]) == 1
    assert capsys.readouterr().err.startswith("pymta: fatal: option -z not recognized")


def test_every_registered_command_names_module_and_function() -> None:
    """Each table entry is 'module:function' inside pymta.cli, and has a summary."""
    for name, target in cli.COMMAND_TABLE.items():
        module, _, function = target.partition(":")
        assert module.startswith("pymta.cli.") and function, name
        assert name in cli.SUMMARY


def test_postconf_through_the_dispatcher(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pymta -c DIR postconf -h NAME reaches the real postconf command."""
    (tmp_path / "main.cf").write_text("myorigin = example.org\n")
    assert cli.main(["-c", str(tmp_path), "postconf", "-h", "myorigin"]) == 0
    assert capsys.readouterr().out == "example.org\n"


def write_config(directory: Path, main_cf: str, master_cf: str = UNCHROOTED_MASTER_CF) -> None:
    (directory / "main.cf").write_text(main_cf)
    (directory / "master.cf").write_text(master_cf)


def test_check_clean_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """check on a valid configuration exits 0; ignored services are warnings on stderr."""
    write_config(
        tmp_path,
        "myhostname = mx.example.org\nalias_maps = inline:{ postmaster=root }\n"
        # A queue of its own (not made yet): the host's may be Postfix's.
        f"queue_directory = {tmp_path}/spool\n",
        "smtp inet n - n - - smtpd\nqmgr unix n - n 300 1 qmgr\ntlsmgr unix - - n 1000? 1 tlsmgr\n",
    )
    assert cli.main(["check", "-c", str(tmp_path)]) == 0
    assert capsys.readouterr().err == (
        f"pymta: warning: {tmp_path}/master.cf, line 3: service 'tlsmgr' (tlsmgr): "
        "not needed in pymta, ignored\n"
    )


def test_check_warns_about_unknown_parameters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check prints each unknown main.cf parameter as a pymta warning, and still exits 0."""
    write_config(tmp_path, "myorigin = x\nfoo = bar\n")
    assert cli.main(["-c", str(tmp_path), "check"]) == 0
    err = capsys.readouterr().err
    assert f"pymta: warning: {tmp_path}/main.cf, line 2: unknown parameter foo\n" in err


def test_check_fails_on_an_invalid_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check exits 1 with 'pymta: fatal:' naming file, line, parameter and expected form."""
    write_config(tmp_path, "myorigin = x\nmessage_size_limit = big\n")
    assert cli.main(["-c", str(tmp_path), "check"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"pymta: fatal: {tmp_path}/main.cf, line 2: message_size_limit: ")
    assert "expected a size in bytes" in err


def test_check_fails_on_an_unknown_master_cf_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check exits 1 when master.cf runs a command pymta does not know."""
    write_config(tmp_path, "", "x unix - - n - - frobnicate\n")
    assert cli.main(["-c", str(tmp_path), "check"]) == 1
    assert f"{tmp_path}/master.cf, line 1" in capsys.readouterr().err


def test_check_fails_on_debians_chroot_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check exits 1 on Debian's stock master.cf, naming smtpd's line and
    the chroot column (pymta cannot chroot one service of its process)."""
    write_config(tmp_path, "myorigin = x\n", STOCK_MASTER_CF)
    assert cli.main(["-c", str(tmp_path), "check"]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path}/master.cf, line 12: service 'smtp' (smtpd): the chroot column" in err


def test_check_fails_without_main_cf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check exits 1 when main.cf cannot be read."""
    assert cli.main(["-c", str(tmp_path), "check"]) == 1
    assert "main.cf: cannot read" in capsys.readouterr().err


def test_check_on_the_sample_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    """The sample configuration in etc/ passes check."""
    from pymta.config.locate import source_config_directory

    etc = source_config_directory()
    if not (etc / "main.cf").exists():
        pytest.skip("no sample configuration in this checkout")
    assert cli.main(["-c", str(etc), "check"]) == 0
    assert "fatal" not in capsys.readouterr().err


def test_check_and_start_agree_on_restrictions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check accepts reject_rbl_client (which the server now runs) and fails on
    a misspelt restriction, also one given with -o in master.cf, naming it."""
    rbl = "smtpd_client_restrictions = reject_rbl_client zen.example=127.0.0.[2..11]\n"
    write_config(tmp_path, "myorigin = x\n" + rbl)
    assert cli.main(["-c", str(tmp_path), "check"]) == 0
    write_config(tmp_path, "myorigin = x\nsmtpd_client_restrictions = reject_rbl_clients x\n")
    assert cli.main(["-c", str(tmp_path), "check"]) == 1
    assert "unknown restriction 'reject_rbl_clients'" in capsys.readouterr().err
    write_config(
        tmp_path,
        "myorigin = x\n",
        "smtp inet n - n - - smtpd\n"
        "submission inet n - n - - smtpd -o smtpd_client_restrictions=permit_sasl_authenticatd\n",
    )
    assert cli.main(["-c", str(tmp_path), "check"]) == 1
    assert "permit_sasl_authenticatd" in capsys.readouterr().err
