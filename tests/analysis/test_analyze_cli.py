"""`medsight analyze`: result.json (schema), masks, overlays, provenance, exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medsight.cli import app
from medsight.datasets import repository_root
from medsight.reporting import result_schema
from tests._builders import write_series
from tests._tasks import classifier_task, segmenter_3d_task

runner = CliRunner()
SAMPLE_DICOM = (
    repository_root() / "src" / "medsight" / "samples" / "cxr" / "pneumonia_sample_sc.dcm"
)


def analyze(*args: str):
    return runner.invoke(app, ["analyze", *args])


def load_result(out: Path) -> dict:
    (path,) = out.glob("*/result.json")
    document = json.loads(path.read_text())
    jsonschema.validate(document, result_schema())
    return document


def test_dicom_cxr_with_a_named_task_writes_valid_results(tmp_path):
    task_dir = tmp_path / "task"
    classifier_task(task_dir)
    out = tmp_path / "out"
    result = analyze(str(SAMPLE_DICOM), "--task", str(task_dir), "--out", str(out))
    assert result.exit_code == 0, result.output
    document = load_result(out)
    (analysis,) = document["analyses"]
    assert analysis["state"] == "OK"
    assert analysis["input"]["sop_instance_uids"] == ["1.2.826.0.1.3680043.8.498.1000.3"]
    assert set(analysis["classification"]["probabilities"]) == {"normal", "pneumonia"}
    assert analysis["task"]["selection"]["mode"] == "named"
    study_dir = next(out.glob("*/"))
    for overlay in analysis["overlays"]:
        assert (study_dir / overlay).stat().st_size > 0
    assert "KERMANY" not in json.dumps(document)  # no patient identifiers in result.json
    provenance = [json.loads(line) for line in (out / "provenance.jsonl").read_text().splitlines()]
    assert provenance[0]["task"]["hash"] == analysis["task"]["hash"]
    assert "research use only" in result.output


def test_out_of_range_age_is_needs_review_with_reason(tmp_path):
    classifier_task(
        tmp_path / "task",
        acceptance={
            "spatial_dims": 2,
            "photometric": ["MONOCHROME2"],
            "modalities": ["DX"],
            "age_years": [10, 20],
        },
    )
    out = tmp_path / "out"
    result = analyze(str(SAMPLE_DICOM), "--task", str(tmp_path / "task"), "--out", str(out))
    assert result.exit_code == 0
    (analysis,) = load_result(out)["analyses"]
    assert analysis["state"] == "NEEDS_REVIEW"
    assert any("patient age 3.0 years" in r for r in analysis["review_reasons"])
    assert "NEEDS_REVIEW" in result.output


def test_auto_selection_explains_its_choice_and_refuses_when_nothing_fits(tmp_path):
    classifier_task(tmp_path / "tasks" / "cls")
    out = tmp_path / "out"
    result = analyze(str(SAMPLE_DICOM), "--tasks-dir", str(tmp_path / "tasks"), "--out", str(out))
    assert result.exit_code == 0, result.output
    (analysis,) = load_result(out)["analyses"]
    assert analysis["task"]["selection"]["mode"] == "auto"
    assert any("matched" in r for r in analysis["task"]["selection"]["reasons"])
    write_series(tmp_path / "ct", 3)
    refused = analyze(
        str(tmp_path / "ct"),
        "--tasks-dir",
        str(tmp_path / "tasks"),
        "--out",
        str(tmp_path / "out2"),
    )
    assert refused.exit_code == 2
    assert "no task accepts this image" in refused.output


def test_wrong_input_for_a_named_task_is_refused(tmp_path):
    classifier_task(tmp_path / "task")
    write_series(tmp_path / "ct", 3)
    result = analyze(
        str(tmp_path / "ct"), "--task", str(tmp_path / "task"), "--out", str(tmp_path / "out")
    )
    assert result.exit_code == 2
    assert "image is 3D, the task needs 2D" in result.output


def test_corrupted_weights_exit_3(tmp_path):
    classifier_task(tmp_path / "task")
    weights = tmp_path / "task" / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:-100])
    result = analyze(
        str(SAMPLE_DICOM), "--task", str(tmp_path / "task"), "--out", str(tmp_path / "out")
    )
    assert result.exit_code == 3
    assert "SHA-256" in result.output


def test_batch_with_one_bad_study_is_partial(tmp_path):
    classifier_task(tmp_path / "task")
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(SAMPLE_DICOM, inputs / "good.dcm")
    paths = write_series(inputs / "ct", 3)
    paths[0].write_bytes(paths[0].read_bytes()[:-3000])
    out = tmp_path / "out"
    result = analyze(str(inputs), "--task", str(tmp_path / "task"), "--out", str(out))
    assert result.exit_code == 1, result.output
    documents = [json.loads(p.read_text()) for p in out.glob("*/result.json")]
    assert sorted(len(d["analyses"]) for d in documents) == [0, 1]
    failed = next(d for d in documents if not d["analyses"])
    assert failed["failures"][0]["exit_code"] == 2


def test_nifti_segmentation_mask_keeps_the_input_affine(tmp_path):
    segmenter_3d_task(
        tmp_path / "task",
        acceptance={
            "spatial_dims": 3,
            "photometric": ["MONOCHROME2"],
            "modalities": ["MR"],
            "unknown_modality": "review",
        },
    )
    affine = np.array([[-1.0, 0, 0.1, 20], [0, 1.2, 0, -30], [0, 0, 0.9, 5], [0, 0, 0, 1]])
    volume = np.random.default_rng(0).normal(size=(30, 40, 20)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "mr.nii.gz")
    out = tmp_path / "out"
    result = analyze(
        str(tmp_path / "mr.nii.gz"), "--task", str(tmp_path / "task"), "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    (analysis,) = load_result(out)["analyses"]
    assert analysis["state"] == "NEEDS_REVIEW"  # a NIfTI has no modality
    mask = nib.load(next(out.glob("*/")) / analysis["segmentation"]["label_map"])
    np.testing.assert_allclose(mask.affine, affine, atol=1e-6)
    assert mask.shape == volume.shape


def test_published_schema_matches_the_code():
    published = json.loads((repository_root() / "docs" / "result.schema.json").read_text())
    assert published == result_schema()


@pytest.mark.parametrize("command", [["tasks"], ["export", "no-such-task"]])
def test_task_commands(command):
    result = runner.invoke(app, command)
    if command[0] == "tasks":
        assert result.exit_code == 0 and "cxr-pneumonia" in result.output
    else:
        assert result.exit_code == 2 and "unknown task" in result.output


def test_published_task_schema_matches_the_code():
    from medsight.tasks.spec import TaskSpec

    published = json.loads((repository_root() / "docs" / "task.schema.json").read_text())
    assert published == TaskSpec.model_json_schema()


def test_whole_slide_is_analysed_at_a_level_and_listed_by_info(tmp_path):
    from tests._tasks import segmenter_2d_task
    from tests.io.test_slide import build_slide

    slide = tmp_path / "slide.tif"
    build_slide(slide)
    info = runner.invoke(app, ["info", str(slide), "--json"])
    assert info.exit_code == 0, info.output
    assert json.loads(info.stdout)["images"][0]["size"] == [1536, 1536]
    segmenter_2d_task(tmp_path / "task")
    out = tmp_path / "out"
    result = analyze(
        str(slide), "--task", str(tmp_path / "task"), "--out", str(out), "--level", "2"
    )
    assert result.exit_code == 0, result.output
    (analysis,) = load_result(out)["analyses"]
    assert analysis["input"]["kind"] == "wsi" and analysis["details"]["slide_level"] == 2
    assert analysis["input"]["shape"] == [384, 384]
    mask = next(out.glob("*/masks/*.png"))
    from PIL import Image as PILImage

    assert PILImage.open(mask).size == (384, 384)
