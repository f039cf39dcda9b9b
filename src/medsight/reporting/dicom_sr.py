"""DICOM SR Comprehensive 3D with a TID 1500 Measurement Report (highdicom).

One measurement group per finding: its coded concept as the finding type, the producing
algorithm (name, version, task hash), the calibrated probability, the flag at the locked
operating point as a qualitative evaluation (naming the point), the measurements with UCUM
units, and the image region it refers to: the segment of the SEG written beside it, or the
point of maximum Grad-CAM evidence on a 2D image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medsight.findings import Finding, Measurement
from medsight.gate import GateResult
from medsight.image import Image
from medsight.reporting._dicom_common import (
    MANUFACTURER,
    contributing_equipment,
    result_uid,
    series_uid,
    source_datasets,
)
from medsight.tasks import Task

__all__ = ["FLAG_CODE", "PROBABILITY_CODE", "write_sr"]

PROBABILITY_CODE = ("calibrated-prob", "99MEDSIGHT", "Calibrated probability")  # SH: 16 chars
FLAG_CODE = ("ai-flag", "99MEDSIGHT", "AI flag at locked operating point")

# medsight measurement names -> (value, scheme, meaning); others get a private code
_NAMES = {
    "volume": ("118565006", "SCT", "Volume"),
    "area": ("42798000", "SCT", "Area"),
    "perimeter": ("131191004", "SCT", "Perimeter"),
    "long axis diameter": ("103339001", "SCT", "Long axis"),
    "short axis diameter": ("103340004", "SCT", "Short axis"),
    "mean intensity": ("373098007", "SCT", "Mean"),
    "standard deviation of intensity": ("386136009", "SCT", "Standard Deviation"),
    "minimum intensity": ("255605001", "SCT", "Minimum"),
    "maximum intensity": ("56851009", "SCT", "Maximum"),
    # ventricular function (pydicom codes.SCT.CardiacEjectionFraction, StrokeVolume,
    # MassQuantity); end-diastolic and end-systolic volumes have no verified code here and
    # take the private scheme
    "ejection fraction": ("70822001", "SCT", "Cardiac ejection fraction"),
    "stroke volume": ("90096001", "SCT", "Stroke Volume"),
    "myocardial mass": ("118538004", "SCT", "Mass"),
}
_UNIT_MEANINGS = {
    "mL": "milliliter",
    "mm": "millimeter",
    "mm2": "square millimeter",
    "mm3": "cubic millimeter",
    "%": "percent",
    "1": "no units",
    "[hnsf'U]": "Hounsfield unit",
    "g": "gram",
    "mL/m2": "milliliter per square meter",
    "g/m2": "gram per square meter",
    "{grade}": "grade",  # a UCUM annotation: a dimensionless count on an ordinal scale
}
#: units of pixels or voxels (spacing unknown): not physical, so not written as measurements
_GRID_UNITS = ("{px}", "{px2}", "{voxel}", "{nuclei}/10*6{px2}")


def _concept(code: tuple[str, str, str]) -> Any:
    from highdicom.sr.coding import CodedConcept

    return CodedConcept(*code)


def _measurement_name(measurement: Measurement) -> Any:
    code = _NAMES.get(measurement.name)
    if code is None:
        slug = measurement.name.replace(" ", "-")[:16]
        code = (slug, "99MEDSIGHT", measurement.name[:64])
    return _concept(code)


def _unit(unit: str) -> Any:
    return _concept((unit, "UCUM", _UNIT_MEANINGS.get(unit, unit)))


def _algorithm(task: Task) -> Any:
    import highdicom as hd

    return hd.sr.AlgorithmIdentification(
        name=task.id, version=task.version, parameters=[f"task_hash={task.task_hash}"]
    )


def _group(
    finding: Finding,
    number: int,
    task: Task,
    image: Image,
    sources: list[Any],
    seg: Any | None,
    segment_numbers: dict[int, int],
) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    tracking = hd.sr.TrackingIdentifier(
        uid=result_uid(task, sources[0], f"finding-{number}-{finding.name}"),
        identifier=f"finding {number}: {finding.name}"[:64],
    )
    algorithm = _algorithm(task)
    measurements = []
    if finding.probability is not None:
        measurements.append(
            hd.sr.Measurement(
                name=_concept(PROBABILITY_CODE),
                value=round(float(finding.probability), 6),
                unit=_unit("1"),
                algorithm_id=algorithm,
            )
        )
    sites = {o.name: o.code for o in task.spec.outputs}
    for item in finding.measurements:
        if item.unit in _GRID_UNITS:
            continue  # pixel units (unknown spacing) are not UCUM measurements
        site = sites.get(item.structure) if item.structure != finding.name else None
        measurements.append(
            hd.sr.Measurement(
                name=_measurement_name(item),
                value=round(float(item.value), 6),
                unit=_unit(item.unit),
                algorithm_id=algorithm,
                # a study finding measures several structures: each value names its own
                finding_sites=[hd.sr.FindingSite(_concept((site.value, site.scheme, site.meaning)))]
                if site is not None
                else None,
            )
        )
    evaluations = []
    if finding.flag is not None:
        point = (finding.operating_point or {}).get("name", "")
        name = _concept((FLAG_CODE[0], FLAG_CODE[1], f"{FLAG_CODE[2]} {point}".strip()[:64]))
        evaluations.append(
            hd.sr.QualitativeEvaluation(name, codes.SCT.Yes if finding.flag else codes.SCT.No)
        )
    common: dict[str, Any] = dict(
        tracking_identifier=tracking,
        finding_type=_concept(
            (finding.code["value"], finding.code["scheme"], finding.code["meaning"])
        ),
        algorithm_id=algorithm,
        measurements=measurements or None,
        qualitative_evaluations=evaluations or None,
    )
    segment = segment_numbers.get(finding.segment_index or -1)
    if seg is not None and segment is not None:
        if image.spatial_dims == 3:
            return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                referenced_segment=hd.sr.ReferencedSegment(
                    sop_class_uid=seg.SOPClassUID,
                    sop_instance_uid=seg.SOPInstanceUID,
                    segment_number=segment,
                    source_series=hd.sr.SourceSeriesForSegmentation(sources[0].SeriesInstanceUID),
                ),
                **common,
            )
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_segment=hd.sr.ReferencedSegmentationFrame(
                sop_class_uid=seg.SOPClassUID,
                sop_instance_uid=seg.SOPInstanceUID,
                segment_number=segment,
                frame_number=segment,  # a 2D SEG holds one frame per segment, in order
                source_image=hd.sr.SourceImageForSegmentation.from_source_image(sources[0]),
            ),
            **common,
        )
    location = finding.location or {}
    if image.spatial_dims == 2 and "pixel_box" in location:
        x0, y0, x1, y1 = location["pixel_box"]  # pixel edges: SCOORD's own convention
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=hd.sr.ImageRegion(
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                graphic_data=np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]),
                source_image=hd.sr.SourceImageForRegion.from_source_image(sources[0]),
            ),
            **common,
        )
    if image.spatial_dims == 2 and location.get("kind") == "point":
        column, row = location["voxel"][:2]  # (i, j) = (column, row)
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=hd.sr.ImageRegion(
                graphic_type=hd.sr.GraphicTypeValues.POINT,
                graphic_data=np.array([[column + 0.5, row + 0.5]]),  # pixel centre
                source_image=hd.sr.SourceImageForRegion.from_source_image(sources[0]),
            ),
            **common,
        )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        source_images=[
            hd.sr.SourceImageForMeasurementGroup.from_source_image(s) for s in sources[:1]
        ],
        **common,
    )


#: the input gate's evaluation of the input (private scheme: no standard code says it)
GATE_CODE = ("input-gate", "99MEDSIGHT", "AI input gate: may the model judge this image")
GATE_DECISION_CODES = {
    "pass": ("gate-pass", "99MEDSIGHT", "Input within the model's intended use"),
    "review": ("gate-review", "99MEDSIGHT", "Input needs review: a value is unknown"),
    "withhold": ("gate-withhold", "99MEDSIGHT", "AI answer withheld: input outside scope"),
}


def _gate_group(gate: GateResult, task: Task, sources: list[Any]) -> Any:
    """A TID 1501 group with the gate's decision as a qualitative evaluation of the input;
    the reasons (and each check's score) go in as text in the finding-site free text."""
    import highdicom as hd

    decision = gate.decision
    evaluation = hd.sr.QualitativeEvaluation(
        _concept(GATE_CODE), _concept(GATE_DECISION_CODES[decision])
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=result_uid(task, sources[0], "input-gate"), identifier="input gate"
        ),
        source_images=[
            hd.sr.SourceImageForMeasurementGroup.from_source_image(s) for s in sources[:1]
        ],
        algorithm_id=_algorithm(task),
        qualitative_evaluations=[evaluation],
    )


