"""`pymta check` and the start agree: what stops one stops the other, with the
same one-line message; what the start warns about, check prints."""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest

from pymta.cli import main as cli
from pymta.config.errors import ConfigError
from pymta.service import check, makeService
from pymta.tap import Options
from pymta.tap import makeService as tap_make_service
from tests.harness import (
    DEFAULT_MAIN_CF,
    DEFAULT_MASTER_CF,
    IMAP_SERVICE,
    POP3_SERVICE,
    REPO,
    PymtaServer,
    wait_for_file,
)


def write_config(root: Path, main_cf_extra: str = "", master_cf: str = DEFAULT_MASTER_CF) -> Path:
    """A configuration directory like the end-to-end tests' (tests/harness.py)."""
    etc = root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "main.cf").write_text(DEFAULT_MAIN_CF.format(root=root) + main_cf_extra)
    (etc / "master.cf").write_text(master_cf)
    (etc / "vmailbox").write_text("alice@example.test example.test/alice/\n")
    (etc / "aliases").write_text("postmaster: alice@example.test\n")
    (etc / "virtual").write_text("")
    (etc / "passwd").write_text("alice@example.test:{PLAIN}pw::::::\n")
    return etc


REFUSED = [
    pytest.param(
        "smtpd_tls_security_level = may\nsmtpd_tls_cert_file = /nonexistent/cert.pem\n",
        DEFAULT_MASTER_CF,
        "smtpd_tls_cert_file: cannot read certificate /nonexistent/cert.pem: "
        "No such file or directory",
        id="missing-certificate",
    ),
    pytest.param(
        "smtpd_recipient_restrictions = reject_all_spam, reject_unlisted_recipient\n",
        DEFAULT_MASTER_CF,
        "unknown restriction 'reject_all_spam'",
        id="unknown-restriction",
    ),
    pytest.param(
        "smtpd_relay_restrictions = permit_mynetworks\n"
        "smtpd_recipient_restrictions = permit_mynetworks\n",
        DEFAULT_MASTER_CF,
        "open relay",
        id="open-relay",
    ),
    pytest.param(
        "pymta_passdb = ldap:/etc/ldap.conf\n",
        DEFAULT_MASTER_CF + POP3_SERVICE,
        "expected passwd-file:/path/to/passwd",
        id="passdb",
    ),
    pytest.param(
        "",
        DEFAULT_MASTER_CF + IMAP_SERVICE.rstrip("\n") + " -o imapd_tls_wrappermode=yes\n",
        "imapd_tls_wrappermode = yes needs imapd_tls_cert_file",
        id="imaps-without-certificate",
    ),
    pytest.param(
        "smtpd_tls_security_level = may\nsmtpd_tls_cert_file = /nonexistent/cert.pem\n"
        "smtpd_tls_protocols = <=TLSv1.1\n",
        DEFAULT_MASTER_CF,
        "smtpd_tls_protocols: '<=TLSv1.1' allows neither TLSv1.2 nor TLSv1.3",
        id="tls-protocols",
    ),
    pytest.param(
        "smtp_tls_mandatory_ciphers = null\n",
        DEFAULT_MASTER_CF + "smtp unix - - n - - smtp\n",
        "smtp_tls_mandatory_ciphers: the null grade",
        id="client-cipher-grade",
    ),
    pytest.param(
        "smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\nsmtpd_sasl_path = inet:nowhere\n",
        DEFAULT_MASTER_CF,
        "smtpd_sasl_path: bad value 'inet:nowhere'",
        id="dovecot-sasl-path",
    ),
    pytest.param(
        "message_size_limit = big\n",
        DEFAULT_MASTER_CF,
        "message_size_limit: bad value 'big'",
        id="invalid-value",
    ),
]


@pytest.mark.parametrize(("main_cf_extra", "master_cf", "message"), REFUSED)
def test_what_stops_the_start_stops_the_check(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    main_cf_extra: str,
    master_cf: str,
    message: str,
) -> None:
    """Each configuration the start refuses makes `pymta check` exit 1 with the
    same one-line `pymta: fatal:` message (file/line or parameter, and cause)."""
    etc = write_config(tmp_path, main_cf_extra, master_cf)
    with pytest.raises(ConfigError) as start:
        makeService(str(etc))
    assert message in str(start.value)
    assert cli.main(["-c", str(etc), "check"]) == 1
    err = capsys.readouterr().err
    assert f"pymta: fatal: {start.value}\n" in err
    assert err.count("\n") == err.count("pymta: ")  # one line per diagnostic


