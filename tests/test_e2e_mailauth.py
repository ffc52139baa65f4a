"""End to end: a real pymta signs and verifies mail against a loopback DNS server.

The DNS server (tests/dnsserver.py) runs in this process on 127.0.0.1,
port 0, and serves the SPF, DKIM key and DMARC records; pymta's
``pymta_dns_servers`` points at it. Clients connect from 127.0.0.1
(mynetworks = 127.0.0.1/32: our own mail, signed) or from 127.0.0.2 and
127.0.0.3 (outside: verified). Signatures made by pymta are checked by
dkimpy's ``dkimverify`` command, its dnspython resolver pointed at the same
loopback server (a sitecustomize on its PYTHONPATH; the command is run
unchanged), and by OpenDKIM's ``opendkim-testmsg`` (in a mount namespace
whose /etc/resolv.conf names a loopback DNS server on 127.0.0.77:53).
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest

from pymta.mailauth import keys
from pymta.mailauth.dkimcheck import sign
from pymta.mailauth.keytable import Signer
from pymta.mailauth.resolver import DnspythonLookup, DNSTempError
from tests.dnsserver import LoopbackDNS
from tests.harness import PymtaServer, wait_for_file

SITECUSTOMIZE = """\
import dns.nameserver, dns.resolver
_r = dns.resolver.Resolver(configure=False)
_r.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", {port})]
dns.resolver.default_resolver = _r
"""


@pytest.fixture
def zone() -> Iterator[LoopbackDNS]:
    server = LoopbackDNS(silent=["slow.test"]).start()
    try:
        yield server
    finally:
        server.stop()


def start(tmp_path: Path, zone: LoopbackDNS) -> PymtaServer:
    key = keys.generate_key("rsa", 2048)
    key_file = tmp_path / "mail.private"
    keys.write_key(key, str(key_file))
    zone.txt("mail._domainkey.example.test", keys.record_value(key))
    (tmp_path / "keytable").write_text(f"k example.test:mail:{key_file}\n")
    (tmp_path / "signingtable").write_text("example.test k\n")
    extra = f"""
mynetworks = 127.0.0.1/32
pymta_dns_servers = 127.0.0.1:{zone.port}
pymta_mailauth_verify = yes
pymta_mailauth_dmarc_reject = yes
pymta_mailauth_dns_timeout = 1s
pymta_dkim_key_table = {tmp_path / "keytable"}
pymta_dkim_signing_table = {tmp_path / "signingtable"}
"""
    return PymtaServer(tmp_path / "pymta", main_cf_extra=extra).start()


def send(server: PymtaServer, source: str, sender: str, message: bytes) -> None:
    with smtplib.SMTP(
        "127.0.0.1", server.smtp_port, timeout=30, source_address=(source, 0)
    ) as client:
        client.ehlo("mail.bank.test")
        client.sendmail(sender, ["bob@example.test"], message)


def delivered(server: PymtaServer, count: int) -> list[bytes]:
    box = server.maildir("bob")
    wait_for_file(box / "new", lambda: len(server.messages("bob")) >= count)
    return server.messages("bob")


def bank_records(zone: LoopbackDNS) -> bytes:
    """bank.test: SPF allows 127.0.0.2, DMARC p=reject, a DKIM key; returns
    a message signed by bank.test with dkimpy."""
    bank = keys.generate_key("ed25519")
    zone.txt("bank.test", "v=spf1 ip4:127.0.0.2 -all")
    zone.txt("_dmarc.bank.test", "v=DMARC1; p=reject")
    zone.txt("b1._domainkey.bank.test", keys.record_value(bank))
    body = b"From: Joe <joe@bank.test>\r\nTo: bob@example.test\r\nSubject: statement\r\n\r\nhi\r\n"
    signature = dkim.sign(
        body, b"b1", b"bank.test", bank.private, signature_algorithm=bank.algorithm
    )
    forged = b"Authentication-Results: mx.example.test; dkim=pass header.d=paypal.test\r\n"
    return forged + signature + body


def test_signed_by_pymta_verifies_with_dkimverify(tmp_path: Path, zone: LoopbackDNS) -> None:
    """Mail from mynetworks with From in the signing table is delivered with a
    DKIM-Signature of d=example.test that dkimpy's dkimverify accepts."""
    if shutil.which("dkimverify") is None:
        pytest.skip("dkimverify (dkimpy) is not installed")
    with start(tmp_path, zone) as server:
        message = b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n\r\nhello\r\n"
        send(server, "127.0.0.1", "alice@example.test", message)
        [stored] = delivered(server, 1)
        server.wait_for_log(r"DKIM-Signature field added \(s=mail, d=example.test\)")
    assert b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.test;" in stored
    assert b"Authentication-Results" not in stored
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(port=zone.port))
    # The delivered copy starts with Return-Path/Delivered-To, added after signing.
    result = subprocess.run(
        ["dkimverify"],
        input=stored,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(site)},
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert b"signature ok" in result.stdout


