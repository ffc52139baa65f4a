"""End to end over TLS: sync clients finish, and LOGOUT / QUIT end the connection.

A real ``twistd pymta`` on loopback serves IMAP with STARTTLS and IMAPS
(``imapd_tls_wrappermode``), POP3 with STLS and POP3S
(``pop3d_tls_wrappermode``), with a certificate for localhost / 127.0.0.1
signed by a test CA (tests.tls_ca). The clients verify it as users run
them: mbsync (``SSLType STARTTLS`` and ``IMAPS``, ``CertificateFile``),
offlineimap (``starttls``, ``sslcacertfile``), fetchmail (STLS and
``ssl``, ``sslcertck``), imaplib and poplib (a verifying ssl context).
Before the fix the TLS layer never closed after LOGOUT / QUIT and mbsync
hung after ``OK Logout completed``; every client runs under a timeout, so a
hang fails the test instead of stalling the run.
"""

from __future__ import annotations

import imaplib
import os
import poplib
import shutil
import smtplib
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import DEFAULT_MASTER_CF, IMAP_SERVICE, POP3_SERVICE, PymtaServer
from tests.tls_ca import ServerCertificates, make_ca

MBSYNC = shutil.which("mbsync")
OFFLINEIMAP = shutil.which("offlineimap")
FETCHMAIL = shutil.which("fetchmail")

#: Seconds a client may take; a client that hangs at the end fails here.
CLIENT_TIMEOUT = 120

#: The implicit-TLS listener (a fourth spelling of loopback keeps its
#: service name, and so its port in the harness, apart).
IMPLICIT = "[localhost]:0"


def tls_main_cf(certs: ServerCertificates) -> str:
    lines = []
    for prefix in ("imapd", "pop3d"):
        lines += [
            f"{prefix}_tls_security_level = may",
            f"{prefix}_tls_cert_file = {certs.cert_file}",
            f"{prefix}_tls_key_file = {certs.key_file}",
        ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def certs(tmp_path: Path) -> ServerCertificates:
    return make_ca(tmp_path / "ca")


@pytest.fixture
def imap_server(tmp_path: Path, certs: ServerCertificates) -> Iterator[PymtaServer]:
    master = (
        DEFAULT_MASTER_CF
        + IMAP_SERVICE
        + f"{IMPLICIT} inet n - n - - imapd\n  -o imapd_tls_wrappermode=yes\n"
    )
    with PymtaServer(tmp_path / "server", tls_main_cf(certs), master_cf=master) as instance:
        instance.start()
        yield instance
        instance.stop()


@pytest.fixture
def pop3_server(tmp_path: Path, certs: ServerCertificates) -> Iterator[PymtaServer]:
    master = (
        DEFAULT_MASTER_CF
        + POP3_SERVICE
        + f"{IMPLICIT} inet n - n - - pop3d\n  -o pop3d_tls_wrappermode=yes\n"
    )
    with PymtaServer(tmp_path / "server", tls_main_cf(certs), master_cf=master) as instance:
        instance.start()
        yield instance
        instance.stop()


def deliver(server: PymtaServer, count: int) -> None:
    """Send count messages to alice with smtplib; wait until they are delivered."""
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
        for n in range(count):
            client.sendmail(
                "sender@client.test",
                ["alice@example.test"],
                f"Subject: tls {n}\r\nMessage-ID: <tls{n}@client.test>\r\n\r\nbody {n}\r\n",
            )
    server.wait_for_log(r"status=sent", count=count)


def port(server: PymtaServer, implicit: bool, plain_port: int) -> int:
    return server.ports[IMPLICIT] if implicit else plain_port


def client_context(certs: ServerCertificates) -> ssl.SSLContext:
    """Verifies the server against the test CA, host name included."""
    return ssl.create_default_context(cafile=str(certs.ca_file))


def run(command: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    """Run a client; one left waiting (for the end after LOGOUT) fails the
    test after CLIENT_TIMEOUT seconds, with what it printed."""
    env = dict(os.environ, HOME=str(home))
    try:
        result = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=CLIENT_TIMEOUT
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{command} hung:\n{e.stdout!r}\n{e.stderr!r}") from None
    assert result.returncode == 0, f"{command}:\n{result.stdout}{result.stderr}"
    return result


def messages_in(folder: Path) -> list[bytes]:
    return [p.read_bytes() for sub in ("new", "cur") for p in (folder / sub).glob("*")]


# imaplib and poplib: the end of the connection -------------------------------------


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "imaps"])
def test_imap_logout_over_tls_ends_the_connection(
    imap_server: PymtaServer, certs: ServerCertificates, implicit: bool
) -> None:
    """After LOGOUT over STARTTLS or IMAPS, imaplib reads BYE, the tagged OK and
    then EOF from the server (within the socket timeout)."""
    context = client_context(certs)
    number = port(imap_server, implicit, imap_server.imap_port)
    client: imaplib.IMAP4
    if implicit:
        client = imaplib.IMAP4_SSL("localhost", number, ssl_context=context, timeout=30)
    else:
        client = imaplib.IMAP4("localhost", number, timeout=30)
        assert client.starttls(context)[0] == "OK"
    client.login("alice@example.test", "alice-pw")
    assert client.select("INBOX")[0] == "OK"
    client.sock.settimeout(10)
    client.send(b"z LOGOUT\r\n")
    lines = []
    while line := client.readline():  # b"" is the end; a hang raises TimeoutError
        lines.append(line)
    assert lines[-2:] == [b"* BYE Logging out\r\n", b"z OK Logout completed.\r\n"]
    client.shutdown()
    imap_server.wait_for_log(r"imap\(alice@example.test\).*Disconnected: Logged out")


