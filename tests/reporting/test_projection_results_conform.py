"""SEG and SR of a projection radiograph (DX, no frame of reference in 3D) pass dciodvfy, as
those of the photograph and the CT do (tests beside this one)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medsight.io import read_image
from medsight.reporting.dicom_seg import write_seg
from tests._tasks import write_task
from tests.reporting._sources import prediction_for
from tests.reporting.test_dicom_seg import dciodvfy_errors

SAMPLE = Path(__file__).parents[2] / "src/medsight/samples/cxr/pneumonia_sample_sc.dcm"


def _projection_task(tmp_path: Path):  # type: ignore[no-untyped-def]
    from medsight.tasks import load_task

    return load_task(
        write_task(
            tmp_path / "task",
            task_id="test-dx-lungs",
            kind="segmentation",
            architecture="UNet",
            arguments={
                "spatial_dims": 2,
                "in_channels": 1,
                "out_channels": 2,
                "channels": [4, 8],
                "strides": [2],
                "num_res_units": 0,
            },
            outputs=[("background", 0), ("lung", 1)],
            acceptance={"spatial_dims": 2, "modalities": ["DX", "CR"]},
            preprocessing={"patch_size": [64, 64], "normalize": "zscore"},
            display={"window": "none"},
        )
    )


def test_the_seg_of_a_projection_radiograph_passes_dciodvfy(tmp_path: Path) -> None:
    task = _projection_task(tmp_path)
    image = read_image(SAMPLE)
    assert image.modality == "DX" and image.spatial_dims == 2
    label_map = np.zeros(image.shape, dtype=np.uint8)
    columns, rows = image.shape[:2]
    label_map[columns // 4 : columns // 2, rows // 4 : 3 * rows // 4] = 1
    path = write_seg(prediction_for(task, image, label_map), task, image, tmp_path / "seg.dcm")
    assert path is not None
    assert pydicom.dcmread(path, stop_before_pixels=True).Modality == "SEG"
    assert dciodvfy_errors(path) == []


@pytest.mark.timeout(300)
def test_the_sr_and_sc_of_a_projection_radiograph_pass_dciodvfy(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "medsight", "analyze", str(SAMPLE), "--task", "cxr-pneumonia"]
    result = subprocess.run(
        [*command, "--outputs", "json,sr,sc", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    (document,) = [json.loads(p.read_text()) for p in out.glob("*/result.json")]
    folder = next(out.glob("*/"))
    written = [folder / p for a in document["analyses"] for p in a["dicom_outputs"]]
    assert {pydicom.dcmread(p, stop_before_pixels=True).Modality for p in written} >= {"SR"}
    for path in written:
        assert dciodvfy_errors(path) == [], path.name
