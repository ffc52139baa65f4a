"""docs/parameters.md is generated from the defaults table and kept up to date."""

from __future__ import annotations

from pathlib import Path

from pymta.config.defaults import DEFAULTS
from pymta.config.reference import render, sections

DOC = Path(__file__).resolve().parents[1] / "docs" / "parameters.md"


def test_committed_reference_is_what_the_generator_prints() -> None:
    """The committed docs/parameters.md equals `python -m pymta.config.reference`:
    a parameter added to or changed in the defaults table fails here until
    the reference is regenerated."""
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/parameters.md is stale: run `python -m pymta.config.reference > docs/parameters.md`"
    )


def test_every_parameter_is_listed_once_under_a_heading() -> None:
    """Each entry of the defaults table appears in exactly one section, with its
    default, so the reference lists everything `pymta postconf -d` prints."""
    listed = [param.name for _title, params in sections() for param in params]
    assert sorted(listed) == sorted(DEFAULTS)
    text = render()
    for name in DEFAULTS:
        assert f"| `{name}` |" in text


def test_a_pipe_in_a_value_does_not_break_the_table() -> None:
    """Values and meanings with '|' (``|command``) are escaped, so every table
    row has exactly four cells."""
    for line in render().splitlines():
        if line.startswith("| `") and "<service>" not in line:
            cells = line.replace("\\|", "").split("|")
            assert len(cells) == 6, line
