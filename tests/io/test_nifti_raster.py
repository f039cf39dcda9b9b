"""NIfTI (RAS <-> LPS) and 2D raster readers."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image as PILImage

from medsight.errors import InvalidInputError, UnreadableFileError
from medsight.image import Image
from medsight.io import read_image, read_nifti, read_raster, write_nifti
from tests.conftest import require_data


def test_nifti_ras_affine_becomes_lps(tmp_path):
    ras = np.array([[2.0, 0, 0, -10], [0, 3.0, 0, 20], [0, 0, 4.0, 30], [0, 0, 0, 1]])
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    nib.save(nib.Nifti1Image(data, ras), tmp_path / "x.nii.gz")
    image = read_nifti(tmp_path / "x.nii.gz")
    assert image.shape == (2, 3, 4) and image.array.shape == (1, 2, 3, 4)
    np.testing.assert_array_equal(image.affine[:3, 3], [10, -20, 30])
    np.testing.assert_array_equal(np.diag(image.affine)[:3], [-2, -3, 4])
    assert image.orientation_code == "RAS"
    # the same voxel is at the same physical place in both conventions
    ras_point = ras @ [1, 2, 3, 1]
    lps_point = image.world_coordinates([1, 2, 3])[0]
    np.testing.assert_allclose(lps_point, [-ras_point[0], -ras_point[1], ras_point[2]])


def test_nifti_round_trip_3d_and_4d(tmp_path):
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    affine[:3, 3] = [100, 120, -50]
    volume = Image(np.random.default_rng(0).normal(size=(1, 5, 6, 7)).astype(np.float32), affine, 3)
    back = read_nifti(write_nifti(volume, tmp_path / "v.nii.gz"))
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.affine, affine)
    sequence = volume.replace(array=np.zeros((1, 5, 6, 7, 3), np.int16), is_sequence=True)
    back4d = read_nifti(write_nifti(sequence, tmp_path / "s.nii.gz"))
    assert back4d.is_sequence and back4d.array.shape == (1, 5, 6, 7, 3)


def test_a_placeholder_grid_is_an_unknown_spacing_and_stays_one_when_written(tmp_path):
    """ACDC's copy: identity affine, units unknown (not a measured 1 mm grid); a real 1 mm
    grid says mm. Written back, each keeps what it was."""
    data = np.zeros((4, 5, 6), np.uint8)
    placeholder = nib.Nifti1Image(data, np.eye(4))
    nib.save(placeholder, tmp_path / "unknown.nii.gz")
    measured = nib.Nifti1Image(data, np.eye(4))
    measured.header.set_xyzt_units("mm")
    nib.save(measured, tmp_path / "mm.nii.gz")
    unknown, millimetres = (
        read_nifti(tmp_path / "unknown.nii.gz"),
        read_nifti(tmp_path / "mm.nii.gz"),
    )
    assert not unknown.spacing_known and millimetres.spacing_known
    assert not read_nifti(write_nifti(unknown, tmp_path / "back.nii.gz")).spacing_known
    assert read_nifti(write_nifti(millimetres, tmp_path / "back-mm.nii.gz")).spacing_known


def test_real_hippocampus_nifti_reads():
    folder = require_data("hippocampus-mr", "imagesTr")
    path = sorted(folder.glob("*.nii*"))[0]
    image = read_image(path)
    reference = nib.load(path)
    np.testing.assert_allclose(image.affine, np.diag([-1, -1, 1, 1]) @ reference.affine)
    assert image.shape == reference.shape[:3]


def test_nifti_writer_refuses_rgb(tmp_path):
    rgb = Image(np.zeros((3, 4, 4), np.uint8), np.eye(4), 2, photometric_interpretation="RGB")
    with pytest.raises(InvalidInputError, match="one channel"):
        write_nifti(rgb, tmp_path / "x.nii.gz")


def test_broken_nifti_names_the_file(tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(UnreadableFileError, match=r"broken\.nii\.gz"):
        read_nifti(path)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".bmp", ".pgm"])
def test_raster_formats_and_axis_order(tmp_path, suffix):
    pixels = np.zeros((30, 40), np.uint8)  # 30 rows, 40 columns
    pixels[5, 35] = 255
    path = tmp_path / f"x{suffix}"
    PILImage.fromarray(pixels).save(path, quality=100) if suffix == ".jpg" else (
        PILImage.fromarray(pixels).save(path)
    )
    image = read_raster(path, spacing=(0.05, 0.1))
    assert image.shape == (40, 30) and image.num_channels == 1
    assert np.unravel_index(np.argmax(image.array[0]), image.shape) == (35, 5)
    assert image.spacing == pytest.approx((0.05, 0.1)) and image.spacing_known


def test_raster_without_spacing_says_so_and_rgba_drops_alpha(tmp_path):
    path = tmp_path / "photo.png"
    PILImage.fromarray(np.full((8, 9, 4), 200, np.uint8), "RGBA").save(path)
    image = read_raster(path)
    assert image.num_channels == 3 and image.photometric_interpretation == "RGB"
    assert not image.spacing_known
    assert any("alpha" in w for w in image.warnings)
    assert any("spacing unknown" in w for w in image.warnings)


def test_real_fundus_tiff_reads():
    folder = require_data("drive", "training", "images")
    path = sorted(folder.glob("*.tif"))[0]
    image = read_image(path)
    assert image.shape == (565, 584) and image.num_channels == 3


def test_raster_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    with pytest.raises(UnreadableFileError, match=r"bad\.png"):
        read_raster(bad)
    with pytest.raises(InvalidInputError, match="spacing"):
        PILImage.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "ok.png")
        read_raster(tmp_path / "ok.png", spacing=(0.0, 1.0))


def test_a_raster_longer_than_the_side_limit_is_reduced_as_read_with_its_pixel_size(tmp_path):
    from PIL import Image as PILImage

    from medsight.io import read_image
    from medsight.io.raster import MAX_RASTER_SIDE

    wide = tmp_path / "wide.png"
    PILImage.new("L", (MAX_RASTER_SIDE * 2 + 10, 30), 200).save(wide)
    image = read_image(wide)
    assert image.shape == (-(-(MAX_RASTER_SIDE * 2 + 10) // 3), 10)  # a whole factor of 3
    assert image.array.dtype.kind == "u"  # still integers: no float copy of the file
    assert image.spacing[0] > 2.9 and image.spacing[1] == 3.0  # file pixels per pixel
    assert image.warnings[0].startswith(f"reduced from {MAX_RASTER_SIDE * 2 + 10}x30")


def test_a_time_point_of_a_sequence_keeps_its_own_frames():
    from medsight.image import FrameReference

    frames = tuple(FrameReference(None, f"1.2.{t}.{k}") for t in range(2) for k in range(3))
    values = np.arange(2 * 2 * 3 * 2, dtype=np.int16).reshape(1, 2, 2, 3, 2)
    cine = Image(values, np.eye(4), 3, is_sequence=True, frames=frames)
    second = cine.timepoint(1)
    assert not second.is_sequence and second.shape == (2, 2, 3)
    np.testing.assert_array_equal(second.array, values[..., 1])
    assert second.sop_instance_uids == ("1.2.1.0", "1.2.1.1", "1.2.1.2")
    with pytest.raises(InvalidInputError, match="time point 2"):
        cine.timepoint(2)
