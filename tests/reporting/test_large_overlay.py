"""A film longer than MAX_OVERLAY_SIDE is drawn reduced, boxes where the anatomy is, and the
banner says so; a normal film is drawn at its own size."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from medsight.image import Image
from medsight.reporting.overlays import MAX_OVERLAY_SIDE, _reduced, overlay_png

pytestmark = pytest.mark.timeout(60)

BOX_COLOUR = (255, 220, 0)


def _film(columns: int, rows: int) -> Image:
    array = np.full((1, columns, rows), 100, dtype=np.uint16)
    array[0, columns // 2 : columns // 2 + 300, 100:200] = 4000  # the "fracture"
    return Image(array=array, affine=np.diag([0.1, 0.1, 1.0, 1.0]), spatial_dims=2, modality="DX")


def _picture_below_banner(path, picture_rows: int) -> np.ndarray:
    pixels = np.asarray(PILImage.open(path).convert("RGB"))
    return pixels[-picture_rows:]


def test_a_long_film_is_drawn_reduced_with_its_boxes_on_the_anatomy(tmp_path):
    film = _film(9000, 400)
    box = {"label": "fracture", "score": 0.9, "pixel_box": [4500, 100, 4800, 200]}
    path = overlay_png(film, tmp_path / "o.png", boxes=[box], window=(0.0, 4000.0))
    factor = 3  # ceil(9000 / 4096)
    width = 9000 // factor
    assert PILImage.open(path).width == width <= MAX_OVERLAY_SIDE
    picture = _picture_below_banner(path, 400 // factor)
    yellow = np.all(picture == BOX_COLOUR, axis=-1)
    columns = np.nonzero(yellow.any(axis=0))[0]
    # the outline's left and right edges at the bright block's columns, a third of the size
    assert abs(columns.min() - 4500 / factor) <= 2 and abs(columns.max() - 4800 / factor) <= 3
    bright = picture[:, :, 0] > 200  # the block itself (block means keep it bright)
    assert bright[36:63, 1505:1595].mean() > 0.9 and not bright[:, :1400].any()


def test_a_normal_film_keeps_its_size():
    film = _film(3000, 2400)
    assert _reduced(film, 1).shape == film.shape


def test_block_means_and_the_affine_follow_the_block_centres():
    film = _film(9000, 400)
    reduced = _reduced(film, 3)
    assert reduced.shape == (3000, 133)
    assert reduced.array[0, 1500, 40] == pytest.approx(4000)  # inside the block
    # block (0, 0) covers source voxels 0-2: its centre is voxel 1
    np.testing.assert_allclose(reduced.affine[:3, 3], film.affine[:3, :3] @ [1, 1, 0])
    np.testing.assert_allclose(np.diag(reduced.affine)[:2], [0.3, 0.3])
