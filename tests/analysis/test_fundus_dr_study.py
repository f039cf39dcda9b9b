"""The shipped `fundus-dr` task on real photographs (``../shared/data/dr-fundus``, academic use:
read from there, never copied): a two-eye patient through `analyze --manifest`, the triage
its flags give, and the gradability gate on photographs made ungradable (blurred,
underexposed) or that show no fundus at all."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageFilter
from typer.testing import CliRunner

from medsight.cli import app
from medsight.datasets import repository_root
from tests._tasks import trained_shipped_task
from tests.conftest import require_data

#: grade 2 (moderate NPDR, referable) in the left eye, no DR in the right
PATIENT = "Patient156"


@pytest.fixture(scope="module")
def task():
    return trained_shipped_task("fundus-dr")


def analyse(tmp_path, photos: dict[str, PILImage.Image | str]) -> tuple[dict, str]:
    """Analyse photographs (side -> image) as one patient's study through a manifest."""
    folder = tmp_path / "photos"
    folder.mkdir()
    lines = ["image,study,patient,laterality"]
    for side, photo in photos.items():
        path = folder / f"eye_{side}.jpg"
        if isinstance(photo, str):
            path = require_data(*photo.split("/"))
        else:
            photo.save(path, quality=95)
        lines.append(f"{path},visit-1,P1,{side}")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["analyze", "--manifest", str(manifest), "--task", "fundus-dr", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    (path,) = out.glob("*/result.json")
    return json.loads(path.read_text()), (path.parent / "report.html").read_text()


def eye(side: str) -> str:
    return f"dr-fundus/images/{PATIENT}_{side}.jpg"


@pytest.mark.timeout(300)
def test_a_patient_is_the_worse_eye_and_the_flags_set_the_priority(tmp_path, task):
    document, report = analyse(tmp_path, {"R": eye("R"), "L": eye("L")})
    (patient,) = document["study_findings"]
    by_side = {a["input"]["laterality"]: a for a in document["analyses"]}
    for output, value in patient["probabilities"].items():
        eyes = [by_side[s]["classification"]["probabilities"][output] for s in ("R", "L")]
        assert value["value"] == pytest.approx(max(eyes))
    flags = patient["flags"]
    assert set(flags) == {"high_sensitivity", "severe"}
    for name, flag in flags.items():
        point = task.spec.operating_points[name]
        assert flag["threshold"] == point.threshold
        if "implied_by" not in flag:
            assert flag["flag"] == (flag["probability"] >= point.threshold)
    # triage: severe -> URGENT, referable -> ROUTINE, otherwise no AI finding (never "normal")
    expected = (
        "URGENT"
        if flags["severe"]["flag"]
        else "ROUTINE"
        if flags["high_sensitivity"]["flag"]
        else "NO_AI_FINDING"
    )
    assert document["priority"]["level"] == expected
    assert patient["grades"]["dr_grade"]["grade"] in range(5)
    assert "research use only" in report.lower()
    if expected == "NO_AI_FINDING":
        assert "not a negative read" in report
    assert report.index("right eye") < report.index("left eye")


def underexposed(photo: PILImage.Image) -> PILImage.Image:
    return PILImage.fromarray((np.asarray(photo, dtype=np.float32) * 0.12).astype(np.uint8))


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("spoil", "check"),
    [
        (lambda photo: photo.filter(ImageFilter.GaussianBlur(10)), "focus"),
        (underexposed, "under-exposed"),
    ],
    ids=["blurred", "underexposed"],
)
def test_a_spoilt_photograph_is_ungradable_and_the_patient_needs_review(
    tmp_path, task, spoil, check
):
    spoilt = spoil(PILImage.open(require_data(*eye("R").split("/"))).convert("RGB"))
    document, _ = analyse(tmp_path, {"R": spoilt, "L": eye("L")})
    (patient,) = document["study_findings"]
    assert patient["sides"]["R"]["gradable"] == []
    reasons = patient["sides"]["R"]["ungradable_reasons"]
    assert any(check in r for r in reasons), reasons
    (right,) = [a for a in document["analyses"] if a["input"]["laterality"] == "R"]
    assert right["gate"]["decision"] == "withhold"
    assert right["classification"]["audit_only"] is True and not right["findings"]
    if not patient["flags"]["high_sensitivity"]["flag"]:  # no referral from the left eye
        assert document["priority"]["level"] == "NEEDS_REVIEW"
        assert any("insufficient image quality" in r for r in document["priority"]["reasons"])


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "image",
    ["ph2/images/IMD004.jpg", "samples/cxr/normal_IM-0115-0001.jpeg"],
    ids=["skin-photograph", "chest-radiograph"],
)
def test_an_image_with_no_fundus_is_withheld(tmp_path, task, image):
    shipped = repository_root() / "src" / "medsight" / image
    path = shipped if shipped.exists() else require_data(*image.split("/"))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["analyze", str(path), "--task", "fundus-dr", "--out", str(out), "--outputs", "json"]
    )
    assert result.exit_code == 0, result.output
    (document,) = [json.loads(p.read_text()) for p in out.glob("*/result.json")]
    (analysis,) = document["analyses"]
    assert analysis["gate"]["decision"] == "withhold", analysis["gate"]
    assert document["priority"]["level"] == "NEEDS_REVIEW"
