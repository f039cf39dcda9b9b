"""The command line as people read it: --version, help that wraps at 80 columns with plain
flags, the input's file name in result.json and the summary, one line naming the tasks for a
photograph given without --task, and segmentation results worded as segmented sizes in the
units people write (never a "calibrated probability" or "vox")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import medsight
from tests.conftest import require_data


def medsight_cli(*args: str, columns: int = 80) -> subprocess.CompletedProcess:
    environment = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run(
        [sys.executable, "-m", "medsight", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
    )


def test_version_and_help_that_fits_80_columns():
    version = medsight_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith(f"medsight {medsight.__version__}")
    assert "research use only" in version.stdout
    for command in ("analyze", "serve", "train", "evaluate", "calibrate", "convert"):
        shown = medsight_cli(command, "--help")
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert all(len(line) <= 80 for line in lines), (command, max(lines, key=len))
        assert "<bool>" not in shown.stdout and "list[" not in shown.stdout
    assert "--tta / --no-tta" in medsight_cli("analyze", "--help").stdout
    bad = medsight_cli("serve", "--http-port", "0")
    assert bad.returncode == 2 and "Invalid value for '--http-port'" in bad.stderr
    assert "╭" not in bad.stderr  # a plain line, not a box cut at the terminal's edge


def test_folder_of_photographs_named_task_file_names_and_wording(tmp_path):
    source = tmp_path / "photos"
    source.mkdir()
    for name in ("IMD004.jpg", "IMD006.jpg"):
        shutil.copy(require_data("ph2", "images", name), source / name)
    out = tmp_path / "out"
    result = medsight_cli("analyze", str(source), "--task", "derm-lesion", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "IMD004.jpg" in result.stdout and "IMD006.jpg" in result.stdout  # not "raster"
    assert "segmented area" in result.stdout and "pixels (no pixel spacing" in result.stdout
    assert " vox" not in result.stdout
    paths = set()
    for document_path in out.glob("*/result.json"):
        (analysis,) = json.loads(document_path.read_text())["analyses"]
        paths.add(analysis["input"]["path"])
        report = (document_path.parent / "report.html").read_text()
        assert "calibrated probability" not in report and "measured" not in report
        assert "segmented" in report and "{px2}" not in report and ">pixels<" in report
    assert paths == {"IMD004.jpg", "IMD006.jpg"}

    alone = medsight_cli("analyze", str(source / "IMD004.jpg"), "--out", str(tmp_path / "o2"))
    assert alone.returncode == 2
    assert "name one with --task" in alone.stdout
    (written,) = (tmp_path / "o2").glob("*/result.json")
    reason = json.dumps(json.loads(written.read_text()))
    assert "for photographs: derm-lesion, derm-melanoma, fundus-dr, fundus-vessels" in reason
    assert "cxr-pneumonia" not in reason  # one line, not a list of five refusals


def test_units_as_people_write_them():
    from medsight.findings.measurements import spoken_measurement, spoken_unit

    assert [spoken_unit(u) for u in ("mL", "mm3", "mm2", "%", "1", "[hnsf'U]")] == [
        "mL",
        "mm³",
        "mm²",
        "%",
        "",
        "HU",
    ]
    assert spoken_measurement(97538.0, "{px2}") == "97,538 pixels (no pixel spacing: not in mm)"
    assert spoken_measurement(1.998, "mL") == "1.998 mL"
    assert spoken_measurement(0.21, "1") == "0.21"
