"""The gateway's startup heap is left out of later garbage collections, and its young
generation is collected less often, but still collected."""

from __future__ import annotations

import gc
import weakref

from cmaas.assembly import GC_YOUNG_THRESHOLD, collect_young_less_often, freeze_startup_heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_the_startup_heap_is_frozen_after_its_garbage_is_collected() -> None:
    # A cycle nobody holds: garbage, which must be freed rather than frozen forever.
    garbage = _Node()
    garbage.other = _Node()
    garbage.other.other = garbage
    gone = weakref.ref(garbage)
    del garbage
    alive = _Node()
    try:
        freeze_startup_heap()
        assert gone() is None, "garbage at startup is collected before the freeze"
        assert gc.get_freeze_count() > 0
        assert not any(o is alive for o in gc.get_objects()), (
            "what lives at startup is no longer walked by the collector"
        )
    finally:
        gc.unfreeze()
    assert any(o is alive for o in gc.get_objects())


def test_the_young_generation_is_collected_less_often_but_still_collected() -> None:
    before = gc.get_threshold()
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    try:
        collect_young_less_often()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        gc.collect()
        gc.callbacks.append(count)
        held: list[list[object]] = [[] for _ in range(GC_YOUNG_THRESHOLD // 2)]
        assert collections == [], "half the threshold's new objects start no collection"
        held += [[] for _ in range(GC_YOUNG_THRESHOLD)]
        assert collections, "past the threshold the young generation is collected"
        del held
    finally:
        gc.callbacks.remove(count)
        gc.set_threshold(*before)
