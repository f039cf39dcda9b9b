"""Reorientation keeps world positions; windows follow PS3.3 C.11.2.1.2."""

from __future__ import annotations

import numpy as np
import pytest

from medsight.errors import InvalidInputError
from medsight.image import Image
from medsight.imaging import WINDOW_PRESETS, apply_window, reorient, to_display


def _oblique_volume() -> Image:
    affine = np.array(
        [[0, 0, -2.0, 10], [-0.5, 0, 0, 20], [0, 0.7, 0, -30], [0, 0, 0, 1]], dtype=float
    )
    array = np.arange(3 * 4 * 5, dtype=np.int16).reshape(1, 3, 4, 5)
    return Image(array, affine, 3)


@pytest.mark.parametrize("code", ["LPS", "RAS", "SPL", "IAR"])
def test_reorient_keeps_every_voxel_at_its_world_position(code):
    image = _oblique_volume()
    turned = reorient(image, code)
    assert turned.orientation_code == code
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in turned.shape], indexing="ij"), -1)
    index = grid.reshape(-1, 3)
    world = turned.world_coordinates(index)
    original_index = np.linalg.solve(image.affine, np.column_stack([world, np.ones(len(world))]).T)
    original_index = np.rint(original_index[:3].T).astype(int)
    values = image.array[0][tuple(original_index.T)]
    np.testing.assert_array_equal(values, turned.array[0][tuple(index.T)])


def test_reorient_rejects_bad_codes():
    with pytest.raises(InvalidInputError):
        reorient(_oblique_volume(), "LLS")


def test_linear_window_matches_the_standard():
    values = np.array([-1000.0, 39.5, 40.0, 240.0, 3000.0])
    shown = apply_window(values, center=40, width=400)
    # y = ((x - (c - 0.5)) / (w - 1) + 0.5), clipped
    expected = np.clip((values - 39.5) / 399 + 0.5, 0, 1)
    np.testing.assert_allclose(shown, expected, rtol=1e-6)
    assert WINDOW_PRESETS["lung"] == (-600.0, 1500.0)


def test_monochrome1_display_inverts():
    image = Image(
        np.array([[[0, 100]]], np.int16).reshape(1, 2, 1),
        np.eye(4),
        2,
        photometric_interpretation="MONOCHROME1",
    )
    shown = to_display(image, window=(50, 101))
    assert shown[0, 0, 0] > shown[0, 1, 0]


def test_image_validates_and_describes_itself():
    with pytest.raises(InvalidInputError, match="4-axis array"):
        Image(np.zeros((4, 4, 4)), np.eye(4), 3)
    with pytest.raises(InvalidInputError, match="4x4"):
        Image(np.zeros((1, 4, 4)), np.eye(3), 2)
    image = Image(np.zeros((1, 4, 5, 6)), np.diag([0.5, 0.6, 2.0, 1.0]), 3)
    assert image.shape == (4, 5, 6) and image.spacing == pytest.approx((0.5, 0.6, 2.0))
    assert "spacing=(0.5, 0.6, 2)" in repr(image)
