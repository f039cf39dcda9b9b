"""A FracAtlas radiograph wrapped as DICOM DX through ``medsight analyze`` with a detection
task: boxes in result.json on the film's pixels, the overlay, a DICOM SR that dciodvfy
accepts, and the study URGENT under a site rule for an emergency department (ROUTINE
without it). The detector has random weights and every threshold at 0, so that its boxes
and flag exist: the engine is tested here, not a model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from medsight.cli import app
from tests._tasks import detector_task
from tests.conftest import require_data
from tests.reporting.test_dicom_seg import dciodvfy_errors

runner = CliRunner()


def write_dx(picture: Path, path: Path, spacing: float = 0.175) -> None:
    """An 8-bit grayscale picture as a DICOM Digital X-Ray (for presentation)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.asarray(PILImage.open(picture).convert("L"))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.StudyDate, ds.StudyTime = (
        "FA1",
        "Atlas^Frac",
        "20230101",
        "1200",
    )
    ds.AccessionNumber, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "A1", "1", 1, 1
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "HAND", "PA"
    ds.PresentationIntentType, ds.ImageType = "FOR PRESENTATION", ["ORIGINAL", "PRIMARY"]
    ds.Rows, ds.Columns = pixels.shape
    ds.ImagerPixelSpacing = ds.PixelSpacing = [spacing, spacing]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.timeout(300)
def test_a_radiograph_gets_boxes_overlay_sr_and_an_emergency_priority(tmp_path):
    picture = require_data("fracatlas", "images", "IMG0000019.jpg")
    write_dx(picture, tmp_path / "film.dcm")
    detector_task(
        tmp_path / "tasks" / "test-det",
        arguments={"depth": 10, "fpn_channels": 32, "max_boxes": 3, "score_threshold": 0.0},
        extra=(
            "\n[detection]\nfinding_score = 0.0\n"
            '\n[operating_points.high_sensitivity]\noutput = "lesion"\nthreshold = 0.0\n'
        ),
    )
    site = tmp_path / "site.toml"
    site.write_text(
        'version = "er-1"\n[triage]\nsetting = "emergency"\n'
        '[[triage.urgent]]\nfinding = "lesion"\nsettings = ["emergency"]\n'
    )
    levels = {}
    for name, extra in (("er", ["--rules", str(site)]), ("plain", [])):
        out = tmp_path / name
        command = ["analyze", str(tmp_path / "film.dcm"), "--task", "test-det"]
        command += ["--tasks-dir", str(tmp_path / "tasks"), "--out", str(out)]
        result = runner.invoke(app, [*command, "--outputs", "json,overlay,sr", *extra])
        assert result.exit_code == 0, result.output
        folder = next(p for p in out.iterdir() if p.is_dir())
        document = json.loads((folder / "result.json").read_text())
        levels[name] = document["priority"]["level"]
        analysis = document["analyses"][0]
        assert (analysis["detection"]["body_part"], analysis["detection"]["view"]) == ("HAND", "PA")
        boxes = analysis["detection"]["boxes"]
        assert 1 <= len(boxes) <= 3
        for box in boxes:  # on the film's 410 columns and 512 rows
            x0, y0, x1, y1 = box["pixel_box"]
            assert 0 <= x0 < x1 <= 410 and 0 <= y0 < y1 <= 512
        assert (folder / analysis["overlays"][0]).is_file()
        (sr,) = [p for p in analysis["dicom_outputs"] if "sr" in p.lower()]
        assert dciodvfy_errors(folder / sr) == []
        if name == "er":
            assert any("emergency setting" in r for r in document["priority"]["reasons"])
    assert levels == {"er": "URGENT", "plain": "ROUTINE"}


@pytest.mark.timeout(300)
def test_the_shipped_fracture_sample_without_a_spacing_is_measured_in_pixels(tmp_path):
    sample = Path(__file__).parents[2] / "src/medsight/samples/fracture/fracture_sample_cr.dcm"
    detector_task(
        tmp_path / "tasks" / "test-det",
        arguments={"depth": 10, "fpn_channels": 32, "max_boxes": 2, "score_threshold": 0.0},
        extra="\n[detection]\nfinding_score = 0.0\n",
    )
    out = tmp_path / "out"
    command = ["analyze", str(sample), "--task", "test-det", "--tasks-dir", str(tmp_path / "tasks")]
    result = runner.invoke(app, [*command, "--out", str(out), "--outputs", "json,sr"])
    assert result.exit_code == 0, result.output
    folder = next(p for p in out.iterdir() if p.is_dir())
    analysis = json.loads((folder / "result.json").read_text())["analyses"][0]
    boxes = [f for f in analysis["findings"] if f["name"].startswith("lesion_box_")]
    assert boxes and {m["unit"] for f in boxes for m in f["measurements"][1:]} == {"{px}"}
    assert analysis["input"]["modality"] == "CR" and not analysis["input"]["spacing_known"]
    (sr,) = analysis["dicom_outputs"]
    assert dciodvfy_errors(folder / sr) == []
