"""smtpd's anvil rate limits (pymta.smtpd.anvil): Postfix's replies and log
lines per event kind, the time unit, the exceptions, and one count shared
by separate processes through the table file."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from pymta.anvil import CONNECTION_LEASE, ConnectionCounts
from pymta.auth.penalty import FilePenaltyTable
from pymta.config.config import Config
from pymta.smtpd.anvil import ClientRates
from pymta.smtpd.testing import LogCapture, SMTPHarness
from pymta.tls import ServerTLS

CLIENT = "203.0.113.5"


@pytest.fixture
def maillog_lines() -> Iterator[list[str]]:
    with LogCapture() as capture:
        yield capture.maillog


def _harness(tmp_path: Path, settings: str, clock: Clock | None = None) -> SMTPHarness:
    return SMTPHarness(
        f"data_directory = {tmp_path}\nmynetworks = 127.0.0.0/8\n{settings}", clock=clock
    )


def test_message_rate_limit(tmp_path: Path, maillog_lines: list[str]) -> None:
    """smtpd_client_message_rate_limit = 2: the third MAIL in one time unit
    gets 450 4.7.1 Error: too much mail from ADDR and Postfix's warning;
    after anvil_rate_time_unit the client may send again."""
    clock = Clock()
    clock.advance(1000)
    h = _harness(tmp_path, "smtpd_client_message_rate_limit = 2\n", clock)
    h.send("EHLO client.example\n")
    for _ in range(2):
        assert h.send("MAIL FROM:<a@sender.example>\nRSET\n") == [
            "250 2.1.0 Ok",
            "250 2.0.0 Ok",
        ]
    assert h.send("MAIL FROM:<a@sender.example>\n") == [
        f"450 4.7.1 Error: too much mail from {CLIENT}"
    ]
    assert any(
        f"Message delivery request rate limit exceeded: 3 from unknown[{CLIENT}] "
        "for service smtpd" in line
        for line in maillog_lines
    )
    clock.advance(60)
    assert h.send("MAIL FROM:<a@sender.example>\n") == ["250 2.1.0 Ok"]


def test_recipient_auth_and_tls_rate_limits(tmp_path: Path) -> None:
    """RCPT, AUTH and STARTTLS past their limits get Postfix's replies; a
    refused recipient still counts, and counts carry over to the client's
    next session."""
    tls = object.__new__(ServerTLS)
    tls.required = False
    settings = (
        "smtpd_client_recipient_rate_limit = 1\nsmtpd_client_auth_rate_limit = 1\n"
        "smtpd_client_new_tls_session_rate_limit = 1\n"
        "smtpd_sasl_auth_enable = yes\nsmtpd_tls_auth_only = no\n"
        f"pymta_passdb = passwd-file:{tmp_path}/pw\n"
    )
    clock = Clock()
    h = SMTPHarness(f"data_directory = {tmp_path}\n{settings}", tls=tls, clock=clock)
    h.send("EHLO client.example\nMAIL FROM:<a@sender.example>\n")
    assert h.codes("RCPT TO:<nobody@elsewhere.example>\n") == ["454"]  # relay refused
    assert h.send("RCPT TO:<alice@example.com>\n") == [
        f"450 4.7.1 Error: too many recipients from {CLIENT}"
    ]
    h.send("RSET\n")
    assert h.codes("AUTH PLAIN\n*\n") == ["334", "501"]
    assert h.send("AUTH PLAIN\n") == [f"450 4.7.1 Error: too many AUTH commands from {CLIENT}"]
    assert h.codes("STARTTLS\n") == ["220"]
    again = SMTPHarness(f"data_directory = {tmp_path}\n{settings}", tls=tls, clock=clock)
    again.send("EHLO client.example\n")
    assert again.send("STARTTLS\n") == [f"454 4.7.0 Error: too many new TLS sessions from {CLIENT}"]


def test_connection_rate_limit_and_exceptions(tmp_path: Path) -> None:
    """smtpd_client_connection_rate_limit = 2: the third connection of a
    client gets 421 4.7.0 and is closed; a client in
    smtpd_client_event_limit_exceptions is never limited."""
    settings = "smtpd_client_connection_rate_limit = 2\n"
    clock = Clock()
    harnesses = [_harness(tmp_path, settings, clock) for _ in range(3)]
    assert [h.banner[0][:3] for h in harnesses[:2]] == ["220", "220"]
    assert harnesses[2].banner == [
        f"421 4.7.0 mx.example.com Error: too many connections from {CLIENT}"
    ]
    assert harnesses[2].closed
    excepted = f"smtpd_client_event_limit_exceptions = {CLIENT}\n"
    for _ in range(3):
        assert _harness(tmp_path, settings + excepted, clock).banner[0][:3] == "220"


def test_zero_is_no_limit(tmp_path: Path) -> None:
    """With every limit at 0 (Postfix's default) nothing is counted and no
    table file is made."""
    h = _harness(tmp_path, "")
    h.send("EHLO client.example\n")
    for _ in range(5):
        assert h.codes("MAIL FROM:<a@sender.example>\nRSET\n") == ["250", "250"]
    assert not (tmp_path / "anvil").exists()


_CHILD = textwrap.dedent(
    """
    import sys
    from twisted.internet.task import Clock
    from pymta.auth.penalty import FilePenaltyTable
    from pymta.config.config import Config
    from pymta.smtpd.anvil import ClientRates
    clock = Clock()
    clock.advance(float(sys.argv[2]))
    config = Config.from_text("smtpd_client_message_rate_limit = 3\\n")
    rates = ClientRates(config, "smtpd", clock, table=FilePenaltyTable(sys.argv[1]))
    print(",".join(str(rates.exceeded("mail", "192.0.2.9")) for _ in range(2)))
    """
)


@pytest.mark.parametrize("child_first", [True, False])
def test_count_is_shared_between_processes(tmp_path: Path, child_first: bool) -> None:
    """Two processes counting on the same table file meet one count: 2
    events in each, with a limit of 3, make the fourth one refused."""
    path = str(tmp_path / "anvil")
    clock = Clock()
    clock.advance(5000)
    config = Config.from_text("smtpd_client_message_rate_limit = 3\n")
    rates = ClientRates(config, "smtpd", clock, table=FilePenaltyTable(path))

    def child() -> str:
        return subprocess.run(
            [sys.executable, "-c", _CHILD, path, "5001"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    if child_first:
        assert child() == "0,0"
        assert [rates.exceeded("mail", "192.0.2.9") for _ in range(2)] == [0, 4]
    else:
        assert [rates.exceeded("mail", "192.0.2.9") for _ in range(2)] == [0, 0]
        assert child() == "0,4"


def test_open_connections_shared_through_the_file_and_leased(tmp_path: Path) -> None:
    """ConnectionCounts on two handles of one table file (as two processes
    have) see one count; a count nobody renews lapses after
    CONNECTION_LEASE (a process that died frees its clients' places)."""
    clock = Clock()
    clock.advance(100)
    path = str(tmp_path / "anvil")
    first = ConnectionCounts(FilePenaltyTable(path), "smtpd", clock)
    second = ConnectionCounts(FilePenaltyTable(path), "smtpd", clock)
    assert first.opened("192.0.2.9") == 1
    assert second.opened("192.0.2.9") == 2
    first.closed("192.0.2.9")
    assert second.count("192.0.2.9") == 1
    clock.advance(CONNECTION_LEASE)
    assert first.opened("192.0.2.9") == 1


def test_processes_setting_picks_file_or_memory(tmp_path: Path) -> None:
    """pymta_processes = 1 keeps the counts in memory (no file); any other
    value in $data_directory/anvil."""
    clock = Clock()
    one = Config.from_text(f"data_directory = {tmp_path}\nsmtpd_client_auth_rate_limit = 1\n")
    ClientRates(one, "smtpd", clock).exceeded("auth", "192.0.2.1")
    assert not (tmp_path / "anvil").exists()
    two = Config.from_text(
        f"data_directory = {tmp_path}\npymta_processes = 2\nsmtpd_client_auth_rate_limit = 1\n"
    )
    ClientRates(two, "smtpd", clock).exceeded("auth", "192.0.2.1")
    assert (tmp_path / "anvil").exists()


def test_services_count_apart_and_are_named(tmp_path: Path, maillog_lines: list[str]) -> None:
    """Each master.cf service has its own rate counts, as in Postfix's
    anvil: a client at its limit on smtp may still send on submission; the
    warning names the master.cf service."""
    clock = Clock()
    clock.advance(1000)
    settings = f"data_directory = {tmp_path}\nmynetworks = 127.0.0.0/8\n"
    settings += "smtpd_client_message_rate_limit = 1\n"
    smtp = SMTPHarness(settings, clock=clock, master_service="smtp")
    submission = SMTPHarness(settings, clock=clock, master_service="submission")
    for h in (smtp, submission):
        h.send("EHLO client.example\n")
        assert h.send("MAIL FROM:<a@sender.example>\nRSET\n") == ["250 2.1.0 Ok", "250 2.0.0 Ok"]
    assert smtp.send("MAIL FROM:<a@sender.example>\n") == [
        f"450 4.7.1 Error: too much mail from {CLIENT}"
    ]
    assert any(line.endswith("for service smtp") for line in maillog_lines)
