"""DNS-based restrictions end to end: a real twistd pymta whose resolver is a
twisted.names server on loopback (tests/test_dns_names.py run as a
subprocess), and real clients (swaks, smtplib) connecting from different
loopback addresses: a listed client sees the 554 with the list's TXT text,
an unlisted one delivers, a failing list answers 450, and a client whose
PTR name points back is logged as name[addr].
"""

from __future__ import annotations

import re
import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dns_zone_server import zone_server
from tests.harness import PymtaServer

ZONE = {
    # 127.0.0.2: listed, with a reason
    "2.0.0.127.zen.test": [["A", "127.0.0.2", 60], ["TXT", "Listed by zen.test: see it", 60]],
    # 127.0.0.4: the list fails (SERVFAIL)
    "4.0.0.127.zen.test": "SERVFAIL",
    # 127.0.0.3: a forward-confirmed name
    "3.0.0.127.in-addr.arpa": [["PTR", "good.test", 60]],
    "good.test": [["A", "127.0.0.3", 60]],
}


@pytest.fixture
def dns_port(tmp_path: Path) -> Iterator[int]:
    with zone_server(tmp_path, ZONE) as port:
        yield port


def _server(tmp_path: Path, dns_port: int) -> PymtaServer:
    return PymtaServer(
        tmp_path / "pymta",
        main_cf_extra=(
            f"pymta_dns_servers = 127.0.0.1:{dns_port}\n"
            "smtpd_client_restrictions = reject_rbl_client zen.test=127.0.0.[2..11]\n"
        ),
    )


def _rcpt(port: int, source: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=30) as client:
        client.ehlo("client.test")
        client.mail("sender@example.test")
        reply = client.rcpt("alice@example.test")
        client.rset()
        return reply


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
def test_listed_client_sees_554_with_txt_and_unlisted_delivers(
    tmp_path: Path, dns_port: int
) -> None:
    """swaks from 127.0.0.2 (listed) gets Postfix's DNSBL reply with the TXT
    reason; from 127.0.0.1 (not listed) the mail is delivered."""
    with _server(tmp_path, dns_port) as server:
        server.start()
        listed = subprocess.run(
            ["swaks", "--server", "127.0.0.1", "--port", str(server.smtp_port),
             "--local-interface", "127.0.0.2", "--from", "s@example.test",
             "--to", "alice@example.test", "--timeout", "30"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert listed.returncode != 0
        expected = (
            "554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using "
            "zen.test; Listed by zen.test: see it"
        )
        assert f"<** {expected}" in listed.stdout
        server.wait_for_log(
            re.escape(f"NOQUEUE: reject: RCPT from unknown[127.0.0.2]: {expected};")
        )
        ok = subprocess.run(
            ["swaks", "--server", "127.0.0.1", "--port", str(server.smtp_port),
             "--local-interface", "127.0.0.1", "--from", "s@example.test",
             "--to", "alice@example.test", "--timeout", "30"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert ok.returncode == 0, ok.stdout
        server.wait_for_log(r"to=<alice@example\.test>, relay=virtual, .*status=sent")


def test_failing_list_is_450_and_confirmed_name_is_logged(tmp_path: Path, dns_port: int) -> None:
    """A list that answers SERVFAIL gives 450 4.7.1 (never 5xx); a client whose
    PTR name points back is logged as good.test[127.0.0.3] and accepted."""
    with _server(tmp_path, dns_port) as server:
        server.start()
        code, text = _rcpt(server.smtp_port, "127.0.0.4")
        assert code == 450 and text.startswith(b"4.7.1 Client host [127.0.0.4]: temporary DNS")
        assert _rcpt(server.smtp_port, "127.0.0.3")[0] == 250
        server.wait_for_log(r"connect from good\.test\[127\.0\.0\.3\]")
        server.wait_for_log(r"connect from unknown\[127\.0\.0\.4\]")
