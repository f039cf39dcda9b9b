"""Ventricular function from a cine's phases: a study finding derived from the analyses of
several phases of one short-axis stack (task.toml ``[cardiac_function]``).

End-diastole (ED) and end-systole (ES) are the phases the source names (an ACDC-style
``_ED``/``_ES`` pair, a manifest's ``phase`` column, DICOM's Cardiac Cycle Position);
otherwise the phases of largest and smallest left-ventricle cavity volume. Named phases
whose LV cavities contradict the names (ED smaller than ES) give no ejection fraction, with
why. Volumes are the summed slice areas times the slice spacing (Simpson's disc summation on
the segmented stack; no separate basal-slice rule: every slice where the cavity is segmented
counts, as the training labels were drawn). Everything is in mL and g when the pixel spacing
is known and in voxels otherwise (said so); an ejection fraction, a ratio, is given either
way. What cannot be given is listed with its reason, never left out silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from medsight.findings.finding import Finding
from medsight.findings.measurements import Measurement, stroke_and_ejection, volume
from medsight.image import Image
from medsight.tasks import Task
from medsight.tasks.spec import CardiacFunction

__all__ = ["PHASE_FILE", "CardiacPhase", "body_surface_area", "cardiac_function"]

#: a cine phase named in its file name, ACDC style: ``<stem>_ED.nii.gz`` / ``<stem>_ES.nii``
PHASE_FILE = re.compile(r"^(?P<stem>.+)_(?P<phase>ED|ES)\.nii(\.gz)?$", re.IGNORECASE)

#: the code of the derived finding (pydicom codes.SCT.FindingOfLeftVentricularFunction)
FUNCTION_CODE = {
    "value": "366188009",
    "scheme": "SCT",
    "meaning": "Finding of left ventricular function",
}
_SIMPSON = "sum of segmented slice areas x slice spacing"


@dataclass
class CardiacPhase:
    """One analysed phase of the stack."""

    analysis: int  # index into result.json's analyses[]
    description: str
    image: Image  # for its geometry (spacing, shape) and header metadata
    label_map: np.ndarray | None  # (i, j, k) segment indices; None when the answer is withheld
    phase: str | None = None  # "ED" / "ES" as the source names it


def body_surface_area(metadata: dict[str, Any]) -> float | None:
    """Mosteller's body surface area, sqrt(height [cm] x weight [kg] / 3600) in m2, from the
    DICOM PatientSize (m) and PatientWeight (kg); None when either is absent or implausible."""
    try:
        height_m = float(metadata["PatientSize"])
        weight_kg = float(metadata["PatientWeight"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (0.3 <= height_m <= 2.6 and 1.0 <= weight_kg <= 400.0):
        return None
    return float(np.sqrt(height_m * 100.0 * weight_kg / 3600.0))


def _slice_areas(mask: np.ndarray, image: Image) -> list[float]:
    pixel = float(image.spacing[0] * image.spacing[1]) if image.spacing_known else 1.0
    return [round(float(n) * pixel, 2) for n in mask.reshape(-1, mask.shape[-1]).sum(axis=0)]


def _geometry_problem(phases: list[CardiacPhase]) -> str | None:
    """Why the phases cannot be compared (an EF from different stacks would be wrong)."""
    first = phases[0].image
    for phase in phases:
        mixed = phase.image.metadata.get("SliceThicknesses")
        if mixed:
            return (
                f"{phase.description}: slices of different thickness ({mixed} mm); the disc "
                "summation needs one"
            )
    for other in phases[1:]:
        if other.image.shape != first.shape:
            return (
                f"the phases differ in size ({other.description}: {tuple(other.image.shape)}, "
                f"{phases[0].description}: {tuple(first.shape)}): a slice missing in one phase?"
            )
        if not np.allclose(other.image.spacing, first.spacing, rtol=0.02):
            return (
                f"the phases differ in voxel spacing ({other.description}: "
                f"{tuple(round(s, 2) for s in other.image.spacing)} mm, {phases[0].description}: "
                f"{tuple(round(s, 2) for s in first.spacing)} mm)"
            )
    return None


def _choose(
    phases: list[CardiacPhase], lv_volume: dict[int, float]
) -> tuple[CardiacPhase, CardiacPhase, str] | None:
    named = {p.phase.upper(): p for p in phases if p.phase}
    if "ED" in named and "ES" in named:
        return named["ED"], named["ES"], "as the source names them"
    if len(phases) < 2:
        return None
    ordered = sorted(phases, key=lambda p: lv_volume[p.analysis])
    return ordered[-1], ordered[0], "the phases of largest and smallest LV cavity volume"


def _segment(phase: CardiacPhase, index: int) -> np.ndarray:
    assert phase.label_map is not None  # withheld phases are set apart before measuring
    return np.asarray(phase.label_map == index)


def _measure(phase: CardiacPhase, index: int, structure: str, name: str) -> Measurement:
    """A cavity's or the myocardium's volume in one phase (mL, voxels without spacing)."""
    mask = _segment(phase, index)
    if not mask.any():  # the library refuses an empty mask; here it is a finding (no cavity)
        unit = "mL" if phase.image.spacing_known else "{voxel}"
        return Measurement(name, 0.0, unit, _SIMPSON, structure)
    measured = volume(mask, phase.image, structure)
    return replace(measured, name=name, value=round(measured.value, 2), method=_SIMPSON)


def _ventricle(
    ed: CardiacPhase, es: CardiacPhase, index: int, structure: str
) -> tuple[list[Measurement], str | None]:
    """EDV, ESV, stroke volume and ejection fraction of one cavity, or why not."""
    edv = _measure(ed, index, structure, "end-diastolic volume")
    esv = _measure(es, index, structure, "end-systolic volume")
    if edv.value <= 0.0:
        return [], f"{structure}: no cavity segmented at end-diastole ({ed.description})"
    if esv.value <= 0.0:
        return [edv], f"{structure}: no cavity segmented at end-systole ({es.description})"
    if esv.value > edv.value:
        return [edv, esv], (
            f"{structure}: the end-systolic volume exceeds the end-diastolic one: are the "
            "phases swapped? no ejection fraction"
        )
    stroke, fraction = (replace(m, value=round(m.value, 2)) for m in stroke_and_ejection(edv, esv))
    return [edv, esv, stroke, fraction], None


def _indexed(measurements: list[Measurement], bsa: float) -> list[Measurement]:
    indexed = []
    for item in measurements:
        if item.unit in ("mL", "g"):
            indexed.append(
                Measurement(
                    f"{item.name} index",
                    round(item.value / bsa, 2),
                    f"{item.unit}/m2",
                    f"{item.name} / body surface area (Mosteller)",
                    item.structure,
                )
            )
    return indexed


def cardiac_function(
    phases: list[CardiacPhase], spec: CardiacFunction, task: Task
) -> tuple[dict[str, Any], Finding | None]:
    """The study finding (for result.json's study_findings) and, when it holds measurements,
    a Finding whose measurements the task's ``[[measurement_flags]]`` act on."""
    indices = {o.name: o.index for o in task.spec.outputs}
    model = {"id": task.id, "version": task.version, "hash": task.task_hash}
    document: dict[str, Any] = {
        "name": "cardiac_function",
        "code": FUNCTION_CODE,
        "model": model,
        "derived_from": sorted(p.analysis for p in phases),
        "phases": {},
        "measurements": [],
        "slice_areas": {},
        "not_given": [],
        "method": f"volumes: {_SIMPSON}; ejection fraction: (EDV - ESV) / EDV; myocardial "
        f"mass: myocardial volume at end-diastole x {spec.myocardial_density} g/mL; indexed "
        "to body surface area (Mosteller) when PatientSize and PatientWeight are present",
    }
    missing = document["not_given"]
    usable = [p for p in phases if p.label_map is not None]
    missing += [
        f"{p.description}: the AI answer was withheld, so this phase is not measured"
        for p in phases
        if p.label_map is None
    ]
    if not usable:
        missing.append("no phase could be measured: no volumes, no ejection fraction")
        return document, None
    problem = _geometry_problem(usable)
    if problem:
        missing.append(f"{problem}: no volumes, no ejection fraction")
        return document, None
    image = usable[0].image
    if not image.spacing_known:
        missing.append("pixel spacing unknown: volumes in voxels, no mass, no indexed values")
    lv = indices[spec.left_ventricle]
    lv_volume = {p.analysis: float(_segment(p, lv).sum()) for p in usable}
    for phase in usable:
        if lv_volume[phase.analysis] == 0:
            missing.append(
                f"{phase.description}: the LV cavity is found in no slice: no volumes, no "
                "ejection fraction"
            )
            return document, None
    chosen = _choose(usable, lv_volume)
    if chosen is None:
        only = usable[0]
        document["phases"] = {
            "single": {"analysis": only.analysis, "description": only.description}
        }
        for name in (spec.left_ventricle, spec.right_ventricle):
            if name is not None:
                document["measurements"].append(
                    _measure(only, indices[name], name, "volume").as_dict()
                )
        missing.append("one phase only: an ejection fraction needs end-diastole and end-systole")
        return document, None
    ed, es, how = chosen
    document["derived_from"] = sorted({ed.analysis, es.analysis})
    document["phases"] = {
        "ED": {"analysis": ed.analysis, "description": ed.description, "chosen": how},
        "ES": {"analysis": es.analysis, "description": es.description, "chosen": how},
    }
    measurements: list[Measurement] = []
    for name in (spec.left_ventricle, spec.right_ventricle):
        if name is None:
            continue
        found, why = _ventricle(ed, es, indices[name], name)
        measurements += found
        if why:
            missing.append(why)
        document["slice_areas"].setdefault("ED", {})[name] = _slice_areas(
            _segment(ed, indices[name]), image
        )
        document["slice_areas"].setdefault("ES", {})[name] = _slice_areas(
            _segment(es, indices[name]), image
        )
    document["slice_areas"]["unit"] = "mm2" if image.spacing_known else "{px2}"
    if spec.myocardium is not None and image.spacing_known:
        myocardium = _measure(ed, indices[spec.myocardium], spec.myocardium, "volume")
        measurements.append(
            Measurement(
                "myocardial mass",
                round(myocardium.value * spec.myocardial_density, 2),
                "g",
                f"myocardial volume at end-diastole x {spec.myocardial_density} g/mL",
                spec.myocardium,
            )
        )
    bsa = body_surface_area(ed.image.metadata) if image.spacing_known else None
    if bsa is not None:
        document["body_surface_area_m2"] = round(bsa, 3)
        measurements += _indexed(measurements, bsa)
    elif image.spacing_known:
        missing.append("PatientSize or PatientWeight absent: no values indexed to body size")
    document["measurements"] = [m.as_dict() for m in measurements]
    finding = Finding(
        name="cardiac_function",
        code=FUNCTION_CODE,
        model=model,
        measurements=measurements,
        evidence=f"end-diastole {ed.description}, end-systole {es.description} ({how})",
    )
    return document, finding
