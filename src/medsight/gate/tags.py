"""Tag checks: what the header says about the patient and the image, against intended use.

A known value that contradicts the task's intended use (an adult on a paediatric model, a
lateral view on a PA/AP model) withholds the finding; an unknown value adds a review reason
and does not withhold (a JPEG or a NIfTI carries no tags at all).
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Sequence

import numpy as np

from medsight.gate.checks import GateCheck
from medsight.image import Image
from medsight.tasks.spec import Acceptance, TaskSpec

__all__ = ["dicom_date", "patient_age", "tag_checks"]

_AGE = re.compile(r"^(\d{1,3})([DWMY])$")
_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}
_SEX = {"M": "male", "F": "female", "O": "other"}


def dicom_date(value: object) -> _dt.date | None:
    """A DICOM DA value (``YYYYMMDD``) as a date; None when absent or invalid (``00000000``,
    ``20120000`` and other partial dates are unknown, never an error)."""
    text = str(value or "").strip()
    if not re.fullmatch(r"\d{8}", text):
        return None
    try:
        return _dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def patient_age(image: Image) -> tuple[float | None, str]:
    """The patient's age in years and where it came from: PatientAge, else PatientBirthDate
    with the study (or acquisition, series, content) date."""
    metadata = image.metadata
    match = _AGE.match(str(metadata.get("PatientAge") or "").strip().upper())
    if match:
        return int(match.group(1)) * _UNIT_YEARS[match.group(2)], "PatientAge"
    born = dicom_date(metadata.get("PatientBirthDate"))
    if born is None:
        return None, "no PatientAge and no valid PatientBirthDate"
    for keyword, value in (
        ("StudyDate", image.identifiers.study_date),
        ("AcquisitionDate", metadata.get("AcquisitionDate")),
        ("SeriesDate", metadata.get("SeriesDate")),
        ("ContentDate", metadata.get("ContentDate")),
    ):
        when = dicom_date(value)
        if when is not None and when >= born:
            return (when - born).days / 365.25, f"PatientBirthDate and {keyword}"
    return None, "PatientBirthDate without a valid study date"


def _listed(name: str, found: str | None, allowed: Sequence[str], what: str) -> GateCheck:
    allowed_text = ", ".join(allowed)
    if found is None or not str(found).strip():
        return GateCheck(
            name,
            "tags",
            "review",
            f"{what} unknown; the task is for {allowed_text}",
        )
    if str(found).strip().upper() in {v.upper() for v in allowed}:
        return GateCheck(name, "tags", "pass", f"{what} {found} is one of {allowed_text}")
    return GateCheck(
        name, "tags", "withhold", f"{what} is {found}; the task is only for {allowed_text}"
    )


def _bits(image: Image) -> int | None:
    bits = image.metadata.get("BitsStored")
    if bits is not None:
        try:
            return int(bits)
        except (TypeError, ValueError):
            return None
    if image.modality is None and np.issubdtype(image.array.dtype, np.integer):
        return int(image.array.dtype.itemsize * 8)  # a photograph: its sample depth
    return None


def tag_checks(spec: TaskSpec, image: Image) -> list[GateCheck]:
    """Every intended-use tag check of ``spec`` on ``image``."""
    rules: Acceptance = spec.acceptance
    checks: list[GateCheck] = []
    metadata = image.metadata
    if image.modality is None and rules.modalities and rules.unknown_modality == "review":
        checks.append(
            GateCheck(
                "modality",
                "tags",
                "review",
                f"modality unknown (not a DICOM input); the task is for "
                f"{', '.join(rules.modalities)}: confirm the image is one",
            )
        )
    if rules.max_bits_stored is not None:
        bits = _bits(image)
        too_deep = bits is not None and bits > rules.max_bits_stored
        checks.append(
            GateCheck(
                "bit_depth",
                "tags",
                "withhold" if too_deep else "pass",
                f"{bits} bits per sample; the task was trained on at most {rules.max_bits_stored}"
                if too_deep
                else f"bit depth {bits if bits is not None else 'unknown'} within "
                f"{rules.max_bits_stored}",
                None if bits is None else float(bits),
                float(rules.max_bits_stored),
                "above",
            )
        )
    if rules.body_parts:
        checks.append(
            _listed("body_part", metadata.get("BodyPartExamined"), rules.body_parts, "body part")
        )
    if rules.view_positions:
        checks.append(
            _listed("view_position", metadata.get("ViewPosition"), rules.view_positions, "view")
        )
    if rules.sexes:
        sex = str(metadata.get("PatientSex") or "").strip().upper() or None
        checks.append(_listed("patient_sex", sex, rules.sexes, "patient sex"))
    if rules.age_years is not None:
        age, source = patient_age(image)
        low, high = rules.age_years
        if age is None:
            checks.append(
                GateCheck(
                    "patient_age",
                    "tags",
                    "review",
                    f"patient age unknown ({source}); the task is for {low:g}-{high:g} years",
                )
            )
        else:
            said = f"patient age {age:.1f} years (from {source})"
            checks.append(_within("patient_age", age, (low, high), said, "years"))
    if spec.preprocessing.spacing is not None and not image.spacing_known:
        on_stored_grid = spec.preprocessing.unknown_spacing == "stored_grid"
        checks.append(
            GateCheck(
                "spacing",
                "tags",
                "pass" if on_stored_grid else "review",
                "pixel spacing unknown: the model runs on the stored voxel grid, as it was "
                "trained, and sizes are in voxels"
                if on_stored_grid
                else "pixel spacing unknown (absent, zero or negative): the model's resampling "
                f"to {spec.preprocessing.spacing} mm assumes the stored grid",
            )
        )
    if rules.spacing_mm is not None and image.spacing_known:
        in_plane = float(min(image.spacing[:2]))
        said = f"pixel spacing {in_plane:g} mm"
        checks.append(_within("spacing_range", in_plane, rules.spacing_mm, said, "mm"))
    shape = image.shape
    if rules.min_size is not None:
        small = not all(s >= m for s, m in zip(shape, rules.min_size, strict=False))
        checks.append(
            GateCheck(
                "min_size",
                "tags",
                "withhold" if small else "pass",
                f"image size {shape}; the task needs at least {tuple(rules.min_size)}",
            )
        )
    if rules.max_size is not None:
        large = not all(s <= m for s, m in zip(shape, rules.max_size, strict=False))
        checks.append(
            GateCheck(
                "max_size",
                "tags",
                "withhold" if large else "pass",
                f"image size {shape}; the task accepts at most {tuple(rules.max_size)}",
            )
        )
    return _merge_tagless(checks) if image.modality is None else checks


def _within(
    name: str, value: float, limits: tuple[float, float], said: str, unit: str
) -> GateCheck:
    """A known value inside the task's range passes; outside, it withholds the answer."""
    low, high = limits
    inside = low <= value <= high
    return GateCheck(
        name,
        "tags",
        "pass" if inside else "withhold",
        f"{said}; the task is {'' if inside else 'only '}for {low:g}-{high:g} {unit}",
        value,
        low if value < low else high,
        "below" if value < low else "above",
    )


def _merge_tagless(checks: list[GateCheck]) -> list[GateCheck]:
    """A file without DICOM tags (JPEG, PNG, NIfTI) leaves every tag unknown: one review
    reason says so, instead of one per tag."""
    unknown = [c for c in checks if c.outcome == "review"]
    if len(unknown) < 2:
        return checks
    reason = "no DICOM tags (not a DICOM input): " + "; ".join(c.reason for c in unknown)
    merged = GateCheck("tags_unknown", "tags", "review", reason)
    return [c for c in checks if c.outcome != "review"] + [merged]
