"""postscreen end to end: a real twistd pymta with Postfix's master.cf shape
(``postscreen`` on the inet line, ``smtpd pass``), a twisted.names DNS
server on loopback holding two DNS lists (tests/test_dns_names.py run as a
subprocess), smtplib as the good client and a raw socket as the bot, each
from its own loopback address.
"""

from __future__ import annotations

import re
import smtplib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dns_zone_server import zone_server
from tests.harness import DEFAULT_MASTER_CF, PymtaServer, wait_for_file

ZONE = {
    # 127.0.0.2 is on both lists: 2 + 1 = 3, the threshold.
    "2.0.0.127.zen.test": [["A", "127.0.0.2", 60]],
    "2.0.0.127.list.test": [["A", "127.0.0.2", 60]],
    # 127.0.0.3 is on one: 2 < 3, it passes.
    "3.0.0.127.zen.test": [["A", "127.0.0.2", 60]],
}

MASTER_CF = (
    "127.0.0.1:0 inet n - n - 1 postscreen\n"
    "smtpd pass - - n - - smtpd\n" + DEFAULT_MASTER_CF.split("\n", 1)[1]
)


@pytest.fixture
def dns_port(tmp_path: Path) -> Iterator[int]:
    with zone_server(tmp_path, ZONE) as port:
        yield port


def _server(tmp_path: Path, dns_port: int) -> PymtaServer:
    return PymtaServer(
        tmp_path / "pymta",
        main_cf_extra=(
            f"pymta_dns_servers = 127.0.0.1:{dns_port}\n"
            # The clients are on loopback, which mynetworks holds: screen them too.
            "postscreen_access_list =\n"
            "postscreen_greet_wait = 1s\n"
            "postscreen_greet_action = enforce\n"
            "postscreen_dnsbl_sites = zen.test*2, list.test*1\n"
            "postscreen_dnsbl_threshold = 3\n"
            "postscreen_dnsbl_action = drop\n"
        ),
        master_cf=MASTER_CF,
    )


def _send(port: int, source: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=30) as client:
        client.sendmail("s@example.org", ["alice@example.test"], b"Subject: hi\r\n\r\nhello\r\n")


def test_good_clients_pass_and_are_remembered_across_a_restart(
    tmp_path: Path, dns_port: int
) -> None:
    """smtplib from an unlisted address and from one listed below the
    threshold reads postscreen's 220- line and smtpd's 220 as one greeting
    and delivers (PASS NEW); the next connection goes straight to smtpd
    (PASS OLD), also after a restart (the cache file)."""
    server = _server(tmp_path, dns_port)
    with server:
        server.start()
        _send(server.smtp_port, "127.0.0.1")
        server.wait_for_log(re.escape("postscreen: PASS NEW [127.0.0.1]:"))
        server.wait_for_log(r"to=<alice@example\.test>, relay=virtual, .*status=sent")
        _send(server.smtp_port, "127.0.0.3")
        server.wait_for_log(re.escape("postscreen: PASS NEW [127.0.0.3]:"))
        server.wait_for_log(r"to=<alice@example\.test>, relay=virtual, .*status=sent", count=2)
        _send(server.smtp_port, "127.0.0.1")
        server.wait_for_log(re.escape("postscreen: PASS OLD [127.0.0.1]:"))
        server.stop()
        server.start()
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
            assert client.noop()[0] == 250
        server.wait_for_log(re.escape("postscreen: PASS OLD [127.0.0.1]:"))
    assert (tmp_path / "pymta" / "lib" / "postscreen_cache.pymta").exists()


def test_listed_client_is_dropped_with_its_rank(tmp_path: Path, dns_port: int) -> None:
    """A client whose weights reach postscreen_dnsbl_threshold is logged
    DNSBL rank 3 and dropped with 521 5.7.1 naming the heaviest list."""
    with _server(tmp_path, dns_port) as server:
        server.start()
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            smtplib.SMTP("127.0.0.1", server.smtp_port, source_address=("127.0.0.2", 0), timeout=30)
        assert refused.value.smtp_code == 521
        # The 220- line came first: smtplib reads it and the 521 as one reply.
        assert refused.value.smtp_error.endswith(
            b"\n5.7.1 Service unavailable; client [127.0.0.2] blocked using zen.test"
        )
        server.wait_for_log(re.escape("postscreen: DNSBL rank 3 for [127.0.0.2]:"))
        server.wait_for_log(re.escape("postscreen: DISCONNECT [127.0.0.2]:"))


