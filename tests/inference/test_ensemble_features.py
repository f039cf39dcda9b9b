"""An ensemble's pooled features when its members' batches finish in different orders
(parallel sliding-window streams): the rows are joined per member before averaging, so a
smaller last batch at a different place in each member no longer breaks the gate's fit."""

from __future__ import annotations

import numpy as np

from medsight.inference.backends import EnsembleBackend, FeatureCollector


def _member(batches: list[np.ndarray]) -> FeatureCollector:
    member = FeatureCollector()
    member.start()
    for batch in batches:
        member.add(batch)
    return member


def test_members_finishing_batches_in_different_orders():
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(5, 8)).astype(np.float32)
    first = _member([windows[:4], windows[4:]])  # a full batch of 4, then the last 1
    second = _member([windows[4:], windows[:4]])  # the small batch finished first
    ensemble = EnsembleBackend([first, second])
    (rows,) = ensemble.stop()
    assert rows.shape == (5, 8)
    # what the predictor keeps: the mean over all windows, the same as either member's
    np.testing.assert_allclose(rows.mean(axis=0), windows.mean(axis=0), rtol=1e-6)


def test_members_in_step_average_row_by_row():
    a, b = np.ones((3, 4), np.float32), 3 * np.ones((3, 4), np.float32)
    (rows,) = EnsembleBackend([_member([a]), _member([b])]).stop()
    np.testing.assert_array_equal(rows, 2 * np.ones((3, 4)))
    assert EnsembleBackend([_member([a]), _member([])]).stop() == []
