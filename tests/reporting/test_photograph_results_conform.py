"""The SEG and SR of a photograph wrapped as DICOM (the photo upload's Secondary Capture,
no frame of reference) pass dciodvfy: the SEG carries PatientOrientation (General Image,
Type 2C) and the SR's reference to a SEG frame names the frame without a segment number."""

from __future__ import annotations

import json
import subprocess
import sys

import pydicom
import pytest

from medsight.service.intake.photo_upload import PhotoIdentifiers, photo_to_dicom
from tests.conftest import require_data
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
    out = tmp_path / "out"
    command = [sys.executable, "-m", "medsight", "analyze", str(source), "--task", "derm-lesion"]
    result = subprocess.run(
        [*command, "--outputs", "json,seg,sr", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    (document,) = [json.loads(p.read_text()) for p in out.glob("*/result.json")]
    (analysis,) = document["analyses"]
    folder = next(out.glob("*/"))
    written = [folder / p for p in analysis["dicom_outputs"]]
    assert {pydicom.dcmread(p, stop_before_pixels=True).Modality for p in written} == {
        "SEG",
        "SR",
    }
    for path in written:
        assert dciodvfy_errors(path) == [], path.name
