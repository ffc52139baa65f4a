"""pymta.tables.redos: the rule shapes that backtrack exponentially on a key
that almost matches are found; the ordinary ones are not. The first three were
found by fuzzing, with the CPU time one lookup took."""

from __future__ import annotations

import re

import pytest

from pymta.tables.redos import exponential_repeat

EXPONENTIAL = [
    r"^(.*)*-o@(.*)$",  # found by fuzzing: 17.8 s of CPU
    r"^(?P<user>(..*)+p)",  # found by fuzzing: 13.5 s of CPU
    "^(?P<user>(.\udcff*)+)+@",  # found by fuzzing: 31.8 s (a character past Latin-1)
    "(\u0101[\u0100-\u0200]*)+$",
    r"^(\S+\s*)+$",
    r"(?:\w+)*x",
    r"((ab)*)*",
    r"^(\w+\s?)+$",
    r"(x+x+)+y",
    r"([a-z]+)+$",
]
LINEAR = [
    r"([a-z0-9]+\.)+example",
    r"^(.+)@(.+)$",
    r"(a|aa)+",
    r"^Subject: .*(viagra|cialis)",
    r"(?>(a+))+",
    r"(a+b)+",
    r"(ab*)+",
    r"(\d+\.)+\d+",
    r"^([^@]+)@(.+)$",
    r"(.)+",
    "(\u00e9+\u0101)+",
]


@pytest.mark.parametrize("pattern", EXPONENTIAL)
def test_nested_repetitions_are_found(pattern: str) -> None:
    """A loop whose body splits the same text in many ways is reported."""
    assert exponential_repeat(pattern, re.IGNORECASE) is not None


@pytest.mark.parametrize("pattern", LINEAR)
def test_ordinary_patterns_pass(pattern: str) -> None:
    """A required separator, an atomic group, alternatives or a single
    character per turn: not reported."""
    assert exponential_repeat(pattern, re.IGNORECASE) is None
