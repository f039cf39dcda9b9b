"""Touching nuclei split into instances by the watershed, from three-class probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from medsight.inference.instances import instance_map
from medsight.tasks.spec import Instances


def _two_touching_discs(size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (3, i, j) of two discs of radius 9 touching at one rim, and the truth."""
    i, j = np.mgrid[:size, :size]
    first = (i - 24) ** 2 + (j - 15) ** 2 <= 81
    second = (i - 24) ** 2 + (j - 32) ** 2 <= 81
    truth = np.where(first, 1, np.where(second, 2, 0))
    from scipy import ndimage

    rim = np.zeros_like(first)
    for disc in (first, second):
        rim |= disc & ~ndimage.binary_erosion(disc, iterations=2)
    interior = (first | second) & ~rim
    probabilities = (
        np.stack([~(first | second), interior, rim & (first | second)]).astype(np.float32) * 0.9
        + 0.05
    )
    return probabilities / probabilities.sum(0, keepdims=True), truth


@pytest.mark.parametrize("seeds", ["interior", "distance"])
def test_touching_nuclei_become_two_instances_each_whole(seeds):
    probabilities, truth = _two_touching_discs()
    options = Instances(interior="nucleus", boundary="rim", seeds=seeds, min_area_um2=5.0)
    instances = instance_map(probabilities, 1, 2, options, pixel_area_um2=1.0)
    assert instances.max() == 2
    for reference in (1, 2):
        _, counts = np.unique(instances[truth == reference], return_counts=True)
        assert counts.max() / counts.sum() > 0.95  # one id covers each disc
    assert (instances > 0).sum() == pytest.approx((truth > 0).sum(), rel=0.05)


def test_debris_below_the_area_limit_is_dropped_in_square_micrometres():
    probabilities, _ = _two_touching_discs()
    probabilities[:, 2:5, 2:5] = np.array([0.05, 0.9, 0.05], np.float32)[:, None, None]
    options = Instances(interior="nucleus", boundary="rim", min_area_um2=3.0)
    # 9 pixels of 0.25 um2 (0.5 um pixels) = 2.25 um2 < 3: dropped; at 1 um2 a pixel: kept
    assert instance_map(probabilities, 1, 2, options, pixel_area_um2=0.25).max() == 2
    assert instance_map(probabilities, 1, 2, options, pixel_area_um2=1.0).max() == 3


def test_unknown_spacing_reads_the_limit_at_the_model_resolution():
    probabilities, _ = _two_touching_discs()
    probabilities[:, 2:5, 2:5] = np.array([0.05, 0.9, 0.05], np.float32)[:, None, None]
    options = Instances(interior="nucleus", boundary="rim", min_area_um2=3.0, mpp=0.5)
    assert instance_map(probabilities, 1, 2, options, pixel_area_um2=None).max() == 2
