"""The daemon builds the trend models' process-wide tables at start (monitor.detect.warm_up), so that
its memory does not grow as batches reach longer windows: a model then builds none of them itself."""

from __future__ import annotations

import math

import pytest

from monitor.detect import TrendModel, trend, warm_up
from monitor.errors import DetectionError


def _fed(model: TrendModel, values: int) -> None:
    for i in range(values):
        model.update(0.01 * math.sin(1.3 * i) + 0.0004 * i)


def test_a_warmed_up_window_builds_no_table_as_it_fills_slides_and_restarts() -> None:
    trend._grid.cache_clear()  # what other tests built (the tables are rebuilt the same on use)
    trend._ar_noise.cache_clear()
    warm_up([12, 9])
    assert trend._grid.cache_info().currsize == 12 + 2
    grids, noise = trend._grid.cache_info(), trend._ar_noise.cache_info()
    for window in (12, 9):
        model = TrendModel(scale=0.05, window=window)
        _fed(model, 3 * window)  # fills, then slides (a full window past the regime's start)
        model.start_regime(keep=4)  # a new regime keeps the latest values: short windows again
        _fed(model, window)
        model.draws(20)
    assert trend._grid.cache_info().misses == grids.misses
    assert trend._ar_noise.cache_info().misses == noise.misses


def test_warm_up_checks_its_windows() -> None:
    with pytest.raises(DetectionError, match="window"):
        warm_up([4])
    before = trend._grid.cache_info()
    warm_up([])  # nothing to build
    assert trend._grid.cache_info() == before
