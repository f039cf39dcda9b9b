"""Detection through the engine: boxes come back on the source's pixels and in patient
millimetres whatever the network grid and the source's orientation, flipped views fuse into
one box, and a real BoxDetector (MONAI RetinaNet, random weights) runs end to end through
``medsight analyze`` into result.json and the overlay.

Geometry is tested with an oracle network (it boxes the bright pixels of its input), as the
segmentation round trips use an identity network: any flip, shift or scale error in the
chain moves the box."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medsight.cli import app
from medsight.image import Image
from medsight.inference import Predictor
from medsight.inference.backends import export_onnx
from medsight.inference.boxes import fuse_boxes, unflip_boxes
from medsight.reporting.json_report import result_schema
from tests._tasks import detector_task

runner = CliRunner()


def bright_box_oracle(score: float = 0.8):
    """Returns the box around the input's pixels above 0.5 (network grid edges)."""

    def runtime(batch: torch.Tensor) -> torch.Tensor:
        out = torch.full((batch.shape[0], 11, 6), -1.0)
        for b in range(batch.shape[0]):
            bright = torch.nonzero(batch[b, 0] > 0.5)
            out[b, 0, 4] = 0.9
            if len(bright):
                low, high = bright.min(0).values, bright.max(0).values + 1
                out[b, 1, :4] = torch.tensor([low[0], low[1], high[0], high[1]])
                out[b, 1, 4], out[b, 1, 5] = score, 0
        return out

    return runtime


def _radiograph(flip_x: bool = False) -> Image:
    """300 x 200 pixels of 0.2 mm, a bright block at x 100-140, y 50-70 (pixel edges).
    With ``flip_x`` the same anatomy stored with the columns reversed (the affine says so)."""
    array = np.zeros((1, 300, 200), np.float32)
    array[0, 100:140, 50:70] = 1.0
    affine = np.diag([0.2, 0.2, 1.0, 1.0])
    affine[:3, 3] = [-30.0, -20.0, 5.0]
    if flip_x:
        array = array[:, ::-1].copy()
        flipped = affine.copy()
        flipped[0, 0] = -0.2
        flipped[0, 3] = affine[0, 3] + 0.2 * 299
        affine = flipped
    return Image(array=array, affine=affine, spatial_dims=2, modality="DX")


def test_a_box_comes_back_on_the_source_pixels(tmp_path):
    task = detector_task(tmp_path / "det")
    prediction = Predictor(task, backend=bright_box_oracle(), tta=False).predict(_radiograph())
    (box,) = prediction.boxes
    # 300 x 200 resized to 128 x 128: a network pixel is 2.3 x 1.6 source pixels
    np.testing.assert_allclose(box["pixel_box"], [100, 50, 140, 70], atol=2.4)
    assert box["label"] == "lesion" and box["score"] == pytest.approx(0.8)
    # LPS: pixel edge 100 is index 99.5 -> -30 + 0.2 * 99.5
    np.testing.assert_allclose(
        box["lps_box"][:3], [-30 + 0.2 * 99.5, -20 + 0.2 * 49.5, 5], atol=0.5
    )
    assert prediction.probabilities == {"lesion": pytest.approx(0.9, abs=1e-6)}


def test_a_flipped_source_gives_the_same_anatomy(tmp_path):
    task = detector_task(tmp_path / "det")
    predictor = Predictor(task, backend=bright_box_oracle(), tta=False)
    straight = predictor.predict(_radiograph())
    flipped = predictor.predict(_radiograph(flip_x=True))
    # on the flipped source's own pixels the box sits mirrored...
    np.testing.assert_allclose(flipped.boxes[0]["pixel_box"], [160, 50, 200, 70], atol=2.4)

    # ...and in patient millimetres it is the same region
    def extent(lps: list[float]) -> np.ndarray:
        corners = np.array(lps).reshape(2, 3)
        return np.concatenate([corners.min(0), corners.max(0)])

    np.testing.assert_allclose(
        extent(flipped.boxes[0]["lps_box"]), extent(straight.boxes[0]["lps_box"]), atol=0.5
    )


