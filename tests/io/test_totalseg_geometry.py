"""The real TotalSegmentator CT series lands on the same world grid as its dcm2niix label map."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from medsight.cli import app
from medsight.io import read_nifti
from medsight.io.dicom import read_dicom
from medsight.io.nifti import RAS_TO_LPS
from tests.conftest import require_data


def _canonical(array: np.ndarray, lps_affine: np.ndarray) -> nib.Nifti1Image:
    return nib.as_closest_canonical(nib.Nifti1Image(np.asarray(array), RAS_TO_LPS @ lps_affine))


def test_ct_series_voxel_centres_match_the_label_map(ct_dicom_dir):
    labels = nib.load(require_data("totalseg-ct", "example_seg_dicom.nii.gz"))
    image = read_dicom(ct_dicom_dir)
    assert image.modality == "CT" and image.array.dtype == np.int16
    ours = _canonical(image.array[0], image.affine)
    reference = nib.as_closest_canonical(labels)
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours.affine, reference.affine, atol=1e-3)
    # every voxel centre, not only the affine: compare the world position of all corners
    corners = np.array([[i, j, k, 1] for i in (0, 511) for j in (0, 511) for k in (0, 19)]).T
    np.testing.assert_allclose(ours.affine @ corners, reference.affine @ corners, atol=1e-3)


def test_labels_sit_on_body_voxels(ct_dicom_dir):
    """A flip would put organ labels on air: check the label map lies inside the body."""
    labels = nib.as_closest_canonical(
        nib.load(require_data("totalseg-ct", "example_seg_dicom.nii.gz"))
    )
    image = read_dicom(ct_dicom_dir)
    ct = np.asarray(_canonical(image.array[0], image.affine).dataobj)
    organ = np.asarray(labels.dataobj) > 0
    assert organ.sum() > 1000
    assert np.median(ct[organ]) > -200  # soft tissue and bone, not air (-1000 HU)


def test_convert_writes_a_nifti_with_the_same_affine(ct_dicom_dir, tmp_path):
    from typer.testing import CliRunner

    out = tmp_path / "ct.nii.gz"
    result = CliRunner().invoke(app, ["convert", str(ct_dicom_dir), str(out)])
    assert result.exit_code == 0, result.output
    written = nib.load(out)
    image = read_dicom(ct_dicom_dir)
    np.testing.assert_allclose(written.affine, RAS_TO_LPS @ image.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(written.dataobj), image.array[0])
    back = read_nifti(out)
    np.testing.assert_allclose(back.affine, image.affine, atol=1e-5)
