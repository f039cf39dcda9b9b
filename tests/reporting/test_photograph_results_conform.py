"""The SEG and SR of a photograph wrapped as DICOM (the photo upload's Secondary Capture,
no frame of reference) pass dciodvfy: the SEG carries PatientOrientation (General Image,
Type 2C) and the SR's reference to a SEG frame names the frame without a segment number."""

from __future__ import annotations

import pydicom
import pytest

from medsight.service.intake.photo_upload import PhotoIdentifiers, photo_to_dicom
from tests.conftest import require_data
from tests.reporting._sources import analyzed_dicom_outputs
from tests.reporting.test_dicom_seg import dciodvfy_errors


@pytest.mark.timeout(300)
def test_the_seg_and_sr_of_an_uploaded_photograph_pass_dciodvfy(tmp_path):
    photo = require_data("ph2", "images", "IMD004.jpg").read_bytes()
    encoded, _ = photo_to_dicom(
        photo,
        PhotoIdentifiers("P1", "Doe^J", "A1", "", ""),
        modality="XC",
        task_id="derm-lesion",
    )
    source = tmp_path / "in"
    source.mkdir()
    (source / "photo.dcm").write_bytes(encoded)
    written = analyzed_dicom_outputs(source, "derm-lesion", "json,seg,sr", tmp_path / "out")
    assert {pydicom.dcmread(p, stop_before_pixels=True).Modality for p in written} == {
        "SEG",
        "SR",
    }
    for path in written:
        assert dciodvfy_errors(path) == [], path.name
