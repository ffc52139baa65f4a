"""smtpd restrictions: access maps, address checks, lookup failures, configuration."""

from __future__ import annotations

import pytest

from pymta.config.config import Config
from pymta.config.errors import ConfigError
from pymta.smtpd.restrictions import Restrictions
from pymta.smtpd.testing import BASE_CONFIG, DictTable, FakeResolver, SMTPHarness
from pymta.tables.interface import ILookupTable

UNTRUSTED = "198.51.100.7"


def rcpt(h: SMTPHarness, address: str, sender: str = "s@sender.example") -> str:
    h.send(f"EHLO client.example\nMAIL FROM:<{sender}>\n")
    [reply] = h.send(f"RCPT TO:<{address}>\n")
    h.send("RSET\n")
    return reply


def test_unknown_restriction_is_a_config_error_naming_the_parameter() -> None:
    """A misspelt restriction stops the start, naming parameter, file and line."""
    config = Config.from_text(
        BASE_CONFIG + "smtpd_recipient_restrictions = permit_mynetwork, reject\n",
        filename="/etc/pymta/main.cf",
    )
    with pytest.raises(ConfigError) as info:
        Restrictions(config, FakeResolver(), lambda spec: DictTable(spec, {}))
    assert info.value.parameter == "smtpd_recipient_restrictions"
    assert info.value.filename == "/etc/pymta/main.cf"
    assert info.value.lineno == 3
    assert "permit_mynetwork" in str(info.value)


def test_open_relay_configuration_is_refused() -> None:
    """Relay and recipient lists without any reject/defer make an open relay: error."""
    config = Config.from_text(
        BASE_CONFIG + "smtpd_relay_restrictions = permit_mynetworks\n"
        "smtpd_recipient_restrictions = permit_mynetworks\n"
    )
    with pytest.raises(ConfigError, match="open relay"):
        Restrictions(config, FakeResolver(), lambda spec: DictTable(spec, {}))


def test_access_table_missing_argument() -> None:
    """check_recipient_access without a table is a ConfigError."""
    config = Config.from_text(
        BASE_CONFIG + "smtpd_recipient_restrictions = check_recipient_access\n"
    )
    with pytest.raises(ConfigError, match="type:table"):
        Restrictions(config, FakeResolver(), lambda spec: DictTable(spec, {}))


@pytest.mark.parametrize(
    ("value", "reply"),
    [
        ("REJECT", "554 5.7.1 <user@example.com>: Recipient address rejected: Access denied"),
        ("REJECT go away", "554 5.7.1 <user@example.com>: Recipient address rejected: go away"),
        ("REJECT 5.7.9 policy", "554 5.7.9 <user@example.com>: Recipient address rejected: policy"),
        ("DEFER later", "450 4.7.1 <user@example.com>: Recipient address rejected: later"),
        ("550 no such", "550 5.7.1 <user@example.com>: Recipient address rejected: no such"),
        ("421 4.3.2 busy", "421 4.3.2 <user@example.com>: Recipient address rejected: busy"),
        ("OK", "250 2.1.5 Ok"),
        ("DUNNO", "250 2.1.5 Ok"),
        ("reject", "554 5.7.1 <user@example.com>: Recipient address rejected: Access denied"),
    ],
)
def test_check_recipient_access_results(value: str, reply: str) -> None:
    """Access map results OK, REJECT [text], DEFER [text], NNN text, DUNNO and
    restriction names work as Postfix's access(5)."""
    table = DictTable("inline:rcpt", {"user@example.com": value})
    h = SMTPHarness(
        "smtpd_recipient_restrictions = check_recipient_access inline:rcpt\n",
        peer=UNTRUSTED,
        tables={"inline:rcpt": table},
    )
    assert rcpt(h, "user@example.com") == reply


def test_access_lookup_order_for_addresses() -> None:
    """Recipient keys: the address, its domain, parent domains, then user@."""
    table = DictTable("t", {})
    h = SMTPHarness(
        "smtpd_recipient_restrictions = check_recipient_access t\n",
        peer="127.0.0.1",
        tables={"t": table},
    )
    rcpt(h, "joe@mail.remote.example")
    assert table.keys == [
        "joe@mail.remote.example",
        "mail.remote.example",
        "remote.example",
        "example",
        "joe@",
    ]


def test_domain_entry_ok_permits_relay_to_it() -> None:
    """An OK for a domain in check_recipient_access before reject_unauth_destination
    lets untrusted clients send there."""
    h = SMTPHarness(
        "smtpd_relay_restrictions =\n"
        "smtpd_recipient_restrictions = check_recipient_access t, reject_unauth_destination\n",
        peer=UNTRUSTED,
        tables={"t": DictTable("t", {"partner.example": "OK"})},
    )
    assert rcpt(h, "x@partner.example") == "250 2.1.5 Ok"
    assert rcpt(h, "x@other.example") == "554 5.7.1 <x@other.example>: Relay access denied"


