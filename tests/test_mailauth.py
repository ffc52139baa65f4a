"""Tests of pymta.mailauth: DKIM (RFC 6376/8463 vectors, signing), SPF, DMARC,
Authentication-Results, the key and signing tables, and cleanup's use of them.

DNS is an in-memory zone (MemoryLookup); the checks run synchronously here
(the thread pool is exercised by the end-to-end tests)."""

from __future__ import annotations

import datetime
import hashlib
import os
import random
import stat
import threading
import time
from pathlib import Path
from typing import Any

import dkim
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, maybeDeferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from pymta.cleanup import Cleanup, CleanupRejected
from pymta.cli.dkim import run as dkim_cli
from pymta.config import Config, ConfigError
from pymta.mailauth import authresults, dkimcheck, dmarc, keys
from pymta.mailauth.keytable import SigningTable, load_key_table
from pymta.mailauth.resolver import MemoryLookup
from pymta.mailauth.service import MailAuth
from pymta.mailauth.spfcheck import check_spf
from pymta.queue.memory import MemoryQueueStore
from pymta.queue.model import Envelope, Recipient
from pymta.rewrite import Resolver

# RFC 8463 appendix A: the Ed25519 key of football.example.com, selector
# brisbane, and the example message it signed.
RFC8463_SEED = b"nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
RFC8463_PUBLIC = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
RFC8463_MESSAGE = b"""DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;
 d=football.example.com; i=@football.example.com;
 q=dns/txt; s=brisbane; t=1528637909; h=from : to :
 subject : date : message-id : from : subject : date;
 bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;
 b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus
 Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==
From: Joe SixPack <joe@football.example.com>
To: Suzie Q <suzie@shopping.example.net>
Subject: Is dinner ready?
Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)
Message-ID: <20030712040037.46341.5F8J@football.example.com>

Hi.

We lost the game.  Are you hungry yet?

Joe.
"""
# The RFC 6376 appendix A example message, unsigned.
RFC6376_MESSAGE = b"""From: Joe SixPack <joe@football.example.com>
To: Suzie Q <suzie@shopping.example.net>
Subject: Is dinner ready?
Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)
Message-ID: <20030712040037.46341.5F8J@football.example.com>

Hi.

We lost the game. Are you hungry yet?

Joe.
"""


def rfc8463_zone() -> MemoryLookup:
    zone = MemoryLookup()
    zone.add(
        "brisbane._domainkey.football.example.com",
        "TXT",
        f"v=DKIM1; k=ed25519; p={RFC8463_PUBLIC}",
    )
    return zone


# --- DKIM ---------------------------------------------------------------------


def test_rfc8463_key_gives_the_published_public_key() -> None:
    """The RFC 8463 private seed loads, and its p= is the one the RFC publishes."""
    key = keys.load_key(RFC8463_SEED)
    assert key.key_type == "ed25519"
    assert key.public_b64 == RFC8463_PUBLIC


def test_rfc8463_signed_example_verifies() -> None:
    """The RFC 8463 A.3 ed25519-sha256 signature verifies: dkim=pass with d, s, a, b."""
    [result] = dkimcheck.verify_all(rfc8463_zone(), RFC8463_MESSAGE)
    assert result.result == "pass"
    assert (result.domain, result.selector) == ("football.example.com", "brisbane")
    assert result.algorithm == "ed25519-sha256"
    assert result.signature_b == "/gCrinpc"


def test_rfc8463_altered_body_or_header_fails() -> None:
    """A changed body (body hash) or a changed signed header (signature) is dkim=fail."""
    zone = rfc8463_zone()
    body = RFC8463_MESSAGE.replace(b"Joe.\n", b"Jim.\n")
    header = RFC8463_MESSAGE.replace(b"Is dinner ready?", b"Is lunch ready?")
    assert [r.result for r in dkimcheck.verify_all(zone, body)] == ["fail"]
    assert [r.result for r in dkimcheck.verify_all(zone, header)] == ["fail"]


