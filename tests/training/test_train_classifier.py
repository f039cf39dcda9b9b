"""`medsight train` on a small built dataset: task written with evidence; kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from typer.testing import CliRunner

from medsight.cli import app
from medsight.errors import InvalidInputError
from medsight.tasks import load_task
from medsight.training import list_cases, load_config
from tests._tasks import classifier_task


def build_dataset(root: Path, per_class: int = 40, seed: int = 0) -> None:
    """Dark noisy images (class 0) and images with a bright disc (class 1), 3 per patient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    for label, name in enumerate(["NORMAL", "PNEUMONIA"]):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.normal(60, 20, (64, 64))
            if label:
                cy, cx = rng.integers(20, 44, 2)
                pixels[(yy - cy) ** 2 + (xx - cx) ** 2 < 100] += 120
            image = np.clip(pixels, 0, 255).astype(np.uint8)
            PILImage.fromarray(image).save(root / name / f"p{label}x{index // 3}_{index}.png")


def write_config(tmp_path: Path, epochs: int = 3, **train: object) -> Path:
    classifier_task(
        tmp_path / "base",
        acceptance={"spatial_dims": 2, "modalities": ["DX"], "unknown_modality": "review"},
        preprocessing={"resize": [32, 32], "normalize": "unit", "batch_size": 8},
    )
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in train.items())
    config = tmp_path / "recipe.toml"
    config.write_text(f'''
base_task = "{tmp_path / "base"}"
version = "1.0.0"
data_source = "built test images"
[data]
root = "{tmp_path / "data"}"
classes = ["NORMAL", "PNEUMONIA"]
patient_pattern = "^(p\\\\d+x\\\\d+)_"
suffixes = [".png"]
[split]
validation_fraction = 0.3
[train]
epochs = {epochs}
batch_size = 8
learning_rate = 0.003
threads = 1
{extra}''')
    return config


