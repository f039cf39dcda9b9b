"""Round trips through the whole pre/post-processing chain: no flip, shift or off-by-one.

An identity-like network (it returns its input label map as one-hot logits) is fed the
TotalSegmentator label map placed on the CT series' grid; the chain reorients to RAS, runs a
sliding window smaller than the volume with Gaussian blending, maps back, and must reproduce
``example_seg_dicom.nii.gz`` voxel for voxel in world space.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from medsight.image import Image
from medsight.imaging import reorient
from medsight.inference import Predictor
from medsight.io import read_nifti, read_raster
from medsight.io.dicom import read_dicom
from medsight.io.nifti import RAS_TO_LPS
from tests._tasks import segmenter_2d_task, segmenter_3d_task
from tests.conftest import require_data


def one_hot_identity(classes: int):
    def runtime(batch: torch.Tensor) -> torch.Tensor:
        labels = batch[:, 0].round().long().clamp(0, classes - 1)
        logits = torch.nn.functional.one_hot(labels, classes).movedim(-1, 1).float()
        return logits * 20.0

    return runtime


@pytest.mark.timeout(600)
def test_ct_label_map_survives_the_whole_chain(ct_dicom_dir, tmp_path):
    ct = read_dicom(ct_dicom_dir)
    reference = read_nifti(require_data("totalseg-ct", "example_seg_dicom.nii.gz"))
    on_ct_grid = reorient(reference, ct.orientation_code)
    np.testing.assert_allclose(on_ct_grid.affine, ct.affine, atol=1e-3)
    labels = np.asarray(on_ct_grid.array[0])
    values = np.unique(labels)
    compact = np.searchsorted(values, labels).astype(np.float32)

    outputs = [(f"label_{int(v)}", index) for index, v in enumerate(values)]
    task = segmenter_3d_task(
        tmp_path / "identity",
        outputs=outputs,
        arguments={
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": len(values),
            "channels": [4, 8],
            "strides": [2],
        },
        acceptance={"spatial_dims": 3, "modalities": ["CT"]},
        preprocessing={
            "reorient": "RAS",
            "patch_size": [160, 160, 16],
            "overlap": 0.25,
            "normalize": "none",
            "batch_size": 2,
        },
    )
    image = ct.replace(array=compact[np.newaxis])
    prediction = Predictor(task, backend=one_hot_identity(len(values))).predict(image)
    assert prediction.label_map is not None
    assert prediction.label_map.shape == ct.shape
    np.testing.assert_array_equal(prediction.affine, ct.affine)

    predicted = values[prediction.label_map]
    out = nib.as_closest_canonical(nib.Nifti1Image(predicted, RAS_TO_LPS @ ct.affine))
    original = nib.as_closest_canonical(
        nib.load(require_data("totalseg-ct", "example_seg_dicom.nii.gz"))
    )
    np.testing.assert_allclose(out.affine, original.affine, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(out.dataobj), np.asarray(original.dataobj))


def test_2d_xray_mask_comes_back_on_the_xray_grid(tmp_path):
    rng = np.random.default_rng(3)
    labels = np.zeros((300, 250), np.float32)
    labels[40:120, 60:200] = 1
    xray = Image(
        labels[np.newaxis] + 0 * rng.normal(size=(1, 300, 250)),
        np.diag([0.14, 0.16, 1, 1]),
        2,
        modality="DX",
        photometric_interpretation="RGB",
    )
    task = segmenter_2d_task(
        tmp_path / "seg2d",
        arguments={
            "spatial_dims": 2,
            "in_channels": 1,
            "out_channels": 2,
            "channels": [4, 8],
            "strides": [2],
        },
        acceptance={"spatial_dims": 2},
        preprocessing={"resize": [128, 128], "normalize": "none"},
        display={"window": "none"},
    )
    prediction = Predictor(task, backend=one_hot_identity(2)).predict(
        xray.replace(photometric_interpretation="MONOCHROME2")
    )
    assert prediction.label_map is not None and prediction.label_map.shape == (300, 250)
    # resizing to 128 and back blurs the edge by about one source pixel, never more
    assert np.abs(prediction.label_map.astype(int) - labels.astype(int)).sum() < 2 * (80 + 140) * 2
    assert prediction.label_map[80, 130] == 1 and prediction.label_map[10, 10] == 0


def test_fundus_png_mask_has_the_png_geometry(tmp_path):
    from PIL import Image as PILImage

    source = sorted(require_data("drive", "training", "images").glob("*.tif"))[0]
    png = tmp_path / "fundus.png"
    PILImage.open(source).save(png)
    image = read_raster(png, spacing=(0.01, 0.01))
    prediction = Predictor(segmenter_2d_task(tmp_path / "seg2d")).predict(image)
    assert prediction.label_map is not None and prediction.label_map.shape == image.shape == (
        565,
        584,
    )
    np.testing.assert_array_equal(prediction.affine, image.affine)
