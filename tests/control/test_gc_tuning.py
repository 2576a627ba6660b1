"""The node freezes its start-up heap and raises the GC threshold (app._tune_gc)."""

from __future__ import annotations

import gc
from pathlib import Path

from smcp.app import _tune_gc
from smcp.config import Settings


def test_start_up_objects_are_frozen_and_the_threshold_is_the_setting(tmp_path: Path) -> None:
    before = gc.get_threshold()
    try:
        _tune_gc(Settings(data_dir=tmp_path, gc_gen0_threshold=12_345))
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (12_345, before[1], before[2])
        gc.unfreeze()
        gc.set_threshold(*before)
        _tune_gc(Settings(data_dir=tmp_path, gc_gen0_threshold=0))  # 0 keeps Python's own
        assert gc.get_threshold() == before
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
