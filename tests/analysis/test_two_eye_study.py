"""`medsight analyze --manifest` groups two fundus photographs of one patient (laterality
from the manifest) into one study whose result holds the worse-eye patient result, with the
eyes side by side in the report; a blurred eye is ungradable and leaves the patient, unless
the other eye flags, for review ("insufficient image quality"). A model with random weights
stands in for the trained one: these tests check the derivation, not accuracy."""

from __future__ import annotations

import json
import subprocess

import numpy as np
from PIL import Image as PILImage
from PIL import ImageFilter
from typer.testing import CliRunner

from medsight.cli import app
from tests.conftest import require_data
from tests.findings.test_screening import WORSE_SIDE
from tests.inference.test_ordinal_outputs import ORDINAL, sigmoid_task

ARGUMENTS = {
    "spatial_dims": 2,
    "in_channels": 3,
    "out_channels": 4,
    "init_features": 8,
    "growth_rate": 4,
    "block_config": [2, 2],
    "bn_size": 2,
}


def fundus_task(folder, threshold: float):
    point = (
        f'\n[operating_points.high_sensitivity]\noutput = "referable"\nthreshold = {threshold}\n'
    )
    return sigmoid_task(
        folder,
        task_id="test-dr",
        arguments=ARGUMENTS,
        acceptance={
            "spatial_dims": 2,
            "photometric": ["RGB"],
            "modalities": ["OP"],
            "unknown_modality": "accept",
        },
        preprocessing={"resize": [64, 64], "normalize": "unit"},
        display={"window": "fixed", "center_width": [127.5, 256.0], "color": "rgb"},
        extra="\n[calibration]\ntemperature = 1.0\n"
        + point
        + ORDINAL
        + WORSE_SIDE
        + '\n[gate]\nphoto = "fundus"\n',
    )


def analyse(tmp_path, threshold: float, blur_left: bool = False):
    source = require_data("dr-fundus", "images")
    folder = tmp_path / "photos"
    folder.mkdir()
    for eye in ("L", "R"):
        photo = PILImage.open(source / f"Patient003_{eye}.jpg")
        if eye == "L" and blur_left:
            photo = photo.filter(ImageFilter.GaussianBlur(12))
        photo.save(folder / f"eye_{eye}.jpg")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "image,study,patient,laterality\n"
        f"{folder / 'eye_R.jpg'},visit-1,P003,R\n{folder / 'eye_L.jpg'},visit-1,P003,L\n"
    )
    task = fundus_task(tmp_path / "task", threshold)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["analyze", "--manifest", str(manifest), "--task", str(task.folder), "--out", str(out)]
    )
    (path,) = out.glob("*/result.json")
    return result, json.loads(path.read_text()), (path.parent / "report.html").read_text()


def test_two_eyes_give_one_patient_result_side_by_side(tmp_path):
    result, document, report = analyse(tmp_path, threshold=1.0)  # nothing can flag
    assert result.exit_code == 0, result.output
    (patient,) = document["study_findings"]
    assert set(patient["sides"]) == {"R", "L"} and len(document["analyses"]) == 2
    by_side = {a["input"]["laterality"]: a for a in document["analyses"]}
    worst = max(by_side[s]["classification"]["probabilities"]["referable"] for s in ("R", "L"))
    assert patient["probabilities"]["referable"]["value"] == worst
    assert patient["flags"]["high_sensitivity"]["flag"] is False
    assert patient["not_given"] == []
    assert '<div class="sides">' in report and "patient (worse eye)" in report
    assert report.index("right eye") < report.index("left eye")


def test_a_blurred_eye_is_ungradable_and_the_patient_needs_review(tmp_path):
    result, document, _ = analyse(tmp_path, threshold=1.0, blur_left=True)
    assert result.exit_code == 0, result.output
    (patient,) = document["study_findings"]
    assert patient["sides"]["L"]["gradable"] == []
    assert any("focus" in r for r in patient["sides"]["L"]["ungradable_reasons"])
    assert document["priority"]["level"] == "NEEDS_REVIEW"
    assert any("insufficient image quality" in r for r in document["priority"]["reasons"])


def test_a_flag_in_the_gradable_eye_refers_the_patient_all_the_same(tmp_path):
    result, document, _ = analyse(tmp_path, threshold=0.0, blur_left=True)  # everything flags
    assert result.exit_code == 0, result.output
    (patient,) = document["study_findings"]
    assert patient["flags"]["high_sensitivity"]["flag"] is True
    assert patient["probabilities"]["referable"]["side"] == "R"
    assert "flagged all the same" in patient["not_given"][-1]
    assert not any("insufficient image quality" in r for r in document["priority"]["reasons"])
    assert np.isfinite(patient["probabilities"]["referable"]["value"])


def eye_instance(path, jpeg, side: str, study: str, number: int) -> None:
    """A Secondary Capture instance of a fundus photograph, ImageLaterality set."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    pixels = np.asarray(PILImage.open(jpeg).convert("RGB"), dtype=np.uint8)
    dataset = pydicom.Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID
    dataset.StudyInstanceUID = study
    dataset.SeriesInstanceUID = generate_uid()
    dataset.PatientName, dataset.PatientID = "TEST^EYES", "EYES-1"
    dataset.StudyDate, dataset.StudyTime, dataset.AccessionNumber = "20260101", "120000", "A1"
    dataset.ReferringPhysicianName, dataset.StudyID = "", "1"
    dataset.PatientBirthDate, dataset.PatientSex = "", "O"
    dataset.Modality, dataset.ConversionType = "OP", "DI"
    dataset.ImageLaterality = side
    dataset.SeriesNumber, dataset.InstanceNumber = number, 1
    dataset.PatientOrientation = ""
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 3, "RGB"
    dataset.PlanarConfiguration = 0
    dataset.Rows, dataset.Columns = pixels.shape[:2]
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
    dataset.PixelRepresentation = 0
    dataset.PixelData = pixels.tobytes()
    dataset.save_as(path, enforce_file_format=True)


SR_OUTPUTS = ("--outputs", "json,html,sr")


def test_two_dicom_photographs_give_the_patient_result_and_conforming_srs(tmp_path):
    from pydicom.uid import generate_uid

    from tests.reporting.test_dicom_seg import dciodvfy_errors

    source = require_data("dr-fundus", "images")
    folder = tmp_path / "study"
    folder.mkdir()
    study = generate_uid()
    for number, side in enumerate(("R", "L"), start=1):
        eye_instance(folder / f"{side}.dcm", source / f"Patient003_{side}.jpg", side, study, number)
    task = fundus_task(tmp_path / "task", threshold=0.0)  # flags: the SR holds a finding
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["analyze", str(folder), "--task", str(task.folder), "--out", str(out), *SR_OUTPUTS],
    )
    assert result.exit_code == 0, result.output
    (path,) = out.glob("*/result.json")
    document = json.loads(path.read_text())
    (patient,) = document["study_findings"]
    assert set(patient["sides"]) == {"R", "L"}  # laterality from ImageLaterality
    assert patient["not_given"] == []
    reports = sorted(path.parent.glob("dicom/*sr*.dcm"))
    assert len(reports) == 2
    for report in reports:
        assert dciodvfy_errors(report) == [], report.name
        dumped = subprocess.run(["dsrdump", str(report)], capture_output=True, text=True).stdout
        # the grade as a measurement (a UCUM annotation), the referable finding
        assert 'NUM:(,,"grade")' in dumped and "({grade},UCUM" in dumped
        assert '(100000,99TEST,"referable")' in dumped
