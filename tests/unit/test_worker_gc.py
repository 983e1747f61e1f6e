"""The worker's collector settling at ready (streams.worker.settle_gc)."""

from __future__ import annotations

import gc
import weakref

from streams.worker import WorkerSettings, settle_gc


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_settling_collects_cycles_then_freezes_what_is_alive() -> None:
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a
        dead = weakref.ref(a)
        del a, b
        took = settle_gc()
        assert took >= 0.0
        assert dead() is None  # the cycle was collected before the freeze
        frozen = gc.get_freeze_count()
        assert frozen > 0
        kept = Node()
        kept.other = kept
        assert settle_gc() >= 0.0
        assert gc.get_freeze_count() >= frozen  # unfrozen, collected, frozen again: not stacked up forever
        assert gc.get_freeze_count() < 2 * frozen
        assert kept.other is kept
    finally:
        gc.unfreeze()


def test_a_frozen_cycle_is_collected_at_the_next_settling() -> None:
    try:
        a = Node()
        a.other = a
        dead = weakref.ref(a)
        settle_gc()  # frozen while alive
        del a
        gc.collect()
        assert dead() is not None  # frozen: the collector does not see it
        settle_gc()
        assert dead() is None
    finally:
        gc.unfreeze()


def test_the_youngest_generation_threshold_is_a_setting() -> None:
    assert WorkerSettings(bootstrap="x").gc_gen0 == 10_000
