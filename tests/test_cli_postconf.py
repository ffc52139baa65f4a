"""pymta postconf: output, editing and master.cf listing, as Postfix's postconf."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pymta.cli.postconf import edit_main_cf, run
from tests.test_config_master_cf import STOCK_MASTER_CF, STOCK_POSTCONF_M

MAIN_CF = """\
# sample
myhostname = mx.example.org
mydestination = $myhostname,
    localhost
foo = bar
empty =
mua_x = permit
smtpd_client_restrictions = $mua_x
"""


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    (tmp_path / "main.cf").write_text(MAIN_CF)
    (tmp_path / "master.cf").write_text(STOCK_MASTER_CF)
    return tmp_path


def postconf(capsys: pytest.CaptureFixture[str], confdir: Path, *args: str) -> tuple[int, str, str]:
    status = run(list(args), str(confdir))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_n_prints_explicit_used_parameters_as_written(
    confdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-n prints main.cf's settings sorted and unexpanded, warning about unused ones."""
    status, out, err = postconf(capsys, confdir, "-n")
    assert status == 0
    assert out.splitlines() == [
        f"config_directory = {confdir}",
        "mua_x = permit",
        "mydestination = $myhostname, localhost",
        "myhostname = mx.example.org",
        "smtpd_client_restrictions = $mua_x",
    ]
    assert sorted(err.splitlines()) == [
        f"postconf: warning: {confdir}/main.cf: unused parameter: empty=",
        f"postconf: warning: {confdir}/main.cf: unused parameter: foo=bar",
    ]


