"""`medsight train` for a detection task on a small built set of films (bright blocks as the
lesions, COCO boxes, a labels CSV): grouped k-fold evidence, the images a recipe leaves out
of training reported apart, the operating point and temperature locked out of fold, the
input gate fitted on the detector's features, a task version that loads and predicts, and a
rerun that resumes to the same weights."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from medsight.cli import app
from medsight.inference import Predictor
from medsight.io import read_image
from medsight.tasks import load_task
from tests._tasks import detector_task

runner = CliRunner()


def build_films(root: Path, count: int = 18) -> None:
    """``count`` films of 96 x 96: every other one with a bright block (its COCO box); two
    of those with "hardware"; films 0 and 2 near-duplicates (one dup_group)."""
    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir(parents=True)
    coco: dict = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "lesion"}]}
    rows = ["image,region,hardware,dup_group"]
    for number in range(count):
        pixels = rng.normal(60, 12, (96, 96))
        name = f"film{number:02d}.png"
        coco["images"].append({"id": number, "file_name": name, "width": 96, "height": 96})
        if number % 2 == 0:
            x, y = int(rng.integers(8, 60)), int(rng.integers(8, 60))
            pixels[y : y + 20, x : x + 24] += 120
            coco["annotations"].append(
                {"id": 100 + number, "image_id": number, "category_id": 1, "bbox": [x, y, 24, 20]}
            )
        PILImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(images / name)
        hardware = "1" if number in (4, 8) else "0"
        group = "film00.png" if number in (0, 2) else ""
        rows.append(f"{name},{'hand' if number % 3 else 'leg'},{hardware},{group}")
    (root / "boxes.json").write_text(json.dumps(coco))
    (root / "labels.csv").write_text("\n".join(rows) + "\n")


def recipe(tmp_path: Path) -> Path:
    detector_task(
        tmp_path / "base",
        preprocessing={"resize": [64, 64], "normalize": "unit"},
        display={"window": "minmax"},
        arguments={"depth": 10, "fpn_channels": 16, "max_boxes": 5, "score_threshold": 0.01},
    )
    data = tmp_path / "data"
    build_films(data)
    path = tmp_path / "recipe.toml"
    path.write_text(
        f'base_task = "{tmp_path / "base"}"\nversion = "0.1.0"\n'
        "[data]\n"
        f'kind = "coco"\nannotations = "{data / "boxes.json"}"\nimages = "{data / "images"}"\n'
        f'labels = "{data / "labels.csv"}"\ngroup_column = "dup_group"\n'
        'subgroup_columns = ["region"]\ntrain_exclude = { hardware = ["1"] }\n'
        "[split]\nfolds = 3\nvalidation_fraction = 0.2\n"
        "[train]\nepochs = 1\nbatch_size = 4\nmax_steps_per_epoch = 2\nthreads = 2\n"
        "[evaluation]\ntarget_sensitivity = 0.9\n"
    )
    return path


@pytest.mark.timeout(600)
def test_a_detection_task_is_trained_with_out_of_fold_evidence(tmp_path):
    path = recipe(tmp_path)
    command = ["train", str(path), "--tasks-dir", str(tmp_path / "tasks")]
    command += ["--work", str(tmp_path / "work")]
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    assert "out-of-fold image ROC AUC" in result.output
    folder = tmp_path / "tasks" / "test-det" / "0.1.0"
    task = load_task(folder)
    document = tomllib.loads((folder / "task.toml").read_text())
    point = document["operating_points"]["high_sensitivity"]
    assert point["target_sensitivity"] == 0.9 and 0 <= point["threshold"] <= 1
    assert document["calibration"]["temperature"] > 0
    assert document["inference"]["tta_axes"] == [0]  # the trainer mirrors films along x only
    assert {c["metric"] for c in document["claims"]} == {"roc_auc", "sensitivity", "specificity"}
    card = (folder / "MODEL_CARD.md").read_text()
    assert "without the images left out of training" in card and "region=hand" in card
    record = json.loads((folder / "training_record.json").read_text())
    assert record["metrics"]["all"]["images"] == 18
    assert record["metrics"]["without_excluded"]["images"] == 16  # the two hardware films
    # every film it was developed on is listed, so evaluate can say when it is given them
    developed = json.loads((folder / "development_images.json").read_text())
    assert developed["images"] == 18 and len(developed["sha256"]) == 18
    prediction = Predictor(task, tta=False).predict(read_image(tmp_path / "data/images/film00.png"))
    assert prediction.boxes is not None and "lesion" in prediction.probabilities
    # the input gate was fitted on the detector's own features (its deepest backbone layer)
    assert "input gate of test-det" in result.output
    assert prediction.features is not None and task.spec.gate.ood is not None
    assert (folder / task.spec.gate.ood.file).is_file()
    # an image of another kind (a chest film) is withheld by the detector's gate
    chest = Path(__file__).parents[2] / "src/medsight/samples/cxr/pneumonia_sample_sc.dcm"
    out = tmp_path / "chest"
    analysed = runner.invoke(
        app,
        ["analyze", str(chest), "--task", "test-det", "--tasks-dir", str(tmp_path / "tasks"),
         "--out", str(out)],
    )  # fmt: skip
    assert analysed.exit_code == 0, analysed.output
    document = json.loads(next(out.glob("*/result.json")).read_text())
    analysis = document["analyses"][0]
    assert analysis["withheld"] and analysis["state"] == "NEEDS_REVIEW"
    assert document["priority"]["level"] == "NEEDS_REVIEW" and not analysis["findings"]
    # a rerun resumes every fold and the final model: the same weights
    again = runner.invoke(app, command)
    assert again.exit_code == 0, again.output
    assert load_task(folder).weights_sha256 == task.weights_sha256


def test_boxes_outside_their_image_stop_training_before_it_starts(tmp_path):
    path = recipe(tmp_path)
    boxes = tmp_path / "data" / "boxes.json"
    coco = json.loads(boxes.read_text())
    coco["annotations"][0]["bbox"] = [80, 80, 30, 30]  # past the 96-pixel edge
    boxes.write_text(json.dumps(coco))
    result = runner.invoke(
        app,
        ["train", str(path), "--tasks-dir", str(tmp_path / "tasks"), "--work", str(tmp_path / "w")],
    )
    assert result.exit_code == 2, result.output
    assert "boxes.json" in result.output and "annotation 100 (film00.png)" in result.output
    assert "outside the 96x96 image" in result.output
    assert not (tmp_path / "tasks").exists()  # nothing written


@pytest.mark.timeout(120)
def test_evidence_with_tta_fuses_the_flipped_views_as_analyze_does(tmp_path):
    """A task that analyses with TTA gets its held-out evidence from the same fused views:
    the trainer's rows for an image are the Predictor's boxes and score for it."""
    from types import SimpleNamespace

    from medsight.image import Image
    from medsight.models import load_network
    from medsight.training.detector import _predict, _predict_shape, _tta

    task = detector_task(
        tmp_path / "det",
        preprocessing={"resize": [64, 64], "normalize": "none"},
        display={"window": "none"},
        arguments={"depth": 10, "fpn_channels": 16, "max_boxes": 4, "score_threshold": 0.0},
        extra="\n[detection]\nfinding_score = 0.0\n\n[inference]\ntta = true\n",
    )
    rng = np.random.default_rng(5)
    inputs = rng.random((3, 1, 64, 64)).astype(np.float32)
    inputs[:, :, 10:30, 20:34] += 2.0
    # the version's axes: both, as the recipe says (the trainer alone flips only x)
    config = SimpleNamespace(task={"inference": {"tta_axes": [0, 1]}})
    tta = _tta(task, config)
    rows = _predict(load_network(task), SimpleNamespace(inputs=inputs), np.arange(3), 2, tta)
    assert rows.shape == (3, *_predict_shape(task, config)) == (3, 13, 6)  # 3 views x 4 boxes + 1
    predictor = Predictor(task, backend="torch")  # TTA as the task says
    for k in range(3):
        image = Image(array=inputs[k], affine=np.eye(4), spatial_dims=2, modality="DX")
        expected = predictor.predict(image)
        score = rows[k, 0, 4]  # the image's mean score over the views
        assert expected.logits[0] == pytest.approx(np.log(score / (1 - score)), abs=1e-5)
        kept = rows[k, 1:][rows[k, 1:, 4] >= 0]
        assert len(kept) == len(expected.boxes) > 0
        for row, box in zip(kept, expected.boxes, strict=True):
            np.testing.assert_allclose(row[:4], box["pixel_box"], atol=0.01)
            assert row[4] == pytest.approx(box["score"], abs=1e-4)
    plain = _predict(load_network(task), SimpleNamespace(inputs=inputs), np.arange(3), 2)
    assert plain.shape == (3, 5, 6)  # without TTA: the network's own rows
