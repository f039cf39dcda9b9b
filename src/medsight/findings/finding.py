"""`Finding`: what a clinician sees, built from a `Prediction` and its task.

A classifier output gives a finding with its calibrated probability and its flag at the
task's locked operating point (which one is named); its location is the point of maximum
Grad-CAM evidence when a heatmap exists. A segment gives a finding with its mask location
(bounding box), mean probability inside the mask, and the measurements the task asks for.
Every finding names the model (task id, version, hash) and operating point behind it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medsight.errors import InvalidInputError, MedsightError
from medsight.findings import measurements as m
from medsight.image import Image
from medsight.inference import Prediction
from medsight.tasks import Task
from medsight.tasks.spec import Output

__all__ = ["Finding", "findings_from_prediction", "measure_segment"]

_PREFERRED_POINT = "high_sensitivity"


@dataclass
class Finding:
    name: str
    code: dict[str, str]  # value, scheme, meaning (as highdicom's CodedConcept)
    model: dict[str, str]  # task id, version, hash
    probability: float | None = None
    flag: bool | None = None  # None: no operating point applies (e.g. a measured structure)
    operating_point: dict[str, Any] | None = None  # name, threshold, locked sens/spec
    critical: bool = False
    stat_probability: float | None = None
    location: dict[str, Any] | None = None  # kind: box | point, in voxels and mm (LPS)
    segment_index: int | None = None
    measurements: list[m.Measurement] = field(default_factory=list)
    evidence: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "code": self.code,
            "model": self.model,
            "probability": self.probability,
            "flag": self.flag,
            "operating_point": self.operating_point,
            "critical": self.critical,
            "location": self.location,
            "segment_index": self.segment_index,
            "measurements": [x.as_dict() for x in self.measurements],
            "evidence": self.evidence,
        }


def _model(task: Task) -> dict[str, str]:
    return {"id": task.id, "version": task.version, "hash": task.task_hash}


def _check_geometry(prediction: Prediction, image: Image) -> None:
    if tuple(prediction.shape) != tuple(image.shape) or not np.allclose(
        prediction.affine, image.affine, atol=1e-4
    ):
        raise InvalidInputError(
            f"the prediction's geometry {tuple(prediction.shape)} does not match its source "
            f"image {tuple(image.shape)}: was it computed on another image?"
        )


def _point(image: Image, voxel: tuple[int, ...]) -> dict[str, Any]:
    world = image.affine @ np.array([*voxel, *([0] * (3 - len(voxel))), 1.0])
    return {"kind": "point", "voxel": [int(v) for v in voxel], "lps_mm": world[:3].tolist()}


def _box(image: Image, mask: np.ndarray) -> dict[str, Any]:
    from scipy import ndimage

    # find_objects: one pass, where argwhere would list every voxel (0.3 s on a CT volume)
    (box,) = ndimage.find_objects(np.asarray(mask, dtype=bool).view(np.uint8))
    low = np.array([axis.start for axis in box])
    high = np.array([axis.stop - 1 for axis in box])
    return {
        "kind": "box",
        "voxel_min": low.tolist(),
        "voxel_max": high.tolist(),
        "centre": _point(image, tuple(int(v) for v in np.round((low + high) / 2)))["lps_mm"],
    }


#: the outer share of each side where a heatmap maximum is not a credible finding location
#: (collimation edges, burnt-in text and markers: where shortcut learning shows)
BORDER_BAND = 0.10


def _heatmap_location(prediction: Prediction, image: Image) -> tuple[dict[str, Any] | None, str]:
    """The Grad-CAM maximum as the finding's location, unless it lies in the border band."""
    from medsight.inference.preprocess import border_band

    if prediction.heatmap is None:
        return None, ""
    heat = prediction.heatmap
    peak = tuple(int(v) for v in np.unravel_index(np.argmax(heat), heat.shape))
    if border_band(heat.shape, BORDER_BAND)[peak]:
        return None, (
            f"; no location reported: the heatmap maximum lies in the outer "
            f"{BORDER_BAND:.0%} border band, not a credible finding location"
        )
    point = _point(image, peak)
    grid = "x".join(str(n) for n in prediction.heatmap_grid or ())
    point["method"] = "maximum of the Grad-CAM heatmap" + (f" ({grid} grid)" if grid else "")
    return point, ""


