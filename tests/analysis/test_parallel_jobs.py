"""`medsight analyze --jobs N`: studies in worker processes give what one process gives, and a
worker that dies loses no other study."""

from __future__ import annotations

import json
import os
import shutil
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medsight.analysis import AnalysisOptions, ImageSource, StudyInput, analyze_studies
from medsight.analysis.batch import DIED
from medsight.analysis.inputs import find_studies
from medsight.cli import app
from tests._tasks import segmenter_3d_task

runner = CliRunner()
TASK_ACCEPTANCE = {"spatial_dims": 3, "unknown_modality": "accept"}


def _volumes(folder: Path, count: int) -> None:
    folder.mkdir()
    rng = np.random.default_rng(7)
    affine = np.diag([0.9, 1.1, 1.3, 1.0])
    for number in range(count):
        volume = rng.normal(size=(40 + 4 * number, 36, 30)).astype(np.float32)
        nib.save(nib.Nifti1Image(volume, affine), folder / f"volume{number}.nii.gz")


def _label_maps(out: Path) -> dict[str, np.ndarray]:
    maps = {}
    for result in sorted(out.glob("*/result.json")):
        for analysis in json.loads(result.read_text())["analyses"]:
            path = result.parent / analysis["segmentation"]["label_map"]
            maps[result.parent.name] = np.asarray(nib.load(path).dataobj)
    return maps


@pytest.mark.timeout(600)
def test_two_jobs_write_what_one_job_writes(tmp_path):
    segmenter_3d_task(tmp_path / "task", acceptance=TASK_ACCEPTANCE)
    inputs = tmp_path / "in"
    _volumes(inputs, 3)
    shutil.copy(inputs / "volume0.nii.gz", inputs / "volume0-again.nii.gz")  # the same study
    (inputs / "broken.nii.gz").write_bytes(b"not a NIfTI file")
    outs = {}
    for jobs in (1, 2):
        outs[jobs] = tmp_path / f"out{jobs}"
        task = str(tmp_path / "task")
        arguments = ["analyze", str(inputs), "--task", task, "--out", str(outs[jobs])]
        result = runner.invoke(app, [*arguments, "--jobs", str(jobs)])
        assert result.exit_code == 1, result.output  # partial: the broken file failed alone
        assert "broken.nii.gz" in result.output
    serial, parallel = _label_maps(outs[1]), _label_maps(outs[2])
    assert len(serial) == 3 and serial.keys() == parallel.keys()
    for key in serial:
        np.testing.assert_array_equal(parallel[key], serial[key])
    # the repeated study was analysed twice, one after the other: the second supersedes
    for out in outs.values():
        assert len(list(out.glob("*/history/*/result.json"))) == 1
        lines = (out / "provenance.jsonl").read_text().splitlines()
        assert len(lines) == 4 and all(json.loads(line)["state"] for line in lines)


@pytest.mark.timeout(600)
def test_a_study_that_kills_its_process_fails_alone(tmp_path):
    task_dir = tmp_path / "task"
    segmenter_3d_task(task_dir, acceptance=TASK_ACCEPTANCE)
    _volumes(tmp_path / "in", 2)
    good = find_studies(tmp_path / "in")
    # a study whose loading ends its process, as the kernel's OOM killer would
    deadly = StudyInput(
        key="deadly", label="deadly", images=[ImageSource("dies", "nifti", partial(os._exit, 9))]
    )
    studies = [good[0], deadly, good[1]]
    seen = []
    options = AnalysisOptions(task=str(task_dir))
    outcomes = analyze_studies(studies, tmp_path / "out", options, jobs=2, on_done=seen.append)

    assert [o.key for o in outcomes] == [s.key for s in studies]  # in input order
    assert sorted(o.key for o in seen) == sorted(s.key for s in studies)  # each reported once
    assert outcomes[0].analyses and outcomes[2].analyses
    assert outcomes[1].failed and outcomes[1].exit_code == 70
    document = json.loads((tmp_path / "out" / "deadly" / "result.json").read_text())
    assert document["priority"]["level"] == "NEEDS_REVIEW"
    assert document["failures"][0]["reason"] == DIED