def test_dkim_key_lookup_timeout_is_temperror_and_missing_key_fails() -> None:
    """A timed-out key lookup is temperror (RFC 6376 6.1.2), an absent key fail."""
    failing = MemoryLookup(failing=["brisbane._domainkey.football.example.com"])
    assert [r.result for r in dkimcheck.verify_all(failing, RFC8463_MESSAGE)] == ["temperror"]
    assert [r.result for r in dkimcheck.verify_all(MemoryLookup(), RFC8463_MESSAGE)] == ["fail"]


def test_unsigned_message_has_no_dkim_results() -> None:
    """No DKIM-Signature: no result (the header then says dkim=none)."""
    assert dkimcheck.verify_all(rfc8463_zone(), RFC6376_MESSAGE) == []


@pytest.mark.parametrize("key_type", ["rsa", "ed25519"])
def test_sign_then_verify_with_dkimpy(key_type: str) -> None:
    """A signature made by pymta (rsa-sha256 / ed25519-sha256) verifies with
    dkimpy's own verify(); h= holds the recommended headers present and From
    once more than it occurs (oversigned)."""
    key = keys.generate_key(key_type, 1024) if key_type == "rsa" else keys.generate_key(key_type)
    zone = MemoryLookup()
    zone.add("sel._domainkey.football.example.com", "TXT", keys.record_value(key))
    from pymta.mailauth.keytable import Signer

    header = dkimcheck.sign(RFC6376_MESSAGE, Signer("football.example.com", "sel", key))
    signed = header + RFC6376_MESSAGE
    dnsfunc = dkimcheck._dnsfunc(zone)
    assert dkim.verify(signed, dnsfunc=dnsfunc)
    tags = dkim.util.parse_tag_value(header.split(b":", 1)[1])
    signed_headers = [h.strip() for h in tags[b"h"].split(b":")]
    assert signed_headers == [b"from", b"to", b"subject", b"date", b"message-id", b"from"]
    assert tags[b"a"] == key.algorithm and tags[b"c"] == b"relaxed/relaxed"
    # Oversigning: a second From added on the way breaks the signature.
    forged = header + b"From: ceo@football.example.com\n" + RFC6376_MESSAGE
    assert not dkim.verify(forged, dnsfunc=dnsfunc)


def arc_sealed() -> tuple[bytes, MemoryLookup]:
    """The RFC 6376 example message as forwarded: an A-R by mx.fwd.test and
    an ARC set sealed by fwd.test (made with dkimpy's arc_sign)."""
    key = keys.generate_key("rsa", 1024)
    zone = MemoryLookup(failing=["slow._domainkey.fwd.test"])
    zone.add("arc._domainkey.fwd.test", "TXT", keys.record_value(key))
    message = (
        b"Authentication-Results: mx.fwd.test; spf=pass smtp.mailfrom=joe@football.example.com\n"
    )
    message += RFC6376_MESSAGE
    arc_set = dkim.arc_sign(
        message, b"arc", b"fwd.test", key.private, b"mx.fwd.test", linesep=b"\n"
    )
    return b"".join(arc_set) + message, zone


def test_arc_chain_pass_fail_none_temperror() -> None:
    """RFC 8617: an intact ARC set is arc=pass, a changed body fail, no
    ARC-Seal none, a timed-out key lookup temperror."""
    sealed, zone = arc_sealed()
    assert dkimcheck.verify_arc(zone, sealed)[0] == "pass"
    assert dkimcheck.verify_arc(zone, sealed.replace(b"Joe.\n", b"Jim.\n"))[0] == "fail"
    assert dkimcheck.verify_arc(zone, RFC6376_MESSAGE)[0] == "none"
    slow = sealed.replace(b"s=arc;", b"s=slow;")
    assert dkimcheck.verify_arc(zone, slow)[0] == "temperror"


# --- SPF ----------------------------------------------------------------------


