"""The worse-eye patient result: each eye from its worst gradable image, the patient from
the worse eye, and every gap (an ungradable, missing or unnamed eye) said, with NEEDS_REVIEW
unless the other eye already flags."""

from __future__ import annotations

import pytest

from medsight.findings.screening import SideImage, worse_side
from tests.inference.test_ordinal_outputs import ORDINAL, sigmoid_task

WORSE_SIDE = (
    '\n[worse_side]\nname = "patient_referable_dr"\noutputs = ["referable", "maculopathy"]\n'
    'code = { value = "RDR-P", scheme = "99MEDSIGHT", meaning = "Referable DR, patient" }\n'
)
POINT = '\n[operating_points.high_sensitivity]\noutput = "referable"\nthreshold = 0.4\n'


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return sigmoid_task(
        tmp_path_factory.mktemp("task"),
        extra="\n[calibration]\ntemperature = 1.0\n" + POINT + ORDINAL + WORSE_SIDE,
    )


def eye(index, side, referable, grade=0, gradable=True, macula=0.1):
    return SideImage(
        analysis=index,
        description=f"image {index}",
        side=side,
        gradable=gradable,
        reasons=[] if gradable else ["the photograph is out of focus"],
        probabilities={"referable": referable, "maculopathy": macula},
        grades={"dr_grade": grade},
    )


def run(task, images):
    return worse_side(images, task.spec.worse_side, task)


def test_the_worse_eye_decides(task):
    document, review = run(task, [eye(0, "R", 0.2, 0), eye(1, "L", 0.7, 2)])
    assert review == [] and document["not_given"] == []
    assert document["probabilities"]["referable"] == {"value": 0.7, "side": "L", "analysis": 1}
    assert document["flags"]["high_sensitivity"]["flag"] is True
    assert document["grades"]["dr_grade"]["grade"] == 2
    assert document["grades"]["dr_grade"]["level"] == "moderate"


def test_an_eye_is_its_worst_gradable_image(task):
    images = [
        eye(0, "R", 0.3, 1),
        eye(1, "R", 0.9, 2, gradable=False),  # ungradable: its answer does not count
        eye(2, "R", 0.35, 0),
        eye(3, "L", 0.1, 0),
    ]
    document, review = run(task, images)
    assert document["sides"]["R"]["gradable"] == [0, 2]
    assert document["probabilities"]["referable"]["value"] == 0.35
    assert document["grades"]["dr_grade"]["grade"] == 1
    assert document["flags"]["high_sensitivity"]["flag"] is False and review == []


def test_an_ungradable_eye_leaves_an_unflagged_patient_for_review(task):
    document, review = run(task, [eye(0, "R", 0.1), eye(1, "L", 0.9, gradable=False)])
    assert document["flags"]["high_sensitivity"]["flag"] is False
    assert any("insufficient image quality" in r and "left eye" in r for r in review)
    assert "no patient-level negative" in document["not_given"][-1]


def test_a_flag_in_one_eye_stands_when_the_other_is_ungradable(task):
    document, review = run(task, [eye(0, "R", 0.8), eye(1, "L", 0.1, gradable=False)])
    assert document["flags"]["high_sensitivity"]["flag"] is True and review == []
    assert "flagged all the same" in document["not_given"][-1]


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        (
            [eye(0, "L", 0.1), eye(1, "L", 0.2)],
            "no image of the right eye (all 2 images claim the left eye: check their laterality)",
        ),
        ([eye(0, "R", 0.1), eye(1, None, 0.2)], "which eye it shows is not known"),
    ],
)
def test_a_pair_that_is_not_two_eyes_is_said(task, images, expected):
    document, review = run(task, images)
    assert any(expected in r for r in review), review
    assert "probabilities" in document  # what could be graded is still shown


def test_no_gradable_eye_gives_no_patient_result(task):
    document, review = run(
        task, [eye(0, "R", 0.9, gradable=False), eye(1, "L", 0.9, gradable=False)]
    )
    assert "probabilities" not in document and "flags" not in document
    assert document["not_given"][-1] == "no eye could be graded: no patient result"
    assert len(review) == 2


def test_an_implied_flag_refers_the_patient(tmp_path):
    from medsight.tasks import Task
    from medsight.tasks.spec import TaskSpec

    task = sigmoid_task(tmp_path / "task", extra=POINT + ORDINAL + WORSE_SIDE)
    document = task.spec.model_dump()
    for output in document["outputs"]:
        if output["name"] == "grade_ge_2":
            output["implies"] = ["referable"]
    document["operating_points"]["moderate"] = {"output": "grade_ge_2", "threshold": 0.5}
    document["worse_side"]["outputs"] = ["referable", "grade_ge_2"]
    implied = Task(TaskSpec.model_validate(document), task.folder, task.toml_sha256)
    images = [eye(0, "R", 0.2), eye(1, "L", 0.3)]
    for image, moderate in zip(images, (0.1, 0.7), strict=True):
        image.probabilities["grade_ge_2"] = moderate
    patient, review = worse_side(images, implied.spec.worse_side, implied)
    assert patient["flags"]["moderate"]["flag"] is True
    assert patient["flags"]["high_sensitivity"]["flag"] is True  # 0.3 < 0.4, but implied
    assert patient["flags"]["high_sensitivity"]["implied_by"] == "grade_ge_2"
    assert review == []
