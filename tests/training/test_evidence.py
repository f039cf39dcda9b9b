"""Evidence that holds outside the lab, on built images: group-held-out training, the card's
claims re-checked by `medsight evaluate`, and site calibration with `medsight calibrate`."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from medsight.cli import app
from medsight.tasks import load_task
from tests._tasks import classifier_task

runner = CliRunner()


def build(
    root: Path,
    batch: str,
    per_class: int,
    *,
    seed: int,
    artifact: bool = False,
    shift: bool = False,
    classes: tuple[str, ...] = ("NORMAL", "PNEUMONIA"),
) -> None:
    """A smooth body with noise (normal); a bright disc inside it (pneumonia), 2 images a
    patient. ``artifact``: normals carry a bright disc in a corner (a burnt-in marker).
    ``shift``: another site, gamma 0.5 and half the resolution."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    body = 30 + 80 * np.exp(-((yy - 32) ** 2 + (xx - 32) ** 2) / (2 * 16**2))
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = body + rng.normal(0, 8, (64, 64))
            if label:
                cy, cx = rng.integers(22, 42, 2)
                pixels[(yy - cy) ** 2 + (xx - cx) ** 2 < 64] += 110
            elif artifact:
                pixels[(yy - 5) ** 2 + (xx - 5) ** 2 < 36] += 160
            if shift:
                pixels = 255 * (np.clip(pixels, 0, 255) / 255) ** 0.5
            image = PILImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            if shift:
                image = image.resize((32, 32), PILImage.BILINEAR).resize((64, 64))
            image.save(root / name / f"{batch}{label}x{index // 2}_{index}.png")


def recipe(tmp_path: Path, data: Path, *, groups: str) -> Path:
    classifier_task(
        tmp_path / "base",
        acceptance={"spatial_dims": 2, "modalities": ["DX"], "unknown_modality": "review"},
        preprocessing={"resize": [32, 32], "normalize": "unit", "batch_size": 8},
    )
    path = tmp_path / "recipe.toml"
    path.write_text(f'''
base_task = "{tmp_path / "base"}"
version = "1.0.0"
data_source = "built test images"
[data]
root = "{data}"
classes = ["NORMAL", "PNEUMONIA"]
patient_pattern = "^([ab]\\\\d+x\\\\d+)_"
suffixes = [".png"]
[split]
validation_fraction = 0.25
groups_note = "two built acquisition batches"
{groups}
[train]
epochs = 4
batch_size = 8
learning_rate = 0.003
threads = 1
''')
    return path


GROUPS = """
[[split.groups]]
name = "batch-a"
pattern = '^a'
[[split.groups]]
name = "batch-b"
pattern = '^b'
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classifier trained with group-held-out validation (two batches)."""
    tmp_path = tmp_path_factory.mktemp("evidence")
    build(tmp_path / "data", "a", 40, seed=1)
    build(tmp_path / "data", "b", 40, seed=2)
    config = recipe(tmp_path, tmp_path / "data", groups=GROUPS)
    result = runner.invoke(
        app,
        [
            "train",
            str(config),
            "--tasks-dir",
            str(tmp_path / "tasks"),
            "--work",
            str(tmp_path / "w"),
        ],
    )
    assert result.exit_code == 0, result.output
    return tmp_path


