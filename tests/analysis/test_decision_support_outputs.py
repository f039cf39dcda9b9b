"""`medsight analyze --outputs ...`: findings, priority, DICOM SR/SC/SEG beside result.json,
the HTML report, re-rendering, withdrawal and superseding results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from medsight.cli import app
from medsight.reporting import validate_result

SAMPLES = Path(__file__).parents[2] / "src/medsight/samples/cxr"
runner = CliRunner()


def only_result(out: Path) -> tuple[Path, dict]:
    (path,) = out.glob("*/result.json")
    document = json.loads(path.read_text())
    validate_result(document)
    return path.parent, document


@pytest.mark.timeout(300)
def test_dicom_cxr_gets_findings_priority_sr_sc_and_a_report(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    shutil.copy(SAMPLES / "pneumonia_sample_sc.dcm", source)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "analyze",
            str(source),
            "--task",
            "cxr-pneumonia",
            "--out",
            str(out),
            "--outputs",
            "seg,sr,sc,json,html",
        ],
    )
    assert result.exit_code == 0, result.output
    folder, document = only_result(out)
    (analysis,) = document["analyses"]
    (finding,) = analysis["findings"]
    assert finding["model"]["id"] == "cxr-pneumonia"
    assert finding["operating_point"]["name"] == "high_sensitivity"
    assert finding["flag"] == (finding["probability"] >= finding["operating_point"]["threshold"])
    expected = "URGENT" if finding["flag"] else "NO_AI_FINDING"
    assert document["priority"]["level"] == expected
    assert "identifiers" not in document  # pseudonymous unless asked
    names = sorted(Path(p).name.rsplit("_", 1)[1] for p in analysis["dicom_outputs"])
    assert names == ["sc.dcm", "sr.dcm"]  # a classifier has no SEG
    for relative in analysis["dicom_outputs"]:
        written = pydicom.dcmread(folder / relative)
        assert (
            written.StudyInstanceUID
            == pydicom.dcmread(
                SAMPLES / "pneumonia_sample_sc.dcm", stop_before_pixels=True
            ).StudyInstanceUID
        )
    page = (folder / "report.html").read_text()
    assert "Research use only, not for diagnostic use." in page
    assert "No AI finding is not a negative read." in page
    assert "Study key" in page and expected in page


@pytest.mark.timeout(300)
def test_non_dicom_input_still_gets_json_and_html(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "analyze",
            str(SAMPLES / "normal_IM-0115-0001.jpeg"),
            "--task",
            "cxr-pneumonia",
            "--out",
            str(out),
            "--outputs",
            "sr,sc,html",
            "--include-identifiers",
        ],
    )
    assert result.exit_code == 0, result.output
    folder, document = only_result(out)
    (analysis,) = document["analyses"]
    assert analysis["dicom_outputs"] == []
    assert all("not DICOM" in note for note in analysis["output_notes"])
    assert document["priority"]["level"] == "NEEDS_REVIEW"  # modality unknown: never silent
    assert (folder / "report.html").is_file()


@pytest.mark.timeout(300)
def test_report_rerenders_withdraws_and_reanalysis_supersedes(tmp_path):
    out = tmp_path / "out"
    image = str(SAMPLES / "pneumonia_person1000_bacteria_2931.jpeg")
    assert (
        runner.invoke(
            app, ["analyze", image, "--task", "cxr-pneumonia", "--out", str(out)]
        ).exit_code
        == 0
    )
    folder, first = only_result(out)
    (folder / "report.html").unlink()
    rendered = runner.invoke(app, ["report", str(out)])
    assert rendered.exit_code == 0, rendered.output
    assert (folder / "report.html").is_file()

    withdrawn = runner.invoke(app, ["report", str(folder), "--withdraw", "wrong patient"])
    assert withdrawn.exit_code == 0, withdrawn.output
    _, document = only_result(out)
    assert document["status"] == "withdrawn" and document["withdrawn_reason"] == "wrong patient"
    assert "WITHDRAWN" in (folder / "report.html").read_text()

    # a new task version supersedes the earlier result, which is kept in history/
    from tests._tasks import classifier_task

    classifier_task(
        tmp_path / "other",
        acceptance={"spatial_dims": 2, "modalities": ["DX"], "unknown_modality": "review"},
        preprocessing={"resize": [32, 32], "normalize": "unit"},
    )
    again = runner.invoke(
        app, ["analyze", image, "--task", str(tmp_path / "other"), "--out", str(out)]
    )
    assert again.exit_code == 0, again.output
    _, latest = only_result(out)
    assert latest["supersedes"] == first["result_id"] != latest["result_id"]
    kept = folder / "history" / first["result_id"] / "result.json"
    assert json.loads(kept.read_text())["status"] == "withdrawn"


def test_unknown_output_kind_is_refused(tmp_path):
    result = runner.invoke(
        app, ["analyze", str(SAMPLES), "--task", "cxr-pneumonia", "--outputs", "pdf"]
    )
    assert result.exit_code == 2 and "unknown output" in result.output


@pytest.mark.timeout(300)
def test_a_superseding_sr_references_the_sr_it_replaces(tmp_path):
    from tests._tasks import classifier_task

    source = tmp_path / "in"
    source.mkdir()
    shutil.copy(SAMPLES / "pneumonia_sample_sc.dcm", source)
    out = tmp_path / "out"
    first = runner.invoke(
        app,
        ["analyze", str(source), "--task", "cxr-pneumonia", "--out", str(out), "--outputs", "sr"],
    )
    assert first.exit_code == 0, first.output
    folder, _ = only_result(out)
    (old_sr,) = (folder / "dicom").glob("*_sr.dcm")
    old_uid = pydicom.dcmread(old_sr).SOPInstanceUID
    classifier_task(
        tmp_path / "v2",
        acceptance={"spatial_dims": 2, "modalities": ["DX"], "unknown_modality": "review"},
        preprocessing={"resize": [32, 32], "normalize": "unit"},
    )
    second = runner.invoke(
        app,
        [
            "analyze",
            str(source),
            "--task",
            str(tmp_path / "v2"),
            "--out",
            str(out),
            "--outputs",
            "sr",
        ],
    )
    assert second.exit_code == 0, second.output
    (new_sr,) = (folder / "dicom").glob("*_sr.dcm")
    new = pydicom.dcmread(new_sr)
    assert new.SOPInstanceUID != old_uid
    predecessors = {
        item.ReferencedSOPInstanceUID
        for study in new.PredecessorDocumentsSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert predecessors == {old_uid}


@pytest.mark.timeout(300)
def test_site_routing_rules_choose_the_task_and_say_why(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    shutil.copy(SAMPLES / "pneumonia_sample_sc.dcm", source)
    rules = tmp_path / "rules.toml"
    rules.write_text(
        'version = "site-A 2026-11"\n'
        '[[rules]]\ntask = "cxr-pneumonia"\nmodalities = ["CT"]\n'  # does not apply
        '[[rules]]\ntask = "cxr-pneumonia"\nmodalities = ["DX", "CR"]\nspatial_dims = 2\n'
    )
    out = tmp_path / "out"
    result = runner.invoke(app, ["analyze", str(source), "--out", str(out), "--rules", str(rules)])
    assert result.exit_code == 0, result.output
    _, document = only_result(out)
    selection = document["analyses"][0]["task"]["selection"]
    assert selection["mode"] == "auto"
    assert selection["reasons"][0] == "site routing rules version site-A 2026-11"

    rules.write_text(
        'version = "site-A 2026-12"\n[[rules]]\ntask = "cxr-pneumonia"\n'
        'sop_classes = ["1.2.840.10008.5.1.4.1.1.2"]\n'
    )  # CT only: no match
    refused = runner.invoke(
        app, ["analyze", str(source), "--out", str(tmp_path / "o2"), "--rules", str(rules)]
    )
    assert refused.exit_code == 2 and "SOP class" in refused.output
    rules.write_text("[[rules]]\n")
    bad = runner.invoke(app, ["analyze", str(source), "--rules", str(rules)])
    assert bad.exit_code == 3 and "invalid routing rules" in bad.output