def spf_zone() -> MemoryLookup:
    zone = MemoryLookup(failing=["timeout.test"])
    zone.add("pass.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    zone.add("soft.test", "TXT", "v=spf1 ip4:198.51.100.1 ~all")
    zone.add("neutral.test", "TXT", "v=spf1 ?all")
    zone.add("broken.test", "TXT", "v=spf1 ip4:192.0.2.0/24 frobnicate:x -all")
    zone.add("twice.test", "TXT", "v=spf1 -all", "v=spf1 +all")
    zone.add("helo.pass.test", "TXT", "v=spf1 a -all")
    zone.add("helo.pass.test", "A", "192.0.2.9")
    return zone


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("pass.test", "pass"),
        ("soft.test", "softfail"),
        ("neutral.test", "neutral"),
        ("nospf.test", "none"),
        ("broken.test", "permerror"),
        ("twice.test", "permerror"),
        ("timeout.test", "temperror"),
    ],
)
def test_spf_mail_from(domain: str, expected: str) -> None:
    """RFC 7208 results for MAIL FROM from 192.0.2.9, a timeout being temperror."""
    mailfrom, _ = check_spf(spf_zone(), "192.0.2.9", f"joe@{domain}", "x.test")
    assert mailfrom.result == expected
    assert mailfrom.identity == "mailfrom"


def test_spf_fail_outside_the_authorised_network() -> None:
    """A client outside the record's ip4: with -all is spf=fail."""
    mailfrom, _ = check_spf(spf_zone(), "203.0.113.5", "joe@pass.test", "x.test")
    assert mailfrom.result == "fail"


def test_spf_helo_and_null_sender() -> None:
    """The HELO name is checked on its own (RFC 7208 2.3); MAIL FROM <> is
    checked as postmaster@HELO (2.4)."""
    mailfrom, helo = check_spf(spf_zone(), "192.0.2.9", "", "helo.pass.test")
    assert helo.result == "pass" and helo.identity == "helo"
    assert mailfrom.result == "pass" and mailfrom.domain_of == "postmaster@helo.pass.test"
    _, helo = check_spf(spf_zone(), "192.0.2.10", "", "helo.pass.test")
    assert helo.result == "fail"


# --- DMARC --------------------------------------------------------------------


def dmarc_zone() -> MemoryLookup:
    zone = MemoryLookup(failing=["_dmarc.slow.example"])
    zone.add("_dmarc.example.com", "TXT", "v=DMARC1; p=reject; sp=quarantine")
    zone.add("_dmarc.strict.example", "TXT", "v=DMARC1; p=reject; adkim=s; aspf=s")
    zone.add("_dmarc.double.example", "TXT", "v=DMARC1; p=reject", "v=DMARC1; p=none")
    return zone


def test_dmarc_pass_by_aligned_dkim_or_spf() -> None:
    """DKIM d= of the same organisational domain (relaxed), or an SPF pass of
    a subdomain's MAIL FROM, align with the From domain: dmarc=pass."""
    zone = dmarc_zone()
    by_dkim = dmarc.check_dmarc(zone, ["example.com"], ("fail", "x.test"), ["mail.example.com"])
    by_spf = dmarc.check_dmarc(zone, ["example.com"], ("pass", "bounce.example.com"), [])
    assert (by_dkim.result, by_spf.result) == ("pass", "pass")


def test_dmarc_fail_reject_and_subdomain_policy() -> None:
    """No aligned pass is dmarc=fail with p=; a subdomain without its own
    record gets the organisational record's sp= (RFC 7489 6.6.3)."""
    zone = dmarc_zone()
    top = dmarc.check_dmarc(zone, ["example.com"], ("pass", "other.test"), ["other.test"])
    sub = dmarc.check_dmarc(zone, ["news.example.com"], ("fail", "example.com"), [])
    assert (top.result, top.policy) == ("fail", "reject")
    assert (sub.result, sub.policy) == ("fail", "quarantine")


def test_dmarc_strict_alignment() -> None:
    """adkim=s / aspf=s: a subdomain's pass does not align."""
    zone = dmarc_zone()
    verdict = dmarc.check_dmarc(
        zone, ["strict.example"], ("pass", "b.strict.example"), ["m.strict.example"]
    )
    assert verdict.result == "fail"
    exact = dmarc.check_dmarc(zone, ["strict.example"], ("fail", ""), ["strict.example"])
    assert exact.result == "pass"


