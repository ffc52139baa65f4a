"""The listen queue of inet services: pymta_listen_backlog, else the kernel's
somaxconn, read back from the listening sockets of a real pymta with ss(8)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pymta.config.config import Config
from pymta.service import DEFAULT_BACKLOG, listen_backlog
from tests.harness import DEFAULT_MASTER_CF, PymtaServer


def test_backlog_defaults_to_somaxconn(tmp_path: Path) -> None:
    """With pymta_listen_backlog = 0 the listen queue is net.core.somaxconn."""
    somaxconn = tmp_path / "somaxconn"
    somaxconn.write_text("8192\n")
    assert listen_backlog(Config.from_text(""), str(somaxconn)) == 8192


def test_backlog_parameter_wins(tmp_path: Path) -> None:
    """A positive pymta_listen_backlog is used as it is."""
    somaxconn = tmp_path / "somaxconn"
    somaxconn.write_text("8192\n")
    config = Config.from_text("pymta_listen_backlog = 300\n")
    assert listen_backlog(config, str(somaxconn)) == 300


def test_backlog_without_proc(tmp_path: Path) -> None:
    """Where somaxconn cannot be read, Linux's default (4096) is used."""
    assert listen_backlog(Config.from_text(""), str(tmp_path / "none")) == DEFAULT_BACKLOG


def listen_queue(port: int) -> int:
    """The listen queue of the socket listening on 127.0.0.1:port (ss's Send-Q)."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out and out[0] == "LISTEN", out
    return int(out[2])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PymtaServer]:
    master_cf = (
        DEFAULT_MASTER_CF + "[127.0.0.1]:0 inet n - n - - pop3d -o pymta_listen_backlog=777\n"
    )
    with PymtaServer(tmp_path, master_cf=master_cf) as instance:
        instance.start()
        yield instance
        instance.stop()


def test_listening_sockets_have_the_configured_queue(server: PymtaServer) -> None:
    """smtpd listens with somaxconn's queue (not Twisted's 50); a master.cf
    ``-o pymta_listen_backlog=777`` gives its service a queue of 777."""
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert listen_queue(server.smtp_port) == somaxconn
    assert listen_queue(server.pop3_port) == 777
