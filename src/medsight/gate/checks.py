"""`GateCheck` and `GateResult`: what the input gate found, check by check.

Each check has a score, the threshold it was held against, and an outcome:

- ``pass``: the check holds;
- ``review``: a value is unknown (e.g. no patient age in a JPEG); the answer is given, with a
  review reason, because the image may well be in scope;
- ``withhold``: the image contradicts the task's intended use or does not look like what the
  model was trained on; the finding is withheld (NEEDS_REVIEW, no flag, no measurement).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["GATE_VERSION", "GateCheck", "GateResult", "Outcome", "Stage"]

#: bumped when a check is added or its meaning changes (recorded with every result)
GATE_VERSION = "1"
Stage = Literal["tags", "pixels", "photo", "ood"]
Outcome = Literal["pass", "review", "withhold"]
_RANK: dict[str, int] = {"pass": 0, "review": 1, "withhold": 2}


@dataclass(frozen=True)
class GateCheck:
    name: str
    stage: Stage
    outcome: Outcome
    reason: str
    score: float | None = None
    threshold: float | None = None
    # how the threshold applies: the check fails when the score is "above" or "below" it
    direction: Literal["above", "below"] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "stage": self.stage,
            "outcome": self.outcome,
            "score": None if self.score is None else round(float(self.score), 4),
            "threshold": None if self.threshold is None else round(float(self.threshold), 4),
            "direction": self.direction,
            "reason": self.reason,
        }


@dataclass
class GateResult:
    """Every check run on one image for one task, and the decision they give."""

    checks: list[GateCheck] = field(default_factory=list)
    ood_fitted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def decision(self) -> Outcome:
        worst = max((_RANK[c.outcome] for c in self.checks), default=0)
        outcomes: tuple[Outcome, ...] = ("pass", "review", "withhold")
        return outcomes[worst]

    @property
    def withheld(self) -> bool:
        return self.decision == "withhold"

    @property
    def withhold_reasons(self) -> list[str]:
        return [c.reason for c in self.checks if c.outcome == "withhold"]

    @property
    def review_reasons(self) -> list[str]:
        return [c.reason for c in self.checks if c.outcome == "review"]

    def check(self, name: str) -> GateCheck | None:
        return next((c for c in self.checks if c.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": GATE_VERSION,
            "decision": self.decision,
            "ood_fitted": self.ood_fitted,
            "notes": list(self.notes),
            "checks": [c.as_dict() for c in self.checks],
        }