def test_table_failure_is_451_never_5xx() -> None:
    """A lookup that fails defers: 451 4.3.0 Temporary lookup failure."""
    h = SMTPHarness(
        "smtpd_recipient_restrictions = check_recipient_access t\n",
        peer=UNTRUSTED,
        tables={"t": DictTable("t", {}, fail=True)},
    )
    assert rcpt(h, "user@example.com") == "451 4.3.0 <user@example.com>: Temporary lookup failure"


def test_unlisted_recipient_lookup_failure_is_451() -> None:
    """A failing recipient table at the implicit reject_unlisted_recipient is 451 4.3.0."""
    h = SMTPHarness(peer=UNTRUSTED, resolver=FakeResolver(fail=True))
    assert rcpt(h, "user@example.com") == "451 4.3.0 <user@example.com>: Temporary lookup failure"


@pytest.mark.parametrize(
    ("address", "table"),
    [
        ("nobody@example.com", "local recipient table"),
        ("nobody@virtual.example", "virtual mailbox table"),
        ("nobody@alias.example", "virtual alias table"),
        ("nobody@relay.example", "relay recipient table"),
    ],
)
def test_unlisted_recipient_is_rejected_implicitly(address: str, table: str) -> None:
    """smtpd_reject_unlisted_recipient=yes rejects unknown users of every class,
    even from mynetworks."""
    resolver = FakeResolver(virtual_alias=["alias.example"], relay=["relay.example"])
    h = SMTPHarness(peer="127.0.0.1", resolver=resolver)
    assert rcpt(h, address) == (
        f"550 5.1.1 <{address}>: Recipient address rejected: User unknown in {table}"
    )


def test_unlisted_recipient_check_can_be_switched_off() -> None:
    """smtpd_reject_unlisted_recipient=no accepts unknown users of our domains."""
    h = SMTPHarness("smtpd_reject_unlisted_recipient = no\n", peer=UNTRUSTED)
    assert rcpt(h, "nobody@example.com") == "250 2.1.5 Ok"


def test_unlisted_sender() -> None:
    """reject_unlisted_sender refuses unknown senders claiming our domains."""
    h = SMTPHarness("smtpd_sender_restrictions = reject_unlisted_sender\n", peer=UNTRUSTED)
    assert rcpt(h, "user@example.com", sender="ghost@example.com") == (
        "550 5.1.0 <ghost@example.com>: Sender address rejected: User unknown in local "
        "recipient table"
    )
    assert rcpt(h, "user@example.com", sender="user@example.com") == "250 2.1.5 Ok"


def test_sender_access_and_delay_reject() -> None:
    """With smtpd_delay_reject=yes a sender reject shows up at RCPT, not MAIL."""
    h = SMTPHarness(
        "smtpd_sender_restrictions = check_sender_access s\n",
        peer=UNTRUSTED,
        tables={"s": DictTable("s", {"spam.example": "REJECT"})},
    )
    h.send("EHLO c.example\n")
    assert h.send("MAIL FROM:<x@spam.example>\n") == ["250 2.1.0 Ok"]
    assert h.send("RCPT TO:<user@example.com>\n") == [
        "554 5.7.1 <x@spam.example>: Sender address rejected: Access denied"
    ]


def test_sender_access_without_delay_reject_rejects_at_mail() -> None:
    """smtpd_delay_reject=no evaluates sender restrictions at MAIL."""
    h = SMTPHarness(
        "smtpd_delay_reject = no\nsmtpd_sender_restrictions = check_sender_access s\n",
        peer=UNTRUSTED,
        tables={"s": DictTable("s", {"<>": "REJECT no bounces"})},
    )
    h.send("EHLO c.example\n")
    assert h.send("MAIL FROM:<>\n") == ["554 5.7.1 <>: Sender address rejected: no bounces"]


def test_client_access_by_address_prefix() -> None:
    """check_client_access looks up the IP and its shorter prefixes."""
    table = DictTable("c", {"198.51": "REJECT"})
    h = SMTPHarness(
        "smtpd_client_restrictions = check_client_access c\n",
        peer=UNTRUSTED,
        tables={"c": table},
    )
    assert rcpt(h, "user@example.com") == (
        "554 5.7.1 <unknown[198.51.100.7]>: Client host rejected: Access denied"
    )
    assert table.keys[:4] == [
        "198.51.100.7",
        "198.51.100",
        "198.51",
    ]


def test_helo_access_and_non_fqdn_helo() -> None:
    """check_helo_access and reject_non_fqdn_helo_hostname judge the HELO name."""
    h = SMTPHarness(
        "smtpd_helo_restrictions = check_helo_access h, reject_non_fqdn_helo_hostname\n",
        peer=UNTRUSTED,
        tables={"h": DictTable("h", {"bad.example": "REJECT liar"})},
    )
    h.send("EHLO bad.example\nMAIL FROM:<a@b.example>\n")
    assert h.send("RCPT TO:<user@example.com>\n") == [
        "554 5.7.1 <bad.example>: Helo command rejected: liar"
    ]
    h.send("RSET\nEHLO localpc\nMAIL FROM:<a@b.example>\n")
    assert h.send("RCPT TO:<user@example.com>\n") == [
        "504 5.5.2 <localpc>: Helo command rejected: need fully-qualified hostname"
    ]


