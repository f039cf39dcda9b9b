"""A detection's findings in DICOM SR (TID 1500): the image's finding at its operating point,
located at its most confident box, and each box as a planar region (a closed POLYLINE in
the source's pixel edges) with its score and size; dciodvfy clean, read back by highdicom.
The boxes come from an oracle network (it boxes the bright pixels) on a real 2D DICOM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsight.findings import findings_from_prediction
from medsight.inference import Predictor
from medsight.io import read_image
from medsight.reporting.dicom_sr import write_sr
from tests._tasks import detector_task
from tests.inference.test_detection import bright_box_oracle
from tests.reporting.test_dicom_seg import dciodvfy_errors

SAMPLE = Path(__file__).parents[2] / "src/medsight/samples/cxr/pneumonia_sample_sc.dcm"
POINT = '\n[operating_points.high_sensitivity]\noutput = "lesion"\nthreshold = 0.5\n'


@pytest.mark.timeout(300)
def test_boxes_become_planar_regions_in_the_sr(tmp_path):
    import highdicom as hd

    task = detector_task(
        tmp_path / "det",
        display={"window": "percentile", "percentiles": [99.0, 99.9]},  # the brightest 1%
        extra="\n[detection]\nfinding_score = 0.3\n" + POINT,
    )
    image = read_image(SAMPLE)
    prediction = Predictor(task, backend=bright_box_oracle(0.7), tta=False).predict(image)
    findings = findings_from_prediction(prediction, task, image)
    image_finding, box_finding = findings
    assert image_finding.flag and image_finding.location["method"] == "most confident box"
    assert box_finding.name == "lesion_box_1" and box_finding.flag is None
    scores = {x.name: x.value for x in box_finding.measurements}
    assert scores["detection score"] == pytest.approx(0.7)
    path = write_sr(findings, task, image, tmp_path / "sr.dcm")
    assert dciodvfy_errors(path) == []

    sr = hd.sr.srread(path)
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == 2
    x0, y0, x1, y1 = box_finding.location["pixel_box"]
    for group in groups:
        assert group.roi.GraphicType == "POLYLINE"
        np.testing.assert_allclose(
            group.roi.value, [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], atol=1e-3
        )
