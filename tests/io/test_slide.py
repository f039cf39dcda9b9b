"""Whole-slide reading on a pyramidal TIFF built from the real GBM40 H&E tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from medsight.errors import InvalidInputError, UnreadableFileError
from medsight.imaging.tissue import tissue_tiles
from medsight.io.slide import open_slide
from tests.conftest import require_data

TILE = 512
MPP = 0.5
BACKGROUND = 238  # glass


def build_slide(path: Path) -> np.ndarray:
    """A 3x3-tile canvas with four real H&E tiles in an L shape and glass elsewhere."""
    import tifffile

    tiles = sorted(require_data("pathology-gbm40", "raw_image").glob("*.png"))[:4]
    canvas = np.full((3 * TILE, 3 * TILE, 3), BACKGROUND, np.uint8)
    places = [(0, 0), (0, 1), (1, 0), (2, 2)]  # (row, column) in tiles
    for tile_path, (row, column) in zip(tiles, places, strict=True):
        pixels = np.asarray(PILImage.open(tile_path).convert("RGB"))[:TILE, :TILE]
        canvas[row * TILE : (row + 1) * TILE, column * TILE : (column + 1) * TILE] = pixels
    levels = [canvas, canvas[::2, ::2], canvas[::4, ::4]]
    with tifffile.TiffWriter(path) as tif:
        options = dict(
            tile=(256, 256), photometric="rgb", compression="zlib", resolutionunit="CENTIMETER"
        )
        tif.write(levels[0], subifds=2, resolution=(1e4 / MPP, 1e4 / MPP), **options)
        for index, level in enumerate(levels[1:], start=1):
            scale = 1e4 / (MPP * 2**index)
            tif.write(level, subfiletype=1, resolution=(scale, scale), **options)
    return canvas


@pytest.fixture
def slide_path(tmp_path) -> tuple[Path, np.ndarray]:
    path = tmp_path / "gbm.tif"
    return path, build_slide(path)


def test_levels_and_microns_per_pixel(slide_path):
    path, _ = slide_path
    with open_slide(path) as slide:
        assert [(lv.width, lv.height) for lv in slide.levels] == [
            (1536, 1536),
            (768, 768),
            (384, 384),
        ]
        assert [lv.downsample for lv in slide.levels] == [1.0, 2.0, 4.0]
        assert slide.mpp == pytest.approx((MPP, MPP))


def test_read_region_pixels_and_geometry(slide_path):
    path, canvas = slide_path
    with open_slide(path) as slide:
        region = slide.read_region((600, 100), 0, (64, 32))
        assert region.shape == (64, 32) and region.num_channels == 3
        np.testing.assert_array_equal(region.array.transpose(2, 1, 0), canvas[100:132, 600:664])
        assert region.spacing == pytest.approx((MPP / 1000, MPP / 1000))
        np.testing.assert_allclose(region.origin[:2], [600 * MPP / 1000, 100 * MPP / 1000])
        low = slide.read_region((600, 100), 1, (32, 16))
        assert low.spacing == pytest.approx((2 * MPP / 1000, 2 * MPP / 1000))


def test_tissue_tiles_skip_the_glass(slide_path):
    path, _ = slide_path
    with open_slide(path) as slide:
        tiles = list(tissue_tiles(slide, TILE, min_tissue=0.5))
    found = {(t.y // TILE, t.x // TILE) for t in tiles}
    assert found == {(0, 0), (0, 1), (1, 0), (2, 2)}
    assert all(t.tissue_fraction > 0.5 for t in tiles)


def test_bad_slide_inputs(slide_path, tmp_path):
    path, _ = slide_path
    with open_slide(path) as slide:
        with pytest.raises(InvalidInputError, match="level 7 does not exist"):
            slide.read_region((0, 0), 7, (10, 10))
        with pytest.raises(InvalidInputError, match="outside the slide"):
            slide.read_region((5000, 0), 0, (10, 10))
    not_a_slide = tmp_path / "x.svs"
    not_a_slide.write_bytes(b"garbage")
    with pytest.raises(UnreadableFileError, match=r"x\.svs"):
        open_slide(not_a_slide)