@pytest.mark.parametrize("implicit", [False, True], ids=["stls", "pop3s"])
def test_pop3_quit_over_tls_ends_the_connection(
    pop3_server: PymtaServer, certs: ServerCertificates, implicit: bool
) -> None:
    """After QUIT over STLS or POP3S, poplib reads +OK and then EOF."""
    deliver(pop3_server, 1)
    context = client_context(certs)
    number = port(pop3_server, implicit, pop3_server.pop3_port)
    client: poplib.POP3
    if implicit:
        client = poplib.POP3_SSL("localhost", number, context=context, timeout=30)
    else:
        client = poplib.POP3("localhost", number, timeout=30)
        client.stls(context)
    client.user("alice@example.test")
    client.pass_("alice-pw")
    assert len(client.retr(1)[1]) >= 3
    assert client.sock is not None
    client.sock.settimeout(10)
    assert client._shortcmd("QUIT").startswith(b"+OK")
    assert client.file.readline() == b""  # the end; a hang raises TimeoutError
    client.close()


# sync clients --------------------------------------------------------------------


def mbsync_config(tmp_path: Path, number: int, ssl_type: str, certs: ServerCertificates) -> Path:
    local = tmp_path / "local"
    local.mkdir()
    config = tmp_path / "mbsyncrc"
    config.write_text(
        f"""IMAPAccount pymta
Host localhost
Port {number}
User alice@example.test
Pass alice-pw
SSLType {ssl_type}
SSLVersions TLSv1.2 TLSv1.3
CertificateFile {certs.ca_file}
AuthMechs PLAIN LOGIN

IMAPStore remote
Account pymta

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel pymta
Far :remote:
Near :local:
Patterns INBOX
Create Both
Expunge Both
SyncState *
"""
    )
    return config


@pytest.mark.skipif(MBSYNC is None, reason="mbsync (Debian isync) is not installed")
@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "imaps"])
def test_mbsync_over_tls_syncs_and_exits(
    tmp_path: Path, imap_server: PymtaServer, certs: ServerCertificates, implicit: bool
) -> None:
    """mbsync with SSLType STARTTLS or IMAPS, verifying the certificate,
    downloads every message and exits (it waits for the end after LOGOUT)."""
    assert MBSYNC is not None
    deliver(imap_server, 5)
    number = port(imap_server, implicit, imap_server.imap_port)
    config = mbsync_config(tmp_path, number, "IMAPS" if implicit else "STARTTLS", certs)
    run([MBSYNC, "-c", str(config), "pymta"], tmp_path)
    assert len(messages_in(tmp_path / "local" / "INBOX")) == 5
    imap_server.wait_for_log(r"imap-login: Login: user=<alice@example.test>.*, TLS, session=")
    # A second run over the same state finds nothing new and exits too.
    run([MBSYNC, "-c", str(config), "pymta"], tmp_path)
    imap_server.wait_for_log(r"Disconnected: Logged out", count=2)


