"""pymta.gctune: what ``twistd pymta`` does to its collector at start."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from pymta import gctune


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_tune_freezes_the_start_heap_and_raises_the_young_threshold(restored_gc: None) -> None:
    """After tune() the objects alive at start sit in the permanent
    generation (full collections skip them) and a young collection waits
    for YOUNG_THRESHOLD allocations; the older generations keep CPython's
    ratios."""
    _, middle, old = gc.get_threshold()
    kept = [object() for _ in range(10)]
    gctune.tune()
    assert gc.get_freeze_count() > len(kept)
    assert gc.get_threshold() == (gctune.YOUNG_THRESHOLD, middle, old)


def test_tune_leaves_cyclic_garbage_collectable(restored_gc: None) -> None:
    """A reference cycle made after tune() is still freed by a collection."""
    gctune.tune()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None
