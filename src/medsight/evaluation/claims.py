"""Re-check a model card's claims (task.toml ``[[claims]]``) on new labelled data.

A claim fails when the new data show it worse: for a floor (AUC, sensitivity, specificity,
Dice, F1), the new 95% CI lies wholly below the claimed lower bound (the value where the
card gives no CI); for the ECE, the new ECE exceeds the claim by more than
``ECE_TOLERANCE``. Anything else holds; the words say by how much either way.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from medsight.tasks.spec import LOWER_IS_BETTER, Claim

__all__ = ["ECE_TOLERANCE", "ClaimCheck", "check_claims", "claim_label", "claims_html"]

#: how far above its claim a new ECE may lie before the claim fails (ECE has no CI here)
ECE_TOLERANCE = 0.05


@dataclass(frozen=True)
class ClaimCheck:
    claim: Claim
    observed: dict[str, Any] | None  # value (and low/high); None: not measurable here
    holds: bool | None  # None: these data cannot check it
    words: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "claim": self.claim.model_dump(exclude_none=True),
            "observed": self.observed,
            "holds": self.holds,
            "words": self.words,
        }


def claim_label(claim: Claim) -> str:
    label = claim.metric.replace("_", " ").replace("roc auc", "ROC AUC").replace("ece", "ECE")
    label = label.replace("aji", "AJI")
    if claim.operating_point:
        label += f" at {claim.operating_point}"
    if claim.segment:
        label += f" of {claim.segment}"
    return label


def _shown(estimate: dict[str, float]) -> str:
    if "low" in estimate and "high" in estimate:
        return f"{estimate['value']:.3f} (95% CI {estimate['low']:.3f}-{estimate['high']:.3f})"
    return f"{estimate['value']:.3f}"


def check_claims(
    claims: list[Claim], observed: dict[tuple[str, str | None], dict[str, Any]]
) -> list[ClaimCheck]:
    """Each claim against ``observed[(metric, operating point or segment)]``."""
    checks = []
    for claim in claims:
        found = observed.get((claim.metric, claim.operating_point or claim.segment))
        label = claim_label(claim)
        card = _shown(claim.model_dump(exclude_none=True))
        if found is None:
            checks.append(ClaimCheck(claim, None, None, f"{label}: not measurable on these data"))
            continue
        difference = found["value"] - claim.value
        if claim.metric in LOWER_IS_BETTER:
            holds = difference <= ECE_TOLERANCE
        else:
            floor = claim.low if claim.low is not None else claim.value
            holds = found.get("high", found["value"]) >= floor
        direction = "above" if difference >= 0 else "below"
        words = (
            f"{label} {_shown(found)} against the card's {card}: "
            f"{'holds' if holds else 'FAILS'} ({abs(difference):.3f} {direction})"
        )
        checks.append(ClaimCheck(claim, found, holds, words))
    return checks


def claims_html(claims: list[dict[str, Any]], warning: str = "") -> str:
    """The card's claims re-checked, in words (empty when the task states none), after the
    warning that the data include the model's development images, if they do."""
    shown = (
        f'<p style="background:#fff3cd;border:2px solid #b00020;padding:.5em"><b>Not evidence:'
        f"</b> {html.escape(warning)}.</p>"
        if warning
        else ""
    )
    if not claims:
        return shown
    items = "".join(
        f'<li class="{"fails" if c["holds"] is False else "holds"}">{html.escape(c["words"])}'
        f"<br><small>claimed on: {html.escape(c['claim']['measured_on'])}</small></li>"
        for c in claims
    )
    return f"{shown}<h2>The model card's claims on these data</h2><ul>{items}</ul>"