def _frame_references_without_segment_numbers(dataset: Any) -> None:
    """An image reference to a SEG frame names the frame only: the frame already belongs to
    one segment, and PS3.3 forbids ReferencedSegmentNumber beside ReferencedFrameNumber
    (dciodvfy flags it in highdicom's planar ROI reference)."""
    for item in dataset.get("ContentSequence", []):
        for reference in item.get("ReferencedSOPSequence", []):
            if "ReferencedFrameNumber" in reference and "ReferencedSegmentNumber" in reference:
                del reference.ReferencedSegmentNumber
        _frame_references_without_segment_numbers(item)


def write_sr(
    findings: list[Finding],
    task: Task,
    image: Image,
    path: Path,
    *,
    seg_path: Path | None = None,
    revision: int = 0,
    previous: list[Any] | None = None,
    gate: GateResult | None = None,
    also: tuple[Image, ...] = (),
    series: str = "",
) -> Path:
    """Write the measurement report; ``seg_path`` is the SEG written for the same
    prediction (its segments are referenced), ``previous`` the SRs this one replaces,
    ``also`` further images the findings were derived from (in the evidence: e.g. the other
    phase of a cine), ``series`` a name that keeps a study-level report apart."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    sources = source_datasets(image)
    others = [d for extra in also for d in source_datasets(extra)]
    seg = pydicom.dcmread(seg_path) if seg_path is not None else None
    segment_numbers: dict[int, int] = {}
    if seg is not None:
        names = {o.name: o.index for o in task.spec.outputs}
        for item in seg.SegmentSequence:
            segment_numbers[names[item.SegmentLabel]] = int(item.SegmentNumber)
    groups = [
        _group(f, n, task, image, sources, seg, segment_numbers)
        for n, f in enumerate(findings, start=1)
    ]
    if gate is not None:
        groups.insert(0, _gate_group(gate, task, sources))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=result_uid(task, sources[0], "device"),
            name=f"{MANUFACTURER} {task.id}"[:64],
            manufacturer_name=MANUFACTURER,
            model_name=task.version[:64],
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.Imaging,
        imaging_measurements=groups or None,
    )
    evidence = list(sources) + others
    if seg is not None:
        evidence.append(seg)
    first = sources[0]
    uid = result_uid(task, first, f"sr{series}", revision=revision)
    previous = [d for d in previous or [] if d.SOPInstanceUID != uid] or None
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=series_uid(task, first, f"sr-series{series}"),
        series_number=9202 if series else 9201,
        sop_instance_uid=uid,
        instance_number=1 + revision,
        manufacturer=MANUFACTURER,
        is_complete=True,
        previous_versions=previous,
        contributing_equipment=contributing_equipment(task),
    )
    what = f" {series}" if series else ""
    sr.SeriesDescription = f"AI report {task.id}{what} - research use only"[:64]
    path.parent.mkdir(parents=True, exist_ok=True)
    _frame_references_without_segment_numbers(sr)
    sr.save_as(path)
    return path
