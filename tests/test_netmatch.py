"""pymta.netmatch: mynetworks-style network lists."""

from __future__ import annotations

import pytest

from pymta import netmatch
from pymta.config.errors import ConfigError
from pymta.netmatch import NetworkList


@pytest.mark.parametrize(
    ("entries", "ip", "expected"),
    [
        (["127.0.0.0/8"], "127.1.2.3", True),
        (["127.0.0.0/8"], "128.0.0.1", False),
        (["[::1]/128"], "::1", True),
        (["[::1]/128"], "::2", False),
        (["[2001:db8::]/32"], "2001:db8:1::5", True),
        (["2001:db8::/32"], "2001:db8:1::5", True),
        (["10.1.2.3"], "10.1.2.3", True),
        (["10.1.2.3"], "10.1.2.4", False),
        (["[10.1.2.3]"], "10.1.2.3", True),
        (["!10.0.0.5", "10.0.0.0/8"], "10.0.0.5", False),
        (["!10.0.0.5", "10.0.0.0/8"], "10.0.0.6", True),
        (["10.0.0.0/8", "!10.0.0.5"], "10.0.0.5", True),
        (["127.0.0.0/8"], "::ffff:127.0.0.1", True),
        (["127.0.0.0/8"], "not-an-ip", False),
        (["10.1.2.3/8"], "10.200.0.1", True),
        ([], "127.0.0.1", False),
    ],
)
def test_contains(entries: list[str], ip: str, expected: bool) -> None:
    """The first matching entry decides; ! negates; v4-mapped v6 is v4."""
    assert NetworkList(entries).contains(ip) is expected


def test_file_and_table_entries_are_skipped_with_warning() -> None:
    """/file and type:table entries are skipped (listed in .skipped), not trusted."""
    nets = NetworkList(["/etc/postfix/network_table", "hash:/etc/postfix/nets", "127.0.0.0/8"])
    assert nets.skipped == ["/etc/postfix/network_table", "hash:/etc/postfix/nets"]
    assert nets.contains("127.0.0.1")
    assert not nets.contains("192.0.2.1")


def test_bad_entry_is_a_config_error_naming_the_parameter() -> None:
    """A malformed network stops the start with a ConfigError naming the parameter."""
    with pytest.raises(ConfigError) as info:
        NetworkList(["300.1.2.3/8"])
    assert info.value.parameter == "mynetworks"


def test_repeated_questions_get_the_same_answers_within_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A list answers the same address the same way each time (kept
    answers included, negations too), and keeps at most ANSWER_CACHE_SIZE
    of them."""
    monkeypatch.setattr(netmatch, "ANSWER_CACHE_SIZE", 3)
    nets = NetworkList(["!10.0.0.5", "10.0.0.0/8"])
    asked = [f"10.0.0.{n}" for n in range(10)] + ["192.0.2.1", "not-an-ip"]
    first = [nets.contains(ip) for ip in asked]
    assert first == [True] * 5 + [False] + [True] * 4 + [False, False]
    assert [nets.contains(ip) for ip in asked] == first
    assert [nets.contains(ip) for ip in reversed(asked)] == first[::-1]
    assert len(nets._answers) <= 3
