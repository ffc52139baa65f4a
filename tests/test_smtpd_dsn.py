"""The DSN extension (RFC 3461) on smtpd: parameter parsing, xtext, the
envelope handed to cleanup, and the queue-file round trip of what it keeps."""

from __future__ import annotations

import pytest

from pymta.queue import record
from pymta.queue.model import Envelope, Recipient
from pymta.smtpd.dsn import (
    DsnSyntaxError,
    encode_orcpt,
    parse_envid,
    parse_notify,
    parse_orcpt,
    parse_ret,
    xtext_decode,
    xtext_encode,
)
from pymta.smtpd.testing import FakeResolver, SMTPHarness

EHLO = "EHLO client.example\n"
USERS = ("a@example.com", "b@example.com", "c@example.com")


def _harness(config: str = "") -> SMTPHarness:
    return SMTPHarness(config, resolver=FakeResolver(users=USERS))


@pytest.mark.parametrize(
    ("xtext", "text"),
    [
        ("abc", "abc"),
        ("a+2Bb", "a+b"),
        ("a+3Db", "a=b"),
        ("+20x+09", " x\t"),
        ("user+40example.com", "user@example.com"),
        ("a+2bb", "a+b"),  # lower-case hex accepted, as Postfix does
        ("", ""),
    ],
)
def test_xtext_decode(xtext: str, text: str) -> None:
    """xtext ``+XX`` escapes decode to the characters they stand for."""
    assert xtext_decode(xtext) == text


@pytest.mark.parametrize("bad", ["a+b", "a=b", "a+4", "a+GG", "a b", "caf\u00e9"])
def test_xtext_decode_rejects(bad: str) -> None:
    """A bare ``+``, ``=``, a short or non-hex escape, space or non-ASCII is bad xtext."""
    with pytest.raises(DsnSyntaxError):
        xtext_decode(bad)


@pytest.mark.parametrize("text", ["plain", "a+b=c", "sp ace\t", "ünï@example", "~!{}"])
def test_xtext_round_trip(text: str) -> None:
    """xtext_encode produces valid xtext that decodes back (non-ASCII via UTF-8 bytes)."""
    encoded = xtext_encode(text)
    assert encoded.isascii() and " " not in encoded and "=" not in encoded
    assert xtext_decode(encoded).encode("latin-1") == text.encode("utf-8")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("NEVER", "NEVER"),
        ("never", "NEVER"),
        ("SUCCESS", "SUCCESS"),
        ("DELAY,FAILURE,SUCCESS", "SUCCESS,FAILURE,DELAY"),
        ("failure,delay", "FAILURE,DELAY"),
    ],
)
def test_parse_notify(value: str, expected: str) -> None:
    """NOTIFY keywords are upper-cased and put in canonical order."""
    assert parse_notify(value) == expected


@pytest.mark.parametrize(
    "value", [None, "", "NEVER,SUCCESS", "SUCCESS,SUCCESS", "SOMETIMES", "SUCCESS,", ",DELAY"]
)
def test_parse_notify_rejects(value: str | None) -> None:
    """NEVER combined with others, duplicates, unknown or empty keywords are errors."""
    with pytest.raises(DsnSyntaxError, match="NOTIFY"):
        parse_notify(value)


def test_parse_ret_envid_orcpt() -> None:
    """RET is FULL or HDRS; ENVID and ORCPT's address are xtext-decoded."""
    assert parse_ret("hdrs") == "HDRS"
    assert parse_ret("FULL") == "FULL"
    assert parse_envid("QQ+2B123") == "QQ+123"
    assert parse_orcpt("rfc822;a+2Bb@example.com") == "rfc822;a+b@example.com"
    assert parse_orcpt("RFC822;x@y") == "rfc822;x@y"
    assert encode_orcpt("rfc822;a+b=c@example.com") == "rfc822;a+2Bb+3Dc@example.com"
    for bad in (None, "", "NONE", "FULLER"):
        with pytest.raises(DsnSyntaxError, match="RET"):
            parse_ret(bad)
    for bad_envid in (None, "", "x" * 101, "a+0Ab", "a+b"):
        with pytest.raises(DsnSyntaxError, match="ENVID"):
            parse_envid(bad_envid)
    for bad_orcpt in (None, "", "rfc822", "rfc822;", ";a@b", "rfc 822;a@b", "rfc822;a+0Db"):
        with pytest.raises(DsnSyntaxError, match="ORCPT"):
            parse_orcpt(bad_orcpt)