@pytest.mark.skipif(
    OFFLINEIMAP is None, reason="offlineimap (Debian offlineimap3) is not installed"
)
def test_offlineimap_over_starttls_syncs_and_exits(
    tmp_path: Path, imap_server: PymtaServer, certs: ServerCertificates
) -> None:
    """offlineimap with STARTTLS, verifying the certificate against the test CA,
    downloads every message and exits.

    imaplib2 (offlineimap's IMAP library) has a race of its own: now and then
    the CAPABILITY it sends right after the STARTTLS handshake never leaves
    the client (the server's TLS layer sees the client's Finished and then
    nothing). It happens with Dovecot 2.3.19 as with pymta: 3 stalls in 200
    runs against each, with the same imaplib2 loop (connect, starttls, login,
    logout). So a run that stalls there (caught by offlineimap's own socket
    timeout) is tried again, at most five times; a server that cannot serve
    offlineimap still fails every try. (With offlineimap itself the stall
    is more frequent: 3 runs of 8 stalled at least once, on this code and
    on the code before the store's watchers moved, alike; three tries
    failed CI once.)"""
    assert OFFLINEIMAP is not None
    deliver(imap_server, 5)
    config = tmp_path / "offlineimaprc"
    config.write_text(
        f"""[general]
accounts = pymta
metadata = {tmp_path}/offlineimap-meta
socktimeout = 15

[Account pymta]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {tmp_path}/local

[Repository remote]
type = IMAP
remotehost = localhost
remoteport = {imap_server.imap_port}
remoteuser = alice@example.test
remotepass = alice-pw
ssl = no
starttls = yes
sslcacertfile = {certs.ca_file}
folderfilter = lambda name: name == "INBOX"
"""
    )
    (tmp_path / "local").mkdir()
    command = [OFFLINEIMAP, "-c", str(config), "-o", "-u", "basic"]
    env = dict(os.environ, HOME=str(tmp_path))
    for _attempt in range(5):
        output = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=CLIENT_TIMEOUT
        )
        said = output.stdout + output.stderr
        if output.returncode == 0 and "ERROR" not in said:
            break
    assert output.returncode == 0 and "ERROR" not in said, said
    assert len(messages_in(tmp_path / "local" / "INBOX")) == 5
    imap_server.wait_for_log(r"imap-login: Login: user=<alice@example.test>.*, TLS, session=")


@pytest.mark.skipif(FETCHMAIL is None, reason="fetchmail not installed")
@pytest.mark.parametrize("implicit", [False, True], ids=["stls", "pop3s"])
def test_fetchmail_over_tls_fetches_and_exits(
    tmp_path: Path, pop3_server: PymtaServer, certs: ServerCertificates, implicit: bool
) -> None:
    """fetchmail over STLS or POP3S (ssl), checking the certificate
    (sslcertck against the test CA), fetches and deletes every message, exits."""
    assert FETCHMAIL is not None
    deliver(pop3_server, 5)
    out = tmp_path / "fetched"
    out.mkdir()
    number = port(pop3_server, implicit, pop3_server.pop3_port)
    mode = "ssl" if implicit else "sslproto tls1.2+"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll localhost protocol pop3 port {number} uidl\n"
        f"  user 'alice@example.test' password 'alice-pw' {mode}\n"
        f"  sslcertck sslcertfile '{certs.ca_file}'\n"
        f"  mda \"sh -c 'cat > {out}/$$'\"\n"
    )
    rc.chmod(0o600)
    result = subprocess.run(
        [FETCHMAIL, "-f", str(rc), "--nodetach", "--nosyslog", "-i", str(tmp_path / "ids")],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
        # FETCHMAILHOME: as root fetchmail keeps its lock in /var/run, shared
        # with every other fetchmail on the machine; one per test instead.
        env={"HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(list(out.iterdir())) == 5
    assert pop3_server.messages("alice") == []
    pop3_server.wait_for_log(r"pop3-login: Login: user=<alice@example.test>.*, TLS, session=")