def test_inbound_pass_and_forged_results_removed(tmp_path: Path, zone: LoopbackDNS) -> None:
    """From 127.0.0.2 (SPF-authorised, DKIM-signed by bank.test): one
    Authentication-Results by mx.example.test with spf, dkim and dmarc pass;
    the forged header claiming mx.example.test is gone."""
    message = bank_records(zone)
    with start(tmp_path, zone) as server:
        send(server, "127.0.0.2", "joe@bank.test", message)
        [stored] = delivered(server, 1)
    assert stored.count(b"Authentication-Results:") == 1
    assert b"paypal.test" not in stored
    assert (
        b"Authentication-Results: mx.example.test;\n\tspf=pass smtp.mailfrom=joe@bank.test;"
        in stored
    )
    assert b"\tdkim=pass header.d=bank.test header.s=b1 header.a=ed25519-sha256" in stored
    assert b"\tdmarc=pass header.from=bank.test\n" in stored


def test_dmarc_reject_at_end_of_data_and_temperror_accepted(
    tmp_path: Path, zone: LoopbackDNS
) -> None:
    """From 127.0.0.3, which bank.test's SPF does not allow, an unsigned
    message with From bank.test (p=reject) is refused at end of DATA with
    550 5.7.1; a sender domain whose DNS does not answer is spf=temperror
    and the mail is accepted, not refused."""
    bank_records(zone)
    forged = b"From: Joe <joe@bank.test>\r\nSubject: pay now\r\n\r\nhi\r\n"
    with start(tmp_path, zone) as server:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(server, "127.0.0.3", "joe@bank.test", forged)
        assert refused.value.smtp_code == 550
        assert refused.value.smtp_error.startswith(
            b"5.7.1 Message rejected: DMARC policy of bank.test"
        )
        slow = b"From: x@slow.test\r\nSubject: s\r\n\r\nhi\r\n"
        send(server, "127.0.0.3", "x@slow.test", slow)
        [stored] = delivered(server, 1)
    assert b"spf=temperror smtp.mailfrom=x@slow.test" in stored


def test_resolver_answers_and_timeout(zone: LoopbackDNS) -> None:
    """The dnspython lookup at a configured server: records, [] for NXDOMAIN
    and NODATA, DNSTempError after the timeout for a server that is silent."""
    zone.txt("spf.test", "v=spf1 -all")
    zone.add("spf.test", "A", "192.0.2.1")
    lookup = DnspythonLookup([("127.0.0.1", zone.port)], 0.5)
    assert lookup.lookup("spf.test", "TXT") == [[b"v=spf1 -all"]]
    assert lookup.lookup("spf.test", "A") == ["192.0.2.1"]
    assert lookup.lookup("spf.test", "MX") == []
    assert lookup.lookup("nx.test", "TXT") == []
    with pytest.raises(DNSTempError):
        lookup.lookup("slow.test", "TXT")


OPENDKIM_TESTMSG = "/usr/sbin/opendkim-testmsg"


def _opendkim_verify(message: bytes, resolv_conf: Path) -> subprocess.CompletedProcess[bytes]:
    """opendkim-testmsg (verifying: no -k) in a mount namespace whose
    /etc/resolv.conf names the loopback DNS server: libopendkim reads only
    that file."""
    script = f"mount --bind {resolv_conf} /etc/resolv.conf && exec {OPENDKIM_TESTMSG}"
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script], input=message, capture_output=True, timeout=60
    )


@pytest.mark.parametrize("key_type", ["rsa", "ed25519"])
def test_signed_by_pymta_verifies_with_opendkim(tmp_path: Path, key_type: str) -> None:
    """OpenDKIM's opendkim-testmsg accepts pymta's rsa-sha256 and
    ed25519-sha256 signatures (exit 0) and refuses the same message with a
    changed body ('Bad signature')."""
    if not os.path.exists(OPENDKIM_TESTMSG) or shutil.which("unshare") is None:
        pytest.skip("opendkim-testmsg (opendkim-tools) or unshare is not installed")
    try:
        zone = LoopbackDNS(host="127.0.0.77", port=53).start()
    except OSError:
        pytest.skip("cannot bind 127.0.0.77:53 (not root)")
    try:
        resolv_conf = tmp_path / "resolv.conf"
        resolv_conf.write_text("nameserver 127.0.0.77\n")
        probe = _opendkim_verify(b"From: a@b.test\n\nx\n", resolv_conf)
        if b"mount" in probe.stderr or b"unshare" in probe.stderr:
            pytest.skip(f"no mount namespace here: {probe.stderr!r}")
        key = keys.generate_key(key_type)
        zone.txt("s1._domainkey.example.test", keys.record_value(key))
        message = (
            b"From: Alice <alice@example.test>\nTo: bob@example.org\nSubject: hi\n"
            b"Date: Mon, 7 Dec 2026 12:00:00 +0000\n\nhello\n"
        )
        signed = sign(message, Signer("example.test", "s1", key)) + message
        good = _opendkim_verify(signed, resolv_conf)
        bad = _opendkim_verify(signed.replace(b"hello", b"bye"), resolv_conf)
    finally:
        zone.stop()
    assert good.returncode == 0, good.stderr
    assert bad.returncode != 0 and b"Bad signature" in bad.stderr
