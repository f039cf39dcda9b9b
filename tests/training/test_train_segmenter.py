"""`medsight train` for segmentation and k-fold classification on small built datasets:
task written with evidence; resumed after kill -9 to the same weights; evaluate re-runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from typer.testing import CliRunner

from medsight.cli import app
from medsight.tasks import load_task
from medsight.training import load_config
from medsight.training.common import epoch_learning_rate, time_line, training_hash
from medsight.training.config import TrainConfig
from medsight.training.segmenter import refresh_fold_evidence
from tests._tasks import classifier_task, segmenter_2d_task


def build_discs(root: Path, count: int = 16) -> Path:
    """RGB noise with one bright disc per image, its mask, and a manifest."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:72, :80]
    rows = ["image,mask,patient,site"]
    for index in range(count):
        cy, cx, radius = rng.integers(20, 52), rng.integers(20, 60), rng.integers(6, 14)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
        pixels = rng.normal(70, 25, (72, 80, 3))
        pixels[disc] += 110
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        PILImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            root / "images" / f"{index}.png"
        )
        PILImage.fromarray((disc * 255).astype(np.uint8)).save(root / "masks" / f"{index}.png")
        rows.append(f"images/{index}.png,masks/{index}.png,p{index // 2},s{index % 2}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


def seg_recipe(tmp_path: Path, epochs: int = 4, patience: int = 10) -> Path:
    segmenter_2d_task(
        tmp_path / "base",
        preprocessing={
            "patch_size": [48, 48],
            "normalize": "unit",
            "overlap": 0.25,
            "batch_size": 4,
        },
    )
    manifest = build_discs(tmp_path / "data")
    recipe = tmp_path / "seg.toml"
    recipe.write_text(f'''base_task = "{tmp_path / "base"}"
version = "1.0.0"
data_source = "built discs"
[data]
kind = "manifest"
csv = "{manifest}"
mask = "{{mask}}"
patient_column = "patient"
[split]
validation_fraction = 0.25
[train]
epochs = {epochs}
batch_size = 8
steps_per_epoch = 12
learning_rate = 0.01
early_stopping_patience = {patience}
flip_axes = [0, 1]
threads = 1
''')
    return recipe


@pytest.mark.timeout(600)
def test_segmentation_training_writes_an_evaluated_task(tmp_path):
    recipe = seg_recipe(tmp_path, epochs=5)
    work = tmp_path / "work"
    result = CliRunner().invoke(
        app, ["train", str(recipe), "--tasks-dir", str(tmp_path / "t"), "--work", str(work)]
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "t" / "test-seg2d" / "1.0.0"
    task = load_task(folder)
    record = json.loads((folder / "training_record.json").read_text())
    metrics = record["metrics"]
    assert metrics["validation_patients"] + metrics["train_patients"] == 8
    dice = metrics["validation"]["vessel"]["dice"]
    assert dice["low"] <= dice["value"] <= dice["high"]
    assert dice["value"] > 0.5  # a bright disc is easy
    assert metrics["units"] == "px"  # PNGs have no pixel spacing
    card = (folder / "MODEL_CARD.md").read_text()
    assert "Research use only, not for diagnostic use" in card and record["weights_sha256"] in card
    report = work / "validation-report"
    page = (report / "report.html").read_text()
    assert "research use only, not for diagnostic use" in page and "Worst cases" in page
    assert (report / "worst-1.png").is_file()

    # the same numbers from `medsight evaluate` on the recipe's validation part
    out = tmp_path / "evaluation"
    evaluated = CliRunner().invoke(
        app, ["evaluate", str(folder), str(recipe), "--split", "validation", "--out", str(out)]
    )
    assert evaluated.exit_code == 0, evaluated.output
    numbers = json.loads((out / "evaluation.json").read_text())
    assert numbers["summary"]["vessel"]["dice"]["value"] == pytest.approx(dice["value"])
    assert numbers["task"]["hash"] == task.task_hash
    # the card's Dice is a claim; the validation part chose the epoch, so it is development
    # data: the claim is shown with its figure but not checked, and evaluate says why
    (claim,) = [c for c in numbers["claims"] if c["claim"]["metric"] == "dice"]
    assert claim["holds"] is None and claim["claim"]["value"] == pytest.approx(
        dice["value"], abs=1e-4
    )
    assert claim["words"].startswith("dice of vessel ") and "not checked" in claim["words"]
    overlap = numbers["development_overlap"]
    assert overlap["images"] == overlap["of"] > 0 and "NOT EVIDENCE" in evaluated.output

    # subgroups by a manifest column, with CIs
    manifest_cases = tmp_path / "data" / "manifest.csv"
    by_site = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(folder),
            str(manifest_cases),
            "--subgroup-columns",
            "site",
            "--out",
            str(tmp_path / "by-site"),
        ],
    )
    assert by_site.exit_code == 0, by_site.output
    groups = json.loads((tmp_path / "by-site" / "evaluation.json").read_text())["subgroups"]
    assert set(groups) == {"site=s0", "site=s1"}
    assert groups["site=s0"]["vessel"]["cases"] == 8
    assert "Subgroups" in (tmp_path / "by-site" / "report.html").read_text()


