"""`medsight analyze` with the shipped cardiac-mr model: an ACDC-style pair is one study
whose result.json holds the ejection fraction (volumes in voxels: that copy has no spacing);
a Sunnybrook DICOM cine gives both phases in mL, the function SR beside the SEGs."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from medsight.cli import app
from medsight.tasks import load_task
from medsight.tasks.registry import shipped_tasks_dir
from tests.conftest import require_data

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def task():
    task = load_task(shipped_tasks_dir() / "cardiac-mr")
    if not task.weights_available:
        pytest.skip("cardiac-mr has no trained weights yet")
    return task


def _analyze(folder, out, *extra):
    result = CliRunner().invoke(
        app, ["analyze", str(folder), "--task", "cardiac-mr", "--out", str(out), *extra]
    )
    return result


def _function(document):
    (finding,) = document["study_findings"]
    assert finding["name"] == "cardiac_function"
    return finding, {(m["name"], m["structure"]): m for m in finding["measurements"]}


def test_an_acdc_pair_is_one_study_with_its_ejection_fraction(task, tmp_path):
    source = require_data("acdc", "val")
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("patient002_ED", "patient002_ES", "patient002_ED_gt"):
        shutil.copy(source / f"{name}.nii.gz", folder)
    result = _analyze(folder, tmp_path / "out")
    assert result.exit_code == 0, result.output
    (path,) = (tmp_path / "out").glob("*/result.json")
    document = json.loads(path.read_text())
    assert [a["input"]["phase"] for a in document["analyses"]] == ["ED", "ES"]
    assert document["input_notes"] == [
        "patient002_ED_gt.nii.gz: a label map (*_gt), not an image: not analysed"
    ]
    finding, measured = _function(document)
    assert finding["phases"]["ED"]["chosen"] == "as the source names them"
    fraction = measured[("ejection fraction", "left_ventricle")]
    assert fraction["unit"] == "%" and 20.0 < fraction["value"] < 85.0
    assert measured[("end-diastolic volume", "left_ventricle")]["unit"] == "{voxel}"
    assert any("spacing unknown" in reason for reason in finding["not_given"])
    report = (path.parent / "report.html").read_text()
    assert "Finding of left ventricular function" in report and "ejection fraction" in report


def test_a_sunnybrook_cine_gives_millilitres_and_a_function_sr(task, tmp_path):
    import pydicom

    folder = require_data("sunnybrook-cine", "dicoms", "SCD0000101")
    result = _analyze(folder, tmp_path / "out", "--outputs", "json,html,seg,sr")
    assert result.exit_code == 0, result.output
    (path,) = (tmp_path / "out").glob("*/result.json")
    document = json.loads(path.read_text())
    assert len(document["analyses"]) == 2  # the two contoured phases
    finding, measured = _function(document)
    assert (
        finding["phases"]["ED"]["chosen"] == "the phases of largest and smallest LV cavity volume"
    )
    edv = measured[("end-diastolic volume", "left_ventricle")]
    assert edv["unit"] == "mL" and 100.0 < edv["value"] < 400.0
    assert measured[("myocardial mass", "left_ventricle_myocardium")]["unit"] == "g"
    (sr_name,) = finding["dicom_outputs"]
    sr = pydicom.dcmread(path.parent / sr_name)
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    phases = {uid for a in document["analyses"] for uid in a["input"]["sop_instance_uids"]}
    assert phases <= evidence  # both phases are the SR's evidence
    assert "research use only" in sr.SeriesDescription