def test_dsn_parameters_reach_cleanup() -> None:
    """MAIL RET/ENVID become envelope attributes ret/envid; RCPT NOTIFY/ORCPT
    become Recipient.notify/orcpt, per recipient; absent ones stay None."""
    h = _harness()
    h.send(EHLO)
    assert h.send("MAIL FROM:<s@sender.example> RET=HDRS ENVID=QQ+2B314\n") == ["250 2.1.0 Ok"]
    assert h.send(
        "RCPT TO:<a@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;A+2Bx@example.com\n"
    ) == ["250 2.1.5 Ok"]
    assert h.send("RCPT TO:<b@example.com> NOTIFY=NEVER\n") == ["250 2.1.5 Ok"]
    assert h.send("RCPT TO:<c@example.com>\n") == ["250 2.1.5 Ok"]
    assert h.send("DATA\nhi\n.\n")[-1].startswith("250 2.0.0 Ok: queued as")
    envelope, _ = h.cleanup.received[0]
    assert envelope.attributes["ret"] == "HDRS"
    assert envelope.attributes["envid"] == "QQ+314"
    a, b, c = envelope.recipients
    assert (a.notify, a.orcpt) == ("SUCCESS,FAILURE", "rfc822;A+x@example.com")
    assert (b.notify, b.orcpt) == ("NEVER", None)
    assert (c.notify, c.orcpt) == (None, None)


def test_dsn_parameters_do_not_leak_into_next_transaction() -> None:
    """RSET (and a new MAIL) start without the previous RET/ENVID/NOTIFY."""
    h = _harness()
    h.send(EHLO)
    h.send("MAIL FROM:<s@sender.example> RET=FULL ENVID=x\nRCPT TO:<a@example.com> NOTIFY=NEVER\n")
    h.send("RSET\nMAIL FROM:<s@sender.example>\nRCPT TO:<a@example.com>\nDATA\nhi\n.\n")
    envelope, _ = h.cleanup.received[0]
    assert "ret" not in envelope.attributes and "envid" not in envelope.attributes
    assert envelope.recipients[0].notify is None


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        ("MAIL FROM:<s@x.example> RET=SOME", "501 5.5.4 Bad RET parameter syntax"),
        ("MAIL FROM:<s@x.example> RET", "501 5.5.4 Bad RET parameter syntax"),
        ("MAIL FROM:<s@x.example> ENVID=a+zz", "501 5.5.4 Bad ENVID parameter syntax"),
        ("MAIL FROM:<s@x.example> ENVID=" + "x" * 101, "501 5.5.4 Bad ENVID parameter syntax"),
    ],
)
def test_bad_mail_dsn_parameters(command: str, reply: str) -> None:
    """Malformed RET/ENVID get 501 5.5.4 and no transaction starts."""
    h = _harness()
    h.send(EHLO)
    assert h.send(command + "\n") == [reply]
    assert h.send("RCPT TO:<a@example.com>\n")[0].startswith("503")


@pytest.mark.parametrize(
    ("params", "reply"),
    [
        ("NOTIFY=NEVER,DELAY", "501 5.5.4 Bad NOTIFY parameter syntax"),
        ("NOTIFY=", "501 5.5.4 Bad parameter syntax"),
        ("ORCPT=a@b.example", "501 5.5.4 Bad ORCPT parameter syntax"),
        ("ORCPT=rfc822;a+4", "501 5.5.4 Bad ORCPT parameter syntax"),
    ],
)
def test_bad_rcpt_dsn_parameters(params: str, reply: str) -> None:
    """Malformed NOTIFY/ORCPT get 501 5.5.4 and the recipient is not added."""
    h = _harness()
    h.send(EHLO)
    h.send("MAIL FROM:<s@x.example>\n")
    assert h.send(f"RCPT TO:<a@example.com> {params}\n") == [reply]
    assert h.send("DATA\n")[0].startswith("554")


def test_dsn_parameters_need_ehlo_and_the_keyword() -> None:
    """After HELO, or with DSN in smtpd_discard_ehlo_keywords, DSN parameters
    are unsupported options (555), as in Postfix."""
    h = _harness()
    h.send("HELO client.example\n")
    assert h.send("MAIL FROM:<s@x.example> RET=FULL\n") == ["555 5.5.4 Unsupported option: RET"]
    h = _harness("smtpd_discard_ehlo_keywords = dsn\n")
    assert "250-DSN" not in h.send(EHLO)
    assert h.send("MAIL FROM:<s@x.example> ENVID=x\n") == ["555 5.5.4 Unsupported option: ENVID"]
    h.send("MAIL FROM:<s@x.example>\n")
    assert h.send("RCPT TO:<a@example.com> NOTIFY=NEVER\n") == [
        "555 5.5.4 Unsupported option: NOTIFY"
    ]


def test_queue_file_round_trips_dsn_fields() -> None:
    """ret/envid attributes and per-recipient notify/orcpt (with ``;``, ``%``,
    tabs and non-ASCII) survive encode/decode of the queue file."""
    envelope = Envelope(
        "s@x.example",
        [
            Recipient("a@example.com", "a@example.com", "rfc822;a%b\t+c@ex.com", "SUCCESS,DELAY"),
            Recipient("b@example.com", "b@example.com", "utf-8;j\u00f6rg@example.com", "NEVER"),
            Recipient("c@example.com", "c@example.com"),
        ],
        1700000000.5,
        {"ret": "HDRS", "envid": "id with spaces;%=+"},
    )
    buffers, _ = record.encode(envelope, b"Subject: x\n\nbody\n")
    decoded, content, _ = record.decode(b"".join(buffers))
    assert decoded == envelope
    assert content == b"Subject: x\n\nbody\n"