def _classification_findings(prediction: Prediction, task: Task, image: Image) -> list[Finding]:
    assert prediction.probabilities is not None
    spec = task.spec
    findings = []
    heatmap_point, location_note = _heatmap_location(prediction, image)
    for output in spec.outputs:
        points = {n: p for n, p in spec.operating_points.items() if p.output == output.name}
        if not points:
            continue  # e.g. "normal": not a finding of its own
        name = _PREFERRED_POINT if _PREFERRED_POINT in points else sorted(points)[0]
        point = points[name]
        probability = float(prediction.probabilities[output.name])
        flag = probability >= point.threshold
        locked = (
            f" (locked at sensitivity {point.sensitivity:.3f}, specificity {point.specificity:.3f})"
            if point.sensitivity is not None and point.specificity is not None
            else ""
        )
        findings.append(
            Finding(
                name=output.name,
                code=output.code.model_dump(),
                model=_model(task),
                probability=probability,
                flag=flag,
                operating_point={
                    "name": name,
                    "threshold": point.threshold,
                    "sensitivity": point.sensitivity,
                    "specificity": point.specificity,
                },
                critical=output.critical,
                stat_probability=output.stat_probability,
                location=heatmap_point if flag else None,
                evidence=(
                    f"calibrated probability {probability:.3f} "
                    f"{'>=' if flag else '<'} threshold {point.threshold:.3f} of operating "
                    f"point {name}{locked}" + (location_note if flag else "")
                ),
            )
        )
    _flag_implied(findings, spec.outputs)
    return findings + _grade_findings(prediction, task)


def _flag_implied(findings: list[Finding], outputs: Sequence[Output]) -> None:
    """A flagged finding flags the findings its output implies (``Output.implies``)."""
    by_name = {f.name: f for f in findings}
    for output in outputs:
        cause = by_name.get(output.name)
        if cause is None or not cause.flag:
            continue
        for name in output.implies:
            implied = by_name.get(name)
            if implied is not None and not implied.flag:
                implied.flag = True
                implied.location = implied.location or cause.location
                implied.evidence += f"; flagged because {cause.name} is flagged, which implies it"


def _grade_findings(prediction: Prediction, task: Task) -> list[Finding]:
    """Each ordinal grade as a finding whose measurement is the grade (no flag: the grade's
    consequences are the operating points on its cumulative outputs)."""
    found = []
    for ordinal in task.spec.ordinal:
        grade = prediction.grades[ordinal.name]
        distribution = ", ".join(f"{k} {p:.2f}" for k, p in grade["probabilities"].items())
        found.append(
            Finding(
                name=ordinal.name,
                code=ordinal.code.model_dump(),
                model=_model(task),
                measurements=[
                    m.Measurement("grade", float(grade["grade"]), "{grade}", grade["method"])
                ],
                evidence=f"grade {grade['grade']} ({grade['level']}); probabilities {distribution}",
            )
        )
    return found