def _line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def test_pregreeting_bot_is_refused_by_postscreen(tmp_path: Path, dns_port: int) -> None:
    """A bot that talks right after the 220- line (before the greeting is
    complete) is logged PREGREET and, with enforce, never reaches smtpd:
    postscreen's engine refuses its recipient with 550 5.5.1."""
    with _server(tmp_path, dns_port) as server:
        server.start()
        with socket.create_connection(
            ("127.0.0.1", server.smtp_port), timeout=30, source_address=("127.0.0.4", 0)
        ) as sock:
            assert _line(sock).startswith(b"220-")
            sock.sendall(b"EHLO bot.example\r\n")
            assert _line(sock).startswith(b"220 ")
            while _line(sock).startswith(b"250-"):
                pass
            sock.sendall(b"MAIL FROM:<spam@bot.example>\r\n")
            assert _line(sock) == b"250 2.1.0 Ok\r\n"
            sock.sendall(b"RCPT TO:<alice@example.test>\r\n")
            assert _line(sock) == b"550 5.5.1 Protocol error\r\n"
        server.wait_for_log(
            re.escape("postscreen: PREGREET 18 after ")
            + r"\d+\.\d\d"
            + re.escape(" from [127.0.0.4]:")
            + r"\d+: EHLO bot\.example\\r\\n"
        )
        server.wait_for_log(
            re.escape("postscreen: NOQUEUE: reject: RCPT from [127.0.0.4]:")
            + r"\d+"
            + re.escape(
                ": 550 5.5.1 Protocol error; from=<spam@bot.example>, "
                "to=<alice@example.test>, proto=ESMTP, helo=<bot.example>"
            )
        )
        assert "smtpd: connect from unknown[127.0.0.4]" not in server.log()


def test_every_reactor_process_screens_and_hands_off(tmp_path: Path, dns_port: int) -> None:
    """With pymta_processes = 2 the master and its worker each run postscreen
    on the shared socket and hand clients to their own smtpd: concurrent
    smtplib sessions are served by both processes, every message is
    delivered, and both write their passes to the one cache file."""
    from concurrent.futures import ThreadPoolExecutor

    server = PymtaServer(
        tmp_path / "pymta",
        main_cf_extra=(
            f"pymta_dns_servers = 127.0.0.1:{dns_port}\n"
            "postscreen_access_list =\n"
            "postscreen_greet_wait = 1s\n"
            f"pymta_processes = 2\nmaillog_file = {tmp_path}/maillog\n"
        ),
        master_cf=MASTER_CF,
    )
    pids: set[str] = set()
    sent = 0
    with server:
        server.start()
        server.wait_for_log(r"worker 1 running")
        maillog = tmp_path / "maillog"
        passed = re.compile(r"postscreen\[(\d+)\]: PASS (?:NEW|OLD)")
        with ThreadPoolExecutor(4) as pool:
            for _ in range(10):  # rounds of 4 sessions, until both served some
                list(pool.map(lambda _: _send(server.smtp_port, "127.0.0.1"), range(4)))
                sent += 4
                # Each process writes its lines within maillog's FLUSH_SECONDS.
                wait_for_file(maillog, lambda n=sent: len(passed.findall(maillog.read_text())) >= n)
                pids = set(passed.findall(maillog.read_text()))
                if len(pids) == 2:
                    break
        assert len(pids) == 2
        delivered = re.compile(r"to=<alice@example\.test>, relay=virtual, .*status=sent")
        wait_for_file(maillog, lambda: len(delivered.findall(maillog.read_text())) >= sent)
    cache = (tmp_path / "pymta" / "lib" / "postscreen_cache.pymta").read_text()
    assert cache.startswith("127.0.0.1 ")


def test_reload_applies_the_pass_service(tmp_path: Path, dns_port: int) -> None:
    """SIGHUP after a change to the ``smtpd pass`` line: the clients
    postscreen hands on after it meet the new smtpd (its banner), and the
    line is not logged as needing a restart."""
    import signal

    server = _server(tmp_path, dns_port)
    with server:
        server.start()
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
            assert client.noop()[0] == 250
        master_cf = server.config_dir / "master.cf"
        master_cf.write_text(
            master_cf.read_text().replace(
                "smtpd pass - - n - - smtpd\n",
                "smtpd pass - - n - - smtpd -o { smtpd_banner = $myhostname ESMTP reloaded }\n",
            )
        )
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log(r"reload: done")
        client = smtplib.SMTP(timeout=30)
        code, text = client.connect("127.0.0.1", server.smtp_port)
        client.quit()
        # PASS OLD: no 220- line, the greeting is the new smtpd's alone.
        assert (code, text) == (220, b"mx.example.test ESMTP reloaded")
        assert "needs a restart" not in server.log()
