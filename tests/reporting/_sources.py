"""Real DICOM sources for the result writers' tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from medsight.inference import Prediction
from medsight.tasks import Task
from tests.conftest import require_data

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def totalseg_ct_with_uids(folder: Path) -> Path:
    """The TotalSegmentator CT series with the identifiers it lacks filled in, as a PACS
    import would: SOP Class, SOP Instance (from the file name), Study and Series UIDs."""
    source = require_data("totalseg-ct", "example_ct_dicom")
    folder.mkdir(parents=True, exist_ok=True)
    study = generate_uid(entropy_srcs=["medsight-test-totalseg-study"])
    series = generate_uid(entropy_srcs=["medsight-test-totalseg-series"])
    for path in sorted(source.iterdir()):
        dataset = pydicom.dcmread(path)
        dataset.SOPClassUID = CT_IMAGE_STORAGE
        dataset.SOPInstanceUID = path.name.removeprefix("CT.")
        dataset.file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.StudyInstanceUID = study
        dataset.SeriesInstanceUID = series
        dataset.PatientID = "TOTALSEG-TEST"
        dataset.PatientName = "Test^TotalSegmentator"
        dataset.SeriesNumber = 1
        dataset.AccessionNumber = "ACC-TS-1"
        dataset.StudyID = "1"
        dataset.save_as(folder / f"{path.name}.dcm")
    return folder


def copy_raw(folder: Path) -> Path:
    source = require_data("totalseg-ct", "example_ct_dicom")
    shutil.copytree(source, folder)
    return folder


def prediction_for(task: Task, image, label_map: np.ndarray) -> Prediction:
    outputs = len(task.spec.outputs)
    probabilities = np.stack([(label_map == i).astype(np.float32) for i in range(outputs)])
    return Prediction(
        task_id=task.id,
        task_version=task.version,
        task_hash=task.task_hash,
        weights_sha256=task.weights_sha256,
        kind="segmentation",
        output_names=[o.name for o in task.spec.outputs],
        affine=image.affine,
        shape=tuple(image.shape),
        backend="test",
        label_map=label_map.astype(np.uint8),
        segment_probabilities=probabilities,
    )


def analyzed_dicom_outputs(source: Path, task: str, outputs: str, out: Path) -> list[Path]:
    """``medsight analyze SOURCE --task TASK --outputs OUTPUTS`` run as a user would; the
    DICOM results its one study's result.json lists."""
    command = [sys.executable, "-m", "medsight", "analyze", str(source), "--task", task]
    result = subprocess.run(
        [*command, "--outputs", outputs, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    (document,) = [json.loads(p.read_text()) for p in out.glob("*/result.json")]
    folder = next(out.glob("*/"))
    return [folder / p for analysis in document["analyses"] for p in analysis["dicom_outputs"]]
