"""Classifiers with independent (sigmoid) outputs and an ordinal grade read from cumulative
outputs: the probabilities, per-output temperatures, the grade's distribution and median,
the grade as a finding, and the task.toml checks that refuse inconsistent definitions."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from medsight.findings import findings_from_prediction
from medsight.image import Image
from medsight.inference import Predictor
from medsight.inference.outputs import grade_distribution, output_probabilities
from medsight.tasks.spec import TaskSpec
from tests._tasks import classifier_task

OUTPUTS = [("referable", 0), ("grade_ge_1", 1), ("grade_ge_2", 2), ("maculopathy", 3)]
ORDINAL = (
    '\n[[ordinal]]\nname = "dr_grade"\nlevels = ["none", "mild", "moderate"]\n'
    'cumulative = ["grade_ge_1", "grade_ge_2"]\n'
    'code = { value = "4855003", scheme = "SCT", meaning = "Diabetic retinopathy" }\n'
)
POINT = (
    '\n[operating_points.high_sensitivity]\noutput = "referable"\nthreshold = 0.4\n'
    "sensitivity = 0.9\nspecificity = 0.6\n"
)


def sigmoid_task(folder, **overrides):
    arguments = {
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 4,
        "init_features": 8,
        "growth_rate": 4,
        "block_config": [2, 2],
        "bn_size": 2,
    }
    options = dict(
        arguments=arguments,
        outputs=OUTPUTS,
        head='schema_version = 2\nactivation = "sigmoid"',
        acceptance={"spatial_dims": 2, "photometric": ["MONOCHROME2"], "modalities": ["OP"]},
        extra="\n[calibration]\ntemperature = 1.0\ntemperatures = { referable = 2.0 }\n"
        + POINT
        + ORDINAL,
    )
    options.update(overrides)
    return classifier_task(folder, **options)


def test_grade_distribution_from_crossing_cumulative_probabilities():
    # P(>=1) = 0.7, P(>=2) = 0.8 cross (trained apart): P(>=2) is capped at 0.7
    distribution = grade_distribution(np.array([[0.7, 0.8], [0.9, 0.2]]))
    np.testing.assert_allclose(distribution, [[0.3, 0.0, 0.7], [0.1, 0.7, 0.2]])
    assert (distribution >= 0).all()
    np.testing.assert_allclose(distribution.sum(axis=1), 1.0)


def test_sigmoid_outputs_each_with_its_temperature(tmp_path):
    spec = sigmoid_task(tmp_path / "task").spec
    logits = np.array([[2.0, 1.0, -1.0, 0.0]])
    got = output_probabilities(logits, spec)
    expected = 1.0 / (1.0 + np.exp(-logits / np.array([2.0, 1.0, 1.0, 1.0])))
    np.testing.assert_allclose(got, expected)


def test_a_prediction_carries_the_grade_and_the_grade_is_a_finding(tmp_path):
    task = sigmoid_task(tmp_path / "task")
    rng = np.random.default_rng(0)
    image = Image(rng.random((1, 64, 64)).astype(np.float32), np.eye(4), 2, modality="OP")
    prediction = Predictor(task, explain=False).predict(image)
    probabilities = prediction.probabilities
    assert probabilities is not None and set(probabilities) == {n for n, _ in OUTPUTS}
    expected = output_probabilities(prediction.logits[None], task.spec)[0]
    np.testing.assert_allclose([probabilities[n] for n, _ in OUTPUTS], expected)
    grade = prediction.grades["dr_grade"]
    ge_1, ge_2 = probabilities["grade_ge_1"], probabilities["grade_ge_2"]
    median = int(ge_1 >= 0.5) + int(min(ge_1, ge_2) >= 0.5)  # P(>=2) capped at P(>=1)
    assert grade["grade"] == median and grade["level"] == ["none", "mild", "moderate"][median]
    assert sum(grade["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    findings = {f.name: f for f in findings_from_prediction(prediction, task, image)}
    assert findings["referable"].flag == (probabilities["referable"] >= 0.4)
    (measured,) = findings["dr_grade"].measurements
    assert measured.value == median and measured.unit == "{grade}"
    assert findings["dr_grade"].code["value"] == "4855003"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"activation": "softmax"}, 'activation = "sigmoid"'),
        ({"ordinal": [{"levels": ["a", "b"]}]}, "2 levels need 1 cumulative"),
        ({"calibration": {"temperatures": {"nothing": 1.0}}}, "unknown outputs"),
        ({"schema_version": 1}, "schema_version = 2"),
    ],
)
def test_inconsistent_definitions_are_refused(tmp_path, change, message):
    document = sigmoid_task(tmp_path / "task").spec.model_dump()
    for key, value in change.items():
        if key == "ordinal":
            document["ordinal"] = [{**document["ordinal"][0], **value[0]}]
        else:
            document[key] = value if not isinstance(value, dict) else {**document[key], **value}
    with pytest.raises(ValidationError, match=message):
        TaskSpec.model_validate(document)


def test_a_flag_flags_what_its_output_implies(tmp_path):
    """Moderate DR (grade >= 2) is referable by definition: when its point flags, the
    referable finding is flagged too, with the reason, even below its own threshold."""
    from medsight.tasks import Task

    task = sigmoid_task(tmp_path / "task")
    document = task.spec.model_dump()
    for output in document["outputs"]:
        if output["name"] == "grade_ge_2":
            output["implies"] = ["referable"]
    document["operating_points"] = {
        "high_sensitivity": {"output": "referable", "threshold": 1.0},  # never reached
        "moderate": {"output": "grade_ge_2", "threshold": 0.0},  # always reached
    }
    implied = Task(
        spec=TaskSpec.model_validate(document), folder=task.folder, toml_sha256=task.toml_sha256
    )
    pixels = np.random.default_rng(1).random((1, 64, 64)).astype(np.float32)
    image = Image(pixels, np.eye(4), 2, modality="OP")
    prediction = Predictor(implied, explain=False).predict(image)
    findings = {f.name: f for f in findings_from_prediction(prediction, implied, image)}
    assert findings["grade_ge_2"].flag is True
    assert findings["referable"].flag is True
    assert "flagged because grade_ge_2 is flagged" in findings["referable"].evidence
    document["outputs"][0]["implies"] = ["nothing"]
    with pytest.raises(ValidationError, match="imply unknown outputs"):
        TaskSpec.model_validate(document)
