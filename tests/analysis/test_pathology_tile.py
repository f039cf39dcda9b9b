"""A histology tile through `medsight analyze` and `medsight evaluate` with the shipped
pathology-nuclei model: the 16-bit instance map, measurements in um2 or in pixels, inputs
the task must not judge, and AJI in the evaluation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from medsight.cli import app
from medsight.datasets import repository_root
from medsight.errors import InvalidInputError
from medsight.image import Image
from medsight.inference.preprocess import to_network_grid
from tests._tasks import trained_shipped_task
from tests.conftest import require_data

runner = CliRunner()


@pytest.fixture(scope="module")
def task():
    return trained_shipped_task("pathology-nuclei")


def _analyse(path: Path, out: Path, *extra: str) -> dict:
    result = runner.invoke(
        app,
        ["analyze", str(path), "--task", "pathology-nuclei", "--out", str(out), *extra],
    )
    assert result.exit_code == 0, result.output
    return json.loads(next(out.glob("*/result.json")).read_text())


@pytest.mark.timeout(120)
def test_tile_gives_a_16_bit_instance_map_and_real_units(task, tmp_path):
    tile = require_data("pathology-gbm40", "raw_image", "07.png")
    document = _analyse(tile, tmp_path / "out", "--mpp", "0.5")
    analysis = document["analyses"][0]
    assert analysis["state"] == "OK"
    segmentation = analysis["segmentation"]
    study = next(p for p in (tmp_path / "out").iterdir() if p.is_dir())
    instances = PILImage.open(study / segmentation["instance_map"])
    pixels = np.asarray(instances)
    assert instances.mode.startswith("I;16") and pixels.shape == (512, 512)
    assert pixels.max() == segmentation["instances"] == len(np.unique(pixels)) - 1
    measured = {m["name"]: m for m in analysis["findings"][0]["measurements"]}
    assert measured["nucleus count"]["value"] == segmentation["instances"]
    assert measured["mean nucleus area"]["unit"] == "um2"
    assert 60 < measured["mean nucleus area"]["value"] < 250
    assert measured["nucleus density"]["unit"] == "/mm2"
    # the rim class is merged into the nuclei: no finding of its own
    assert [f["name"] for f in analysis["findings"]] == ["nucleus"]


@pytest.mark.timeout(120)
def test_tile_without_mpp_is_measured_in_pixels(task, tmp_path):
    tile = require_data("pathology-gbm40", "raw_image", "07.png")
    analysis = _analyse(tile, tmp_path / "out")["analyses"][0]
    units = {m["name"]: m["unit"] for m in analysis["findings"][0]["measurements"]}
    assert units["mean nucleus area"] == "{px2}"
    assert units["nucleus density"] == "{nuclei}/10*6{px2}"
    report = (next((tmp_path / "out").glob("*/report.html"))).read_text()
    assert "research use only" in report.lower()


@pytest.mark.timeout(120)
def test_a_chest_film_is_not_judged(task, tmp_path):
    film = repository_root() / "src" / "medsight" / "samples" / "cxr" / "normal_IM-0115-0001.jpeg"
    analysis = _analyse(film, tmp_path / "out")["analyses"][0]
    assert analysis["state"] == "NEEDS_REVIEW" and analysis["withheld"]
    assert analysis["findings"] == []


@pytest.mark.timeout(120)
def test_a_fundus_photograph_is_not_judged(task, tmp_path):
    photo = require_data("dr-fundus", "images", "Patient156_L.jpg")
    analysis = _analyse(photo, tmp_path / "out")["analyses"][0]
    assert analysis["state"] == "NEEDS_REVIEW" and analysis["withheld"]
    assert any("does not look like" in r for r in analysis["review_reasons"])


def test_a_radiograph_spacing_is_refused_before_any_resampling(task):
    film = Image(
        array=np.zeros((3, 2000, 2000), np.uint8),
        affine=np.diag([0.7, 0.7, 1.0, 1.0]),
        spatial_dims=2,
        photometric_interpretation="RGB",
    )
    with pytest.raises(InvalidInputError, match="would grow the image"):
        to_network_grid(film, task.spec.preprocessing)
    from medsight.gate import InputGate

    checked, _ = InputGate(task).before_model(film)
    assert checked.withheld
    assert "only for 0.0001-0.002 mm" in checked.check("spacing_range").reason


@pytest.mark.timeout(180)
def test_evaluate_reports_aji_and_rechecks_the_claims(task, tmp_path):
    root = require_data("pathology-gbm40")
    manifest = tmp_path / "tiles.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mask"])
        for name in ("03", "17", "29"):
            writer.writerow(
                [
                    root / "raw_image" / f"{name}.png",
                    root / "contour_annotation_xml" / f"{name}_data.xml",
                ]
            )
    out = tmp_path / "evaluation"
    result = runner.invoke(app, ["evaluate", "pathology-nuclei", str(manifest), "--out", str(out)])
    assert result.exit_code == 0, result.output
    evaluation = json.loads((out / "evaluation.json").read_text())
    nucleus = evaluation["summary"]["nucleus"]
    assert 0.5 < nucleus["aji"]["value"] <= 1.0 and 0.7 < nucleus["dice"]["value"] <= 1.0
    assert {c["claim"]["metric"] for c in evaluation["claims"]} >= {"dice", "aji"}
    assert "nucleus_boundary" not in evaluation["summary"]
