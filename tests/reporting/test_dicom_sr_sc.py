"""DICOM SR (TID 1500) and the overlay Secondary Capture: written, read back with pydicom and
highdicom (findings, probabilities, flags, measurements with units, references), dciodvfy
clean."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from medsight.findings import findings_from_prediction
from medsight.inference import Predictor
from medsight.io import read_image
from medsight.reporting import overlay_png
from medsight.reporting.dicom_sc import write_overlay_sc
from medsight.reporting.dicom_seg import write_seg
from medsight.reporting.dicom_sr import PROBABILITY_CODE, write_sr
from medsight.tasks import load_named_task, load_task
from tests._tasks import write_task
from tests.reporting._sources import prediction_for
from tests.reporting.test_dicom_seg import ct_with_labels, dciodvfy_errors

SAMPLE = Path(__file__).parents[2] / "src/medsight/samples/cxr/pneumonia_sample_sc.dcm"


def _texts(items, code):
    """TEXT values of content items named ``code`` anywhere under ``items``."""
    found = []
    for item in items:
        name = (
            item.ConceptNameCodeSequence[0].CodeValue if "ConceptNameCodeSequence" in item else ""
        )
        if name == code and "TextValue" in item:
            found.append(item.TextValue)
        found += _texts(item.get("ContentSequence", []), code)
    return found


def _values(group):
    found = {}
    for item in group.get_measurements():
        found[item.name.meaning] = (float(item.value), item.unit.value)
    return found


@pytest.mark.timeout(300)
def test_classifier_sr_and_overlay_sc(tmp_path):
    import highdicom as hd

    task = load_named_task("cxr-pneumonia")
    image = read_image(SAMPLE)
    prediction = Predictor(task, explain=True).predict(image)
    findings = findings_from_prediction(prediction, task, image)
    (finding,) = findings
    path = write_sr(findings, task, image, tmp_path / "sr.dcm")
    assert dciodvfy_errors(path) == []

    sr = hd.sr.srread(path)
    source = pydicom.dcmread(SAMPLE, stop_before_pixels=True)
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.PatientID == source.PatientID
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == 1
    group = groups[0]
    assert group.finding_type.value == finding.code["value"]
    assert set(_texts(group, "111001")) == {task.id}  # Algorithm Name
    assert set(_texts(group, "111003")) == {task.version}  # Algorithm Version
    probability, unit = _values(group)[PROBABILITY_CODE[2]]
    assert probability == pytest.approx(finding.probability, abs=1e-6) and unit == "1"
    (evaluation,) = group.get_qualitative_evaluations()
    assert evaluation.name.meaning.endswith("high_sensitivity")
    assert evaluation.value.meaning == ("Yes" if finding.flag else "No")
    region = group.roi
    assert region is not None and region.GraphicType == "POINT"
    column, row = finding.location["voxel"]
    np.testing.assert_allclose(region.value, [[column + 0.5, row + 0.5]])

    picture = overlay_png(image, tmp_path / "overlay.png", heatmap=prediction.heatmap)
    sc_path = write_overlay_sc(picture, task, image, tmp_path / "sc.dcm")
    assert dciodvfy_errors(sc_path) == []
    sc = pydicom.dcmread(sc_path)
    assert sc.StudyInstanceUID == source.StudyInstanceUID
    assert sc.BurnedInAnnotation == "YES" and "NOT FOR DIAGNOSTIC USE" in sc.ImageComments
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert sc.pixel_array.shape[-1] == 3


@pytest.mark.timeout(300)
def test_segmentation_sr_references_the_seg_and_carries_measurements(tmp_path):
    import highdicom as hd

    outputs = [("background", 0), ("liver", 1), ("spleen", 2)]
    task = load_task(
        write_task(
            tmp_path / "task",
            task_id="test-ct-organs",
            kind="segmentation",
            architecture="UNet",
            arguments={
                "spatial_dims": 3,
                "in_channels": 1,
                "out_channels": 3,
                "channels": [4, 8],
                "strides": [2],
                "num_res_units": 0,
            },
            outputs=outputs,
            acceptance={"spatial_dims": 3, "modalities": ["CT"]},
            preprocessing={"patch_size": [64, 64, 16], "normalize": "zscore"},
            display={"window": "none"},
            extra="",
        )
    )
    # measurements are asked per output in task.toml; here they are set on the spec
    spec = task.spec.model_copy(
        update={
            "outputs": [
                o.model_copy(update={"measurements": ["volume", "intensity"]})
                for o in task.spec.outputs
            ]
        }
    )
    object.__setattr__(task, "spec", spec)
    image, label_map = ct_with_labels(tmp_path)
    label_map = np.where(label_map <= 2, label_map, 0).astype(np.uint8)  # liver, spleen
    prediction = prediction_for(task, image, label_map)
    seg_path = write_seg(prediction, task, image, tmp_path / "seg.dcm")
    findings = findings_from_prediction(prediction, task, image)
    path = write_sr(findings, task, image, tmp_path / "sr.dcm", seg_path=seg_path)
    assert dciodvfy_errors(path) == []

    sr = hd.sr.srread(path)
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 2
    seg = pydicom.dcmread(seg_path)
    for group, finding in zip(groups, findings, strict=True):
        assert group.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        values = _values(group)
        volume = next(m for m in finding.measurements if m.name == "volume")
        assert values["Volume"][0] == pytest.approx(volume.value, rel=1e-6)
        assert values["Volume"][1] == "mL"
        mean = next(m for m in finding.measurements if m.name == "mean intensity")
        assert values["Mean"] == (pytest.approx(mean.value, rel=1e-6), "[hnsf'U]")