@pytest.mark.timeout(300)
def test_train_writes_a_calibrated_task_with_a_locked_operating_point(tmp_path):
    build_dataset(tmp_path / "data")
    config = write_config(tmp_path)
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(config),
            "--tasks-dir",
            str(tmp_path / "tasks"),
            "--work",
            str(tmp_path / "work"),
        ],
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "tasks" / "test-cxr" / "1.0.0"
    task = load_task(folder)
    assert task.spec.calibration.temperature > 0
    point = task.spec.operating_points["high_sensitivity"]
    assert point.output == "pneumonia" and 0 <= point.threshold <= 1
    record = json.loads((folder / "training_record.json").read_text())
    metrics = record["metrics"]
    assert metrics["roc_auc"]["value"] > 0.8  # the disc is easy to see
    # patient-level split: no patient on both sides
    cases = list_cases(load_config(config).data)
    assert len(cases) == metrics["train_cases"] + metrics["validation_cases"]
    card = (folder / "MODEL_CARD.md").read_text()
    assert "Research use only, not for diagnostic use" in card and "ROC AUC" in card
    assert record["weights_sha256"] in card
    # the last step of training: the input gate, declared with its hashes (schema 2)
    assert task.spec.schema_version == 2 and task.spec.gate.ood is not None
    assert task.gate_path("ood").is_file() and task.gate_path("reference").is_file()
    refit = CliRunner().invoke(
        app, ["gate", "fit", str(folder), str(config), "--tasks-dir", str(tmp_path / "tasks")]
    )
    assert refit.exit_code == 0, refit.output
    patched = load_task(tmp_path / "tasks" / "test-cxr" / "1.0.1")
    assert patched.spec.networks == task.spec.networks and patched.task_hash != task.task_hash
    analysed = CliRunner().invoke(
        app,
        [
            "analyze",
            str(next((tmp_path / "data" / "PNEUMONIA").iterdir())),
            "--task",
            str(folder),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert analysed.exit_code == 0, analysed.output


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "weights.pt", weights_only=True)


@pytest.mark.timeout(600)
def test_killed_training_resumes_to_the_same_model(tmp_path):
    build_dataset(tmp_path / "data", per_class=60)
    config = write_config(tmp_path, epochs=4, early_stopping_patience=10)
    command = [sys.executable, "-m", "medsight", "train", str(config)]
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
    assert torch.load(checkpoint, weights_only=False)["state"]["epoch"] < 4
    resumed = subprocess.run(
        [*command, "--tasks-dir", str(tmp_path / "b"), "--work", str(tmp_path / "wb")],
        capture_output=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    first = _weights(tmp_path / "a" / "test-cxr" / "1.0.0")
    second = _weights(tmp_path / "b" / "test-cxr" / "1.0.0")
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name
    toml_a = tomllib.loads((tmp_path / "a" / "test-cxr" / "1.0.0" / "task.toml").read_text())
    toml_b = tomllib.loads((tmp_path / "b" / "test-cxr" / "1.0.0" / "task.toml").read_text())
    assert toml_a["operating_points"] == toml_b["operating_points"]


def test_bad_data_is_refused_before_training(tmp_path):
    build_dataset(tmp_path / "data", per_class=6)
    (tmp_path / "data" / "NORMAL" / "nobody.png").write_bytes(
        (tmp_path / "data" / "NORMAL" / "p0x0_0.png").read_bytes()
    )
    config = load_config(write_config(tmp_path))
    with pytest.raises(InvalidInputError, match=r"nobody\.png"):
        list_cases(config.data)
    for path in (tmp_path / "data" / "PNEUMONIA").iterdir():
        path.unlink()
    (tmp_path / "data" / "NORMAL" / "nobody.png").unlink()
    with pytest.raises(InvalidInputError, match="only one class"):
        list_cases(config.data)


@pytest.mark.timeout(300)
def test_evaluate_rechecks_the_locked_point_and_writes_a_report(tmp_path):
    build_dataset(tmp_path / "data")
    config = write_config(tmp_path)
    trained = CliRunner().invoke(
        app,
        ["train", str(config), "--tasks-dir", str(tmp_path / "t"), "--work", str(tmp_path / "w")],
    )
    assert trained.exit_code == 0, trained.output
    # new images (another seed: the same seed drew the training images again, which
    # evaluate now refuses to count as evidence)
    build_dataset(tmp_path / "new", per_class=30, seed=1)
    out = tmp_path / "evaluation"
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(tmp_path / "t" / "test-cxr" / "1.0.0"),
            str(tmp_path / "new"),
            "--classes",
            "NORMAL,PNEUMONIA",
            "--subgroup-pattern",
            r"^(p\d)",
            "--prevalence",
            "0.1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code in (0, 1), result.output  # 1 = a locked point does not hold
    numbers = json.loads((out / "evaluation.json").read_text())
    point = numbers["operating_points"]["high_sensitivity"]
    assert point["holds"] == (result.exit_code == 0)
    assert point["holds"] == (point["sensitivity"]["low"] >= point["target_sensitivity"])
    assert 0 <= point["ppv"] <= 1 and numbers["cases"] == 60
    assert set(numbers["subgroups"]) == {"subgroup=p0", "subgroup=p1"}
    page = (out / "report.html").read_text()
    assert "research use only, not for diagnostic use" in page and "data:image/png" in page


@pytest.mark.timeout(300)
def test_select_for_labelling_and_fine_tuning(tmp_path):
    build_dataset(tmp_path / "data")
    config = write_config(tmp_path, epochs=1)
    runner = CliRunner()
    assert (
        runner.invoke(
            app,
            [
                "train",
                str(config),
                "--tasks-dir",
                str(tmp_path / "t"),
                "--work",
                str(tmp_path / "w"),
            ],
        ).exit_code
        == 0
    )
    trained = tmp_path / "t" / "test-cxr" / "1.0.0"
    for method in ("entropy", "tta"):
        result = runner.invoke(
            app,
            [
                "select-for-labelling",
                str(trained),
                str(tmp_path / "data"),
                "--method",
                method,
                "--top",
                "5",
            ],
        )
        assert result.exit_code == 0, result.output
        rows = [line.split(",") for line in result.stdout.strip().splitlines()]
        assert rows[0][:3] == ["rank", "path", f"uncertainty_{method}"] and len(rows) == 6
        scores = [float(row[2]) for row in rows[1:]]
        assert scores == sorted(scores, reverse=True)
    # fine-tuning starts from the trained weights: with a negligible learning rate the
    # learned parameters (not the batch-norm running statistics) stay where they were
    text = config.read_text().replace(
        'version = "1.0.0"', f'version = "1.1.0"\ninit_from = "{trained}"'
    )
    tuned = tmp_path / "tuned.toml"
    tuned.write_text(text.replace("learning_rate = 0.003", "learning_rate = 1e-12"))
    result = runner.invoke(
        app,
        ["train", str(tuned), "--tasks-dir", str(tmp_path / "t"), "--work", str(tmp_path / "w2")],
    )
    assert result.exit_code == 0, result.output
    before = _weights(trained)
    after = _weights(tmp_path / "t" / "test-cxr" / "1.1.0")
    learned = [k for k in before if "running_" not in k and "num_batches" not in k]
    for name in learned:
        torch.testing.assert_close(after[name], before[name], atol=1e-6, rtol=0)
