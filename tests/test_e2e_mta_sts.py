"""End to end: MTA-STS (RFC 8461) in a real ``twistd pymta`` relaying by MX.

Everything the relay talks to is a real server on loopback:

- DNS: twisted.names (tests/test_dns_names.py as a subprocess) with the
  MX, A and ``_mta-sts`` TXT records of the test domains;
- the policy host: twisted.web with TLS on 127.84.61.1:443 (port 443 as
  RFC 8461 fixes it: the test binds it as root, as CI runs; elsewhere it
  is skipped), certificate for ``mta-sts.<domain>`` from a test CA;
- the MX hosts: aiosmtpd with STARTTLS, mx.good.test on 127.0.0.2 (a
  certificate for its name from the test CA) and mx.bad.test on 127.0.0.3
  (a CA-signed certificate for another name).

The relay trusts the test CA through ``smtp_tls_CAfile`` (for the MX hosts
and the policy host alike) and uses ``smtp_tls_security_level = may``.
Every wait is on a log line.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.harness import PymtaServer
from tests.mtasts_hosts import issue
from tests.test_e2e_relay import MASTER_CF, Collector, free_port, relay_main_cf, submit

REPO = Path(__file__).resolve().parents[1]
POLICY_ADDRESS = "127.84.61.1"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="binds port 443 (RFC 8461 fixes it)")


def _policy(mode: str, *mx: str) -> list[Any]:
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), "max_age: 86400"]
    return [200, "text/plain", "\r\n".join(lines) + "\r\n"]


POLICIES = {
    "mta-sts.good.test": _policy("enforce", "mx.good.test"),
    "mta-sts.notlisted.test": _policy("enforce", "mx.elsewhere.test"),
    "mta-sts.badcert.test": _policy("enforce", "*.bad.test"),
    "mta-sts.testing.test": _policy("testing", "mx.bad.test"),
}


def _zone(good_mx: str, good_id: str) -> dict[str, Any]:
    zone: dict[str, Any] = {
        "mx.good.test": [["A", "127.0.0.2", 0]],
        "mx.bad.test": [["A", "127.0.0.3", 0]],
        "good.test": [["MX", f"10 {good_mx}", 0]],
        "notlisted.test": [["MX", "10 mx.good.test", 0]],
        "badcert.test": [["MX", "10 mx.bad.test", 0]],
        "testing.test": [["MX", "10 mx.bad.test", 0]],
        "none.test": [["MX", "10 mx.bad.test", 0]],
        "_mta-sts.good.test": [["TXT", f"v=STSv1; id={good_id}", 0]],
    }
    for domain in ("notlisted", "badcert", "testing"):
        zone[f"_mta-sts.{domain}.test"] = [["TXT", "v=STSv1; id=1", 0]]
    for name in POLICIES:
        zone[name] = [["A", POLICY_ADDRESS, 0]]
    return zone


@contextmanager
def _process(args: list[str], ready: str) -> Iterator[str]:
    """A helper server as a subprocess; yields its first line of output."""
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line and (not ready or line == ready), line
        yield line
    finally:
        process.terminate()
        process.wait(10)


def _dns(tmp_path: Path, zone: dict[str, Any], name: str) -> Any:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(zone))
    return _process([sys.executable, "-m", "tests.test_dns_names", str(path)], "")


def _policy_host(tmp_path: Path) -> Any:
    cert, key = issue(tmp_path, *POLICIES)
    config = tmp_path / "policy.json"
    config.write_text(
        json.dumps(
            {
                "address": POLICY_ADDRESS,
                "port": 443,
                "cert": str(cert),
                "key": str(key),
                "policies": POLICIES,
            }
        )
    )
    return _process([sys.executable, "-m", "tests.mtasts_hosts", str(config)], "ready")


@contextmanager
def _mx(handler: Collector, address: str, port: int, cert: Path, key: Path) -> Iterator[None]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    controller = Controller(handler, hostname=address, port=port, tls_context=context)
    controller.start()
    try:
        yield
    finally:
        controller.stop()


def _relay(root: Path, dns_port: str, mx_port: int, ca: Path) -> PymtaServer:
    extra = relay_main_cf(
        pymta_dns_servers=f"127.0.0.1:{dns_port}",
        smtp_tcp_port=str(mx_port),
        smtp_tls_CAfile=str(ca),
        pymta_mta_sts="yes",
    )
    return PymtaServer(root, main_cf_extra=extra, master_cf=MASTER_CF)


def test_mta_sts(tmp_path: Path) -> None:
    """enforce + an MX named in the policy with a valid certificate: delivered
    over verified TLS; enforce + an MX not in the policy: deferred 4.7.5
    without connecting; enforce + a certificate not naming the MX: deferred
    4.7.5; testing + that certificate: delivered, with the line saying what
    enforce would have refused; no TXT record: delivered without MTA-STS.
    Then, after a restart with the policy host down and the TXT id and MX
    changed (an attacker's downgrade), the cached enforce policy still
    applies: the MX outside it is refused."""
    ca = tmp_path / "ca.pem"
    good = issue(tmp_path, "mx.good.test")
    wrong = issue(tmp_path, "wrong.test")
    mx_port = free_port("127.0.0.2")
    good_mx, bad_mx = Collector(), Collector()
    root = tmp_path / "relay"
    with ExitStack() as stack:
        stack.enter_context(_mx(good_mx, "127.0.0.2", mx_port, *good))
        stack.enter_context(_mx(bad_mx, "127.0.0.3", mx_port, *wrong))
        with _policy_host(tmp_path), _dns(tmp_path, _zone("mx.good.test", "1"), "a") as port:
            with _relay(root, port, mx_port, ca) as relay:
                relay.start()
                qid = {d: submit(relay.smtp_port, [f"ann@{d}.test"]) for d in _DOMAINS}
                relay.wait_for_log(
                    r"Verified TLS connection established to "
                    rf"mx\.good\.test\[127\.0\.0\.2\]:{mx_port}"
                )
                relay.wait_for_log(rf"{qid['good']}: to=<ann@good\.test>.*status=sent")
                relay.wait_for_log(
                    rf"{qid['notlisted']}: MTA-STS policy of notlisted\.test: "
                    r"MX host mx\.good\.test is not permitted \(mode enforce\)"
                )
                relay.wait_for_log(
                    rf"{qid['notlisted']}: to=<ann@notlisted\.test>.*dsn=4\.7\.5, status=deferred"
                )
                relay.wait_for_log(
                    rf"{qid['badcert']}: to=<ann@badcert\.test>.*dsn=4\.7\.5, status=deferred"
                )
                relay.wait_for_log(
                    rf"{qid['testing']}: MTA-STS policy of testing\.test \(testing\): would not "
                    rf"deliver to mx\.bad\.test\[127\.0\.0\.3\]:{mx_port}: "
                    r"certificate does not name mx\.bad\.test"
                )
                relay.wait_for_log(rf"{qid['testing']}: to=<ann@testing\.test>.*status=sent")
                relay.wait_for_log(rf"{qid['none']}: to=<ann@none\.test>.*status=sent")
                relay.stop()
            assert "MTA-STS policy for none.test" not in relay.log()
            assert "MTA-STS policy of none.test" not in relay.log()
        assert [m[1] for m in good_mx.messages] == [["ann@good.test"]]
        assert sorted(m[1][0] for m in bad_mx.messages) == ["ann@none.test", "ann@testing.test"]
        # The policy host is gone; DNS now points good.test at mx.bad.test with a new id.
        with _dns(tmp_path, _zone("mx.bad.test", "2"), "b") as port:
            with _relay(root, port, mx_port, ca) as relay:
                relay.start()
                again = submit(relay.smtp_port, ["bob@good.test"])
                relay.wait_for_log(
                    r"MTA-STS policy for good\.test: cannot fetch policy id 2: .*; "
                    r"using the cached policy id 1 \(mode enforce\)"
                )
                relay.wait_for_log(
                    rf"{again}: MTA-STS policy of good\.test: "
                    r"MX host mx\.bad\.test is not permitted \(mode enforce\)"
                )
                relay.wait_for_log(rf"{again}: to=<bob@good\.test>.*dsn=4\.7\.5, status=deferred")
                relay.stop()
        assert len(bad_mx.messages) == 2


_DOMAINS = ("good", "notlisted", "badcert", "testing", "none")