def measure_segment(
    names: Sequence[str], mask: np.ndarray, image: Image, structure: str
) -> list[m.Measurement]:
    """The named measurements of one segment (see ``Output.measurements``)."""
    results: list[m.Measurement] = []
    for name in names:
        if name == "volume":
            results.append(m.volume(mask, image, structure))
        elif name == "volume_mm3":
            millilitres = m.volume(mask, image, structure)
            value = millilitres.value * 1000.0 if millilitres.unit == "mL" else millilitres.value
            unit = "mm3" if millilitres.unit == "mL" else millilitres.unit
            results.append(m.Measurement("volume", value, unit, millilitres.method, structure))
        elif name == "surface_area":
            results.append(m.surface_area(mask, image, structure))
        elif name == "extents":
            results.extend(m.bounding_box_extents(mask, image, structure))
        elif name == "recist":
            results.extend(m.recist_diameters(mask, image, structure))
        elif name == "intensity":
            results.extend(m.intensity_statistics(mask, image, structure))
        elif name == "area":
            results.append(m.lesion_area(mask, image, structure))
        elif name == "asymmetry":
            results.append(m.asymmetry_index(mask, image, structure))
        elif name == "border_irregularity":
            results.append(m.border_irregularity(mask, image, structure))
        elif name == "vessel_area_fraction":
            results.append(m.vessel_area_fraction(mask, image))
        elif name == "vessel_tortuosity":
            results.append(m.vessel_tortuosity(mask, image))
    return results


def _mean_inside(probabilities: Any, mask: np.ndarray) -> float:
    """The mean probability inside ``mask``, slab by slab for quantised probabilities (no
    float copy of a large segment)."""
    from medsight.inference.quantized import SCALE, QuantizedVolume

    if not isinstance(probabilities, QuantizedVolume):
        return float(probabilities[mask].mean())
    total, count = 0, 0
    for raw, inside in zip(probabilities.raw, mask, strict=True):
        total += int(raw[inside].sum(dtype=np.uint64))
        count += int(inside.sum())
    return total / count * SCALE


def _segment_finding(
    task: Task,
    output: Output,
    mask: np.ndarray,
    probabilities: np.ndarray | None,
    image: Image,
    instances: np.ndarray | None = None,
) -> Finding:
    present = bool(mask.any())
    probability = (
        _mean_inside(probabilities, mask) if present and probabilities is not None else None
    )
    finding = Finding(
        name=output.name,
        code=output.code.model_dump(),
        model=_model(task),
        probability=probability,
        flag=present if output.critical else None,
        critical=output.critical,
        stat_probability=output.stat_probability,
        location=_box(image, mask) if present else None,
        segment_index=output.index,
        evidence=(f"{int(mask.sum())} voxels segmented" if present else "nothing segmented"),
    )
    per_segment = [n for n in output.measurements if n != "nuclei"]
    if present:
        _measure(finding, per_segment, mask, image, output.name)
    if "nuclei" in output.measurements:
        _measure_nuclei(finding, instances, image)
    return finding


def _measure_nuclei(finding: Finding, instances: np.ndarray | None, image: Image) -> None:
    """Count, density and sizes from the instance map (an empty tile counts 0 nuclei)."""
    from medsight.findings.pathology import nucleus_measurements

    if instances is None:
        finding.evidence += "; nuclei not measured: the prediction has no instance map"
        return
    try:
        finding.measurements.extend(nucleus_measurements(instances, image))
    except MedsightError as exc:
        finding.evidence += f"; nuclei not measured: {exc.message}"
        return
    finding.evidence += f"; {int(instances.max())} nuclei"  # ids are 1..n


def _measure(
    finding: Finding, names: Sequence[str], mask: np.ndarray, image: Image, structure: str
) -> None:
    """Each measurement on its own: one that cannot be made (e.g. no vessel segment long
    enough for tortuosity) is noted in the finding's evidence, never fails the analysis."""
    for name in names:
        try:
            finding.measurements.extend(measure_segment([name], mask, image, structure))
        except MedsightError as exc:
            finding.evidence += f"; {name} not measured: {exc.message}"


