"""`medsight evaluate` on images the model was developed on says the figures are not
evidence and checks no claim on them; the same pictures in another file format are found,
a new picture is not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from medsight.cli import app
from medsight.evaluation.development import DEVELOPMENT_FILE, write_development_images
from medsight.io import read_image
from tests.conftest import require_data

runner = CliRunner()
SHIPPED = Path(__file__).parents[2] / "src/medsight/tasks/derm-lesion"
NAMES = ["IMD009", "IMD022", "IMD024"]


def _manifest(tmp_path: Path, name: str, rows: list[tuple[Path, Path]]) -> Path:
    path = tmp_path / f"{name}.csv"
    path.write_text("image,mask\n" + "".join(f"{i},{m}\n" for i, m in rows))
    return path


@pytest.mark.timeout(300)
def test_development_images_are_not_evidence(tmp_path):
    ph2 = require_data("ph2")
    tasks = tmp_path / "tasks"
    shutil.copytree(SHIPPED, tasks / "derm-lesion")
    images = [ph2 / "images" / f"{n}.jpg" for n in NAMES]
    masks = [ph2 / "lesion_masks" / f"{n}_lesion.png" for n in NAMES]
    # the version says it was developed on the first two pictures
    write_development_images(tasks / "derm-lesion", images[:2], read_image)
    # the second one as a PNG (another file, the same pixels) and a mirrored copy of it
    # (a new picture)
    same = tmp_path / "same.png"
    PILImage.open(images[1]).save(same)
    mirrored = tmp_path / "mirrored.png"
    mirrored_mask = tmp_path / "mirrored_mask.png"
    PILImage.fromarray(np.asarray(PILImage.open(images[1]))[:, ::-1].copy()).save(mirrored)
    PILImage.fromarray(np.asarray(PILImage.open(masks[1]))[:, ::-1].copy()).save(mirrored_mask)

    def evaluate(name: str, rows: list[tuple[Path, Path]]) -> tuple[object, dict]:
        out = tmp_path / f"out-{name}"
        result = runner.invoke(
            app,
            ["evaluate", "derm-lesion", str(_manifest(tmp_path, name, rows)),
             "--tasks-dir", str(tasks), "--out", str(out)],
        )  # fmt: skip
        return result, json.loads((out / "evaluation.json").read_text())

    seen, numbers = evaluate(
        "seen", [(images[0], masks[0]), (same, masks[1]), (images[2], masks[2])]
    )
    assert seen.exit_code == 0, seen.output
    assert "NOT EVIDENCE" in seen.output and "2 of 3 images" in seen.output
    assert numbers["development_overlap"]["images"] == 2
    assert numbers["development_overlap"]["examples"] == [f"{NAMES[0]}.jpg", "same.png"]
    assert numbers["claims"] and all(c["holds"] is None for c in numbers["claims"])
    assert all("not checked" in c["words"] for c in numbers["claims"])
    page = (tmp_path / "out-seen" / "report.html").read_text()
    assert "Not evidence:" in page and "2 of 3 images" in page

    fresh, numbers = evaluate("fresh", [(mirrored, mirrored_mask), (images[2], masks[2])])
    assert fresh.exit_code in (0, 1), fresh.output  # 1 when a claim fails on two images
    assert "NOT EVIDENCE" not in fresh.output
    assert numbers["development_overlap"] == {"images": 0, "of": 2, "examples": []}
    assert all(c["holds"] is not None for c in numbers["claims"])

    # a task that does not list its development images: nothing can be said, nothing is
    (tasks / "derm-lesion" / DEVELOPMENT_FILE).unlink()
    unknown, numbers = evaluate("unknown", [(images[0], masks[0])])
    assert "NOT EVIDENCE" not in unknown.output and "development_overlap" not in numbers
