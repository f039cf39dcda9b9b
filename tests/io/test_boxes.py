"""COCO box annotations: FracAtlas's real file read whole, and every problem refused with the
annotation and file named."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medsight.errors import InvalidInputError
from medsight.io.boxes import read_coco_boxes
from tests.conftest import require_data


def test_fracatlas_boxes_read_as_corners():
    path = require_data("fracatlas", "annotations.json")
    found = read_coco_boxes(path)
    assert len(found) == 1506
    assert sum(len(i.boxes) for i in found.values()) == 855
    raw = json.loads(path.read_text())
    first = raw["annotations"][0]
    image = next(i for i in raw["images"] if i["id"] == first["image_id"])
    x, y, w, h = first["bbox"]
    boxes = found[image["file_name"]]
    assert np.allclose(boxes.boxes[0], [x, y, x + w, y + h], atol=1e-3)
    assert boxes.labels[0] == "fracture"
    assert len(found["IMG0000006.jpg"].boxes) == 0  # a non-fractured image: no boxes


def _write(tmp_path, annotations):
    path = tmp_path / "boxes.json"
    path.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
                "annotations": annotations,
                "categories": [{"id": 1, "name": "fracture"}],
            }
        )
    )
    return path


def test_every_problem_is_named(tmp_path):
    path = _write(
        tmp_path,
        [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [90, 10, 20, 10]},  # past x
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [10, 10, 0, 10]},  # no width
            {"id": 12, "image_id": 2, "category_id": 1, "bbox": [1, 1, 2, 2]},  # no image 2
            {"id": 13, "image_id": 1, "category_id": 7, "bbox": [1, 1, 2, 2]},  # no category
            {"id": 14, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2]},  # three numbers
            {"id": 15, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10]},  # fine
        ],
    )
    with pytest.raises(InvalidInputError) as refused:
        read_coco_boxes(path)
    message = str(refused.value)
    assert "boxes.json" in message and "5 annotation(s) refused" in message
    assert "annotation 10 (a.jpg): box [90.0, 10.0, 110.0, 20.0] outside the 100x80" in message
    for ident in ("11", "12", "13", "14"):
        assert f"annotation {ident}" in message
    assert "annotation 15" not in message


def test_not_a_coco_file(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"images": 3}')
    with pytest.raises(InvalidInputError, match="not a COCO annotation file"):
        read_coco_boxes(path)
