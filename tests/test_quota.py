"""Quotas: Dovecot's rule syntax, usage counted from the Maildir, the
delivery check (defer or bounce), LMTP's RCPT refusal and the warnings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from pymta.config import Config
from pymta.config.errors import ConfigError
from pymta.delivery.final import FinalDelivery, Mailbox, Outcome
from pymta.lmtpd.factory import LMTPServerFactory
from pymta.mailstore.deliver import MaildirDelivery
from pymta.queue.model import Envelope
from pymta.queue.reference import BytesContent
from pymta.quota.policy import QuotaPolicy, QuotaState
from pymta.quota.rules import QuotaLimit, QuotaRuleError, parse_rule
from pymta.quota.usage import MaildirUsage
from pymta.sync import ImmediateSyncBarrier


@pytest.mark.parametrize(
    ("rule", "limit"),
    [
        ("*:storage=1G", QuotaLimit(1 << 30, None)),
        ("*:storage=100", QuotaLimit(100 * 1024, None)),  # plain storage: kilobytes
        ("*:bytes=100", QuotaLimit(100, None)),
        ("*:storage=10M:messages=50", QuotaLimit(10 << 20, 50)),
        ("*:storage=0", QuotaLimit()),
        ("", QuotaLimit()),
        ("none", QuotaLimit()),
    ],
)
def test_rules(rule: str, limit: QuotaLimit) -> None:
    """Dovecot's quota_rule forms and units."""
    assert parse_rule(rule) == limit


@pytest.mark.parametrize("rule", ["Trash:storage=1G", "*:storage=lots", "*:frob=1", "*:storage"])
def test_bad_rules(rule: str) -> None:
    with pytest.raises(QuotaRuleError):
        parse_rule(rule)


def test_bad_default_rule_is_a_configuration_error() -> None:
    config = Config.from_text("pymta_quota_rule = *:storage=big\n")
    with pytest.raises(ConfigError):
        QuotaPolicy.from_config(config)


