"""`medsight calibrate` on real chest films: a "site" made of the shipped recipe's held-back
patients (never seen by training, the gate fit or any choice) with a known acquisition change
(darker mid-tones, 0.6 of the resolution, more noise). Calibrated on half of those patients,
the locked point reaches its target on the other half; the original version is untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from medsight.cli import app
from medsight.datasets import repository_root
from medsight.tasks import load_named_task, load_task
from medsight.training import list_cases, load_config
from medsight.training.data import split_holdback
from tests.conftest import require_data

RECIPE = repository_root() / "recipes" / "cxr-pneumonia.toml"


def _site(cases: list, root: Path) -> None:
    """The films as another site would send them: gamma 1.6, 0.6 of the resolution (134 px,
    above the task's 128 px minimum), noise."""
    rng = np.random.default_rng(0)
    for case in cases:
        folder = root / ("pneumonia" if case.label == 1 else "normal")
        folder.mkdir(parents=True, exist_ok=True)
        grey = np.asarray(PILImage.open(case.path).convert("L"), dtype=np.float64) / 255
        shifted = PILImage.fromarray(np.uint8(255 * grey**1.6))
        size = (round(shifted.width * 0.6), round(shifted.height * 0.6))
        small = shifted.resize(size, PILImage.BILINEAR)
        noisy = np.asarray(small, dtype=np.float64) + rng.normal(0, 4, (small.height, small.width))
        PILImage.fromarray(np.uint8(np.clip(noisy, 0, 255))).save(folder / f"{case.path.stem}.png")


def _digest(folder: Path) -> str:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()


@pytest.mark.timeout(900)
def test_calibrated_point_reaches_its_target_at_a_shifted_site(tmp_path):
    require_data("kermany-cxr")
    config = load_config(RECIPE)
    _, held_back = split_holdback(list_cases(config.data), config.split)
    patients = sorted({c.patient for c in held_back})
    first = set(patients[::2])
    _site([c for c in held_back if c.patient in first], tmp_path / "site")
    _site([c for c in held_back if c.patient not in first], tmp_path / "check")
    shipped = load_named_task("cxr-pneumonia")
    before = (_digest(shipped.folder), shipped.task_hash)
    tasks = tmp_path / "tasks"
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "calibrate",
            "cxr-pneumonia",
            str(tmp_path / "site"),
            "--site",
            "shifted",
            "--patient-pattern",
            r"^(person\d+|NORMAL2-IM-\d+|IM-\d+)",
            "--tasks-dir",
            str(tasks),
        ],
    )
    assert result.exit_code == 0, result.output
    version = f"{shipped.version}+site.shifted"
    calibrated = load_task(tasks / "cxr-pneumonia" / version)
    assert (_digest(shipped.folder), load_named_task("cxr-pneumonia").task_hash) == before
    out = tmp_path / "evaluation"
    runner.invoke(
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
    assert point["high_sensitivity"]["holds"], point
