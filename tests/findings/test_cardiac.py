"""Ventricular function from a cine's phases (medsight.findings.cardiac): volumes, stroke
volumes, ejection fractions, mass and what is not given, with its reason."""

from __future__ import annotations

import numpy as np
import pytest

from medsight.datasets import repository_root
from medsight.findings.cardiac import CardiacPhase, body_surface_area, cardiac_function
from medsight.findings.triage import triage
from medsight.image import Image
from medsight.tasks import load_task

pytestmark = pytest.mark.timeout(60)

RV, MYO, LV = 1, 2, 3


@pytest.fixture(scope="module")
def task():
    # the template the training starts from: the same outputs and [cardiac_function]
    return load_task(repository_root() / "recipes" / "templates" / "cardiac-mr")


def phase(
    analysis,
    lv_voxels,
    rv_voxels=0,
    myo_voxels=0,
    *,
    name=None,
    spacing=(1.5, 1.5, 10.0),
    known=True,
    shape=(60, 60, 4),
    metadata=None,
):
    labels = np.zeros(shape, dtype=np.uint8)
    flat = labels.reshape(-1)  # a view: voxels are set in storage order
    flat[:lv_voxels] = LV
    flat[lv_voxels : lv_voxels + rv_voxels] = RV
    flat[lv_voxels + rv_voxels : lv_voxels + rv_voxels + myo_voxels] = MYO
    image = Image(
        array=np.zeros((1, *shape), dtype=np.int16),
        affine=np.diag([*spacing, 1.0]),
        spatial_dims=3,
        spacing_known=known,
        metadata=metadata or {},
    )
    return CardiacPhase(analysis, f"phase {analysis}", image, labels, name)


def values(document):
    return {(m["name"], m["structure"]): (m["value"], m["unit"]) for m in document["measurements"]}


def test_volumes_ejection_fraction_and_mass_in_millilitres(task):
    voxel_ml = 1.5 * 1.5 * 10.0 / 1000.0
    ed = phase(0, 4000, 3000, 2000, metadata={"PatientSize": 1.8, "PatientWeight": 80.0})
    es = phase(1, 1600, 1500, 2100)
    document, finding = cardiac_function([es, ed], task.spec.cardiac_function, task)
    got = values(document)
    # ED and ES chosen by LV cavity volume: the larger is end-diastole
    assert document["phases"]["ED"]["analysis"] == 0 and document["phases"]["ES"]["analysis"] == 1
    assert got[("end-diastolic volume", "left_ventricle")] == (round(4000 * voxel_ml, 2), "mL")
    assert got[("ejection fraction", "left_ventricle")] == (60.0, "%")
    assert got[("ejection fraction", "right_ventricle")] == (50.0, "%")
    assert got[("stroke volume", "left_ventricle")][0] == pytest.approx(2400 * voxel_ml, abs=0.01)
    assert got[("myocardial mass", "left_ventricle_myocardium")] == (
        round(2000 * voxel_ml * 1.05, 2),
        "g",
    )
    bsa = np.sqrt(180.0 * 80.0 / 3600.0)  # Mosteller
    assert document["body_surface_area_m2"] == pytest.approx(bsa, abs=1e-3)
    index = got[("end-diastolic volume index", "left_ventricle")]
    assert index[1] == "mL/m2" and index[0] == pytest.approx(4000 * voxel_ml / bsa, abs=0.01)
    assert document["slice_areas"]["unit"] == "mm2"
    assert sum(document["slice_areas"]["ED"]["left_ventricle"]) == pytest.approx(4000 * 2.25)
    assert document["not_given"] == []
    assert finding is not None and finding.model["id"] == "cardiac-mr"


def test_named_phases_win_over_volumes_and_a_swap_is_refused(task):
    ed = phase(0, 1000, name="ED")
    es = phase(1, 3000, name="ES")  # the source's names say this one is end-systole
    document, _ = cardiac_function([ed, es], task.spec.cardiac_function, task)
    assert document["phases"]["ED"]["chosen"] == "as the source names them"
    names = {m["name"] for m in document["measurements"] if m["structure"] == "left_ventricle"}
    assert "ejection fraction" not in names
    assert any("phases swapped" in reason for reason in document["not_given"])


def test_unknown_spacing_gives_voxels_and_an_ejection_fraction_but_no_mass(task):
    ed = phase(0, 4000, 3000, 2000, known=False)
    es = phase(1, 2000, 1500, 2000, known=False)
    document, _ = cardiac_function([ed, es], task.spec.cardiac_function, task)
    got = values(document)
    assert got[("end-diastolic volume", "left_ventricle")] == (4000.0, "{voxel}")
    assert got[("ejection fraction", "left_ventricle")] == (50.0, "%")
    assert not any(name == "myocardial mass" for name, _ in got)
    assert any("spacing unknown" in reason for reason in document["not_given"])


@pytest.mark.parametrize(
    ("phases", "expected"),
    [
        ([phase(0, 3000)], "one phase only"),
        ([phase(0, 3000), phase(1, 2000, shape=(60, 60, 3))], "a slice missing in one phase"),
        ([phase(0, 3000), phase(1, 2000, spacing=(1.5, 1.5, 8.0))], "differ in voxel spacing"),
        ([phase(0, 3000), phase(1, 0)], "LV cavity is found in no slice"),
        (
            [phase(0, 3000, metadata={"SliceThicknesses": [8.0, 10.0]}), phase(1, 2000)],
            "slices of different thickness",
        ),
        (
            [phase(0, 3000), CardiacPhase(1, "phase 1", phase(1, 1).image, None)],
            "one phase only",
        ),
    ],
)
def test_no_silent_ejection_fraction(task, phases, expected):
    document, _ = cardiac_function(phases, task.spec.cardiac_function, task)
    assert not any(m["name"] == "ejection fraction" for m in document["measurements"])
    assert any(expected in reason for reason in document["not_given"]), document["not_given"]


def test_a_single_phase_still_gives_its_volumes(task):
    document, finding = cardiac_function([phase(0, 3000, 2000)], task.spec.cardiac_function, task)
    assert values(document)[("volume", "left_ventricle")] == (round(3000 * 0.0225, 2), "mL")
    assert finding is None


def test_a_reduced_ejection_fraction_sets_the_priority(task):
    flags = {task.id: task.spec.measurement_flags}
    for es_voxels, level in ((1500, "NO_AI_FINDING"), (2600, "ROUTINE"), (3000, "URGENT")):
        _, finding = cardiac_function(
            [phase(0, 4000), phase(1, es_voxels)], task.spec.cardiac_function, task
        )
        priority = triage([finding], measurement_flags=flags)
        assert priority.level == level, (es_voxels, priority)
        if level != "NO_AI_FINDING":
            assert "ejection fraction of left_ventricle" in priority.reasons[0]


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"PatientSize": "1.70", "PatientWeight": "65"}, np.sqrt(170 * 65 / 3600)),
        ({"PatientSize": 0.0, "PatientWeight": 65}, None),  # an unset height
        ({"PatientWeight": 65}, None),
        ({"PatientSize": "tall", "PatientWeight": 65}, None),
    ],
)
def test_body_surface_area(metadata, expected):
    got = body_surface_area(metadata)
    assert got == (pytest.approx(expected) if expected is not None else None)
