"""Study-level triage priority by explicit, versioned rules, and worklist ordering.

Rules (version ``TRIAGE_RULES_VERSION``), first match wins:

1. a flagged critical finding at or above its output's ``stat_probability`` -> STAT
2. a flagged critical finding -> URGENT
   (for 1 and 2, input-quality problems and failures are listed after the critical reasons)
3. an input-quality failure (acceptance check not passed) or a failed analysis -> NEEDS_REVIEW
4. any other flagged finding -> ROUTINE
5. otherwise -> NO_AI_FINDING: the AI flagged nothing. This is not a negative read; the
   study still needs its full read by a clinician.

Worklist order: the priority's score (after age escalation) first, then waiting time. A study
waiting longer than its level's ``escalate_after`` moves up one level, with the reason, so
nothing waits forever.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from medsight.findings.finding import Finding

__all__ = [
    "ESCALATE_AFTER",
    "NO_AI_FINDING_WORDING",
    "TRIAGE_RULES_VERSION",
    "Priority",
    "WorklistEntry",
    "order_worklist",
    "triage",
]

TRIAGE_RULES_VERSION = "1"
Level = Literal["STAT", "URGENT", "NEEDS_REVIEW", "ROUTINE", "NO_AI_FINDING"]
LEVELS: tuple[Level, ...] = ("STAT", "URGENT", "NEEDS_REVIEW", "ROUTINE", "NO_AI_FINDING")
_SCORES: dict[str, int] = {
    "STAT": 100,
    "URGENT": 80,
    "NEEDS_REVIEW": 60,
    "ROUTINE": 40,
    "NO_AI_FINDING": 20,
}
# waiting longer than this moves a study up one level (STAT has nowhere to go)
ESCALATE_AFTER: dict[str, _dt.timedelta] = {
    "URGENT": _dt.timedelta(hours=1),
    "NEEDS_REVIEW": _dt.timedelta(hours=4),
    "ROUTINE": _dt.timedelta(hours=24),
    "NO_AI_FINDING": _dt.timedelta(hours=48),
}
NO_AI_FINDING_WORDING = (
    "no AI finding: this is not a negative read; the study still needs a full read by a clinician"
)


@dataclass(frozen=True)
class Priority:
    level: Level
    score: float  # higher first; level score plus the strongest finding's probability
    reasons: tuple[str, ...]
    rules_version: str = TRIAGE_RULES_VERSION

    def as_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "score": round(self.score, 4),
            "reasons": list(self.reasons),
            "rules_version": self.rules_version,
        }


def _describe(finding: Finding) -> str:
    probability = f" p={finding.probability:.2f}" if finding.probability is not None else ""
    point = f" at {finding.operating_point['name']}" if finding.operating_point else ""
    model = f"{finding.model['id']} {finding.model['version']}"
    return f"{finding.code.get('meaning', finding.name)}{probability} flagged{point} ({model})"


def triage(
    findings: Sequence[Finding], review_reasons: Sequence[str] = (), failures: Sequence[str] = ()
) -> Priority:
    """The study's priority from all its findings, input-quality reasons and failures."""
    flagged = [f for f in findings if f.flag]
    caveats = [f"input needs review: {r}" for r in review_reasons]
    caveats += [f"analysis failed: {r}" for r in failures]
    strongest = max((f.probability or 0.0 for f in flagged), default=0.0)
    critical = [f for f in flagged if f.critical]
    stat = [
        f
        for f in critical
        if f.stat_probability is not None
        and f.probability is not None
        and f.probability >= f.stat_probability
    ]
    if stat:
        reasons = [
            f"critical: {_describe(f)}, at or above STAT probability {f.stat_probability:.2f}"
            for f in stat
        ]
        return Priority("STAT", _SCORES["STAT"] + strongest, tuple(reasons + caveats))
    if critical:
        return Priority(
            "URGENT",
            _SCORES["URGENT"] + strongest,
            tuple([f"critical: {_describe(f)}" for f in critical] + caveats),
        )
    if caveats:
        return Priority("NEEDS_REVIEW", _SCORES["NEEDS_REVIEW"], tuple(caveats))
    if flagged:
        return Priority(
            "ROUTINE", _SCORES["ROUTINE"] + strongest, tuple(_describe(f) for f in flagged)
        )
    return Priority("NO_AI_FINDING", _SCORES["NO_AI_FINDING"], (NO_AI_FINDING_WORDING,))


@dataclass
class WorklistEntry:
    study_key: str
    priority: Priority
    received: _dt.datetime
    effective_level: Level = "NO_AI_FINDING"
    effective_score: float = 0.0
    reasons: list[str] = field(default_factory=list)


def _escalate(entry: WorklistEntry, now: _dt.datetime) -> None:
    level = entry.priority.level
    score = entry.priority.score
    reasons = list(entry.priority.reasons)
    waited = now - entry.received
    limit = ESCALATE_AFTER.get(level)
    if limit is not None and waited > limit:
        higher = LEVELS[LEVELS.index(level) - 1]
        hours = waited.total_seconds() / 3600
        reasons.append(
            f"escalated {level} -> {higher}: waiting {hours:.1f} h, longer than "
            f"{limit.total_seconds() / 3600:g} h"
        )
        score += _SCORES[higher] - _SCORES[level]
        level = higher
    entry.effective_level = level
    entry.effective_score = score
    entry.reasons = reasons


def order_worklist(
    entries: Sequence[WorklistEntry], now: _dt.datetime | None = None
) -> list[WorklistEntry]:
    """Highest effective priority level first; within a level, the longest waiting first."""
    now = now or _dt.datetime.now(_dt.UTC)
    for entry in entries:
        _escalate(entry, now)
    return sorted(entries, key=lambda e: (LEVELS.index(e.effective_level), e.received))
