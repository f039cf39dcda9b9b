"""`medsight train` of a sigmoid classifier (several findings and an ordinal grade per
image) on a small built two-eye dataset: patient folds, masked labels, per-output
temperatures, points locked per patient on the worse eye, kappa and confusion in the card;
bad labels are refused before training starts."""

from __future__ import annotations

import csv
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from scipy.ndimage import gaussian_filter
from typer.testing import CliRunner

from medsight.cli import app
from medsight.errors import InvalidInputError
from medsight.tasks import load_task
from medsight.training import list_cases, load_config
from tests.inference.test_ordinal_outputs import sigmoid_task


def build_dataset(root: Path, patients: int = 30) -> None:
    """Two eyes a patient; a bright disc whose size grows with the grade (0-2); maculopathy
    a dark spot, not graded on every fifth image; referable = grade 2 or maculopathy."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    (root / "images").mkdir(parents=True)
    rows = []
    for patient in range(patients):
        for eye in ("L", "R"):
            grade = int(rng.integers(0, 3))
            macula = int(rng.random() < 0.3)
            # smooth texture, not white noise (the input gate withholds noise)
            pixels = 60 + 15 * gaussian_filter(rng.normal(0, 4, (64, 64)), 2)
            if grade:
                pixels[(yy - 32) ** 2 + (xx - 32) ** 2 < 40 * grade**2] += 90
            if macula:
                pixels[(yy - 12) ** 2 + (xx - 12) ** 2 < 30] -= 50
            name = f"P{patient:03d}_{eye}.png"
            image = np.clip(pixels, 0, 255).astype(np.uint8)
            PILImage.fromarray(image).save(root / "images" / name)
            graded = len(rows) % 5 != 4
            rows.append(
                {
                    "image": name,
                    "patient": f"P{patient:03d}",
                    "dr_grade": str(grade),
                    "maculopathy": str(macula) if graded else "",
                    "referable": str(int(grade >= 2 or macula)),
                }
            )
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_recipe(tmp_path: Path) -> Path:
    sigmoid_task(
        tmp_path / "base",
        acceptance={"spatial_dims": 2, "modalities": ["OP"], "unknown_modality": "review"},
        preprocessing={"resize": [32, 32], "normalize": "unit", "batch_size": 8},
    )
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'''
base_task = "{tmp_path / "base"}"
version = "1.0.0"
data_source = "built test images"
[data]
kind = "manifest"
csv = "{tmp_path / "data" / "labels.csv"}"
image = "images/{{image}}"
patient_column = "patient"
targets = {{ referable = "referable", maculopathy = "maculopathy" }}
ordinal_targets = {{ dr_grade = "dr_grade" }}
[split]
folds = 3
validation_fraction = 0.25
[evaluation]
lock_on = "patient_worst"
points = {{ high_sensitivity = {{ output = "referable", target_sensitivity = 0.9 }} }}
[train]
epochs = 2
batch_size = 8
learning_rate = 0.003
threads = 1
''')
    return recipe


@pytest.mark.timeout(300)
def test_train_locks_points_per_patient_and_grades_with_kappa(tmp_path):
    build_dataset(tmp_path / "data")
    recipe, work = write_recipe(tmp_path), tmp_path / "work"
    result = CliRunner().invoke(
        app,
        ["train", str(recipe), "--tasks-dir", str(tmp_path / "tasks"), "--work", str(work)],
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "tasks" / "test-cxr" / "1.0.0"
    document = tomllib.loads((folder / "task.toml").read_text())
    temperatures = document["calibration"]["temperatures"]
    assert set(temperatures) == {"referable", "grade_ge_1", "grade_ge_2", "maculopathy"}
    point = document["operating_points"]["high_sensitivity"]
    assert point["output"] == "referable" and 0.0 <= point["threshold"] <= 1.0
    assert "per patient (worse image)" in point["note"]
    assert {c["metric"] for c in document["claims"]} == {"roc_auc", "sensitivity", "specificity"}
    card = (folder / "MODEL_CARD.md").read_text()
    assert "quadratic-weighted kappa" in card and "| reference \\ predicted |" in card
    assert (folder / "gate_ood.npz").is_file()  # the gate was fitted on the same cases
    # every fold ran, and each held-out fold's predictions are on disk (resumable)
    assert len(list((tmp_path / "work").glob("fold-*/held_out.npz"))) == 3
    task = load_task(folder)
    assert task.spec.calibration.temperatures == temperatures
    metrics = json.loads((folder / "training_record.json").read_text())["metrics"]
    graded = metrics["outputs"]["maculopathy"]["graded"]
    assert graded == 48  # every fifth of 60 images has no maculopathy label: masked
    matrix = metrics["grades"]["dr_grade"]["confusion"]["rows_true_columns_predicted"]
    assert np.asarray(matrix).sum() == 60
    patient = metrics["points"]["high_sensitivity"]["patient"]
    assert patient["cases"] == 30  # one decision per patient, from the worse eye

    # `medsight evaluate` re-checks the claims on labelled data: a manifest whose columns
    # are named after the outputs and the grade (here the training images themselves)
    rows = list(csv.DictReader((tmp_path / "data" / "labels.csv").open()))
    manifest = tmp_path / "evaluate.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "patient", "referable", "maculopathy", "dr_grade"])
        for row in rows:
            image = tmp_path / "data" / "images" / row["image"]
            writer.writerow(
                [image, row["patient"], row["referable"], row["maculopathy"], row["dr_grade"]]
            )
    checked = CliRunner().invoke(
        app, ["evaluate", str(folder), str(manifest), "--out", str(tmp_path / "evaluation")]
    )
    assert "ungradable: 0 of 60" in checked.output, checked.output
    assert "dr_grade: quadratic-weighted kappa" in checked.output
    assert "ROC AUC of referable" in checked.output  # the card's claims, each re-checked
    evaluation = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    assert evaluation["points"]["high_sensitivity"]["patient"]["cases"] == 30
    assert len(evaluation["claims"]) == 3


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("dr_grade", "7", "dr_grade '7' is outside the scale 0-2"),
        ("referable", "yes", "referable 'yes' is not 0, 1 or empty"),
    ],
)
def test_bad_labels_are_refused_before_training(tmp_path, column, value, message):
    build_dataset(tmp_path / "data", patients=6)
    table = tmp_path / "data" / "labels.csv"
    rows = list(csv.DictReader(table.open()))
    rows[3][column] = value
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    config = load_config(write_recipe(tmp_path))
    with pytest.raises(InvalidInputError, match="labels.csv row 5: " + message):
        list_cases(config.data, load_task(tmp_path / "base").spec)
