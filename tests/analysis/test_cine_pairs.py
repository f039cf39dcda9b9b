"""A folder of NIfTI cines: an ACDC-style ``<stem>_ED`` / ``<stem>_ES`` pair is one study
(phases named), ``*_gt`` label maps are set aside with a note, other files stay studies."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medsight.analysis.inputs import find_studies

pytestmark = pytest.mark.timeout(60)


def _nifti(path, seed):
    data = np.random.default_rng(seed).integers(0, 255, (24, 24, 6)).astype(np.uint8)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)


def test_a_phase_pair_is_one_study_and_label_maps_are_noted(tmp_path):
    for seed, name in enumerate(
        [
            "p1_ED.nii.gz",
            "p1_ES.nii.gz",
            "p1_ED_gt.nii.gz",
            "p1_ES_gt.nii.gz",
            "brain.nii.gz",
            "brain_gt.nii.gz",
            "p2_ES.nii",
        ]
    ):
        _nifti(tmp_path / name, seed)
    studies = {s.label: s for s in find_studies(tmp_path)}
    assert sorted(studies) == ["brain.nii.gz", "p1", "p2"]
    pair = studies["p1"]
    assert [(i.description, i.phase) for i in pair.images] == [
        ("p1_ED.nii.gz", "ED"),
        ("p1_ES.nii.gz", "ES"),
    ]
    assert pair.skipped == [
        "p1_ED_gt.nii.gz: a label map (*_gt), not an image: not analysed",
        "p1_ES_gt.nii.gz: a label map (*_gt), not an image: not analysed",
    ]
    assert studies["brain.nii.gz"].skipped == [
        "brain_gt.nii.gz: a label map (*_gt), not an image: not analysed"
    ]
    # a lone phase is still a study of one named phase (volumes, no ejection fraction)
    assert [(i.description, i.phase) for i in studies["p2"].images] == [("p2_ES.nii", "ES")]


def test_the_pair_key_follows_both_files(tmp_path):
    for seed, name in enumerate(["a_ED.nii.gz", "a_ES.nii.gz"]):
        _nifti(tmp_path / name, seed)
    (first,) = find_studies(tmp_path)
    _nifti(tmp_path / "a_ES.nii.gz", 99)  # another end-systole: another study
    (second,) = find_studies(tmp_path)
    assert first.key != second.key