@pytest.mark.timeout(600)
def test_group_held_out_training_locks_on_held_out_predictions(trained):
    folder = trained / "tasks" / "test-cxr" / "1.0.0"
    task = load_task(folder)
    point = task.spec.operating_points["high_sensitivity"]
    assert point.target_sensitivity == 0.95
    metrics = json.loads((folder / "training_record.json").read_text())["metrics"]
    assert metrics["held_out_kind"] == "group" and metrics["held_out"]["cases"] == 160
    assert metrics["evidence"].startswith("group-held-out: each of the groups batch-a (80 images)")
    # each group's model chose its epoch on its own training part: its internal predictions
    # cover a quarter of the other batch's patients, never the held-out batch
    for name in ("batch-a", "batch-b"):
        with np.load(trained / "w" / f"group-{name}" / "held_out.npz") as saved:
            assert len(saved["held_out"]) == 80 and len(saved["internal"]) == 20
    card = (folder / "MODEL_CARD.md").read_text()
    assert "| figure (95% CI) | internal: random patient split | group-held-out |" in card
    assert "what the groups simulate: two built acquisition batches" in card
    assert metrics["training_seconds"] > 0 and "- training time (epochs only, all folds): " in card
    claims = {(c.metric, c.operating_point) for c in task.spec.claims}
    assert claims == {
        ("roc_auc", None),
        ("sensitivity", "high_sensitivity"),
        ("specificity", "high_sensitivity"),
        ("ece", None),
    }
    specificity = next(c for c in task.spec.claims if c.metric == "specificity")
    assert specificity.value == pytest.approx(metrics["held_out"]["specificity"]["value"], abs=1e-4)


@pytest.mark.timeout(300)
def test_a_case_in_no_group_or_a_patient_in_two_is_refused(tmp_path):
    build(tmp_path / "data", "a", 6, seed=1)
    build(tmp_path / "data", "b", 6, seed=2)
    only_a = "[[split.groups]]\nname = \"batch-a\"\npattern = '^a'\n"
    config = recipe(tmp_path, tmp_path / "data", groups=only_a)
    result = runner.invoke(
        app,
        ["train", str(config), "--tasks-dir", str(tmp_path / "t"), "--work", str(tmp_path / "w")],
    )
    assert result.exit_code == 2
    assert "12 case(s) in no group of the group rules: b0x0_0.png" in result.output
    by_index = "[[split.groups]]\nname = \"even\"\npattern = '_\\d*[02468][.]'\n"
    by_index += "[[split.groups]]\nname = \"odd\"\npattern = '_'\n"
    config = recipe(tmp_path, tmp_path / "data", groups=by_index)
    result = runner.invoke(
        app,
        ["train", str(config), "--tasks-dir", str(tmp_path / "t"), "--work", str(tmp_path / "w")],
    )
    assert result.exit_code == 2 and "patient(s) in two groups: patient 'a0x0'" in result.output


@pytest.mark.timeout(300)
def test_evaluate_says_the_specificity_claim_fails_and_the_sensitivity_claim_holds(
    trained, tmp_path
):
    # the new site burns a bright marker into the corner of its normal films
    build(tmp_path / "site", "a", 60, seed=5, artifact=True)
    out = tmp_path / "evaluation"
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(trained / "tasks" / "test-cxr" / "1.0.0"),
            str(tmp_path / "site"),
            "--classes",
            "NORMAL,PNEUMONIA",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 1, result.output
    claims = {
        c["claim"]["metric"]: c for c in json.loads((out / "evaluation.json").read_text())["claims"]
    }
    assert claims["specificity"]["holds"] is False and claims["sensitivity"]["holds"] is True
    words = " ".join(result.output.split())
    assert "specificity at high_sensitivity" in words and "FAILS" in claims["specificity"]["words"]
    assert claims["specificity"]["words"] in words and claims["sensitivity"]["words"] in words
    page = (out / "report.html").read_text()
    assert claims["specificity"]["words"] in page.replace("&#x27;", "'")
    assert "<h2>Subgroups</h2>" not in page  # nothing to show: the section is left out
    # where the model looks: the false flags sit on the corner marker, in the border band
    assert "Where the model looks" in page and "wrongly flagged" in page


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.timeout(600)
def test_calibrate_reaches_the_target_on_the_site_and_leaves_the_original_untouched(
    trained, tmp_path
):
    original = trained / "tasks" / "test-cxr" / "1.0.0"
    before = _digest(original)
    build(tmp_path / "site", "a", 170, seed=7, shift=True, classes=("normal", "pneumonia"))
    build(tmp_path / "check", "b", 170, seed=8, shift=True, classes=("normal", "pneumonia"))
    tasks = tmp_path / "tasks"
    result = runner.invoke(
        app,
        [
            "calibrate",
            str(original),
            str(tmp_path / "site"),
            "--site",
            "clinic-b",
            "--target-sensitivity",
            "0.95",
            "--tasks-dir",
            str(tasks),
        ],
    )
    assert result.exit_code == 0, result.output
    calibrated = load_task(tasks / "test-cxr" / "1.0.0+site.clinic-b")
    assert calibrated.version == "1.0.0+site.clinic-b"
    assert _digest(original) == before  # the original's files, hence its hash, unchanged
    assert calibrated.task_hash != load_task(original).task_hash
    assert "## Site calibration: clinic-b" in (calibrated.folder / "MODEL_CARD.md").read_text()
    document = tomllib.loads((calibrated.folder / "task.toml").read_text())
    assert document["operating_points"]["high_sensitivity"]["target_sensitivity"] == 0.95
    out = tmp_path / "evaluation"
    checked = runner.invoke(
        app,
        [
            "evaluate",
            str(calibrated.folder),
            str(tmp_path / "check"),
            "--classes",
            "normal,pneumonia",
            "--out",
            str(out),
        ],
    )
    point = json.loads((out / "evaluation.json").read_text())["operating_points"]
    assert point["high_sensitivity"]["holds"], checked.output


