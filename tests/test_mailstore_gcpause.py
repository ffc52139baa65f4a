"""pymta.mailstore.gcpause: the cyclic collector is stopped while any
caller is inside, back on when the last leaves (also on an error), and
left off if it was off."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from pymta.mailstore.gcpause import paused


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_stopped_inside_and_back_after_the_last_leaves(collector_on: None) -> None:
    """Nested (or concurrent) callers: on again only when the last leaves."""
    with paused():
        assert not gc.isenabled()
        with paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_back_on_after_an_error(collector_on: None) -> None:
    """An exception inside does not leave the collector stopped."""
    with pytest.raises(ValueError), paused():
        raise ValueError("boom")
    assert gc.isenabled()


def test_left_off_when_it_was_off(collector_on: None) -> None:
    """A program that runs with the collector off keeps it off."""
    gc.disable()
    with paused():
        pass
    assert not gc.isenabled()
