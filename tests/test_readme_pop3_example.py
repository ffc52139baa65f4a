"""The README's Python example (send with smtplib, read with poplib) works
against a real server, however fast the login is."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from tests.harness import DEFAULT_MASTER_CF, POP3_SERVICE, REPO, PymtaServer

TLS = """\
smtpd_tls_security_level = may
smtpd_tls_cert_file = $data_directory/smtpd-cert.pem
smtpd_tls_key_file = $data_directory/smtpd-key.pem
pymta_tls_create_self_signed = yes
pop3d_tls_security_level = none
pymta_mailbox_sync_delay = 300ms
"""

# {PLAIN} passwords (a login that costs nothing) and mailbox writes held for
# company (pymta_mailbox_sync_delay) make the delivery finish well after the
# 250: the old example, which read POP3 at once, failed here every time.
PASSWD = "bob@example.test:{PLAIN}bob-secret::::::\n"


def readme_example() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(
        r"<!-- pop3-example -->\s*```python\n(.*?)```\s*<!-- /pop3-example -->", readme, re.S
    )
    assert block, "README.md lost its Python POP3 example"
    return block.group(1)


def test_readme_example_prints_the_message_it_sent(tmp_path: Path) -> None:
    """Pointed at a test server's ports, the example sends over STARTTLS,
    waits for the delivery and prints the message it sent; three runs in a
    row each find their own message."""
    with PymtaServer(
        tmp_path, main_cf_extra=TLS, master_cf=DEFAULT_MASTER_CF + POP3_SERVICE, passwd=PASSWD
    ) as server:
        server.start()
        code = (
            readme_example()
            .replace('"127.0.0.1", 2525', f'"127.0.0.1", {server.smtp_port}')
            .replace('"127.0.0.1", 1110', f'"127.0.0.1", {server.pop3_port}')
        )
        assert str(server.smtp_port) in code and str(server.pop3_port) in code
        for _ in range(3):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(code, {"__name__": "readme_example"})
            assert "b'Subject: hi'" in out.getvalue() and "b'hello'" in out.getvalue()
        assert len(server.messages("bob")) == 3
