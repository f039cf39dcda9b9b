"""Nucleus outlines of a DICOM whole slide as Microscopy Bulk Simple Annotations: valid for
dciodvfy, read back by highdicom with every nucleus in place, and stored in a real Orthanc
beside the slide it references."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from medsight.cli import app
from tests._dicom_wsi import write_dicom_pyramid
from tests._tasks import trained_shipped_task
from tests.conftest import require_data
from tests.reporting.test_dicom_seg import dciodvfy_errors
from tests.reporting.test_orthanc import get_json, orthanc  # noqa: F401 (the fixture)

runner = CliRunner()


def _slide(folder: Path) -> list[Path]:
    tiles = require_data("pathology-gbm40", "raw_image")
    canvas = np.full((1024, 1024, 3), 238, np.uint8)
    for name, (row, column) in {"04": (0, 0), "05": (1, 1)}.items():
        pixels = np.asarray(PILImage.open(tiles / f"{name}.png").convert("RGB"))
        canvas[row * 512 : (row + 1) * 512, column * 512 : (column + 1) * 512] = pixels
    return write_dicom_pyramid(folder, canvas)


@pytest.mark.timeout(300)
def test_bulk_annotations_are_valid_complete_and_stored_beside_the_slide(orthanc, tmp_path):  # noqa: F811
    import highdicom as hd

    trained_shipped_task("pathology-nuclei")
    files = _slide(tmp_path / "slide")
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "analyze",
            str(tmp_path / "slide"),
            "--task",
            "pathology-nuclei",
            "--outputs",
            "json,ann",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    study_dir = next(p for p in out.iterdir() if p.is_dir())
    analysis = json.loads((study_dir / "result.json").read_text())["analyses"][0]
    (written,) = analysis["dicom_outputs"]
    path = study_dir / written
    assert dciodvfy_errors(path) == []

    annotations = hd.ann.MicroscopyBulkSimpleAnnotations.from_dataset(pydicom.dcmread(path))
    (group,) = annotations.get_annotation_groups()
    assert group.number_of_annotations == analysis["slide"]["nuclei"] > 150
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    referenced = annotations.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert annotations.StudyInstanceUID == source.StudyInstanceUID
    # every outline in mm lies on the slide: 1024 pixels of 0.5 um = 0.512 mm a side
    points = np.concatenate(group.get_graphic_data(annotations.AnnotationCoordinateType))
    origin = source.TotalPixelMatrixOriginSequence[0]
    x0, y0 = (
        float(origin.XOffsetInSlideCoordinateSystem),
        float(origin.YOffsetInSlideCoordinateSystem),
    )
    assert np.abs(points[:, 0] - x0).max() <= 0.513 and np.abs(points[:, 1] - y0).max() <= 0.513
    names, values, _ = group.get_measurements()
    assert names[0].meaning == "Area" and 40 < float(np.nanmedian(values)) < 300  # um2

    base, port = orthanc
    command = ["storescu", "-R", "-aet", "MEDSIGHT", "-aec", "ORTHANC", "127.0.0.1", str(port)]
    sent = subprocess.run(
        [*command, str(files[0]), str(path)], capture_output=True, text=True, timeout=120
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    series = get_json(f"{base}/dicom-web/studies/{source.StudyInstanceUID}/series")
    assert sorted(s["00080060"]["Value"][0] for s in series) == ["ANN", "SM"]