def test_dmarc_none_temperror_permerror() -> None:
    """No record (or two) is none; a timeout temperror; two From addresses permerror."""
    zone = dmarc_zone()
    assert dmarc.check_dmarc(zone, ["nodmarc.test"], ("pass", ""), []).result == "none"
    assert dmarc.check_dmarc(zone, ["double.example"], ("fail", ""), []).result == "none"
    assert dmarc.check_dmarc(zone, ["slow.example"], ("fail", ""), []).result == "temperror"
    two = dmarc.check_dmarc(zone, ["a.test", "b.test"], ("pass", "a.test"), [])
    assert two.result == "permerror"


def test_organizational_domain_uses_the_public_suffix_list() -> None:
    """example.co.uk is registrable under the public suffix co.uk."""
    assert dmarc.organizational_domain("mail.example.co.uk") == "example.co.uk"
    assert dmarc.organizational_domain("a.b.example.com") == "example.com"


# --- Authentication-Results ---------------------------------------------------


def test_forged_authentication_results_removed_others_kept() -> None:
    """A-R headers naming our authserv-id (any case, with comments, folded)
    go; another server's stay (RFC 8601 5)."""
    message = (
        b"Authentication-Results: MX.example.org; dkim=pass header.d=bank.test\n"
        b"Authentication-Results: (c) mx.example.org;\n\tspf=pass smtp.mailfrom=x@bank.test\n"
        b"Authentication-Results: mx.other.test; spf=fail\n"
        b"Subject: s\n\nAuthentication-Results: mx.example.org; body text stays\n"
    )
    cleaned, removed = authresults.remove_forged(message, "mx.example.org")
    assert removed == 2
    assert cleaned == (
        b"Authentication-Results: mx.other.test; spf=fail\n"
        b"Subject: s\n\nAuthentication-Results: mx.example.org; body text stays\n"
    )


# --- key and signing tables ---------------------------------------------------


def write_tables(tmp_path: Path, signing: str, prefix: str = "") -> SigningTable:
    key = tmp_path / "sel.private"
    keys.write_key(keys.generate_key("ed25519"), str(key))
    (tmp_path / "keytable").write_text(
        f"# OpenDKIM KeyTable\nk1 example.com:sel:{key}\nk2 %:any:{key}\n"
    )
    (tmp_path / "signingtable").write_text(signing)
    table = load_key_table(str(tmp_path / "keytable"))
    return SigningTable(prefix + str(tmp_path / "signingtable"), table)


def test_signing_table_file_lookups(tmp_path: Path) -> None:
    """Plain file: the address, then the domain, then .parent entries; % in
    the KeyTable is the From domain; others are not signed."""
    table = write_tables(tmp_path, "boss@example.com k2\nexample.com k1\n.example.net k2\n")
    boss, staff = table.find("boss@example.com"), table.find("staff@example.com")
    sub = table.find("a@mail.example.net")
    assert boss is not None and (boss.domain, boss.selector) == ("example.com", "any")
    assert staff is not None and (staff.domain, staff.selector) == ("example.com", "sel")
    assert sub is not None and sub.domain == "mail.example.net"
    assert table.find("a@example.net") is None and table.find("x@other.test") is None


def test_signing_table_refile_wildcards(tmp_path: Path) -> None:
    """refile: patterns are wildcards, the first matching line wins."""
    table = write_tables(tmp_path, "*@example.com k1\n* k2\n", prefix="refile:")
    first, rest = table.find("a@example.com"), table.find("a@elsewhere.test")
    assert first is not None and first.selector == "sel"
    assert rest is not None and (rest.domain, rest.selector) == ("elsewhere.test", "any")


def test_bad_tables_stop_the_start(tmp_path: Path) -> None:
    """A bad KeyTable line, or an unknown key name in the SigningTable, is a
    ConfigError naming the file and line."""
    (tmp_path / "bad").write_text("k1 example.com:sel\n")
    with pytest.raises(ConfigError, match="line 1"):
        load_key_table(str(tmp_path / "bad"))
    with pytest.raises(ConfigError, match="'nokey' is not in"):
        write_tables(tmp_path, "example.com nokey\n")


