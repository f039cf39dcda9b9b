"""Measurements against hand-computed cases and against values computed directly from the
TotalSegmentator NIfTI files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medsight.errors import EmptyMaskError, InvalidInputError
from medsight.findings import measurements as m
from medsight.image import Image
from medsight.io import read_image
from tests.conftest import require_data


def image_of(shape, spacing, values=None, modality=None, spacing_known=True):
    array = np.zeros(shape, dtype=np.int16) if values is None else values
    affine = np.diag([*spacing, *([1.0] * (3 - len(spacing))), 1.0])
    return Image(
        array=array[np.newaxis],
        affine=affine,
        spatial_dims=len(shape),
        modality=modality,
        spacing_known=spacing_known,
    )


def test_volume_surface_and_extents_of_a_box():
    image = image_of((20, 20, 20), (0.5, 0.5, 2.0))
    mask = np.zeros((20, 20, 20), bool)
    mask[2:12, 2:12, 5:15] = True  # 10 x 10 x 10 voxels = 5 x 5 x 20 mm
    assert m.volume(mask, image).value == pytest.approx(0.5)  # 500 mm3
    assert m.volume(mask, image).unit == "mL"
    extents = [x.value for x in m.bounding_box_extents(mask, image)]
    assert extents == pytest.approx([5.0, 5.0, 20.0])
    area = m.surface_area(mask, image)
    exact = 2 * (5 * 5 + 5 * 20 + 5 * 20)  # 450 mm2 for the box's faces
    assert area.unit == "mm2" and area.value == pytest.approx(exact, rel=0.1)  # cut corners


def test_recist_on_a_cross_with_anisotropic_pixels():
    image = image_of((41, 41), (0.5, 2.0))
    mask = np.zeros((41, 41), bool)
    mask[0:41, 20] = True  # along i: 40 pixels between centres = 20 mm
    mask[20, 10:31] = True  # along j: 20 pixels between centres = 40 mm
    long_axis, short_axis = m.recist_diameters(mask, image)
    assert long_axis.value == pytest.approx(40.0) and long_axis.unit == "mm"
    assert short_axis.value == pytest.approx(20.0)


def test_intensity_statistics_in_hounsfield_units():
    values = np.full((4, 4, 4), -1000, dtype=np.int16)
    values[1:3, 1:3, 1:3] = [[[10, 20], [30, 40]], [[50, 60], [70, 80]]]
    image = image_of((4, 4, 4), (1, 1, 1), values=values, modality="CT")
    mask = values > -1000
    mean, std, low, high = m.intensity_statistics(mask, image)
    assert (mean.value, low.value, high.value) == (45.0, 10.0, 80.0)
    assert std.value == pytest.approx(np.std([10, 20, 30, 40, 50, 60, 70, 80]))
    assert mean.unit == "[hnsf'U]"


def test_ejection_fraction_from_two_masks():
    image = image_of((30, 30, 30), (1.0, 1.0, 1.0))
    end_diastole = np.zeros((30, 30, 30), bool)
    end_diastole[5:25, 5:25, 5:25] = True  # 8000 mm3 = 8 mL
    end_systole = np.zeros_like(end_diastole)
    end_systole[5:15, 5:25, 5:25] = True  # 4 mL
    edv, esv, ef = m.ejection_fraction(end_diastole, end_systole, image)
    assert (edv.value, esv.value, ef.value) == pytest.approx((8.0, 4.0, 50.0))
    assert ef.unit == "%"
    with pytest.raises(InvalidInputError, match="swapped"):
        m.ejection_fraction(end_systole, end_diastole, image)


def test_skin_lesion_shape_indices():
    image = image_of((200, 200), (0.1, 0.1))
    yy, xx = np.mgrid[:200, :200]
    disc = (yy - 100) ** 2 + (xx - 100) ** 2 < 60**2
    assert m.lesion_area(disc, image).value == pytest.approx(np.pi * 6.0**2, rel=0.01)
    assert m.asymmetry_index(disc, image).value < 0.02
    assert m.border_irregularity(disc, image).value == pytest.approx(1.0, abs=0.1)
    lopsided = disc | ((np.abs(yy - 100) < 8) & (xx > 100) & (xx < 190))  # disc with a tail
    assert m.asymmetry_index(lopsided, image).value > 0.05
    assert m.border_irregularity(lopsided, image).value > 1.2
    unknown = image_of((200, 200), (1.0, 1.0), spacing_known=False)
    assert m.lesion_area(disc, unknown).unit == "{px2}"


def test_vessel_area_fraction_and_tortuosity():
    image = image_of((100, 100), (1.0, 1.0))
    field = np.zeros((100, 100), bool)
    field[10:90, 10:90] = True  # 6400 pixels
    vessels = np.zeros((100, 100), bool)
    vessels[20:80, 50] = True  # straight: 60 pixels
    fraction = m.vessel_area_fraction(vessels, image, field)
    assert fraction.value == pytest.approx(60 / 6400)
    assert m.vessel_tortuosity(vessels, image).value == pytest.approx(1.0)
    connected = np.zeros((100, 100), bool)
    for i in range(10, 89):  # a sine, consecutive rows joined so it is one curve
        a = int(50 + 15 * np.sin(i / 6))
        b = int(50 + 15 * np.sin((i + 1) / 6))
        connected[i, min(a, b) : max(a, b) + 1] = True
    assert m.vessel_tortuosity(connected, image).value > 1.3


def test_empty_masks_and_wrong_shapes_are_refused():
    image = image_of((10, 10, 10), (1, 1, 1))
    with pytest.raises(EmptyMaskError, match="liver"):
        m.volume(np.zeros((10, 10, 10), bool), image, "liver")
    with pytest.raises(InvalidInputError, match="shape"):
        m.volume(np.ones((5, 5, 5), bool), image, "liver")


def test_organ_volumes_match_the_totalsegmentator_label_map():
    folder = require_data("totalseg-ct")
    ct = read_image(folder / "example_ct_sm.nii.gz")
    labels_image = read_image(folder / "example_seg.nii.gz")
    assert labels_image.shape == ct.shape
    class_map = folder / "totalsegmentator_class_map_total_and_total_mr.json"
    names = {int(k): v for k, v in json.loads(class_map.read_text())["total"].items()}
    stats = m.label_map_statistics(labels_image.array[0].astype(np.int64), ct, names)
    # reference: straight from the NIfTI files with nibabel
    seg = nib.load(folder / "example_seg.nii.gz")
    data = np.asarray(seg.dataobj).astype(np.int64)
    values = np.asarray(nib.load(folder / "example_ct_sm.nii.gz").dataobj, dtype=np.float64)
    voxel_ml = float(np.prod(seg.header.get_zooms()[:3])) / 1000.0
    checked = 0
    for label in np.unique(data)[1:]:
        name = names[int(label)]
        volume, mean = stats[name]
        assert volume.value == pytest.approx((data == label).sum() * voxel_ml, rel=1e-9)
        assert mean.value == pytest.approx(values[data == label].mean(), rel=1e-6)
        assert mean.unit == ("[hnsf'U]" if ct.modality == "CT" else "1")
        checked += 1
    assert checked >= 5


def test_cardiac_ct_heart_volume():
    folder = require_data("totalseg-ct", "pulmonary_report", "models")
    heart = read_image(folder / "heart.nii.gz")
    mask = heart.array[0] > 0
    reference = nib.load(folder / "heart.nii.gz")
    expected = (
        (np.asarray(reference.dataobj) > 0).sum()
        * np.prod(reference.header.get_zooms()[:3])
        / 1000.0
    )
    assert m.volume(mask, heart, "heart").value == pytest.approx(expected, rel=1e-9)
    assert 100 < expected < 1500  # a plausible adult heart, in mL


def test_findings_refuse_a_prediction_of_another_image(tmp_path):
    from medsight.findings import findings_from_prediction
    from tests._tasks import segmenter_3d_task
    from tests.reporting._sources import prediction_for

    task = segmenter_3d_task(tmp_path / "task")
    image = image_of((20, 20, 20), (1.0, 1.0, 1.0))
    other = image_of((20, 20, 10), (1.0, 1.0, 2.0))
    prediction = prediction_for(task, other, np.zeros((20, 20, 10), np.uint8))
    with pytest.raises(InvalidInputError, match="does not match its source"):
        findings_from_prediction(prediction, task, image)


def test_a_measurement_that_cannot_be_made_is_noted_not_fatal():
    from medsight.findings.finding import Finding, _measure

    image = image_of((50, 50), (1.0, 1.0))
    speck = np.zeros((50, 50), bool)
    speck[10, 10:13] = True  # too short for tortuosity
    finding = Finding(name="vessels", code={}, model={})
    _measure(finding, ["area", "vessel_tortuosity"], speck, image, "vessels")
    assert [m.name for m in finding.measurements] == ["area"]
    assert "vessel_tortuosity not measured" in finding.evidence
