"""Evaluation on a folder of images and masks, and the ejection-fraction error of a cine
task (each patient's _ED and _ES cases)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medsight.errors import InvalidInputError
from medsight.evaluation.cardiac import ejection_fraction_errors
from medsight.evaluation.cases import mask_folder_cases
from medsight.tasks.spec import CardiacFunction

pytestmark = pytest.mark.timeout(60)


def row(case, lv, lv_ref, rv=0.0, rv_ref=0.0):
    return {
        "case": case,
        "left_ventricle": {"volume": lv, "reference_volume": lv_ref},
        "right_ventricle": {"volume": rv, "reference_volume": rv_ref},
    }


def test_ejection_fraction_error_per_patient():
    spec = CardiacFunction(left_ventricle="left_ventricle", right_ventricle="right_ventricle")
    per_case = [
        row("p1_ED.nii.gz", 200.0, 200.0, 150.0, 160.0),
        row("p1_ES.nii.gz", 100.0, 80.0, 75.0, 80.0),  # EF 50 against 60: -10 points
        row("p2_ED.nii.gz", 100.0, 100.0, 100.0, 100.0),
        row("p2_ES.nii.gz", 40.0, 40.0, 50.0, 50.0),  # exact
        row("p3_ED.nii.gz", 100.0, 100.0),  # no end-systole: not paired
    ]
    result = ejection_fraction_errors(per_case, spec)
    left = result["left_ventricle"]
    assert left["patients"] == 2
    assert left["rows"][0] == {"patient": "p1", "predicted": 50.0, "reference": 60.0}
    assert left["mean_absolute_error"]["value"] == pytest.approx(5.0)
    assert left["mean_difference"]["value"] == pytest.approx(-5.0)
    assert result["right_ventricle"]["rows"][0]["reference"] == 50.0


def _save(path, value=1):
    nib.save(nib.Nifti1Image(np.full((8, 8, 3), value, np.uint8), np.eye(4)), path)


def test_a_folder_pairs_images_with_masks_and_keeps_phases(tmp_path):
    for name in ("p1_ED", "p1_ED_gt", "p1_ES", "p1_ES_gt", "p2_ED", "p2_ED_gt"):
        _save(tmp_path / f"{name}.nii.gz")
    cases = mask_folder_cases(tmp_path, patient_pattern=r"^(p\d+)_")
    assert [(c.path.name, c.mask.name, c.patient, c.attributes) for c in cases] == [
        ("p1_ED.nii.gz", "p1_ED_gt.nii.gz", "p1", {"phase": "ED"}),
        ("p1_ES.nii.gz", "p1_ES_gt.nii.gz", "p1", {"phase": "ES"}),
        ("p2_ED.nii.gz", "p2_ED_gt.nii.gz", "p2", {"phase": "ED"}),
    ]


def test_a_folder_problem_names_every_file(tmp_path):
    _save(tmp_path / "a.nii.gz")
    _save(tmp_path / "b.nii.gz")
    _save(tmp_path / "b_gt.nii.gz")
    with pytest.raises(InvalidInputError, match=r"a.nii.gz: no mask a_gt.nii.gz"):
        mask_folder_cases(tmp_path)
    with pytest.raises(InvalidInputError, match=r"b.nii.gz: no patient id"):
        mask_folder_cases(tmp_path, masks="{stem}_gt{suffix}", patient_pattern=r"^(x)")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInputError, match="no image with a mask"):
        mask_folder_cases(empty)
