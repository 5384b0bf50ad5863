"""The gateway's startup heap is left out of later garbage collections."""

from __future__ import annotations

import gc
import weakref

from cmaas.assembly import freeze_startup_heap


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