@pytest.mark.timeout(300)
def test_calibrate_refuses_bad_site_data_and_writes_nothing(trained, tmp_path):
    original = str(trained / "tasks" / "test-cxr" / "1.0.0")
    tasks = tmp_path / "tasks"

    def calibrate(data: Path, *extra: str):
        return runner.invoke(
            app,
            ["calibrate", original, str(data), "--site", "x", "--tasks-dir", str(tasks), *extra],
        )

    # site images of their own (seed 1 drew the training images: refused, below)
    build(tmp_path / "one", "a", 10, seed=11, classes=("normal",))
    result = calibrate(tmp_path / "one")
    assert result.exit_code == 2 and "one class only" in result.output
    build(tmp_path / "few", "a", 20, seed=11, classes=("normal", "pneumonia"))
    result = calibrate(tmp_path / "few")
    assert result.exit_code == 1
    assert "20 pneumonia image(s) cannot demonstrate sensitivity 0.95" in " ".join(
        result.output.split()
    )
    build(tmp_path / "odd", "a", 4, seed=11, classes=("normal", "pneumonia", "cat"))
    result = calibrate(tmp_path / "odd")
    assert result.exit_code == 2 and "folder(s) ['cat'] are not the task's outputs" in result.output
    build(tmp_path / "blank", "a", 80, seed=11, classes=("normal", "pneumonia"))
    PILImage.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "blank" / "normal" / "z.png")
    result = calibrate(tmp_path / "blank")
    assert result.exit_code == 2
    assert "1 site image(s) the input gate withholds: z.png" in " ".join(result.output.split())
    build(tmp_path / "seen", "a", 80, seed=1, classes=("normal", "pneumonia"))
    result = calibrate(tmp_path / "seen")
    assert result.exit_code == 2
    assert "40 of 160 site images are among the images test-cxr 1.0.0 was developed on" in (
        " ".join(result.output.split())
    )
    result = calibrate(tmp_path / "blank", "--target-sensitivity", "1.5")
    assert result.exit_code == 2 and "outside [0.5, 1)" in result.output
    assert not tasks.exists() or not any(tasks.rglob("task.toml"))


