"""DICOM SEG: written for the TotalSegmentator CT series, read back with pydicom and
highdicom (segments, codes, references, geometry, voxels), checked by dciodvfy."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from medsight.errors import InvalidInputError, MissingIdentifiersError
from medsight.imaging import reorient
from medsight.io import read_image
from medsight.reporting.dicom_seg import write_seg
from tests._tasks import write_task
from tests.conftest import require_data
from tests.reporting._sources import copy_raw, prediction_for, totalseg_ct_with_uids

LABELS = {5: "liver", 1: "spleen", 52: "aorta", 79: "spinal_cord"}


def ct_task(tmp_path):
    from medsight.tasks import load_task

    outputs = [("background", 0)] + [(name, i) for i, name in enumerate(LABELS.values(), 1)]
    return load_task(
        write_task(
            tmp_path / "task",
            task_id="test-ct-organs",
            kind="segmentation",
            architecture="UNet",
            arguments={
                "spatial_dims": 3,
                "in_channels": 1,
                "out_channels": len(outputs),
                "channels": [4, 8],
                "strides": [2],
                "num_res_units": 0,
            },
            outputs=outputs,
            acceptance={"spatial_dims": 3, "modalities": ["CT"]},
            preprocessing={"patch_size": [64, 64, 16], "normalize": "zscore"},
            display={"window": "none"},
        )
    )


def ct_with_labels(tmp_path):
    image = read_image(totalseg_ct_with_uids(tmp_path / "ct"))
    reference = read_image(require_data("totalseg-ct", "example_seg_dicom.nii.gz"))
    reference = reorient(reference, image.orientation_code)
    np.testing.assert_allclose(reference.affine, image.affine, atol=1e-3)
    totalseg = np.asarray(reference.array[0])
    label_map = np.zeros(image.shape, dtype=np.uint8)
    for index, label in enumerate(LABELS, start=1):
        label_map[totalseg == label] = index
    return image, label_map


def dciodvfy_errors(path):
    if shutil.which("dciodvfy") is None:
        pytest.fail("dciodvfy (Debian dicom3tools) is not installed; scripts/test installs it")
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (result.stdout + result.stderr).splitlines() if "Error" in line]


@pytest.mark.timeout(300)
def test_seg_of_the_totalsegmentator_series_puts_each_segment_on_its_voxels(tmp_path):
    import highdicom as hd

    task = ct_task(tmp_path)
    image, label_map = ct_with_labels(tmp_path)
    present = [i for i in range(1, len(LABELS) + 1) if (label_map == i).any()]
    assert len(present) >= 3
    path = write_seg(prediction_for(task, image, label_map), task, image, tmp_path / "seg.dcm")
    assert path is not None
    assert dciodvfy_errors(path) == []

    seg = hd.seg.segread(path)
    dataset = pydicom.dcmread(path)
    source = pydicom.dcmread(image.frames[0].path, stop_before_pixels=True)
    assert dataset.StudyInstanceUID == source.StudyInstanceUID
    assert dataset.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert dataset.PatientID == source.PatientID
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in dataset.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == {f.sop_instance_uid for f in image.frames}
    names = [o.name for o in task.spec.outputs]
    for number, index in enumerate(present, start=1):
        description = seg.get_segment_description(number)
        assert description.segment_label == names[index]
        assert description.algorithm_identification[0].AlgorithmName == task.id
    (equipment,) = [
        e for e in dataset.ContributingEquipmentSequence if e.Manufacturer == "medsight"
    ]
    assert equipment.DeviceSerialNumber == task.task_hash[:16]
    assert task.weights_sha256["main"] in equipment.ContributionDescription

    # every voxel: the SEG, frame by source instance, equals the label map
    uids = [f.sop_instance_uid for f in image.frames]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=True, relabel=False
    )
    for k, frame in enumerate(pixels):
        expected = np.zeros_like(label_map[:, :, k])
        for number, index in enumerate(present, start=1):
            expected[label_map[:, :, k] == index] = number
        np.testing.assert_array_equal(frame, expected.T, err_msg=f"slice {k}")


@pytest.mark.timeout(300)
def test_fractional_seg_keeps_probabilities(tmp_path):
    import highdicom as hd

    task = ct_task(tmp_path)
    image, label_map = ct_with_labels(tmp_path)
    prediction = prediction_for(task, image, label_map)
    path = write_seg(prediction, task, image, tmp_path / "frac.dcm", segmentation_type="fractional")
    assert path is not None and dciodvfy_errors(path) == []
    seg = hd.seg.segread(path)
    assert seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL


def test_a_source_without_identifiers_is_refused(tmp_path):
    task = ct_task(tmp_path)
    image = read_image(copy_raw(tmp_path / "raw"))
    label_map = np.zeros(image.shape, dtype=np.uint8)
    label_map[100:120, 100:120, 5:8] = 1
    with pytest.raises(MissingIdentifiersError, match="SOPClassUID, SOPInstanceUID"):
        write_seg(prediction_for(task, image, label_map), task, image, tmp_path / "x.dcm")


def test_a_prediction_of_another_geometry_is_refused(tmp_path):
    task = ct_task(tmp_path)
    image = read_image(totalseg_ct_with_uids(tmp_path / "ct"))
    other = image.replace(array=image.array[:, :256])
    prediction = prediction_for(task, other, np.zeros(other.shape, dtype=np.uint8))
    with pytest.raises(InvalidInputError, match="does not match its source"):
        write_seg(prediction, task, image, tmp_path / "x.dcm")