def test_non_fqdn_and_unknown_domain_checks() -> None:
    """reject_non_fqdn_recipient/sender and reject_unknown_recipient_domain."""
    h = SMTPHarness(
        "smtpd_recipient_restrictions = reject_non_fqdn_sender, reject_non_fqdn_recipient,"
        " permit_mynetworks, reject\n",
        peer="127.0.0.1",
    )
    assert rcpt(h, "x@remote") == (
        "504 5.5.2 <x@remote>: Recipient address rejected: need fully-qualified address"
    )
    assert rcpt(h, "user@example.com", sender="me@host") == (
        "504 5.5.2 <me@host>: Sender address rejected: need fully-qualified address"
    )
    h2 = SMTPHarness(
        "smtpd_recipient_restrictions = reject_unknown_recipient_domain, permit\n",
        peer="127.0.0.1",
    )
    assert (
        rcpt(h2, "x@nodots") == "450 4.1.2 <x@nodots>: Recipient address rejected: Domain not found"
    )
    assert rcpt(h2, "x@remote.example") == "250 2.1.5 Ok"


def test_permit_sasl_authenticated() -> None:
    """A session with a SASL user may relay under the default relay restrictions."""
    h = SMTPHarness(peer=UNTRUSTED)
    h.protocol.session.sasl_username = "joe"
    assert rcpt(h, "x@remote.example") == "250 2.1.5 Ok"


def test_plain_reject_and_defer_and_data_restrictions() -> None:
    """reject/defer in a list, and smtpd_data_restrictions at DATA."""
    h = SMTPHarness("smtpd_recipient_restrictions = permit_mynetworks, defer\n", peer=UNTRUSTED)
    assert rcpt(h, "user@example.com") == (
        "450 4.7.1 <user@example.com>: Recipient address rejected: Try again later"
    )
    h2 = SMTPHarness("smtpd_data_restrictions = reject\n", peer="127.0.0.1")
    h2.send("EHLO c.example\nMAIL FROM:<a@b.example>\nRCPT TO:<user@example.com>\n")
    assert h2.send("DATA\n") == ["554 5.7.1 <DATA>: Data command rejected: Access denied"]


def test_tables_are_opened_once_per_factory() -> None:
    """Restriction tables are opened when the factory is built, not per session."""
    opened: list[str] = []

    def open_table(spec: str) -> ILookupTable:
        opened.append(spec)
        return DictTable(spec, {})

    config = Config.from_text(
        BASE_CONFIG + "smtpd_recipient_restrictions = check_recipient_access a,"
        " check_client_access b, reject_unauth_destination\n"
    )
    restrictions = Restrictions(config, FakeResolver(), open_table)
    assert opened == ["a", "b"]
    assert len(restrictions.recipient) == 3


def test_restriction_classes() -> None:
    """A smtpd_restriction_classes name works as a restriction, also as an
    access-map result."""
    h = SMTPHarness(
        "smtpd_restriction_classes = strict, friendly\n"
        "strict = reject_non_fqdn_sender, reject\n"
        "friendly = permit\n"
        "smtpd_recipient_restrictions = check_recipient_access t, strict\n",
        peer="127.0.0.1",
        tables={"t": DictTable("t", {"user@example.com": "friendly"})},
    )
    assert rcpt(h, "user@example.com") == "250 2.1.5 Ok"
    assert rcpt(h, "user@mx.example.com") == (
        "554 5.7.1 <user@mx.example.com>: Recipient address rejected: Access denied"
    )


def test_null_sender_access_key() -> None:
    """smtpd_null_access_lookup_key names the null sender in access maps."""
    table = DictTable("s", {"MAILER-DAEMON": "REJECT"})
    h = SMTPHarness(
        "smtpd_null_access_lookup_key = MAILER-DAEMON\n"
        "smtpd_sender_restrictions = check_sender_access s\n",
        peer=UNTRUSTED,
        tables={"s": table},
    )
    assert rcpt(h, "user@example.com", sender="").startswith("554 5.7.1 <>: Sender address")
    assert table.keys == ["MAILER-DAEMON"]


def test_unknown_local_recipient_reject_code() -> None:
    """unknown_local_recipient_reject_code = 450 makes unknown users a soft error."""
    h = SMTPHarness("unknown_local_recipient_reject_code = 450\n", peer=UNTRUSTED)
    assert rcpt(h, "nobody@example.com") == (
        "450 4.1.1 <nobody@example.com>: Recipient address rejected: User unknown in "
        "local recipient table"
    )