def make_maildir(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_usage_counts_every_folder_and_sees_changes(tmp_path: Path) -> None:
    """Files in cur/ and new/ of INBOX and the folders count, by their S=
    size when named so, else their real size; tmp/ does not count; an
    expunge is seen at once."""
    make_maildir(
        tmp_path,
        {
            "new/1.M1.h,S=1000": b"x" * 10,
            "cur/2.M2.h:2,S": b"y" * 300,
            ".Sent/cur/3.M3.h,S=500:2,S": b"z",
            "tmp/4.M4.h": b"t" * 9999,
        },
    )
    counter = MaildirUsage()
    assert counter.usage(str(tmp_path)) == (1800, 3)
    os.unlink(tmp_path / "cur" / "2.M2.h:2,S")
    assert counter.usage(str(tmp_path)) == (1500, 2)


def test_state_fits_full_percent_and_crossings() -> None:
    state = QuotaState(QuotaLimit(1000, 10), 790, 3)
    assert state.fits(210) and not state.fits(211)
    assert not state.full() and QuotaState(QuotaLimit(None, 3), 0, 3).full()
    policy = QuotaPolicy("", "defer", (80.0, 95.0))
    assert policy.crossed(state, 5) is None
    assert policy.crossed(state, 10) == 80.0
    assert policy.crossed(state, 200) == 95.0


class Recorder:
    def __init__(self) -> None:
        self.submitted: list[tuple[Envelope, bytes]] = []

    def submit(self, envelope: Envelope, content: bytes) -> Deferred[str]:
        self.submitted.append((envelope, content))
        return succeed("Q1")


def final(tmp_path: Path, action: str = "defer") -> tuple[FinalDelivery, Recorder]:
    clock = Clock()
    clock.advance(1_800_000_000)
    writer = MaildirDelivery(ImmediateSyncBarrier(), clock, "mx", pid=1)  # type: ignore[arg-type]
    cleanup = Recorder()
    return (
        FinalDelivery(
            writer,
            None,
            QuotaPolicy("*:bytes=1000", action, (80.0, 95.0), MaildirUsage()),
            lambda work: maybeDeferred(work),
            cleanup,
            "mx.example.test",
            clock.seconds,
        ),
        cleanup,
    )


def deliver(delivery: FinalDelivery, maildir: Path, size: int, rule: str | None = None) -> Outcome:
    mailbox = Mailbox("bob@example.test", str(maildir), str(maildir), None, rule)
    results: list[Outcome] = []
    delivery.deliver(
        mailbox, b"", BytesContent(b"x" * size), sender="a@b.example", recipient="bob@example.test"
    ).addBoth(results.append)
    return results[0]


@pytest.mark.parametrize(("action", "status"), [("defer", "4.2.2"), ("bounce", "5.2.2")])
def test_delivery_over_quota(tmp_path: Path, action: str, status: str) -> None:
    """A message that would take the mailbox over its quota is not stored:
    4.2.2 with pymta_quota_full_action = defer, 5.2.2 with bounce."""
    delivery, _ = final(tmp_path, action)
    maildir = tmp_path / "Maildir"
    assert deliver(delivery, maildir, 600).ok
    outcome = deliver(delivery, maildir, 600)
    assert outcome.status == status and "Quota exceeded" in outcome.reason
    assert len(list((maildir / "new").iterdir())) == 1


def test_delivery_leaves_maildirsize_current(tmp_path: Path) -> None:
    """After each delivery to a user with a quota, maildirsize says the
    mailbox's usage (written when the Maildir is new, then each delivery
    a change line), as Dovecot's quota driver leaves it after a save."""
    delivery, _ = final(tmp_path)
    maildir = tmp_path / "Maildir"
    assert deliver(delivery, maildir, 300).ok
    assert (maildir / "maildirsize").read_bytes() == b"1000S\n300 1\n"  # a new Maildir
    assert deliver(delivery, maildir, 200).ok
    assert (maildir / "maildirsize").read_bytes() == b"1000S\n300 1\n200 1\n"


def test_user_rule_overrides_the_default(tmp_path: Path) -> None:
    """The passwd-file rule wins over pymta_quota_rule ("none": no quota)."""
    delivery, _ = final(tmp_path)
    assert deliver(delivery, tmp_path / "M", 5000, rule="none").ok
    assert deliver(delivery, tmp_path / "N", 5000, rule="*:bytes=10K").ok


def test_warning_mails_at_80_and_95_percent(tmp_path: Path) -> None:
    """Crossing 80% and then 95% sends one warning each to the user,
    through cleanup with the null sender."""
    delivery, cleanup = final(tmp_path)
    maildir = tmp_path / "Maildir"
    deliver(delivery, maildir, 700)
    assert cleanup.submitted == []
    deliver(delivery, maildir, 150)  # 85%
    deliver(delivery, maildir, 20)  # 87%: no new crossing
    deliver(delivery, maildir, 100)  # 97%
    subjects = [c.split(b"Subject: ")[1].split(b"\n")[0] for _, c in cleanup.submitted]
    assert subjects == [b"Your mailbox is 80% full", b"Your mailbox is 95% full"]
    envelope = cleanup.submitted[0][0]
    assert envelope.sender == "" and envelope.recipients[0].address == "bob@example.test"


@pytest.mark.parametrize(("action", "reply"), [("defer", "452 4.2.2"), ("bounce", "552 5.2.2")])
def test_lmtp_refuses_a_full_mailbox_at_rcpt(tmp_path: Path, action: str, reply: str) -> None:
    """LMTP RCPT for a mailbox already at its quota is refused at once (452
    4.2.2 when deferring, 552 5.2.2 when bouncing); the commands after it
    wait for the answer."""
    delivery, _ = final(tmp_path, action)
    maildir = tmp_path / "Maildir"
    deliver(delivery, maildir, 1000)
    mailbox = Mailbox("bob@example.test", str(maildir), str(maildir))
    config = Config.from_text("myhostname = mx.example.test\nmynetworks = 127.0.0.0/8\n")
    factory = LMTPServerFactory(config, lambda address: mailbox, delivery, Clock())  # type: ignore[arg-type]
    proto = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1))
    proto.makeConnection(transport)
    transport.clear()
    proto.dataReceived(b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.test>\r\nNOOP\r\n")
    lines = transport.value().decode().splitlines()
    assert lines[-2].startswith(reply + " <bob@example.test> Quota exceeded")
    assert lines[-1] == "250 2.0.0 OK"
