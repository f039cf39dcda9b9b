"""Intended-use checks of a task against an image, each with a reason.

A failed *refuse* check means the task cannot run on the image at all (wrong modality or
dimensionality): the analysis is refused. A failed *review* check (age, view, body part, size,
bit depth) lets the analysis run but marks the result NEEDS_REVIEW with the reason: never a
silent negative.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from medsight.image import Image
from medsight.tasks.spec import Acceptance

__all__ = ["CheckOutcome", "check_acceptance", "patient_age_years"]


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    severity: Literal["refuse", "review"]
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "passed": self.passed,
            "severity": self.severity,
            "reason": self.reason,
        }


_AGE = re.compile(r"^(\d{1,3})([DWMY])$")
_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


def patient_age_years(value: object) -> float | None:
    """DICOM Age String (e.g. ``003Y``, ``018M``) in years, or None when absent or invalid."""
    match = _AGE.match(str(value or "").strip().upper())
    if not match:
        return None
    return int(match.group(1)) * _UNIT_YEARS[match.group(2)]


def _listed(values: list[str], found: str | None, what: str) -> tuple[bool, str]:
    if not values:
        return True, f"any {what} accepted"
    allowed = ", ".join(values)
    if found is None:
        return False, f"{what} unknown; the task accepts {allowed}"
    ok = found.upper() in {v.upper() for v in values}
    return ok, f"{what} {found} {'is' if ok else 'is not'} one of {allowed}"


def check_acceptance(rules: Acceptance, image: Image) -> list[CheckOutcome]:
    """Every check of ``rules`` on ``image``, passed or not."""
    outcomes: list[CheckOutcome] = []

    def add(name: str, passed: bool, severity: Literal["refuse", "review"], reason: str) -> None:
        outcomes.append(CheckOutcome(name, passed, severity, reason))

    add(
        "spatial_dims",
        image.spatial_dims == rules.spatial_dims,
        "refuse",
        f"image is {image.spatial_dims}D, the task needs {rules.spatial_dims}D",
    )
    add(
        "sequence",
        not image.is_sequence,
        "refuse",
        "a time series or cine must be split into single images first"
        if image.is_sequence
        else "single image",
    )
    if image.modality is None and rules.modalities and rules.unknown_modality != "refuse":
        add(
            "modality",
            rules.unknown_modality == "accept",
            "review",
            f"modality unknown (not a DICOM input); the task is for "
            f"{', '.join(rules.modalities)}: confirm the image is one",
        )
    else:
        ok, reason = _listed(rules.modalities, image.modality, "modality")
        add("modality", ok, "refuse", reason)
    ok, reason = _listed(rules.sop_class_uids, image.identifiers.sop_class_uid, "SOP class")
    add("sop_class", ok, "refuse", reason)
    ok, reason = _listed(rules.photometric, image.photometric_interpretation, "photometric")
    add("photometric", ok, "refuse", reason)
    if rules.channels:
        add(
            "channels",
            image.num_channels in rules.channels,
            "refuse",
            f"image has {image.num_channels} channel(s); the task accepts {rules.channels}",
        )

    metadata = image.metadata
    if rules.max_bits_stored is not None:
        bits = metadata.get("BitsStored")
        passed = bits is None or int(bits) <= rules.max_bits_stored
        add(
            "bit_depth",
            passed,
            "review",
            f"bits stored {bits if bits is not None else 'unknown'}; the task was trained on "
            f"at most {rules.max_bits_stored}",
        )
    if rules.body_parts:
        ok, reason = _listed(rules.body_parts, metadata.get("BodyPartExamined"), "body part")
        add("body_part", ok or metadata.get("BodyPartExamined") is None, "review", reason)
    if rules.view_positions:
        view = metadata.get("ViewPosition")
        ok, reason = _listed(rules.view_positions, view, "view position")
        add("view_position", ok or view is None, "review", reason)
    if rules.age_years is not None:
        age = patient_age_years(metadata.get("PatientAge"))
        low, high = rules.age_years
        if age is None:
            add("patient_age", True, "review", "patient age unknown")
        else:
            add(
                "patient_age",
                low <= age <= high,
                "review",
                f"patient age {age:.1f} years; the task is for {low:g}-{high:g} years",
            )
    shape = image.shape
    if rules.min_size is not None:
        add(
            "min_size",
            all(s >= m for s, m in zip(shape, rules.min_size, strict=False)),
            "review",
            f"image size {shape}; the task needs at least {tuple(rules.min_size)}",
        )
    if rules.max_size is not None:
        add(
            "max_size",
            all(s <= m for s, m in zip(shape, rules.max_size, strict=False)),
            "review",
            f"image size {shape}; the task accepts at most {tuple(rules.max_size)}",
        )
    return outcomes
