"""Fuzzing the readers with mutated real files (DICOM in several transfer syntaxes, NIfTI,
PNG and JPEG): each input is read completely or refused with a medsight error; nothing
else escapes (no crash, no hang: pytest-timeout bounds the whole run). The CI budget is a
few hundred inputs per target; a long run sets MEDSIGHT_FUZZ_EXAMPLES."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from PIL import Image as PILImage
from pydicom.data import get_testdata_file

from medsight.datasets import shared_data_dir
from medsight.errors import MedsightError
from medsight.io import read_image
from tests.fuzz._mutations import examples, mutated, time_limit


def _dicom_seeds() -> list[bytes]:
    """pydicom's test files (several transfer syntaxes), a real de-identified head CT from
    deid-data, and highdicom's multi-frame slide image and SEG from ../shared/data (when the
    real data is there)."""
    import deid_data

    seeds = [
        Path(get_testdata_file(name)).read_bytes()
        for name in (
            "CT_small.dcm",  # explicit little endian CT
            "MR_small.dcm",
            "JPEG2000.dcm",
            "SC_rgb_rle.dcm",
            "JPEG-lossy.dcm",
            "SC_rgb_jpeg_gdcm.dcm",
        )
    ]
    seeds.append((Path(deid_data.__file__).parent / "data/humans/ctbrain1.dcm").read_bytes())
    highdicom = shared_data_dir() / "dicom" / "highdicom_test_files"
    for name in ("sm_image_grayscale.dcm", "seg_image_ct_binary.dcm"):
        if (highdicom / name).is_file():
            seeds.append((highdicom / name).read_bytes())
    return seeds


DICOM_SEEDS = _dicom_seeds()


def _nifti_seed() -> bytes:
    buffer = io.BytesIO()
    image = nib.Nifti1Image(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6), np.eye(4))
    file_map = image.make_file_map({"image": buffer, "header": buffer})
    image.to_file_map(file_map)
    return buffer.getvalue()


def _raster_seeds() -> list[bytes]:
    seeds = []
    for kind in ("PNG", "JPEG"):
        buffer = io.BytesIO()
        PILImage.fromarray(np.arange(32 * 24 * 3, dtype=np.uint8).reshape(32, 24, 3)).save(
            buffer, format=kind
        )
        seeds.append(buffer.getvalue())
    return seeds


def _read(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"input{suffix}"
        path.write_bytes(data)
        try:
            image = read_image(path)
        except MedsightError:
            return  # refused with a reason: the intended outcome for a broken file
        assert image.array.size > 0


FUZZ = settings(
    max_examples=examples(150),
    deadline=None,
    derandomize=True,  # the same inputs every CI run; a long run adds its own
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


@pytest.mark.timeout(time_limit(240))
@FUZZ
@given(mutated(DICOM_SEEDS))
def test_mutated_dicom_is_read_or_refused(data):
    _read(data, ".dcm")


@pytest.mark.timeout(time_limit(120))
@FUZZ
@given(mutated([_nifti_seed()]))
def test_mutated_nifti_is_read_or_refused(data):
    _read(data, ".nii")


@pytest.mark.timeout(time_limit(120))
@FUZZ
@given(mutated(_raster_seeds()))
def test_mutated_rasters_are_read_or_refused(data):
    _read(data, ".png")