def _box_location(box: dict[str, Any]) -> dict[str, Any]:
    """A detected box as a finding location: its pixel edges, the voxels it covers
    (inclusive, as a segment's box), its centre and corners in mm."""
    x0, y0, x1, y1 = box["pixel_box"]
    corners = np.array(box["lps_box"], dtype=np.float64).reshape(2, 3)
    return {
        "kind": "box",
        "voxel_min": [int(np.floor(x0)), int(np.floor(y0))],
        "voxel_max": [max(int(np.ceil(x1)) - 1, 0), max(int(np.ceil(y1)) - 1, 0)],
        "centre": corners.mean(axis=0).round(4).tolist(),
        "pixel_box": box["pixel_box"],
        "lps_box": box["lps_box"],
    }


def _detection_findings(prediction: Prediction, task: Task, image: Image) -> list[Finding]:
    """The image's finding at the operating point (located at its most confident box when
    flagged) and one finding per box scoring at least ``[detection] finding_score``, with
    its score and size; a box's score is the detector's, not a calibrated probability."""
    spec = task.spec
    assert spec.detection is not None and prediction.boxes is not None
    findings = _classification_findings(prediction, task, image)
    shown = [b for b in prediction.boxes if b["score"] >= spec.detection.finding_score]
    for finding in findings:
        if finding.flag and shown:
            finding.location = {**_box_location(shown[0]), "method": "most confident box"}
            finding.evidence += f"; {len(shown)} box(es) at or above {spec.detection.finding_score}"
    output = spec.outputs[0]
    spacing = np.asarray(image.spacing[:2], dtype=np.float64)
    unit = "mm" if image.spacing_known else "{px}"
    for rank, box in enumerate(shown, start=1):
        x0, y0, x1, y1 = box["pixel_box"]
        sizes = np.array([x1 - x0, y1 - y0]) * (spacing if image.spacing_known else 1.0)
        findings.append(
            Finding(
                name=f"{output.name}_box_{rank}",
                code=output.code.model_dump(),
                model=_model(task),
                location=_box_location(box),
                measurements=[
                    m.Measurement(
                        "detection score",
                        float(box["score"]),
                        "1",
                        "the detector's score",
                        output.name,
                    ),
                    m.Measurement(
                        "box width",
                        float(sizes[0]),
                        unit,
                        "box extent along the columns",
                        output.name,
                    ),
                    m.Measurement(
                        "box height",
                        float(sizes[1]),
                        unit,
                        "box extent along the rows",
                        output.name,
                    ),
                ],
                evidence=f"detected box {rank} of {len(shown)}, score {box['score']:.3f}",
            )
        )
    return findings


def findings_from_prediction(prediction: Prediction, task: Task, image: Image) -> list[Finding]:
    """The findings of one prediction on its source image (geometry checked first)."""
    _check_geometry(prediction, image)
    if prediction.boxes is not None:
        return _detection_findings(prediction, task, image)
    if prediction.probabilities is not None:
        return _classification_findings(prediction, task, image)
    if prediction.label_map is None:
        return []
    spec = task.spec
    findings = []
    # an instance task's boundary class is merged into its objects: no finding of its own
    merged = spec.instances.boundary if spec.instances is not None else None
    for output in spec.outputs:
        if output.index == 0 or output.name == merged:
            continue
        mask = prediction.label_map == output.index
        probabilities = (
            prediction.segment_probabilities[output.index]
            if prediction.segment_probabilities is not None
            else None
        )
        findings.append(
            _segment_finding(task, output, mask, probabilities, image, prediction.instance_map)
        )
    by_name = {o.name: o for o in spec.outputs}
    for group, members in spec.segment_groups.items():
        mask = np.isin(prediction.label_map, [by_name[n].index for n in members])
        finding = Finding(
            name=group,
            code={"value": group, "scheme": "99MEDSIGHT", "meaning": " + ".join(members)},
            model=_model(task),
            location=_box(image, mask) if mask.any() else None,
            evidence=f"union of {', '.join(members)}",
        )
        if mask.any():
            asked = {x for n in members for x in by_name[n].measurements}
            wanted = sorted(asked & {"volume", "volume_mm3"})
            _measure(finding, wanted, mask, image, group)
        findings.append(finding)
    return findings
