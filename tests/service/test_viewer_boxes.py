"""A detection's boxes reach the study viewer: the ones at or above the task's finding score,
with their scores, and a box finding's own pixels for the finding table; none when the answer
is withheld."""

from __future__ import annotations

import numpy as np

from medsight.image import Image
from medsight.service.viewer.layers import Layers, volume_info


def _analysis(audit_only: bool = False) -> dict:
    boxes = [
        {"label": "fracture", "score": 0.8, "pixel_box": [10.0, 20.0, 40.0, 30.0]},
        {"label": "fracture", "score": 0.1, "pixel_box": [50.0, 50.0, 60.0, 60.0]},
    ]
    return {
        "detection": {"boxes": boxes, "finding_score": 0.3, "audit_only": audit_only},
        "findings": [
            {
                "name": "fracture_box_1",
                "code": {"meaning": "Fracture"},
                "location": {
                    "kind": "box",
                    "pixel_box": [10.0, 20.0, 40.0, 30.0],
                    "voxel_min": [10, 20],
                    "voxel_max": [39, 29],
                },
                "measurements": [],
            }
        ],
    }


def test_boxes_and_box_findings_are_sent_to_the_viewer():
    image = Image(array=np.zeros((1, 100, 80), np.float32), affine=np.eye(4), spatial_dims=2)
    info = volume_info(Layers(image, None, None), _analysis())
    assert [b["score"] for b in info["boxes"]] == [0.8]  # 0.1 is under the finding score
    assert info["findings"][0]["box"] == [10, 20, 39, 29]
    withheld = volume_info(Layers(image, None, None), _analysis(audit_only=True))
    assert withheld["boxes"] == []
