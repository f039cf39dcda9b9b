"""SEG and SR of a projection radiograph (DX, no frame of reference in 3D) pass dciodvfy, as
those of the photograph and the CT do (tests beside this one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from medsight.io import read_image
from medsight.reporting.dicom_seg import write_seg
from tests._tasks import segmenter_2d_task
from tests.reporting._sources import analyzed_dicom_outputs, prediction_for
from tests.reporting.test_dicom_seg import dciodvfy_errors

SAMPLE = Path(__file__).parents[2] / "src/medsight/samples/cxr/pneumonia_sample_sc.dcm"


def _projection_task(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The shared 2D segmenter, made grayscale and DX/CR."""
    return segmenter_2d_task(
        tmp_path / "task",
        task_id="test-dx-lungs",
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
    written = analyzed_dicom_outputs(SAMPLE, "cxr-pneumonia", "json,sr,sc", tmp_path / "out")
    assert {pydicom.dcmread(p, stop_before_pixels=True).Modality for p in written} >= {"SR"}
    for path in written:
        assert dciodvfy_errors(path) == [], path.name
