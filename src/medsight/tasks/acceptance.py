"""Whether a task can run on an image at all (dimensionality, modality, SOP class,
photometric interpretation, channels), each check with a reason.

A failed check refuses the analysis (exit 2). Whether the task *should* judge an image it can
run on (age, sex, view, body part, size, pixels, out-of-distribution) is the input gate's
question: :mod:`medsight.gate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from medsight.image import Image
from medsight.tasks.spec import Acceptance

__all__ = ["CheckOutcome", "check_acceptance"]


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
        pass  # runs; the input gate adds the review reason (medsight.gate.tags)
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

    return outcomes
