"""`medsight analyze` runs every shipped, trained model on a real case and reports its
findings with measurements in real units."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from medsight.cli import app
from tests._tasks import trained_shipped_task
from tests.conftest import require_data

CASES = {
    # task: (case under ../shared/data, measurement names expected on its findings)
    "fundus-vessels": (
        ("drive", "training", "images", "22_training.tif"),
        {"vessel area fraction", "vessel tortuosity"},
    ),
    "derm-lesion": (
        ("ph2", "images", "IMD063.jpg"),
        {
            "area",
            "long axis diameter",
            "short axis diameter",
            "asymmetry index",
            "border irregularity (compactness)",
        },
    ),
    "derm-melanoma": (("ph2", "images", "IMD063.jpg"), set()),
    "hippocampus-mr": (("hippocampus-mr", "imagesTr", "hippocampus_014.nii.gz"), {"volume"}),
}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("task_id", sorted(CASES))
def test_analyze_runs_the_shipped_model(task_id, tmp_path):
    task = trained_shipped_task(task_id)
    parts, expected = CASES[task_id]
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["analyze", str(require_data(*parts)), "--task", task_id, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    (path,) = out.glob("*/result.json")
    document = json.loads(path.read_text())
    (analysis,) = document["analyses"]
    assert analysis["task"]["id"] == task_id
    findings = analysis["findings"]
    assert findings and all(f["model"]["hash"] == task.task_hash for f in findings)
    measured = {m["name"] for f in findings for m in f["measurements"]}
    assert expected <= measured
    if task_id == "hippocampus-mr":
        volumes = {
            f["name"]: m for f in findings for m in f["measurements"] if m["name"] == "volume"
        }
        assert set(volumes) == {
            "hippocampus_anterior",
            "hippocampus_posterior",
            "hippocampus_total",
        }
        assert all(m["unit"] == "mm3" for m in volumes.values())
        total = volumes["hippocampus_total"]["value"]
        parts_sum = (
            volumes["hippocampus_anterior"]["value"] + volumes["hippocampus_posterior"]["value"]
        )
        assert total == pytest.approx(parts_sum)
        assert 1000 < total < 6000  # one hippocampus, in mm3
    if task_id == "derm-melanoma":
        (finding,) = findings
        assert finding["operating_point"]["name"] == "high_sensitivity"
        assert document["priority"]["level"] in {"URGENT", "NEEDS_REVIEW", "NO_AI_FINDING"}
