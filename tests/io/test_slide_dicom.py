"""DICOM whole-slide images read as a pyramid (wsidicom): TILED_FULL and TILED_SPARSE built
from real GBM40 tiles, and highdicom's own VL WSI test files for conformance."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from medsight.errors import UnreadableFileError
from medsight.io.slide import open_slide
from medsight.io.slide_dicom import DicomSlide, is_dicom_slide
from tests._dicom_wsi import write_dicom_pyramid
from tests.conftest import require_data


def _canvas() -> np.ndarray:
    folder = require_data("pathology-gbm40", "raw_image")
    canvas = np.full((1024, 1024, 3), 238, np.uint8)
    for name, (row, column) in {"01": (0, 0), "02": (0, 1), "03": (1, 0)}.items():
        pixels = np.asarray(PILImage.open(folder / f"{name}.png").convert("RGB"))
        canvas[row * 512 : (row + 1) * 512, column * 512 : (column + 1) * 512] = pixels
    return canvas


def _region(slide, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
    return slide.read_region((x, y), level, (width, height)).array.transpose(2, 1, 0)


def test_tiled_full_pyramid_reads_levels_and_exact_pixels(tmp_path):
    canvas = _canvas()
    files = write_dicom_pyramid(tmp_path / "full", canvas)
    assert is_dicom_slide(tmp_path / "full") and is_dicom_slide(files[1])
    with open_slide(tmp_path / "full") as slide:
        assert isinstance(slide, DicomSlide)
        assert [(lv.width, lv.downsample) for lv in slide.levels] == [
            (1024, 1.0),
            (512, 2.0),
            (256, 4.0),
        ]
        assert slide.mpp == pytest.approx((0.5, 0.5)) and slide.notes == []
        # level-0 location (300, 200) on level 1: the half-size canvas from (150, 100)
        np.testing.assert_array_equal(
            _region(slide, 300, 200, 1, 70, 40), canvas[::2, ::2][100:140, 150:220]
        )
        image = slide.read_region((300, 200), 1, (70, 40))
        assert image.spacing == pytest.approx((0.001, 0.001)) and image.modality == "SM"
    with open_slide(files[2]) as one_file:  # any file of the series opens the pyramid
        assert len(one_file.levels) == 3


def test_tiled_sparse_missing_tiles_are_said_and_read_as_glass(tmp_path):
    canvas = _canvas()
    write_dicom_pyramid(tmp_path / "sparse", canvas, sparse=True, missing={(0, 1), (1, 1)})
    with open_slide(tmp_path / "sparse") as slide:
        assert slide.notes == ["level-0.dcm: 2 of 16 tiles missing (TILED_SPARSE), read as glass"]
        present = _region(slide, 0, 0, 0, 256, 256)
        np.testing.assert_array_equal(present, canvas[:256, :256])
        missing = _region(slide, 256, 0, 0, 256, 512)
        assert (missing > 240).all()


@pytest.mark.parametrize(
    "name",
    ["sm_image_dots.dcm", "sm_image_numbers.dcm", "sm_image_jpegls.dcm", "sm_image.dcm"],
)
def test_highdicom_test_files_read_as_highdicom_reads_them(name):
    import highdicom as hd

    path = require_data("dicom", "highdicom_test_files", name)
    with open_slide(path) as slide:
        pixels = slide.read_level(0).array.transpose(2, 1, 0)
        assert slide.mpp == pytest.approx((0.499, 0.499))
    reference = hd.imread(path).get_total_pixel_matrix()
    np.testing.assert_allclose(pixels, reference[..., :3], atol=1)


def test_a_folder_without_a_slide_is_refused(tmp_path):
    (tmp_path / "note.txt").write_text("not DICOM")
    assert not is_dicom_slide(tmp_path)
    with pytest.raises(UnreadableFileError, match="no DICOM whole-slide image"):
        DicomSlide(tmp_path)
