"""smtpd_sasl_type = dovecot end to end: the real Debian Dovecot auth
service (started here with its own configuration, base_dir and
passwd-file, and an auth socket under pymta's queue_directory as Postfix
sites have it), pymta's submission service asking it, and swaks --auth
over STARTTLS as the mail client."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import DEFAULT_MASTER_CF, PymtaServer
from tests.test_tls_settings import write_chain

pytestmark = [
    pytest.mark.skipif(shutil.which("dovecot") is None, reason="dovecot-core is not installed"),
    pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="dovecot's master runs as root here"),
]

SUBMISSION = (
    "127.0.0.3:0 inet n - n - - smtpd\n"
    "  -o smtpd_tls_security_level=encrypt\n"
    "  -o smtpd_sasl_auth_enable=yes\n"
    "  -o smtpd_sasl_type=dovecot\n"
    "  -o smtpd_sasl_path=private/auth\n"
    "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n"
)

DOVECOT_CONF = """\
base_dir = {work}/run
state_dir = {work}/state
log_path = {work}/dovecot.log
instance_name = pymta-test-{pid}
protocols =
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {work}/users
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home=/nonexistent
}}
service auth {{
  unix_listener {socket} {{
    mode = 0600
  }}
}}
"""


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Path]:
    """A Dovecot auth service listening on <site>/spool/private/auth; yields
    the pymta site directory (the socket's queue_directory)."""
    site = tmp_path / "site"
    socket_path = site / "spool" / "private" / "auth"
    socket_path.parent.mkdir(parents=True)
    # Dovecot's auth process runs as its own user: its files need a
    # directory it can enter (pytest's tree is 0700).
    work = Path(tempfile.mkdtemp(prefix="pymta-dovecot-"))
    work.chmod(0o755)
    (work / "users").write_text("carol@example.test:{PLAIN}carol-pw::::::\n")
    (work / "users").chmod(0o644)
    conf = work / "dovecot.conf"
    conf.write_text(DOVECOT_CONF.format(work=work, socket=socket_path, pid=os.getpid()))
    process = subprocess.Popen(["dovecot", "-F", "-c", str(conf)])
    try:
        # No readiness signal: poll for the listening socket, with a deadline.
        deadline = time.monotonic() + 30
        while not socket_path.exists():
            assert process.poll() is None, (work / "dovecot.log").read_text()
            assert time.monotonic() < deadline, "dovecot did not start"
            time.sleep(0.05)
        yield site
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        shutil.rmtree(work, ignore_errors=True)


def _swaks(port: int, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.3:{port}",
            "--tls",
            "--from",
            "carol@example.test",
            "--to",
            "friend@elsewhere.example",
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_swaks_authenticates_through_dovecot(dovecot: Path, tmp_path: Path) -> None:
    """swaks AUTH PLAIN and AUTH LOGIN with Dovecot's user (unknown to
    pymta's own passdb) relay; a wrong password gets 535 5.7.8; the log
    names the Dovecot login."""
    chain = tmp_path / "chain.pem"
    write_chain(chain, "localhost")
    settings = f"smtpd_tls_chain_files = {chain}\n"
    with PymtaServer(dovecot, settings, master_cf=DEFAULT_MASTER_CF + SUBMISSION) as server:
        server.start()
        port = server.ports["127.0.0.3:0"]
        for mechanism in ("PLAIN", "LOGIN"):
            ok = _swaks(
                port,
                "--auth",
                mechanism,
                "--auth-user",
                "carol@example.test",
                "--auth-password",
                "carol-pw",
                "--quit-after",
                "RCPT",
            )
            assert ok.returncode == 0, ok.stdout + ok.stderr
            assert "235 2.7.0 Authentication successful" in ok.stdout
            assert "<~  250 2.1.5" in ok.stdout
        bad = _swaks(
            port,
            "--auth",
            "PLAIN",
            "--auth-user",
            "carol@example.test",
            "--auth-password",
            "wrong",
            "--quit-after",
            "AUTH",
        )
        assert bad.returncode != 0
        assert "535 5.7.8" in bad.stdout, bad.stdout
        sent = _swaks(
            port,
            "--auth",
            "PLAIN",
            "--auth-user",
            "carol@example.test",
            "--auth-password",
            "carol-pw",
            "--to",
            "alice@example.test",
        )
        assert sent.returncode == 0, sent.stdout
        server.wait_for_log(r"sasl_method=PLAIN, sasl_username=carol@example\.test")
        server.wait_for_log(r"SASL PLAIN authentication failed")
        server.stop()


def test_dovecot_down_is_a_temporary_failure(tmp_path: Path) -> None:
    """With no Dovecot listening on smtpd_sasl_path, AUTH answers 454 4.7.0
    (try again later), never 535."""
    chain = tmp_path / "chain.pem"
    write_chain(chain, "localhost")
    settings = f"smtpd_tls_chain_files = {chain}\n"
    site = tmp_path / "site"
    with PymtaServer(site, settings, master_cf=DEFAULT_MASTER_CF + SUBMISSION) as server:
        server.start()
        result = _swaks(
            server.ports["127.0.0.3:0"],
            "--auth",
            "PLAIN",
            "--auth-user",
            "carol@example.test",
            "--auth-password",
            "carol-pw",
            "--quit-after",
            "AUTH",
        )
        assert "454 4.7.0" in result.stdout, result.stdout
        server.stop()
