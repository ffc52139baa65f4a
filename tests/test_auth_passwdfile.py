"""Dovecot passwd-file parsing, mail locations, and the mailbox locator."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock

from pymta.auth.locate import MailboxLocator
from pymta.auth.passwdfile import PasswdFile, parse_line, parse_text
from pymta.tables.interface import TableError


def test_parse_full_line() -> None:
    """Every field of a Dovecot passwd-file line is read; extra fields are key=value pairs."""
    e = parse_line(
        "User@Example.org:{SHA512-CRYPT}$6$s$h:1000:1001:Real Name:/home/u:/bin/false:"
        "mail=maildir:/srv/mail/u:LAYOUT=fs quota_rule=*:storage=1G nologin"
    )
    assert e is not None
    assert e.user == "user@example.org"
    assert e.password is not None and e.password.scheme == "SHA512-CRYPT"
    assert (e.uid, e.gid, e.gecos, e.home, e.shell) == (
        "1000",
        "1001",
        "Real Name",
        "/home/u",
        "/bin/false",
    )
    assert e.extra["mail"] == "maildir:/srv/mail/u:LAYOUT=fs"
    assert e.extra["quota_rule"] == "*:storage=1G"
    assert "nologin" in e.extra
    assert e.mail_location() == "/srv/mail/u"


def test_short_lines_comments_and_blank() -> None:
    """Missing trailing fields are empty; comments and blank lines give no entry."""
    e = parse_line("a@b:{PLAIN}x")
    assert e is not None and e.home == "" and dict(e.extra) == {}
    assert parse_line("# comment") is None
    assert parse_line("   ") is None
    no_pw = parse_line("a@b:")
    assert no_pw is not None and no_pw.password is None


def test_mail_location_forms() -> None:
    """mail= with ~ uses home; userdb_mail= also works; non-maildir locations are ignored."""
    e = parse_line("a@b:{PLAIN}x::::/home/a::userdb_mail=maildir:~/Maildir")
    assert e is not None and e.mail_location() == "/home/a/Maildir"
    m = parse_line("a@b:{PLAIN}x::::/home/a::mail=mbox:~/mail")
    assert m is not None and m.mail_location() is None


def test_bad_lines_skipped_first_wins() -> None:
    """A malformed line is skipped; of two lines for one user the first counts."""
    entries = parse_text(":{PLAIN}nouser\na@b:{PLAIN}1\nA@B:{PLAIN}2\n")
    assert list(entries) == ["a@b"]
    assert entries["a@b"].password is not None and entries["a@b"].password.value == "1"


def test_locator_order(tmp_path: Path) -> None:
    """mail= wins over home, home over virtual_mailbox_maps; the map result is under the base."""
    path = tmp_path / "passwd"
    path.write_text(
        "a@x:{PLAIN}p::::/home/a::mail=maildir:/m/a\nb@x:{PLAIN}p::::/home/b::\nc@x:{PLAIN}p\n"
    )
    table = {"c@x": "x/c/", "d@x": "x/d/", "e@x": "x/e-mbox", "f@x": "../../etc/"}
    locate = MailboxLocator(PasswdFile(str(path), Clock()), table.get, "/var/vmail")
    assert locate("a@x") == "/m/a"
    assert locate("b@x") == "/home/b"
    assert locate("c@x") == "/var/vmail/x/c"
    assert locate("d@x") == "/var/vmail/x/d"
    assert locate("e@x") is None  # an mbox: not served
    assert locate("f@x") is None  # would leave the base
    assert locate("zz@x") is None


def test_locator_table_failure_is_none(tmp_path: Path) -> None:
    """A failing virtual_mailbox_maps lookup gives no location (not a crash)."""

    def failing(key: str) -> str | None:
        raise TableError("down")

    assert MailboxLocator(None, failing, "/v")("a@x") is None