def test_a_source_stored_rotated_gives_the_same_anatomy(tmp_path):
    """The same film stored a quarter turn round (rows as columns; the affine says so)."""
    task = detector_task(tmp_path / "det")
    predictor = Predictor(task, backend=bright_box_oracle(), tta=False)
    straight = _radiograph()
    turned = straight.replace(
        array=np.ascontiguousarray(straight.array.transpose(0, 2, 1)),
        affine=straight.affine[:, [1, 0, 2, 3]],
    )
    boxes = [predictor.predict(image).boxes[0] for image in (straight, turned)]
    np.testing.assert_allclose(boxes[1]["pixel_box"], [50, 100, 70, 140], atol=2.4)

    def extent(lps: list[float]) -> np.ndarray:
        corners = np.array(lps).reshape(2, 3)
        return np.concatenate([corners.min(0), corners.max(0)])

    np.testing.assert_allclose(extent(boxes[1]["lps_box"]), extent(boxes[0]["lps_box"]), atol=0.5)


def test_flipped_views_fuse_into_one_box(tmp_path):
    task = detector_task(tmp_path / "det")
    plain = Predictor(task, backend=bright_box_oracle(), tta=False).predict(_radiograph())
    fused = Predictor(task, backend=bright_box_oracle(), tta=True).predict(_radiograph())
    assert len(fused.boxes) == 1  # three views, one box
    np.testing.assert_allclose(fused.boxes[0]["pixel_box"], plain.boxes[0]["pixel_box"], atol=0.6)
    assert fused.boxes[0]["score"] == pytest.approx(0.8)


def test_box_fusion_and_unflipping():
    np.testing.assert_allclose(unflip_boxes(np.array([[10, 5, 30, 9]]), 0, 100), [[70, 5, 90, 9]])
    np.testing.assert_allclose(unflip_boxes(np.array([[10, 5, 30, 9]]), 1, 50), [[10, 41, 30, 45]])
    boxes, scores = fuse_boxes(
        [
            (np.array([[0, 0, 10, 10], [50, 50, 60, 60]]), np.array([0.9, 0.6])),
            (np.array([[1, 1, 11, 11]]), np.array([0.3])),
        ]
    )
    # the two overlapping boxes fuse (weighted 0.9 : 0.3); the lone box keeps half its score
    np.testing.assert_allclose(boxes[0], [0.25, 0.25, 10.25, 10.25])
    np.testing.assert_allclose(scores, [0.6, 0.3])
    assert fuse_boxes([])[0].shape == (0, 4)


def test_a_real_detector_runs_through_analyze(tmp_path):
    from PIL import Image as PILImage

    task = detector_task(tmp_path / "tasks" / "test-det")
    rng = np.random.default_rng(0)
    picture = (rng.random((180, 240)) * 255).astype(np.uint8)
    PILImage.fromarray(picture).save(tmp_path / "film.png")
    prediction = Predictor(task, tta=False).predict(_radiograph())
    assert len(prediction.boxes) <= 10 and 0 < prediction.probabilities["lesion"] < 1
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "analyze",
            str(tmp_path / "film.png"),
            "--task",
            "test-det",
            "--tasks-dir",
            str(tmp_path / "tasks"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(next(out.glob("*/result.json")).read_text())
    jsonschema.validate(document, result_schema())
    analysis = document["analyses"][0]
    assert (
        "boxes" in analysis["detection"] and "lesion" in analysis["classification"]["probabilities"]
    )
    for box in analysis["detection"]["boxes"]:
        x0, y0, x1, y1 = box["pixel_box"]
        assert 0 <= x0 < x1 <= 240 and 0 <= y0 < y1 <= 180  # on the PNG's columns and rows
    assert (out / document["study_key"] / analysis["overlays"][0]).is_file()


def test_onnx_runtime_gives_the_torch_boxes(tmp_path):
    """The detector's heads exported to ONNX, its anchors decoded after: the same boxes."""
    task = detector_task(
        tmp_path / "det",
        arguments={"depth": 10, "fpn_channels": 32, "max_boxes": 5, "score_threshold": 0.0},
    )
    image = _radiograph()
    torch_boxes = Predictor(task, tta=False).predict(image)
    onnx_boxes = Predictor(task, backend="onnxruntime", tta=False).predict(image)
    assert onnx_boxes.backend == "onnxruntime" and len(torch_boxes.boxes) == 5
    for ours, theirs in zip(torch_boxes.boxes, onnx_boxes.boxes, strict=True):
        np.testing.assert_allclose(ours["pixel_box"], theirs["pixel_box"], atol=0.05)
        assert ours["score"] == pytest.approx(theirs["score"], abs=1e-3)
    assert torch_boxes.probabilities["lesion"] == pytest.approx(
        onnx_boxes.probabilities["lesion"], abs=1e-4
    )
    assert export_onnx(task).is_file()


def test_a_detection_task_needs_its_section(tmp_path):
    with pytest.raises(Exception, match="detection"):
        detector_task(tmp_path / "det", extra="")
