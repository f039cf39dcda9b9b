"""Siemens mosaics (nibabel's nicom test data, real scanner files): untiled to the volume and
geometry nibabel reads from the CSA header, a series of them read as a sequence, and a
mosaic without its CSA header refused with the reason."""

from __future__ import annotations

import gzip
import shutil
import warnings
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest

from medsight.errors import DicomReadError
from medsight.io import read_image
from medsight.io.dicom import scan_dicom
from medsight.io.dicom.reader import summarize_stack

NICOM_DATA = Path(nibabel.__file__).parent / "nicom" / "tests" / "data"


def _unpacked(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "mosaic"
    folder.mkdir()
    for name in names:
        with (
            gzip.open(NICOM_DATA / f"{name}.dcm.gz") as source,
            (folder / f"{name}.dcm").open("wb") as target,
        ):
            shutil.copyfileobj(source, target)
    return folder


def _nibabel(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from nibabel.nicom import dicomwrappers

    with warnings.catch_warnings():  # nibabel calls these readers experimental (once)
        warnings.simplefilter("ignore")
        wrapper = dicomwrappers.wrapper_from_file(str(path))
    return np.asarray(wrapper.get_data()), np.asarray(wrapper.affine)


def test_a_mosaic_reads_to_nibabels_volume_and_geometry(tmp_path: Path) -> None:
    folder = _unpacked(tmp_path, "siemens_dwi_0")
    path = folder / "siemens_dwi_0.dcm"
    assert pydicom.dcmread(path, stop_before_pixels=True).Rows == 896  # 7 x 7 tiles
    image = read_image(path)
    assert image.shape == (128, 128, 48) and image.spatial_dims == 3
    values, affine = _nibabel(path)
    # nibabel indexes (row, column, slice), medsight (column, row, slice): the same voxel
    # must hold the same value and sit at the same place in LPS
    rng = np.random.default_rng(0)
    for row, column, slice_ in rng.integers(0, [128, 128, 48], size=(50, 3)):
        assert image.array[0, column, row, slice_] == values[row, column, slice_]
        ours = image.affine @ [column, row, slice_, 1]
        theirs = affine @ [row, column, slice_, 1]
        assert np.allclose(ours, theirs, atol=1e-4)
    normal = image.affine[:3, 2] / np.linalg.norm(image.affine[:3, 2])
    assert np.allclose(normal, [0.0, 0.005236, 0.999986], atol=1e-5)  # the CSA's slice normal
    assert np.isclose(np.linalg.norm(image.affine[:3, 2]), 3.0, atol=1e-3)
    assert any("Siemens mosaic" in warning for warning in image.warnings)


def test_a_mosaic_series_is_a_sequence_and_info_shows_the_untiled_size(tmp_path: Path) -> None:
    folder = _unpacked(tmp_path, "siemens_dwi_0", "siemens_dwi_1000")
    stacks = [stack for series in scan_dicom(folder).series for stack in series.stacks]
    assert {summarize_stack(stack).shape for stack in stacks} == {(128, 128, 48)}
    assert all(stack.description.startswith("mosaic ") for stack in stacks)
    image = read_image(folder)
    assert image.is_sequence and image.array.shape == (1, 128, 128, 48, 2)
    b0, _ = _nibabel(folder / "siemens_dwi_0.dcm")
    assert np.array_equal(image.array[0, ..., 0], b0.transpose(1, 0, 2))


def test_a_mosaic_without_its_csa_header_is_refused_with_the_reason(tmp_path: Path) -> None:
    folder = _unpacked(tmp_path, "siemens_dwi_0")
    path = folder / "siemens_dwi_0.dcm"
    dataset = pydicom.dcmread(path)
    dataset.remove_private_tags()
    dataset.save_as(path)
    with pytest.raises(DicomReadError, match=r"CSA header .* is missing"):
        read_image(path)
