"""``medsight evaluate`` on a detection task: with an oracle network on synthetic films whose
lesions are bright blocks, every figure is known (a block the COCO file misplaces is a miss
and a false positive, and lands in both galleries); through the CLI on FracAtlas films with
subgroups by region; bad inputs named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from typer.testing import CliRunner

from medsight.cli import app
from medsight.errors import InvalidInputError
from medsight.evaluation.detection_report import (
    detection_cases,
    evaluate_detector,
    write_detection_report,
)
from medsight.inference import Predictor
from tests._tasks import detector_task
from tests.conftest import require_data

runner = CliRunner()
POINT = '\n[operating_points.high_sensitivity]\noutput = "lesion"\nthreshold = 0.5\n'


def oracle(batch: torch.Tensor) -> torch.Tensor:
    """Boxes the bright pixels; the image's score 0.9 with any, 0.1 without."""
    out = torch.full((batch.shape[0], 11, 6), -1.0)
    for b in range(batch.shape[0]):
        bright = torch.nonzero(batch[b, 0] > 0.5)
        out[b, 0, 4] = 0.9 if len(bright) else 0.1
        if len(bright):
            low, high = bright.min(0).values, bright.max(0).values + 1
            out[b, 1] = torch.tensor([low[0], low[1], high[0], high[1], 0.8, 0])
    return out


def _films(folder: Path) -> Path:
    """Six 128 x 128 films: three with a bright block at x 40-60, y 30-50, three without;
    the COCO file places film 2's block elsewhere (a miss and a false positive)."""
    images = folder / "images"
    images.mkdir(parents=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "lesion"}]}
    for number in range(6):
        pixels = np.full((128, 128), 40, np.uint8)
        if number < 3:
            pixels[30:50, 40:60] = 250  # rows 30-50, columns 40-60
        PILImage.fromarray(pixels).save(images / f"film{number}.png")
        coco["images"].append(
            {"id": number, "file_name": f"film{number}.png", "width": 128, "height": 128}
        )
        if number < 3:
            box = [40, 30, 20, 20] if number != 2 else [90, 90, 20, 20]
            coco["annotations"].append(
                {"id": 10 + number, "image_id": number, "category_id": 1, "bbox": box}
            )
    path = folder / "boxes.json"
    path.write_text(json.dumps(coco))
    return path


def test_every_figure_with_an_oracle(tmp_path):
    task = detector_task(
        tmp_path / "det",
        display={"window": "fixed", "center_width": [127.5, 256.0]},  # 8-bit as stored
        extra="\n[detection]\nfinding_score = 0.3\n" + POINT,
    )
    coco = _films(tmp_path / "data")
    cases = detection_cases(coco, coco.parent / "images")
    results = evaluate_detector(task, cases, predictor=Predictor(task, backend=oracle, tta=False))
    assert results["images"] == 6 and results["lesions"] == 3
    assert results["auc"]["value"] == 1.0  # every film with a lesion scores 0.9, others 0.1
    assert results["sensitivity"]["value"] == 1.0 and results["specificity"]["value"] == 1.0
    at = results["froc"]["sensitivity_at_fp_per_image"]
    # two of three lesions found with no false positive before them; the misplaced one never
    assert at["4.0"]["value"] == pytest.approx(2 / 3)
    assert len(results["_galleries"]["missed"]) == 1
    assert len(results["_galleries"]["false_positives"]) == 1
    json_path, html_path = write_detection_report(results, tmp_path / "out")
    page = html_path.read_text()
    assert "Research use only, not for diagnostic" in page and page.count("<img") == 2
    assert "_galleries" not in json.loads(json_path.read_text())


def test_evaluate_cli_with_subgroups_on_fracatlas(tmp_path):
    source = require_data("fracatlas")
    names = ["IMG0000019.jpg", "IMG0000006.jpg", "IMG0000007.jpg"]
    raw = json.loads((source / "annotations.json").read_text())
    ids = {i["id"] for i in raw["images"] if i["file_name"] in names}
    subset = {
        "images": [i for i in raw["images"] if i["id"] in ids],
        "annotations": [a for a in raw["annotations"] if a["image_id"] in ids],
        "categories": raw["categories"],
    }
    coco = tmp_path / "subset.json"
    coco.write_text(json.dumps(subset))
    detector_task(tmp_path / "tasks" / "test-det", extra="\n[detection]\n" + POINT)
    result = runner.invoke(
        app,
        [
            "evaluate", "test-det", str(coco), "--tasks-dir", str(tmp_path / "tasks"),
            "--images", str(source / "images"), "--labels", str(source / "labels.csv"),
            "--subgroup-columns", "region,hardware", "--out", str(tmp_path / "report"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    numbers = json.loads((tmp_path / "report" / "evaluation.json").read_text())
    assert numbers["images"] == 3 and "region=hand" in numbers["subgroups"]
    assert "lesion sensitivity at 0.5 / 1 / 2 / 4" in result.output


def test_bad_detection_data_is_named(tmp_path):
    coco = _films(tmp_path / "data")
    (coco.parent / "images" / "film4.png").unlink()
    with pytest.raises(InvalidInputError, match="1 image\\(s\\) of the COCO file not found: film4"):
        detection_cases(coco, coco.parent / "images")
    with pytest.raises(InvalidInputError, match="need --labels"):
        detection_cases(coco, coco.parent / "images", None, ["region"])
    detector_task(tmp_path / "tasks" / "test-det", extra="\n[detection]\n" + POINT)
    result = runner.invoke(
        app,
        ["evaluate", "test-det", str(tmp_path / "x.csv"), "--tasks-dir", str(tmp_path / "tasks")],
    )
    assert result.exit_code != 0 and "COCO file" in result.output