@pytest.mark.timeout(600)
def test_fold_models_ship_as_one_averaged_ensemble_on_both_backends(tmp_path):
    import torch

    from medsight.inference import Predictor
    from medsight.inference.backends import TorchBackend
    from medsight.inference.predictor import network_input
    from medsight.io import read_image

    build(tmp_path / "data", "a", 12, seed=1)
    build(tmp_path / "data", "b", 12, seed=2)
    config = recipe(tmp_path, tmp_path / "data", groups=GROUPS + 'ship = "ensemble"\n')
    text = config.read_text().replace('\nship = "ensemble"\n', "\n")
    config.write_text(text.replace("[split]\n", '[split]\nship = "ensemble"\n'))
    result = runner.invoke(
        app,
        ["train", str(config), "--tasks-dir", str(tmp_path / "t"), "--work", str(tmp_path / "w")],
    )
    assert result.exit_code == 0, result.output
    task = load_task(tmp_path / "t" / "test-cxr" / "1.0.0")
    assert task.spec.ensemble == ["main-1", "main-2"] and len(task.spec.networks) == 2
    assert "ensemble of the 2 fold models" in (task.folder / "MODEL_CARD.md").read_text()
    image = read_image(next((tmp_path / "data" / "PNEUMONIA").iterdir()))
    values = torch.from_numpy(network_input(image, task.spec.display, task.spec.preprocessing)[1])
    with torch.no_grad():
        members = [TorchBackend(task, i)(values[None])[0].numpy() for i in range(2)]
    assert not np.allclose(members[0], members[1])  # two different models
    expected = np.mean(members, axis=0)
    for backend in ("torch", "onnxruntime"):
        prediction = Predictor(task, backend=backend, explain=False).predict(image)
        np.testing.assert_allclose(prediction.logits, expected, atol=1e-4)
        assert prediction.features is not None


@pytest.mark.timeout(300)
def test_evaluate_reports_heatmap_mass_outside_a_body_mask(trained, tmp_path):
    build(tmp_path / "site", "a", 10, seed=9, artifact=True)
    yy, xx = np.mgrid[:64, :64]
    body = ((yy - 32) ** 2 + (xx - 32) ** 2 < 24**2).astype(np.uint8) * 255
    PILImage.fromarray(body).save(tmp_path / "body.png")
    rows = ["image,label,roi"]
    for label in ("NORMAL", "PNEUMONIA"):
        for path in sorted((tmp_path / "site" / label).iterdir()):
            rows.append(f"{path},{label},{tmp_path / 'body.png'}")
    (tmp_path / "cases.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "evaluation"
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(trained / "tasks" / "test-cxr" / "1.0.0"),
            str(tmp_path / "cases.csv"),
            "--classes",
            "NORMAL,PNEUMONIA",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code in (0, 1), result.output
    attention = json.loads((out / "evaluation.json").read_text())["attention"]
    assert attention["cases"] == 20 and 0 <= attention["outside_body"]["mean"] <= 1
    outcomes = attention["by_outcome"]
    assert set(outcomes) <= {"true_positive", "false_positive", "false_negative", "true_negative"}
    assert sum(summary["cases"] for summary in outcomes.values()) == 20
    assert "Outside the body mask" in (out / "report.html").read_text()


def test_a_target_missed_below_the_third_decimal_is_shown_at_the_fourth() -> None:
    from medsight.training.segmenter import _target_lines

    def summary(value: float) -> dict[str, Any]:
        return {"lesion": {"dice": {"value": value, "low": value - 0.01, "high": value + 0.01}}}

    (line,) = _target_lines({"dice": 0.93}, summary(0.92995))[2:]
    assert "**missed** by 0.0001 (0.9299; 0.930 (0.920-0.940))" in line
    (line,) = _target_lines({"dice": 0.93}, summary(0.925))[2:]
    assert "**missed** by 0.005 (0.925 (0.915-0.935))" in line
    (line,) = _target_lines({"dice": 0.93}, summary(0.9301))[2:]
    assert line.endswith("reached (0.930 (0.920-0.940))")
