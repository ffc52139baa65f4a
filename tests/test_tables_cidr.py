"""cidr: tables (Postfix's cidr_table(5)): first matching network wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymta.tables import open_table
from pymta.tables.interface import TableError


def test_first_matching_network_wins(tmp_path: Path) -> None:
    """Networks, single addresses, IPv6 with and without brackets and
    negation, tried in file order; a key that is not an address matches nothing."""
    path = tmp_path / "access.cidr"
    path.write_text(
        "# comment\n"
        "192.0.2.7 reject\n"
        "192.0.2.0/24 permit\n"
        "[2001:db8::1] reject\n"
        "2001:db8::/32\n"
        "  permit\n"
        "!10.0.0.0/8 dunno\n"
    )
    table = open_table(f"cidr:{path}")
    assert table.lookup("192.0.2.7") == "reject"
    assert table.lookup("192.0.2.8") == "permit"
    assert table.lookup("::ffff:192.0.2.9") == "permit"
    assert table.lookup("2001:db8::1") == "reject"
    assert table.lookup("2001:db8::2") == "permit"
    assert table.lookup("203.0.113.1") == "dunno"
    assert table.lookup("10.1.2.3") is None
    assert table.lookup("not-an-address") is None


def test_bad_lines_are_named(tmp_path: Path) -> None:
    """A network with host bits set is a problem naming file and line
    (strict opening, as postmap and pymta check do, refuses it)."""
    path = tmp_path / "bad.cidr"
    path.write_text("192.0.2.1/24 permit\n")
    with pytest.raises(TableError, match=r"bad\.cidr, line 1: bad network"):
        open_table(f"cidr:{path}", strict=True)
    assert open_table(f"cidr:{path}").lookup("192.0.2.1") is None