@pytest.mark.timeout(600)
def test_killed_segmentation_training_resumes_to_the_same_model(tmp_path):
    recipe = seg_recipe(tmp_path, epochs=3)
    command = [sys.executable, "-m", "medsight", "train", str(recipe)]
    straight = subprocess.run(
        [*command, "--tasks-dir", str(tmp_path / "a"), "--work", str(tmp_path / "wa")],
        capture_output=True,
        timeout=300,
    )
    assert straight.returncode == 0, straight.stderr
    process = subprocess.Popen(
        [*command, "--tasks-dir", str(tmp_path / "b"), "--work", str(tmp_path / "wb")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = tmp_path / "wb" / "checkpoint.pt"
    deadline = time.time() + 240
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    killed = process.poll() is None
    if killed:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert killed, "training finished before it could be killed"
    assert torch.load(checkpoint, weights_only=False)["state"]["epoch"] < 3
    resumed = subprocess.run(
        [*command, "--tasks-dir", str(tmp_path / "b"), "--work", str(tmp_path / "wb")],
        capture_output=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    first = torch.load(tmp_path / "a" / "test-seg2d" / "1.0.0" / "weights.pt", weights_only=True)
    second = torch.load(tmp_path / "b" / "test-seg2d" / "1.0.0" / "weights.pt", weights_only=True)
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name


@pytest.mark.timeout(600)
def test_kfold_classifier_locks_its_point_on_out_of_fold_predictions(tmp_path):
    from tests.training.test_train_classifier import build_dataset

    build_dataset(tmp_path / "data", per_class=24)
    rows = ["image,label,patient,site"]
    for name in ["NORMAL", "PNEUMONIA"]:
        for path in sorted((tmp_path / "data" / name).iterdir()):
            rows.append(f"{path},{name},{path.name.split('_')[0]},s{len(rows) % 2}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    classifier_task(
        tmp_path / "base",
        acceptance={"spatial_dims": 2, "modalities": ["DX"], "unknown_modality": "review"},
        preprocessing={"resize": [32, 32], "normalize": "unit", "batch_size": 8},
    )
    recipe = tmp_path / "kfold.toml"
    recipe.write_text(f'''base_task = "{tmp_path / "base"}"
version = "1.0.0"
[data]
kind = "manifest"
csv = "{tmp_path / "manifest.csv"}"
label_column = "label"
classes = ["NORMAL", "PNEUMONIA"]
patient_column = "patient"
subgroup_columns = ["site"]
[split]
folds = 3
[train]
epochs = 3
batch_size = 8
learning_rate = 0.003
loss = "focal"
class_weighting = "sampler"
threads = 1
''')
    result = CliRunner().invoke(
        app,
        ["train", str(recipe), "--tasks-dir", str(tmp_path / "t"), "--work", str(tmp_path / "w")],
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "t" / "test-cxr" / "1.0.0"
    metrics = json.loads((folder / "training_record.json").read_text())["metrics"]
    assert metrics["evidence"].startswith("out-of-fold predictions of 3-fold")
    assert metrics["validation_cases"] == 48 == metrics["train_cases"]  # every case out of fold
    assert len(metrics["folds"]) == 3 and set(metrics["subgroups"]) == {"site=s0", "site=s1"}
    for fold in range(1, 4):  # each fold's model chose its epoch on its own training part
        with np.load(tmp_path / "w" / f"fold-{fold}" / "held_out.npz") as saved:
            assert 0 < len(saved["held_out"]) < 48 and 0 < len(saved["internal"]) < 48
    point = load_task(folder).spec.operating_points["high_sensitivity"]
    assert point.sensitivity == pytest.approx(
        metrics["operating_point"]["sensitivity"]["value"], abs=1e-4
    )
    card = (folder / "MODEL_CARD.md").read_text()
    assert "out-of-fold" in card and "held out 3:" in card
    assert "| figure (95% CI) | internal: random patient split | out-of-fold |" in card
    assert "| claim | value (95% CI) | measured on |" in card and "\n| roc_auc | " in card


@pytest.mark.timeout(600)
@pytest.mark.parametrize("ship", ["refit", "ensemble"])
def test_kfold_segmenter_gives_pooled_out_of_fold_evidence(tmp_path, ship):
    recipe = seg_recipe(tmp_path, epochs=2)
    recipe.write_text(
        recipe.read_text()
        .replace("[split]\n", f'[split]\nfolds = 4\nship = "{ship}"\n')
        .replace(
            "[train]\n",
            "[evaluation]\ntargets = { dice = { vessel = 0.5 }, pixel_auc = 0.6 }\n"
            '[train]\nlr_schedule = "cosine"\n',
        )
    )
    result = CliRunner().invoke(
        app,
        ["train", str(recipe), "--tasks-dir", str(tmp_path / "t"), "--work", str(tmp_path / "w")],
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "t" / "test-seg2d" / "1.0.0"
    task = load_task(folder)
    metrics = json.loads((folder / "training_record.json").read_text())["metrics"]
    # every case scored once, by the fold model that did not see it
    assert metrics["validation_cases"] == 16 == metrics["validation"]["vessel"]["cases"]
    assert metrics["evidence"].startswith("out-of-fold: 4-fold patient-level cross-validation")
    assert len(metrics["folds"]) == 4
    for number in range(1, 5):
        assert (tmp_path / "w" / f"fold-{number}" / "model.pt").is_file()
    (claim,) = [c for c in task.spec.claims if c.metric == "dice"]
    assert claim.measured_on.startswith("out-of-fold") and claim.segment == "vessel"
    assert claim.value == pytest.approx(metrics["validation"]["vessel"]["dice"]["value"], abs=1e-4)
    assert len(task.spec.networks) == (4 if ship == "ensemble" else 1)
    card = (folder / "MODEL_CARD.md").read_text()
    assert "- fold 4:" in card
    # the internal column: each fold model on the split that chose its epoch, pooled
    internal_cases = metrics["internal_cases"]
    assert 4 <= internal_cases <= 16 and metrics["internal"]["vessel"]["cases"] == internal_cases
    assert f"internal: each fold's epoch-choosing split ({internal_cases} cases)" in card
    dice = metrics["validation"]["vessel"]["dice"]["value"]
    verdict = "reached" if dice >= 0.5 else "**missed**"
    assert f"- vessel dice at least 0.5: {verdict}" in card
    assert "- vessel pixel_auc at least 0.6: " in card
    assert all("cpu_seconds" in e for f in metrics["folds"] for e in f["epochs"])
    assert "minutes of process CPU time" in card
    (dice_claim,) = [c for c in task.spec.claims if c.metric == "dice"]
    assert f"| dice (vessel) | {dice_claim.value:.3f} (" in card
    # a version trained before the internal column gets it back, identical, from the folds
    record_path = folder / "training_record.json"
    record = json.loads(record_path.read_text())
    expected = record["metrics"].pop("internal")
    record_path.write_text(json.dumps(record))
    refreshed = refresh_fold_evidence(load_config(recipe), folder, tmp_path / "w")
    assert refreshed["summary"]["vessel"]["dice"] == expected["vessel"]["dice"]
    assert json.loads(record_path.read_text())["metrics"]["internal"] == expected


def test_cosine_schedule_and_paused_run_time():
    config = TrainConfig.model_validate(
        {
            "base_task": "x",
            "version": "1.0.0",
            "data": {"kind": "npz", "file": "a.npz", "classes": ["a", "b"]},
            "train": {"learning_rate": 0.01, "lr_schedule": "cosine", "epochs": 10},
        }
    )
    assert epoch_learning_rate(config, 0) == pytest.approx(0.01)
    assert epoch_learning_rate(config, 5) == pytest.approx(0.005)
    assert epoch_learning_rate(config, 9) < 0.0005
    constant = config.model_copy(
        update={"train": config.train.model_copy(update={"lr_schedule": "constant"})}
    )
    assert epoch_learning_rate(constant, 9) == 0.01
    # one epoch paused for an hour: the card gives the typical time and says why
    history = [{"seconds": 10.0}] * 9 + [{"seconds": 3600.0}]
    line = time_line(
        {"training_seconds": 3690.0, "history": history, "folds": []},
        {"software": {"cpu": "cpu", "threads": 1, "cpu_count": 2}},
    )
    assert "about 2 minutes (10 epochs at the median 10.0 s" in line and "paused" in line
    assert "1 thread of 2 cores" in line


def _train(recipe: Path, tmp_path: Path, work: str, *extra: str) -> Any:
    where = ["--tasks-dir", str(tmp_path / "t"), "--work", str(tmp_path / work)]
    return CliRunner().invoke(app, ["train", str(recipe), *where, *extra])


@pytest.mark.timeout(900)
def test_folds_trained_side_by_side_then_finished_and_reused(tmp_path):
    recipe = seg_recipe(tmp_path, epochs=2)
    recipe.write_text(
        recipe.read_text().replace("[split]\n", '[split]\nfolds = 3\nship = "ensemble"\n')
    )
    # folds 1 and 2 as two processes at once on one work folder, fold 3 after
    command = [sys.executable, "-m", "medsight", "train", str(recipe)]
    where = ["--tasks-dir", str(tmp_path / "t"), "--work", str(tmp_path / "w")]
    side_by_side = [
        subprocess.Popen([*command, *where, "--fold", str(k)], stderr=subprocess.PIPE)
        for k in (1, 2)
    ]
    for process in side_by_side:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr
        assert b"run again without --fold" in stderr
    assert _train(recipe, tmp_path, "w", "--fold", "3").exit_code == 0
    assert not (tmp_path / "t" / "test-seg2d").exists()  # no version before every fold is done
    fold_models = [tmp_path / "w" / f"fold-{k}" / "model.pt" for k in (1, 2, 3)]
    stamps = [path.stat().st_mtime_ns for path in fold_models]
    finished = _train(recipe, tmp_path, "w")
    assert finished.exit_code == 0, finished.output
    assert [path.stat().st_mtime_ns for path in fold_models] == stamps  # resumed, not retrained
    assert len(load_task(tmp_path / "t" / "test-seg2d" / "1.0.0").spec.networks) == 3
    # the same folds as one process training them in turn
    assert _train(recipe, tmp_path, "sequential").exit_code == 0
    for k in (1, 2, 3):
        parallel = torch.load(tmp_path / "w" / f"fold-{k}" / "model.pt", weights_only=False)
        sequential = torch.load(
            tmp_path / "sequential" / f"fold-{k}" / "model.pt", weights_only=False
        )
        for name, tensor in parallel["model"].items():
            assert torch.equal(tensor, sequential["model"][name]), (k, name)
    # a new version that changes only how it runs (TTA) and its name reuses the folds
    again = recipe.read_text().replace('version = "1.0.0"', 'version = "1.0.1"')
    recipe.write_text(again + "[task.inference]\ntta = true\n")
    assert _train(recipe, tmp_path, "w").exit_code == 0
    assert [path.stat().st_mtime_ns for path in fold_models] == stamps
    assert load_task(tmp_path / "t" / "test-seg2d" / "1.0.1").spec.inference.tta
    # other training on the same folder is refused, not passed off as this recipe's
    recipe.write_text(recipe.read_text().replace("learning_rate = 0.01", "learning_rate = 0.02"))
    refused = _train(recipe, tmp_path, "w")
    assert refused.exit_code == 3
    assert "another configuration" in refused.output and "fold-1" in refused.output
    # a fold that does not exist, and --fold without folds
    assert _train(recipe, tmp_path, "w2", "--fold", "4").exit_code == 2
    plain = seg_recipe(tmp_path / "plain", epochs=1)
    no_folds = _train(plain, tmp_path, "w3", "--fold", "1")
    assert no_folds.exit_code == 3 and "--fold needs a recipe with [split] folds" in no_folds.output


def test_training_hash_ignores_only_what_changes_no_weight():
    base = {
        "base_task": "x",
        "version": "1.0.0",
        "data": {"kind": "manifest", "csv": "a.csv"},
        "task": {"network_arguments": {"channels": [8, 16]}},
    }
    reference = training_hash(TrainConfig.model_validate(base))
    same = [
        {"version": "2.0.0", "data_source": "another line"},
        {"evaluation": {"targets": {"dice": 0.9}}},
        {"task": {"network_arguments": {"channels": [8, 16]}, "inference": {"tta": True}}},
    ]
    for change in same:
        assert training_hash(TrainConfig.model_validate({**base, **change})) == reference, change
    different = [
        {"task": {"network_arguments": {"channels": [16, 32]}}},
        {"train": {"learning_rate": 0.5}},
        {"split": {"seed": 3}},
        {"data": {"kind": "manifest", "csv": "b.csv"}},
    ]
    for change in different:
        assert training_hash(TrainConfig.model_validate({**base, **change})) != reference, change
