"""config_directory(): -c, then MAIL_CONFIG, then the checkout's etc/, then /etc/pymta."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymta.config import locate


def test_explicit_directory_wins() -> None:
    """-c DIR is used even when MAIL_CONFIG is set."""
    assert locate.config_directory("/x", {"MAIL_CONFIG": "/y"}) == "/x"


def test_mail_config_environment_variable() -> None:
    """Without -c, MAIL_CONFIG names the directory, as for Postfix's commands."""
    assert locate.config_directory(None, {"MAIL_CONFIG": "/y"}) == "/y"


def test_source_checkout_etc_when_it_has_main_cf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without -c or MAIL_CONFIG, a checkout's etc/ with a main.cf is used."""
    etc = tmp_path / "etc"
    etc.mkdir()
    monkeypatch.setattr(locate, "source_config_directory", lambda: etc)
    monkeypatch.chdir(tmp_path / "etc")  # a directory without etc/main.cf
    assert locate.config_directory(None, {}) == "/etc/pymta"
    (etc / "main.cf").write_text("")
    assert locate.config_directory(None, {}) == str(etc)


def test_working_directory_etc_comes_before_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed pymta run from a clone uses the clone's ./etc."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "main.cf").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(locate, "source_config_directory", lambda: tmp_path / "nowhere")
    assert locate.config_directory(None, {}) == str(tmp_path / "etc")


def test_source_config_directory_is_next_to_the_package() -> None:
    """The checkout's etc/ is the sibling of the pymta package directory."""
    import pymta

    assert locate.source_config_directory() == Path(pymta.__file__).resolve().parents[1] / "etc"


def test_reads_the_real_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit mapping, os.environ's MAIL_CONFIG is honoured."""
    monkeypatch.setenv("MAIL_CONFIG", "/from/env")
    assert locate.config_directory() == "/from/env"
