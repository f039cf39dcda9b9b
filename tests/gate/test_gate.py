"""The input gate: tags, pixels, photographs and the fitted OOD score, and what a withheld
answer does to result.json and the priority."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image as PILImage

from medsight.errors import ModelLoadError, TaskDefinitionError
from medsight.findings import Finding, triage
from medsight.findings.measurements import Measurement
from medsight.gate import InputGate, dicom_date, patient_age
from medsight.image import Identifiers, Image
from medsight.io.dicom._header import projection_spacing
from medsight.tasks import load_named_task, load_task
from medsight.tasks.spec import MeasurementFlag
from tests._tasks import classifier_task

pytestmark = pytest.mark.timeout(300)


def _radiograph(array: np.ndarray | None = None, **metadata: object) -> Image:
    if array is None:  # smooth, structured content
        i, j = np.mgrid[0:200, 0:180]
        array = (2000 + 1500 * np.sin(i / 17.0) * np.cos(j / 23.0)).astype(np.uint16)[None]
    return Image(
        array,
        np.diag([0.2, 0.2, 1, 1]),
        2,
        modality="DX",
        identifiers=Identifiers(study_date=str(metadata.pop("StudyDate", "")) or None),
        metadata={"BitsStored": 12, "BodyPartExamined": "CHEST", "ViewPosition": "PA", **metadata},
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20040102", (2004, 1, 2)),
        ("00000000", None),
        ("20120000", None),
        ("", None),
        ("2004", None),
    ],
)
def test_invalid_dates_are_unknown_never_an_error(value, expected):
    found = dicom_date(value)
    assert (found.timetuple()[:3] if found else None) == expected


def test_age_comes_from_birth_and_study_dates_when_patient_age_is_absent():
    age, source = patient_age(_radiograph(PatientBirthDate="19400315", StudyDate="20040510"))
    assert age == pytest.approx(64.15, abs=0.01) and "PatientBirthDate" in source
    age, source = patient_age(_radiograph(PatientBirthDate="00000000", StudyDate="20040510"))
    assert age is None and "no valid PatientBirthDate" in source


def test_zero_pixel_spacing_is_unknown_spacing():
    from pydicom import Dataset

    dataset = Dataset()
    dataset.PixelSpacing = [0, 0]
    assert projection_spacing(dataset) == (None, None)
    dataset.PixelSpacing = [0.1, -0.1]
    assert projection_spacing(dataset) == (None, None)
    dataset.PixelSpacing = [0.2, 0.2]
    assert projection_spacing(dataset)[0] == (0.2, 0.2)


def test_an_adult_on_the_paediatric_model_is_withheld_and_unknown_age_is_a_review(tmp_path):
    gate = InputGate(classifier_task(tmp_path / "cls"))
    adult, _ = gate.before_model(_radiograph(PatientBirthDate="19400315", StudyDate="20040510"))
    assert adult.withheld
    assert any("patient age 64.2 years" in r for r in adult.withhold_reasons)
    unknown, _ = gate.before_model(_radiograph())
    assert unknown.decision == "review" and not unknown.withheld
    views = InputGate(load_named_task("cxr-pneumonia"))  # for PA and AP views only
    lateral, _ = views.before_model(_radiograph(ViewPosition="LL", PatientAge="003Y"))
    assert lateral.withheld and any("view is LL" in r for r in lateral.withhold_reasons)


@pytest.mark.parametrize(
    ("kind", "check"),
    [("noise", "noise"), ("blank", "blank"), ("nan", "finite_values"), ("tiny", "blank")],
)
def test_content_no_model_may_judge_is_withheld(tmp_path, kind, check):
    gate = InputGate(classifier_task(tmp_path / "cls"))
    rng = np.random.default_rng(0)
    arrays = {
        "noise": rng.integers(0, 4096, (1, 200, 180)).astype(np.uint16),
        "blank": np.full((1, 200, 180), 7, np.uint16),
        "nan": np.where(rng.random((1, 200, 180)) < 0.01, np.nan, 1.0).astype(np.float32),
        "tiny": np.ones((1, 1, 1), np.uint16),
    }
    result, _ = gate.before_model(_radiograph(arrays[kind], PatientAge="003Y"))
    assert result.withheld
    assert result.check(check) is not None and result.check(check).outcome == "withhold"


def test_a_fitted_task_withholds_noise_by_its_ood_score_and_passes_its_own_sample():
    from medsight.datasets import repository_root
    from medsight.inference import Predictor
    from medsight.io import read_image

    task = load_named_task("cxr-pneumonia")
    gate, predictor = InputGate(task), Predictor(task, explain=False, backend="onnxruntime")
    own = read_image(
        repository_root() / "src" / "medsight" / "samples" / "cxr" / "pneumonia_sample_sc.dcm"
    )
    checked, _ = gate.before_model(own)
    gate.with_model(checked, predictor.predict(own), own, predictor)
    assert checked.decision == "pass", checked.as_dict()
    # a smooth image with structure: the pixel checks pass it, only the OOD score can tell
    smooth = _radiograph(PatientAge="003Y")
    checked, _ = gate.before_model(smooth)
    assert not checked.withheld
    gate.with_model(checked, predictor.predict(smooth), smooth, predictor)
    ood = checked.check("out_of_distribution")
    assert ood is not None and ood.outcome == "withhold" and ood.score > ood.threshold
    assert "does not look like a paediatric frontal chest radiograph" in ood.reason


def test_gate_files_are_hash_checked_and_need_schema_2(tmp_path):
    import shutil

    folder = tmp_path / "cxr"
    shutil.copytree(load_named_task("cxr-pneumonia").folder, folder)
    task = load_task(folder)
    assert "ood" in task.gate_files and task.gate_path("ood").is_file()
    with (folder / "gate_ood.npz").open("ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ModelLoadError, match="does not match its SHA-256"):
        InputGate(load_task(folder)).ood_model  # noqa: B018
    text = (folder / "task.toml").read_text().replace("schema_version = 2", "schema_version = 1")
    (folder / "task.toml").write_text(text)
    with pytest.raises(TaskDefinitionError, match="schema_version = 2"):
        load_task(folder)


def _finding(task_id: str, **kwargs: object) -> Finding:
    return Finding(
        name="lv",
        code={"value": "1", "scheme": "99T", "meaning": "LV"},
        model={"id": task_id, "version": "1", "hash": "h"},
        **kwargs,  # type: ignore[arg-type]
    )


def test_triage_2_measurement_flags_and_withheld_answers():
    ef = Measurement("ejection_fraction", 30.0, "%", "ED/ES volumes", "lv")
    rule = MeasurementFlag(
        measurement="ejection_fraction", threshold=35, direction="below", level="URGENT"
    )
    urgent = triage([_finding("heart", measurements=[ef])], measurement_flags={"heart": [rule]})
    assert urgent.level == "URGENT" and urgent.rules_version == "2"
    assert "ejection_fraction of lv 30 % is below 35" in urgent.reasons[0]
    normal = Measurement("ejection_fraction", 60.0, "%", "ED/ES volumes", "lv")
    quiet = triage([_finding("heart", measurements=[normal])], measurement_flags={"heart": [rule]})
    assert quiet.level == "NO_AI_FINDING"
    withheld = triage([], withheld=["DX: this image does not look like a chest film"])
    assert withheld.level == "NEEDS_REVIEW"
    assert withheld.reasons[0].startswith("AI answer withheld")


def _analyze(path, task, tmp_path):
    from typer.testing import CliRunner

    from medsight.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["analyze", str(path), "--task", task, "--out", str(out)])
    documents = [json.loads(p.read_text()) for p in out.glob("*/result.json")]
    return result, documents


def test_noise_given_to_the_chest_model_is_needs_review_without_a_flag(tmp_path):
    path = tmp_path / "noise.png"
    rng = np.random.default_rng(0)
    PILImage.fromarray(rng.integers(0, 256, (512, 512)).astype(np.uint8)).save(path)
    result, (document,) = _analyze(path, "cxr-pneumonia", tmp_path)
    assert result.exit_code == 0, result.output
    analysis = document["analyses"][0]
    assert document["schema_version"] == "3.0"
    assert analysis["withheld"] and analysis["state"] == "NEEDS_REVIEW"
    assert analysis["findings"] == [] and analysis["classification"]["audit_only"]
    assert document["priority"]["level"] == "NEEDS_REVIEW"
    assert "noise" in document["priority"]["reasons"][0]
    assert analysis["input"]["path"] == "noise.png"
    report = (tmp_path / "out" / document["study_key"] / "report.html").read_text()
    assert "withheld" in report.lower()


@pytest.mark.parametrize("kind", ["nan_nifti", "4d_nifti", "one_slice", "photo16", "one_pixel"])
def test_hostile_inputs_end_as_refusal_or_needs_review(tmp_path, kind):
    rng = np.random.default_rng(0)
    if kind == "one_pixel":
        path = tmp_path / "one.png"
        PILImage.fromarray(np.full((1, 1), 9, np.uint8)).save(path)
        task = "cxr-pneumonia"
    elif kind == "photo16":
        path = tmp_path / "photo16.png"
        PILImage.fromarray(rng.integers(0, 65535, (300, 300)).astype(np.uint16)).save(path)
        task = "derm-lesion"
    else:
        shapes = {"nan_nifti": (40, 50, 40), "4d_nifti": (40, 50, 40, 3), "one_slice": (40, 50, 1)}
        data = rng.normal(100, 10, shapes[kind]).astype(np.float32)
        if kind == "nan_nifti":
            data[0, 0, 0] = np.nan
            data[1, 1, 1] = np.inf
        path = tmp_path / f"{kind}.nii.gz"
        nib.save(nib.Nifti1Image(data, np.eye(4)), path)
        task = "hippocampus-mr"
    result, documents = _analyze(path, task, tmp_path)
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert path.name in result.output
    else:
        (document,) = documents
        assert document["priority"]["level"] == "NEEDS_REVIEW"
        assert all(a["state"] == "NEEDS_REVIEW" for a in document["analyses"])


def test_a_chest_film_given_to_the_melanoma_task_is_withheld_not_a_silent_no_finding(tmp_path):
    from medsight.datasets import repository_root

    sample = repository_root() / "src" / "medsight" / "samples" / "cxr"
    result, (document,) = _analyze(sample / "normal_IM-0115-0001.jpeg", "derm-melanoma", tmp_path)
    assert result.exit_code == 0, result.output
    (analysis,) = document["analyses"]
    assert analysis["withheld"] and analysis["findings"] == []
    assert document["priority"]["level"] == "NEEDS_REVIEW"
    assert any("this image is grey" in r for r in analysis["review_reasons"])


def test_a_ratio_statistic_band_is_widened_on_a_log_scale():
    from medsight.gate.pixels import band_from_values

    # focus scores of sharp photographs spread over an order of magnitude
    focus = np.geomspace(0.04, 0.9, 200)
    additive_low, _ = band_from_values(focus)
    low, high = band_from_values(focus, log_scale=True)
    assert additive_low < 0  # would let any blur through
    assert 0 < low < focus.min() and high > focus.max()
    blurred = 0.004  # a Gaussian blur of sigma 10 px on a 512 px fundus photograph
    assert blurred < low