def test_keygen_writes_private_key_and_prints_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``pymta dkim keygen`` writes SELECTOR.private 0600 and prints the TXT
    record of the same key; it never overwrites a key."""
    args = ["keygen", "example.com", "s1", "--type", "ed25519", "-d", str(tmp_path)]
    assert dkim_cli(args, "") == 0
    path = tmp_path / "s1.private"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = keys.load_key(path.read_bytes())
    out = capsys.readouterr().out
    assert out.startswith(f's1._domainkey.example.com. IN TXT ( "{keys.record_value(key)}" )')
    assert dkim_cli(["keygen", "example.com", "s1", "-d", str(tmp_path)], "") == 1
    assert dkim_cli(["keygen", "example.com", "s2", "-d", str(tmp_path)], "") == 0
    assert keys.load_key((tmp_path / "s2.private").read_bytes()).key_type == "rsa"


# --- in cleanup ---------------------------------------------------------------

MAIN_CF = """
myhostname = mx.example.org
mydomain = example.org
mydestination = $myhostname, localhost
mynetworks = 10.0.0.0/8
alias_maps =
"""


class Harness:
    def __init__(self, tmp_path: Path, extra: str, zone: MemoryLookup) -> None:
        key = keys.generate_key("rsa", 1024)
        zone.add("sel._domainkey.example.org", "TXT", keys.record_value(key))
        tmp_path.mkdir(parents=True, exist_ok=True)
        keys.write_key(key, str(tmp_path / "sel.private"))
        (tmp_path / "kt").write_text(f"k example.org:sel:{tmp_path / 'sel.private'}\n")
        (tmp_path / "st").write_text("example.org k\n")
        tables = f"pymta_dkim_key_table = {tmp_path / 'kt'}\n"
        tables += f"pymta_dkim_signing_table = {tmp_path / 'st'}\n"
        self.config = Config.from_text(MAIN_CF + tables + extra)
        self.zone = zone
        self.clock = Clock()
        self.clock.advance(1700000000)
        self.store = MemoryQueueStore(self.clock)
        self.queued: list[bytes] = []
        mailauth = MailAuth(self.config, run=maybeDeferred, lookup=zone)
        self.cleanup = Cleanup(
            self.config,
            self.store,
            Resolver(self.config),
            clock=self.clock,
            on_queued=lambda q, e: self.queued.append(self.store.read(q, "incoming")[1]),
            tz=datetime.UTC,
            mailauth=mailauth,
        )

    def submit(self, content: bytes, sender: str = "joe@bank.test", **attrs: str) -> Any:
        attributes = {
            "client_name": "mail.bank.test",
            "client_address": "192.0.2.9",
            "helo_name": "mail.bank.test",
            "protocol": "ESMTP",
        }
        attributes.update(attrs)
        envelope = Envelope(sender, [Recipient("root@mx.example.org")], 0.0, attributes)
        results: list[Any] = []
        self.cleanup.submit(envelope, content).addBoth(results.append)
        return results[0]


def bank_zone() -> MemoryLookup:
    zone = MemoryLookup()
    zone.add("bank.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    zone.add("_dmarc.bank.test", "TXT", "v=DMARC1; p=reject")
    return zone


MESSAGE = b"From: Joe <joe@bank.test>\nSubject: statement\n\nhello\n"


def test_inbound_gets_one_authentication_results_forged_one_removed(tmp_path: Path) -> None:
    """Mail from outside mynetworks: a forged A-R for our host is dropped and
    one A-R with spf (mailfrom, helo), dkim=none and dmarc is prepended;
    the message is not signed."""
    h = Harness(tmp_path, "pymta_mailauth_verify = yes\n", bank_zone())
    forged = b"Authentication-Results: mx.example.org; dmarc=pass\n" + MESSAGE
    qid = h.submit(forged)
    assert isinstance(qid, str)
    stored = h.queued[-1]
    assert stored.count(b"Authentication-Results:") == 1
    assert stored.startswith(
        b"Authentication-Results: mx.example.org;\n"
        b"\tspf=pass smtp.mailfrom=joe@bank.test;\n"
        b"\tspf=none smtp.helo=mail.bank.test;\n"
        b"\tdkim=none;\n"
        b"\tarc=none;\n"
        b"\tdmarc=pass header.from=bank.test\nReceived: "
    )
    assert b"DKIM-Signature" not in stored


def test_dmarc_reject_policy_refuses_only_when_enabled(tmp_path: Path) -> None:
    """From a client SPF does not allow, with p=reject: marked dmarc=fail by
    default; refused with 550 5.7.1 and not queued with
    pymta_mailauth_dmarc_reject = yes."""
    marked = Harness(tmp_path / "a", "pymta_mailauth_verify = yes\n", bank_zone())
    assert isinstance(marked.submit(MESSAGE, client_address="203.0.113.9"), str)
    assert b"spf=fail smtp.mailfrom=joe@bank.test" in marked.queued[-1]
    assert b"dmarc=fail (p=reject) header.from=bank.test" in marked.queued[-1]
    strict = Harness(
        tmp_path / "b",
        "pymta_mailauth_verify = yes\npymta_mailauth_dmarc_reject = yes\n",
        bank_zone(),
    )
    result = strict.submit(MESSAGE, client_address="203.0.113.9")
    assert isinstance(result, Failure) and isinstance(result.value, CleanupRejected)
    assert (result.value.code, result.value.status) == (550, "5.7.1")
    assert "DMARC policy of bank.test" in result.value.text
    assert strict.queued == [] and strict.store.list("incoming") == []


def test_outbound_from_mynetworks_or_authenticated_is_signed(tmp_path: Path) -> None:
    """Mail from mynetworks, an authenticated client or a local submission
    with a From in the signing table gets a DKIM-Signature that verifies
    (over the final headers: Message-ID and Date added by cleanup), and no
    Authentication-Results; other From domains are not signed."""
    h = Harness(tmp_path, "pymta_mailauth_verify = yes\n", MemoryLookup())
    ours = b"From: Ann <ann@example.org>\nTo: x@remote.test\n\nhi\n"
    for attrs in (
        {"client_address": "10.1.2.3"},
        {"sasl_username": "ann", "sasl_method": "PLAIN"},
        {"client_address": "", "protocol": "sendmail"},
    ):
        assert isinstance(h.submit(ours, sender="ann@example.org", **attrs), str)
        stored = h.queued[-1]
        assert stored.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
        assert b"Authentication-Results" not in stored
        assert dkim.verify(stored, dnsfunc=dkimcheck._dnsfunc(h.zone))
        assert b"message-id" in stored.split(b"bh=")[0]
    other = b"From: x@elsewhere.test\n\nhi\n"
    h.submit(other, client_address="10.1.2.3")
    assert not h.queued[-1].startswith(b"DKIM-Signature")


def test_nothing_configured_means_no_step() -> None:
    """With verification off and no tables, cleanup gets no mailauth step."""
    assert MailAuth.from_config(Config.from_text(MAIN_CF), reactor=None) is None


def test_malformed_signatures_and_mutated_messages_never_raise() -> None:
    """Hostile input: a garbage DKIM-Signature is permerror; 500 randomly
    corrupted copies of the RFC 8463 message go through the whole check
    (SPF, DKIM, DMARC, A-R) without an exception."""
    bad = b"DKIM-Signature: garbage\nFrom: a@b.test\n\nx\n"
    assert [r.result for r in dkimcheck.verify_all(MemoryLookup(), bad)] == ["permerror"]
    zone = rfc8463_zone()
    zone.add("_dmarc.football.example.com", "TXT", "v=DMARC1; p=reject")
    config = Config.from_text("myhostname = mx.example.org\npymta_mailauth_verify = yes\n")
    auth = MailAuth(config, run=maybeDeferred, lookup=zone)
    outside = {"client_address": "192.0.2.1", "helo_name": "helo.test"}
    envelope = Envelope("joe@football.example.com", [Recipient("a@b.test")], 0, outside)
    rnd = random.Random(7)
    for _ in range(500):
        corrupted = bytearray(RFC8463_MESSAGE)
        for _ in range(rnd.randint(1, 6)):
            corrupted[rnd.randrange(len(corrupted))] = rnd.randrange(256)
        outcome = auth._check(envelope, bytes(corrupted))
        assert outcome.message.startswith(b"Authentication-Results: mx.example.org;")


class BrokenLookup:
    def lookup(self, name: str, rrtype: str) -> list[Any]:
        raise RuntimeError("bug")


def test_unexpected_error_is_451_not_a_lost_message(tmp_path: Path) -> None:
    """A bug in a check (here the resolver raising) is a 451 4.3.0 for the
    client to retry, logged, and nothing is queued."""
    h = Harness(tmp_path, "pymta_mailauth_verify = yes\n", bank_zone())
    h.cleanup._mailauth = MailAuth(h.config, run=maybeDeferred, lookup=BrokenLookup())  # type: ignore[arg-type]
    result = h.submit(MESSAGE)
    assert isinstance(result, Failure) and isinstance(result.value, CleanupRejected)
    assert (result.value.code, result.value.status) == (451, "4.3.0")
    assert h.queued == []


def test_openssl_rsa_signature_is_the_one_dkimpy_makes() -> None:
    """pymta's OpenSSL RSA signing gives byte for byte dkimpy's pure-Python
    signature (PKCS#1 v1.5 is deterministic), and it verifies."""
    key = keys.generate_key("rsa", 2048)
    parsed = dkim.crypto.parse_pem_private_key(key.private)
    digest = dkim.HashThrough(hashlib.sha256(b"message"))
    assert dkimcheck._openssl_rsa_sign(digest, parsed) == dkimcheck._python_rsa_sign(digest, parsed)
    assert dkim.RSASSA_PKCS1_v1_5_sign is dkimcheck._openssl_rsa_sign


@pytest_twisted.inlineCallbacks
def test_work_runs_in_the_thread_pool_bounded(tmp_path: Path, monkeypatch: Any) -> Any:
    """On the real reactor, from_config's step signs in a worker thread,
    never the reactor's, and no more than pymta_mailauth_concurrency at once."""
    key = keys.generate_key("ed25519")
    keys.write_key(key, str(tmp_path / "k.private"))
    (tmp_path / "kt").write_text(f"k example.org:s:{tmp_path / 'k.private'}\n")
    (tmp_path / "st").write_text("example.org k\n")
    config = Config.from_text(
        MAIN_CF + f"pymta_dkim_key_table = {tmp_path / 'kt'}\n"
        f"pymta_dkim_signing_table = {tmp_path / 'st'}\npymta_mailauth_concurrency = 2\n"
    )
    auth = MailAuth.from_config(config, reactor)
    assert auth is not None
    threads: list[int] = []
    running = [0, 0]  # now, most at once
    lock = threading.Lock()
    real_sign = dkimcheck.sign

    def observed_sign(message: bytes, signer: Any) -> bytes:
        with lock:
            threads.append(threading.get_ident())
            running[0] += 1
            running[1] = max(running)
        time.sleep(0.02)  # long enough for the calls to overlap if they could
        with lock:
            running[0] -= 1
        return real_sign(message, signer)

    monkeypatch.setattr(dkimcheck, "sign", observed_sign)
    local = Envelope("a@example.org", [Recipient("b@x.test")], 0, {"protocol": "sendmail"})
    content = b"From: a@example.org\n\nhi\n"
    results = yield DeferredList([auth.process(f"Q{n}", local, content) for n in range(6)])
    assert all(ok and signed.startswith(b"DKIM-Signature:") for ok, signed in results)
    assert threading.main_thread().ident not in threads
    assert running[1] == 2


def test_forwarded_verified_mail_is_arc_sealed(tmp_path: Path) -> None:
    """Mail that arrived from outside (and got our Authentication-Results)
    and is forwarded by the local agent (.forward: forwarded_from) gets an
    ARC set i=1 with cv=none that dkimpy's arc_verify passes, sealing our
    verdict; internal mail that is not a forward, or carries no A-R of
    ours, is not sealed."""
    arc_key = keys.generate_key("rsa", 1024)
    tmp_path.mkdir(parents=True, exist_ok=True)
    keys.write_key(arc_key, str(tmp_path / "arc.private"))
    zone = bank_zone()
    zone.add("arc._domainkey.example.org", "TXT", keys.record_value(arc_key))
    extra = (
        f"pymta_mailauth_verify = yes\npymta_arc_key = example.org:arc:{tmp_path / 'arc.private'}\n"
    )
    h = Harness(tmp_path / "h", extra, zone)
    qid = h.submit(MESSAGE)
    arrived = h.queued[-1]
    forward = {"client_address": "", "origin": "local", "forwarded_from": qid}
    h.submit(b"Delivered-To: root@mx.example.org\n" + arrived, **forward)
    forwarded = h.queued[-1]
    assert forwarded.startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=example.org; s=arc;")
    assert b"ARC-Authentication-Results: i=1; mx.example.org;" in forwarded
    cv, _results, reason = dkim.arc_verify(forwarded, dnsfunc=dkimcheck._dnsfunc(zone))
    assert cv == b"pass", reason
    h.submit(arrived, client_address="", protocol="sendmail")
    assert not h.queued[-1].startswith(b"ARC-Seal")
    h.submit(MESSAGE, **forward)
    assert not h.queued[-1].startswith(b"ARC-Seal")


def test_arc_key_must_be_rsa(tmp_path: Path) -> None:
    """pymta_arc_key with an Ed25519 key, or not DOMAIN:SELECTOR:KEYFILE, stops the start."""
    keys.write_key(keys.generate_key("ed25519"), str(tmp_path / "ed.private"))
    for value, message in (
        (f"example.org:arc:{tmp_path / 'ed.private'}", "RSA only"),
        ("example.org:arc", "expected DOMAIN:SELECTOR:KEYFILE"),
    ):
        config = Config.from_text(MAIN_CF + f"pymta_arc_key = {value}\n")
        with pytest.raises(ConfigError, match=message):
            MailAuth(config, run=maybeDeferred, lookup=MemoryLookup())


def test_verified_mail_a_virtual_alias_sends_elsewhere_is_arc_sealed(tmp_path: Path) -> None:
    """Inbound mail whose recipient a virtual alias forwards to another
    domain is sealed at once, over our verdict (dkimpy's arc_verify
    passes); mail that stays here is not."""
    arc_key = keys.generate_key("rsa", 1024)
    tmp_path.mkdir(parents=True, exist_ok=True)
    keys.write_key(arc_key, str(tmp_path / "arc.private"))
    zone = bank_zone()
    zone.add("arc._domainkey.example.org", "TXT", keys.record_value(arc_key))
    extra = (
        f"pymta_mailauth_verify = yes\npymta_arc_key = example.org:arc:{tmp_path / 'arc.private'}\n"
        "virtual_alias_maps = inline:{ fwd@mx.example.org=joe@elsewhere.test }\n"
    )
    h = Harness(tmp_path / "h", extra, zone)
    attributes = {
        "client_name": "mail.bank.test",
        "client_address": "192.0.2.9",
        "helo_name": "mail.bank.test",
        "protocol": "ESMTP",
    }
    results: list[Any] = []
    envelope = Envelope("joe@bank.test", [Recipient("fwd@mx.example.org")], 0.0, attributes)
    h.cleanup.submit(envelope, MESSAGE).addBoth(results.append)
    assert isinstance(results[0], str), results
    sealed = h.queued[-1]
    assert sealed.startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=example.org; s=arc;")
    cv, _results, reason = dkim.arc_verify(sealed, dnsfunc=dkimcheck._dnsfunc(zone))
    assert cv == b"pass", reason
    h.submit(MESSAGE)
    assert h.queued[-1].startswith(b"Authentication-Results:")
