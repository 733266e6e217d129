"""Process-level helpers the search relies on between trials."""

import gc
import weakref

from autodl.runtime import long_lived_objects_frozen


class _Node:
    def __init__(self) -> None:
        self.other = self  # a reference cycle: only the cyclic collector frees it


def test_frozen_block_still_collects_what_dies_inside_it_and_unfreezes():
    before = _Node()
    with long_lived_objects_frozen():
        assert gc.get_freeze_count() > 0
        inside = _Node()
        died_inside = weakref.ref(inside)
        del inside
        gc.collect()
        assert died_inside() is None
        held_since_before = weakref.ref(before)
        del before
        gc.collect()
        assert held_since_before() is not None  # frozen: skipped by the collector
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert held_since_before() is None  # handed back on the way out, and freed
