"""Tissue quality on real H&E (GBM40): pen marks and focus, and no false alarms on the clean
tiles."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage
from scipy import ndimage

from medsight.imaging.tissue import (
    FOCUS_FLOOR,
    artefact_masks,
    focus,
    fold_mask,
    quality_regions,
    tissue_mask,
)
from tests.conftest import require_data


def _tile(name: str) -> np.ndarray:
    path = require_data("pathology-gbm40", "raw_image", f"{name}.png")
    return np.asarray(PILImage.open(path).convert("RGB")).transpose(2, 1, 0).copy()  # (3, i, j)


def _thumbnail(rgb: np.ndarray, factor: int = 4) -> np.ndarray:
    """A 1/factor level as a pyramid would hold it (box mean)."""
    c, i, j = rgb.shape
    shaped = rgb[:, : i // factor * factor, : j // factor * factor].astype(np.float32)
    return shaped.reshape(c, i // factor, factor, j // factor, factor).mean((2, 4)).astype(np.uint8)


@pytest.mark.parametrize("name", [f"{n:02d}" for n in range(1, 41, 3)])
def test_clean_tiles_raise_no_artefact(name):
    small = _thumbnail(_tile(name))
    found = artefact_masks(small, pixel_um=2.0)
    assert not quality_regions(found["pen mark"].T, "pen mark", 4.0)
    assert not found["fold"].any()


def _folded(rgb: np.ndarray, columns: slice) -> np.ndarray:
    """(3, i, j) with its own tissue, shifted, laid over rows ``columns`` of j (y): two
    layers multiply their transmittances."""
    pixels = rgb.astype(np.float32)
    shifted = np.roll(pixels, (53, 91), axis=(1, 2))
    folded = pixels.copy()
    folded[:, :, columns] = pixels[:, :, columns] * shifted[:, :, columns] / 255.0
    return folded.astype(np.uint8)


def test_folds_are_flagged_where_they_lie_and_dense_nuclei_are_not():
    """On all 40 tiles at 4 um per pixel: a band 60 um tall (y 200-320) of two layers is
    flagged, and only near the band. Tile 34's densest region reaches 2.1 times its median
    total optical density (a fold: about 2), so total density alone would flag it; it stays
    clean."""
    flagged = 0
    for number in range(1, 41):
        rgb = _tile(f"{number:02d}")
        small = _thumbnail(_folded(rgb, slice(200, 320)), factor=8)
        found = fold_mask(small, tissue_mask(small), pixel_um=4.0)
        if found.sum() * 16 >= 4000:  # um2
            flagged += 1
            rows = np.nonzero(found.any(axis=0))[0] * 8  # level-0 y of the flagged pixels
            assert rows.min() >= 200 - 32 and rows.max() <= 320 + 32, number
    assert flagged >= 36  # scripts/fold_evidence.py: 38/40 for a 50 um band
    clean = _thumbnail(_tile("34"), factor=8)
    assert not fold_mask(clean, tissue_mask(clean), pixel_um=4.0).any()


def test_green_marker_is_a_pen_mark():
    rgb = _tile("05")
    rgb[:, 100:400, 200:230] = np.array([40, 160, 90], np.uint8)[:, None, None]  # a stroke
    small = _thumbnail(rgb)
    found = artefact_masks(small, pixel_um=2.0)
    regions = quality_regions(found["pen mark"].T, "pen mark", 4.0)
    assert not found["fold"].any()  # ink is taken out before folds are looked for
    assert len(regions) == 1
    x0, y0, x1, y1 = regions[0].box  # level-0 (x = column = i, y = row = j)
    assert x0 <= 100 and x1 >= 396 and y0 <= 204 and y1 >= 226


@pytest.mark.parametrize("name", [f"{n:02d}" for n in range(1, 41, 3)])
def test_focus_floor_separates_sharp_from_blurred_tiles(name):
    rgb = _tile(name)
    sharp = focus(rgb)
    assert sharp is not None and sharp >= FOCUS_FLOOR
    blurred = ndimage.gaussian_filter(rgb.astype(np.float32), (0, 2.0, 2.0)).astype(np.uint8)
    soft = focus(blurred)
    assert soft is not None and soft < FOCUS_FLOOR


def test_glass_is_not_judged_for_focus_and_half_glass_stays_sharp():
    glass = np.full((3, 256, 256), 238, np.uint8)
    assert focus(glass) is None
    rgb = _tile("09")
    rgb[:, 256:] = 238  # half the tile is glass: its flatness is not blur
    sharp = focus(rgb)
    assert sharp is not None and sharp >= FOCUS_FLOOR