def test_x_expands(confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-x expands $name references in the printed values."""
    _, out, _ = postconf(capsys, confdir, "-nx")
    assert "mydestination = mx.example.org, localhost" in out.splitlines()
    assert "smtpd_client_restrictions = permit" in out.splitlines()


def test_named_parameters_and_unknown_warning(
    confdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """postconf NAME prints that parameter; an unknown NAME is a warning, exit status 0."""
    status, out, err = postconf(capsys, confdir, "nosuch", "myorigin", "relayhost")
    assert status == 0
    assert out == "myorigin = $myhostname\nrelayhost =\n"
    assert "postconf: warning: nosuch: unknown parameter" in err.splitlines()


def test_h_prints_values_only(confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-h prints the values alone, one per line."""
    _, out, _ = postconf(capsys, confdir, "-hx", "myorigin", "relayhost")
    assert out == "mx.example.org\n\n"


def test_n_with_a_default_parameter_prints_nothing(
    confdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-n NAME for a known parameter not set in main.cf prints nothing and warns nothing."""
    _, out, err = postconf(capsys, confdir, "-n", "myorigin")
    assert out == ""
    assert "myorigin" not in err


def test_d_prints_defaults_without_reading_main_cf(
    confdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-d prints Postfix's defaults, ignoring main.cf, including master.cf service parameters."""
    _, out, err = postconf(
        capsys, confdir, "-d", "myorigin", "message_size_limit", "relay_destination_rate_delay"
    )
    assert out.splitlines() == [
        "myorigin = $myhostname",
        "message_size_limit = 10240000",
        "relay_destination_rate_delay = $default_destination_rate_delay",
    ]
    assert err == ""


def test_full_listing_is_sorted_and_complete(
    confdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without arguments every parameter is printed once, sorted, explicit values winning."""
    _, out, _ = postconf(capsys, confdir)
    lines = out.splitlines()
    names = [line.split(" =")[0] for line in lines]
    assert names == sorted(names) and len(names) == len(set(names))
    assert "myhostname = mx.example.org" in lines
    assert "mua_x = permit" in lines
    assert "uucp_time_limit = $command_time_limit" in lines
    assert not any(name in ("foo", "empty") for name in names)


def test_d_and_n_together_is_fatal(confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-d with -n is a fatal usage error, as in Postfix."""
    status, _, err = postconf(capsys, confdir, "-d", "-n")
    assert status == 1
    assert err.startswith("postconf: fatal: ")


def test_missing_main_cf_is_fatal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without main.cf postconf stops, naming the file."""
    status, _, err = postconf(capsys, tmp_path, "-n")
    assert status == 1
    assert str(tmp_path / "main.cf") in err


def test_c_option_overrides_the_directory(
    confdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-c DIR among postconf's own options chooses the configuration directory."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "main.cf").write_text("myorigin = other.example\n")
    status = run(["-c", str(other), "-h", "myorigin"], str(confdir))
    assert status == 0
    assert capsys.readouterr().out == "other.example\n"


def test_M_prints_master_cf_like_postfix(confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-M prints every master.cf service in Postfix's own layout."""
    _, out, _ = postconf(capsys, confdir, "-M")
    assert out == STOCK_POSTCONF_M


def test_M_selects_services(confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-M service/type prints just those services; an unmatched one is a warning, as in Postfix."""
    status, out, err = postconf(capsys, confdir, "-M", "smtp/inet", "nosuch")
    assert status == 0
    assert out == "smtp       inet  n       -       y       -       -       smtpd\n"
    assert err == 'postconf: warning: unmatched request: "nosuch"\n'


def test_e_edits_in_place_keeping_comments(
    confdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-e replaces a definition with its continuation lines, appends new ones, keeps comments."""
    status, _, _ = postconf(capsys, confdir, "-e", "mydestination = localhost", "relayhost=[r]:25")
    assert status == 0
    text = (confdir / "main.cf").read_text()
    assert text == MAIN_CF.replace("$myhostname,\n    localhost", "localhost") + (
        "relayhost = [r]:25\n"
    )
    assert not (confdir / "main.cf.tmp").exists()


def test_e_keeps_the_file_mode(confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The rewritten main.cf keeps the permissions of the old one."""
    (confdir / "main.cf").chmod(0o640)
    postconf(capsys, confdir, "-e", "myorigin=x")
    assert (confdir / "main.cf").stat().st_mode & 0o777 == 0o640


def test_e_bad_argument_is_fatal_and_leaves_the_file(
    confdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-e without '=' is fatal and main.cf is untouched."""
    status, _, err = postconf(capsys, confdir, "-e", "myorigin")
    assert status == 1
    assert "missing '='" in err
    assert (confdir / "main.cf").read_text() == MAIN_CF


def test_X_removes_and_hash_comments_out(confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-X deletes a parameter with its continuation lines; -# comments it out."""
    postconf(capsys, confdir, "-X", "mydestination")
    postconf(capsys, confdir, "-#", "foo")
    text = (confdir / "main.cf").read_text()
    assert "mydestination" not in text and "localhost" not in text
    assert "#foo = bar\n" in text


def test_edit_replaces_every_definition() -> None:
    """Every definition of an edited parameter gets the new value, so the new one is in effect."""
    text = "a = 1\nb = 2\na = 3\n  continued\nc = 4"
    assert edit_main_cf(text, {"a": "9", "d": ""}) == "a = 9\nb = 2\na = 9\nc = 4\nd =\n"


POSTFIX = shutil.which("postconf")


@pytest.mark.skipif(POSTFIX is None, reason="Postfix's postconf not installed")
@pytest.mark.parametrize(
    "args",
    [
        ["-n"],
        ["-nx"],
        ["myhostname", "mydestination", "relayhost"],
        ["-h", "smtpd_banner"],
        ["-x", "smtpd_banner", "mydomain"],
        ["-d", "message_size_limit", "maximal_queue_lifetime", "relay_destination_rate_delay"],
        ["-M"],
        ["-M", "relay/unix", "pickup"],
    ],
)
def test_output_matches_real_postfix(
    args: list[str], confdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On the same main.cf and master.cf, stdout equals Debian's postconf."""
    assert POSTFIX is not None
    real = subprocess.run(
        [POSTFIX, "-c", str(confdir), *args], capture_output=True, text=True, check=False
    )
    _, out, _ = postconf(capsys, confdir, *args)
    assert out == real.stdout


@pytest.mark.skipif(POSTFIX is None, reason="Postfix's postconf not installed")
def test_edit_matches_real_postfix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-e, -X and -# leave main.cf exactly as Debian's postconf does."""
    assert POSTFIX is not None
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for d in (ours, theirs):
        d.mkdir()
        (d / "main.cf").write_text(MAIN_CF)
    edits = [
        ["-e", "mydestination = localhost", "relayhost=[r]:25"],
        ["-X", "foo"],
        ["-#", "mua_x"],
    ]
    for edit in edits:
        subprocess.run([POSTFIX, "-c", str(theirs), *edit], capture_output=True, check=True)
        assert run(edit, str(ours)) == 0
    capsys.readouterr()
    assert (ours / "main.cf").read_text() == (theirs / "main.cf").read_text()


@pytest.mark.parametrize("args", [["-n"], ["-e", "myorigin=x"]])
def test_main_cf_not_utf8_is_a_fatal_naming_the_line(
    confdir: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    """postconf, and postconf -e, on a main.cf that is not UTF-8 stop with a
    message naming file and line, and -e leaves the file as it was."""
    original = b"myhostname = mx.example.org\nfoo = caf\xe9\n"
    (confdir / "main.cf").write_bytes(original)
    status, _, err = postconf(capsys, confdir, *args)
    assert status != 0
    assert f"{confdir / 'main.cf'}, line 2: not UTF-8" in err
    assert (confdir / "main.cf").read_bytes() == original
