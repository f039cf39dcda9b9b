"""H&E stain jitter: colours change within the valid range, reproducibly per seed."""

from __future__ import annotations

import numpy as np

from medsight.training.stain import RandHEDJitterd


def _patch() -> np.ndarray:
    rng = np.random.default_rng(0)
    base = np.array([0.55, 0.35, 0.65], np.float32)[:, None, None]  # purple-pink H&E
    return np.clip(base + rng.normal(0, 0.05, (3, 32, 32)).astype(np.float32), 0, 1)


def test_jitter_changes_stain_colour_and_stays_in_range():
    transform = RandHEDJitterd("image", sigma=0.1, prob=1.0)
    transform.set_random_state(seed=3)
    patch = _patch()
    moved = transform({"image": patch})["image"]
    assert moved.shape == patch.shape and moved.dtype == np.float32
    assert moved.min() >= 0.0 and moved.max() <= 1.0
    assert np.abs(moved - patch).mean() > 0.005


def test_same_seed_same_jitter_and_prob_zero_is_identity():
    patch = _patch()
    outcomes = []
    for _ in range(2):
        transform = RandHEDJitterd("image", sigma=0.1, prob=1.0)
        transform.set_random_state(seed=5)
        outcomes.append(transform({"image": patch})["image"])
    np.testing.assert_array_equal(outcomes[0], outcomes[1])
    never = RandHEDJitterd("image", prob=0.0)
    assert never({"image": patch})["image"] is patch