def test_a_table_without_its_db_is_a_check_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hash: table never compiled does not stop the start (its lookups fail
    and mail is deferred), and `pymta check` says so, naming the command that
    compiles it."""
    etc = write_config(tmp_path, "virtual_mailbox_maps = hash:$config_directory/vmailbox\n")
    makeService(str(etc))  # starts, with a surrogate table
    warnings = check(str(etc))
    assert any(
        f"hash:{etc}/vmailbox is unavailable" in w and f"pymta postmap hash:{etc}/vmailbox" in w
        for w in warnings
    ), warnings
    assert cli.main(["-c", str(etc), "check"]) == 0
    assert f"pymta: warning: hash:{etc}/vmailbox is unavailable" in capsys.readouterr().err


def test_the_sample_configuration_checks_without_writing(tmp_path: Path) -> None:
    """check runs the start's code but writes nothing: no queue directory, no
    self-signed certificate (the start would make both)."""
    etc = write_config(
        tmp_path,
        "smtpd_tls_security_level = may\n"
        "smtpd_tls_cert_file = $data_directory/cert.pem\n"
        "smtpd_tls_key_file = $data_directory/key.pem\n"
        "pymta_tls_create_self_signed = yes\n",
    )
    assert check(str(etc)) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["etc"]


def test_twistd_without_a_configuration_is_a_one_line_hint(tmp_path: Path) -> None:
    """`twistd pymta` whose configuration directory has no main.cf (outside a
    clone: /etc/pymta) stops with one line saying what to do."""
    options = Options()
    options.parseOptions(["--config", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit) as stop:
        tap_make_service(options)
    text = str(stop.value.code)
    assert text.startswith(f"pymta: fatal: no configuration: {tmp_path}/nowhere/main.cf ")
    assert "--config DIR" in text and "\n" not in text


def test_twistd_with_a_missing_certificate_says_so_in_one_line(tmp_path: Path) -> None:
    """A real `twistd -n pymta` with a certificate that does not exist exits 1
    with one line naming the file, line, parameter and "No such file or
    directory", and no traceback."""
    etc = write_config(
        tmp_path, "smtpd_tls_security_level = may\nsmtpd_tls_cert_file = /x/cert.pem\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("MAIL_CONFIG", None)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "pymta",
            "--config",
            str(etc),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    lines = (etc / "main.cf").read_text().splitlines()
    line = lines.index("smtpd_tls_cert_file = /x/cert.pem") + 1
    assert result.stderr.strip() == (
        f"pymta: fatal: {etc}/main.cf, line {line}: smtpd_tls_cert_file: "
        "cannot read certificate /x/cert.pem: No such file or directory"
    )


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    """A listener whose port is taken stops twistd with one line naming the
    master.cf line and "Address already in use", and removes the pid file."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        etc = write_config(
            tmp_path, master_cf=DEFAULT_MASTER_CF.replace("127.0.0.1:0 ", f"127.0.0.1:{port} ")
        )
        env = dict(os.environ, PYTHONPATH=str(REPO))
        env.pop("MAIL_CONFIG", None)
        pidfile = tmp_path / "twistd.pid"
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                f"--pidfile={pidfile}",
                "pymta",
                "--config",
                str(etc),
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in output
    assert (
        f"pymta: fatal: {etc}/master.cf, line 1: service 127.0.0.1:{port}: "
        f"cannot listen on 127.0.0.1:{port}: Address already in use"
    ) in output
    assert not pidfile.exists()


def test_rcpt_451_for_a_missing_db_is_explained_in_the_mail_log(tmp_path: Path) -> None:
    """With virtual_mailbox_maps a hash: table never compiled, RCPT answers
    451 4.3.0 and the mail log (maillog_file) says which table is unavailable
    and why, as Postfix logs its surrogate tables."""
    maillog = tmp_path / "maillog"
    with PymtaServer(
        tmp_path,
        main_cf_extra=(
            "virtual_mailbox_maps = hash:$config_directory/vmailbox\n"
            "smtpd_recipient_restrictions = reject_unlisted_recipient\n"
            f"maillog_file = {maillog}\n"
        ),
    ) as server:
        server.start()
        with smtplib.SMTP("127.0.0.1", server.smtp_port) as client:
            client.ehlo()
            client.mail("x@client.test")
            code, _text = client.rcpt("alice@example.test")
            assert code == 451
        wait_for_file(maillog, lambda: "NOQUEUE: reject" in maillog.read_text())
        text = maillog.read_text()
        assert (
            f"warning: hash:{server.config_dir}/vmailbox is unavailable. open database "
            f"{server.config_dir}/vmailbox.db: No such file or directory"
        ) in text
