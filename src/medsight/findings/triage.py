"""Study-level triage priority by explicit, versioned rules, and worklist ordering.

Rules (version ``TRIAGE_RULES_VERSION``), first match wins:

1. a flagged critical finding at or above its output's ``stat_probability``, or a measurement
   meeting a task's ``[[measurement_flags]]`` entry of level STAT -> STAT
2. a flagged critical finding, a flagged finding the site's rules make urgent in its care
   setting (``[triage]``, e.g. a fracture in an emergency department), or a measurement
   flag of level URGENT -> URGENT
   (for 1 and 2, input-quality problems and failures are listed after the critical reasons)
3. an input the gate did not pass (a withheld answer or a review reason) or a failed
   analysis -> NEEDS_REVIEW. A withheld answer gives no finding, so it can never raise a
   study above NEEDS_REVIEW.
4. any other flagged finding, or a measurement flag of level ROUTINE -> ROUTINE
5. otherwise -> NO_AI_FINDING: the AI flagged nothing. This is not a negative read; the
   study still needs its full read by a clinician.

Worklist order: the priority's score (after age escalation) first, then waiting time. A study
waiting longer than its level's ``escalate_after`` moves up one level, with the reason, so
nothing waits forever.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from medsight.findings.finding import Finding
from medsight.tasks.spec import MeasurementFlag

__all__ = [
    "ESCALATE_AFTER",
    "NO_AI_FINDING_WORDING",
    "TRIAGE_RULES_VERSION",
    "Priority",
    "WorklistEntry",
    "counted_once",
    "escalate",
    "order_worklist",
    "triage",
]

TRIAGE_RULES_VERSION = "2"  # 2: measurement flags; withheld answers (input gate)
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


def _measurement_flags(
    findings: Sequence[Finding], rules: Mapping[str, Sequence[MeasurementFlag]]
) -> dict[str, list[str]]:
    """Reasons by level for every measurement that meets a flag of its task."""
    raised: dict[str, list[str]] = {}
    for finding in findings:
        for rule in rules.get(finding.model["id"], ()):
            for item in finding.measurements:
                if item.name != rule.measurement or (
                    rule.structure and rule.structure not in (item.structure, finding.name)
                ):
                    continue
                met = (
                    item.value > rule.threshold
                    if rule.direction == "above"
                    else item.value < rule.threshold
                )
                if met:
                    why = f" ({rule.reason})" if rule.reason else ""
                    raised.setdefault(rule.level, []).append(
                        f"{item.name} of {item.structure or finding.name} {item.value:.4g} "
                        f"{item.unit} is {rule.direction} {rule.threshold:g}{why} "
                        f"({finding.model['id']} {finding.model['version']})"
                    )
    return raised


def counted_once(reasons: Sequence[str]) -> list[str]:
    """Identical reasons once, in first-seen order, with their count ("54 images: ...")
    when more than one image gave the same one: a partly received series must not repeat
    one reason per instance."""
    counts: dict[str, int] = {}
    for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
    return [reason if n == 1 else f"{n} images: {reason}" for reason, n in counts.items()]


def triage(
    findings: Sequence[Finding],
    review_reasons: Sequence[str] = (),
    failures: Sequence[str] = (),
    measurement_flags: Mapping[str, Sequence[MeasurementFlag]] | None = None,
    withheld: Sequence[str] = (),
    *,
    urgent_findings: Collection[str] = (),
    setting: str = "",
) -> Priority:
    """The study's priority from all its findings, the tasks' measurement flags (by task id),
    input-quality reasons, withheld answers (their reasons) and failures. ``urgent_findings``
    names findings the site reads urgently in its ``setting`` (site rules' ``[triage]``):
    flagged, they count as critical (rule 2), with the setting in the reason."""
    flagged = [f for f in findings if f.flag]
    raised = _measurement_flags(findings, measurement_flags or {})
    caveats = [f"AI answer withheld: {r}" for r in withheld]
    caveats += [f"input needs review: {r}" for r in review_reasons]
    caveats += [f"analysis failed: {r}" for r in failures]
    caveats = counted_once(caveats)
    strongest = max((f.probability or 0.0 for f in flagged), default=0.0)
    critical = [f for f in flagged if f.critical]
    stat = [
        f
        for f in critical
        if f.stat_probability is not None
        and f.probability is not None
        and f.probability >= f.stat_probability
    ]
    if stat or raised.get("STAT"):
        reasons = [
            f"critical: {_describe(f)}, at or above STAT probability {f.stat_probability:.2f}"
            for f in stat
        ] + [f"critical measurement: {r}" for r in raised.get("STAT", [])]
        return Priority("STAT", _SCORES["STAT"] + strongest, tuple(reasons + caveats))
    site_urgent = [f for f in flagged if not f.critical and f.name in urgent_findings]
    if critical or site_urgent or raised.get("URGENT"):
        reasons = [f"critical: {_describe(f)}" for f in critical]
        reasons += [f"urgent in this site's {setting} setting: {_describe(f)}" for f in site_urgent]
        reasons += [f"critical measurement: {r}" for r in raised.get("URGENT", [])]
        return Priority("URGENT", _SCORES["URGENT"] + strongest, tuple(reasons + caveats))
    if caveats:
        return Priority("NEEDS_REVIEW", _SCORES["NEEDS_REVIEW"], tuple(caveats))
    if flagged or raised.get("ROUTINE"):
        reasons = [_describe(f) for f in flagged]
        reasons += [f"measurement: {r}" for r in raised.get("ROUTINE", [])]
        return Priority("ROUTINE", _SCORES["ROUTINE"] + strongest, tuple(reasons))
    return Priority("NO_AI_FINDING", _SCORES["NO_AI_FINDING"], (NO_AI_FINDING_WORDING,))


@dataclass
class WorklistEntry:
    study_key: str
    priority: Priority
    received: _dt.datetime
    effective_level: Level = "NO_AI_FINDING"
    effective_score: float = 0.0
    reasons: list[str] = field(default_factory=list)
    models: tuple[str, ...] = ()  # "task version" of each analysis (site versions show here)


def escalate(entry: WorklistEntry, now: _dt.datetime) -> None:
    """Set the entry's effective level, score and reasons after its waiting time."""
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
        escalate(entry, now)
    return sorted(entries, key=lambda e: (LEVELS.index(e.effective_level), e.received))
