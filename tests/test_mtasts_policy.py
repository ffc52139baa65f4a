"""MTA-STS records, policies and MX patterns (pymta.mtasts.policy), as case tables."""

from __future__ import annotations

import pytest

from pymta.mtasts.policy import MAX_AGE_LIMIT, Policy, PolicyError, parse_policy, parse_record

GOOD = (
    "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
    "mx: *.example.net\r\nmax_age: 604800\r\n"
)


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["v=STSv1; id=20160831085700Z;"], "20160831085700Z"),
        (["v=STSv1;id=abc"], "abc"),
        (["v=STSv1; id=abc; ext=1"], "abc"),
        (["v=spf1 -all", "v=STSv1; id=x1"], "x1"),  # other TXT records are ignored
        (["v=STSv1; id=a", "v=STSv1; id=b"], None),  # two STS records: none (3.1)
        (["v=STSv1;"], None),  # no id
        (["v=STSv1; id=bad-id"], None),  # id is letters and digits only
        (["v=STSv1; id=" + "a" * 33], None),  # at most 32
        (["v=STSv2; id=abc"], None),
        (["id=abc; v=STSv1"], None),  # v= must come first
        ([], None),
    ],
)
def test_records(texts: list[str], expected: str | None) -> None:
    """Exactly one TXT record beginning with v=STSv1 with a valid id counts (RFC 8461 3.1)."""
    assert parse_record(texts) == expected


def test_policy_parsed() -> None:
    """A policy's mode, mx patterns (lower case) and max_age come out of CRLF lines."""
    policy = parse_policy(GOOD)
    assert policy == Policy("enforce", ("mail.example.com", "*.example.net"), 604800)


def test_policy_lf_unknown_keys_and_caps() -> None:
    """LF line ends and unknown keys are accepted; max_age is capped at one year;
    the first of a repeated key counts; patterns lose case and the final dot."""
    text = (
        "version: STSv1\nmode: testing\nmode: enforce\nfoo: bar\n"
        "mx: MX.Example.COM.\nmax_age: 9999999999\n"
    )
    policy = parse_policy(text)
    assert policy == Policy("testing", ("mx.example.com",), MAX_AGE_LIMIT)


def test_mode_none_needs_no_mx() -> None:
    """A policy in mode none may have no mx line (a domain withdrawing its policy)."""
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 86400\n").mode == "none"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "mode: enforce\nmx: a.example\nmax_age: 1\n",  # no version
        "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",
        "version: STSv1\nmode: block\nmx: a.example\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: a.example\n",  # no max_age
        "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",
        "version: STSv1\nmode: enforce\nmax_age: 86400\n",  # enforce without mx
        "version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 1\n",
        "<html>version: STSv1</html>\n",
    ],
)
def test_invalid_policies(text: str) -> None:
    """Policies missing a required field, with bad values or not policies at all are refused."""
    with pytest.raises(PolicyError):
        parse_policy(text)


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("mail.example.com", True),
        ("MAIL.example.com.", True),
        ("mx1.example.net", True),  # *.example.net: one label more
        ("example.net", False),  # the wildcard needs a label
        ("a.b.example.net", False),  # and only one
        ("mail.example.com.evil.test", False),
        ("evilmail.example.com", False),
    ],
)
def test_mx_patterns(host: str, allowed: bool) -> None:
    """MX names match a pattern exactly or through a leftmost-label wildcard (RFC 8461 4.1)."""
    assert parse_policy(GOOD).permits(host) is allowed


def test_text_round_trip() -> None:
    """The policy written out for the cache parses back to the same policy."""
    policy = parse_policy(GOOD)
    assert parse_policy(policy.text()) == policy


def test_blank_padding_is_stripped() -> None:
    """Blanks around values are dropped, however many (a line of 60,000
    blanks is read in one pass: no backtracking expression parses lines)."""
    text = "version: STSv1\nmode:enforce" + " " * 60000 + "\nmx:\tmx.example.com \nmax_age: 5\n"
    assert parse_policy(text) == Policy("enforce", ("mx.example.com",), 5)
