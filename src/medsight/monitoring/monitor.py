"""Drift and performance monitoring over written results.

For each task version, and within it for each device (the keyed hash in ``input.device``),
a rolling window of the last ``window`` analyses is compared, after every analysis, with the
task version's reference distribution (``gate_reference.json``, fitted with the gate):

- gate rejection rate (withheld answers) against the gate's measured false rejection;
- the out-of-distribution score, and input statistics (size, brightness, contrast, structure,
  saturation), against the reference images (PSI and KS, `medsight.monitoring.drift`);
- the calibrated probability of the flagged output, and the flag rate, against the reference
  images' (answers that were given only: a withheld answer's probability means nothing);
- clinician agreement from feedback: the share of flagged findings confirmed (PPV), and
  disagreement on unflagged findings (possible misses).

An alert is open when the newest window of a group is out of its band. Why a rolling window
of 20 (docs/monitoring.md, scripts/drift_stream.py): with the KS test at p < 0.001 against
a reference of hundreds of images, a rescaling of chest-film intensities or a change of
resolution opened an alert 9-10 analyses after the change, and 100 unchanged analyses raised
an alert in 0-2 of 100 windows.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsight.monitoring.drift import compare

__all__ = ["DEFAULT_WINDOW", "MONITORED_STATISTICS", "AnalysisRecord", "collect", "monitor"]

DEFAULT_WINDOW = 20
MIN_WINDOW = 10  # fewer analyses than this are reported, never alerted on
MONITORED_STATISTICS = ("size", "brightness", "contrast", "structure", "clipped_high")
_RATE_ALERT_P = 0.001


@dataclass
class AnalysisRecord:
    created: _dt.datetime
    study_key: str
    task_id: str
    task_version: str
    device: str | None
    decision: str
    withheld: bool
    ood_score: float | None
    statistics: dict[str, float]
    probability: float | None  # of the output of the preferred operating point
    flagged: bool | None
    findings: dict[str, bool | None] = field(default_factory=dict)  # name -> flag


def _record(document: dict[str, Any], analysis: dict[str, Any]) -> AnalysisRecord | None:
    gate = analysis.get("gate")
    task = analysis.get("task")
    if not gate or not task:
        return None
    ood = next((c for c in gate.get("checks", []) if c["name"] == "out_of_distribution"), None)
    points = analysis.get("classification", {}).get("operating_points", {})
    point = points.get("high_sensitivity") or next(iter(points.values()), None)
    withheld = bool(analysis.get("withheld"))
    return AnalysisRecord(
        created=_dt.datetime.fromisoformat(document["created"]),
        study_key=document["study_key"],
        task_id=task["id"],
        task_version=task["version"],
        device=analysis["input"].get("device"),
        decision=gate["decision"],
        withheld=withheld,
        ood_score=None if ood is None else ood.get("score"),
        statistics=dict(gate.get("statistics", {})),
        probability=None if point is None or withheld else float(point["probability"]),
        flagged=None if point is None or withheld else bool(point["flag"]),
        findings={f["name"]: f.get("flag") for f in analysis.get("findings", [])},
    )


def collect(results_dir: Path) -> list[AnalysisRecord]:
    """Every analysis of every current result.json under ``results_dir`` (superseded results
    in ``history/`` are left out), oldest first; schema 3.0 results only (they have a gate)."""
    records = []
    for path in sorted(results_dir.rglob("result.json")):
        if "history" in path.relative_to(results_dir).parts:
            continue
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        major = str(document.get("schema_version", "0")).split(".")[0]
        if not major.isdigit() or int(major) < 3:
            continue
        for analysis in document.get("analyses", []):
            record = _record(document, analysis)
            if record is not None:
                records.append(record)
    return sorted(records, key=lambda r: r.created)


def _reference_of(task_id: str, version: str, tasks_dirs: Sequence[Path]) -> dict[str, Any]:
    """The task version's reference distributions and expected rates ({} when unknown)."""
    from medsight.errors import MedsightError
    from medsight.gate import InputGate
    from medsight.tasks import load_named_task

    try:
        task = load_named_task(f"{task_id}@{version}", list(tasks_dirs))
        reference = dict(InputGate(task).reference)
    except MedsightError:
        return {}
    ood = task.spec.gate.ood
    points = task.spec.operating_points
    point = points.get("high_sensitivity") or next(iter(points.values()), None)
    probabilities = reference.get("probabilities", {}).get(point.output, []) if point else []
    reference["expected_rejection"] = (ood.false_rejection_rate or 0.0) if ood else 0.0
    reference["flag_probabilities"] = probabilities
    reference["flag_rate"] = (
        float(np.mean(np.asarray(probabilities) >= point.threshold))
        if point is not None and probabilities
        else None
    )
    return reference


def _rate_check(count: int, n: int, expected: float) -> dict[str, Any]:
    from scipy.stats import binomtest

    expected = min(max(expected, 0.005), 0.995)  # a measured 0 still allows rare events
    p_value = float(binomtest(count, n, expected).pvalue) if n else 1.0
    rate = count / n if n else 0.0
    return {
        "rate": round(rate, 4),
        "expected": round(expected, 4),
        "p_value": float(f"{p_value:.3g}"),
        "alert": n >= MIN_WINDOW and p_value < _RATE_ALERT_P,
    }


def _window_summary(window: list[AnalysisRecord], reference: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "n": len(window),
        "from": window[0].created.isoformat(),
        "to": window[-1].created.isoformat(),
        "checks": {},
    }
    checks = summary["checks"]
    withheld = sum(r.withheld for r in window)
    checks["gate_rejection"] = _rate_check(
        withheld, len(window), reference.get("expected_rejection", 0.02)
    )
    # a rejection rate may only alert upwards: fewer rejections are no drift
    checks["gate_rejection"]["alert"] &= (
        withheld / len(window) > checks["gate_rejection"]["expected"]
    )
    scores = reference.get("ood_scores", {})
    shift = compare(
        scores.get("held_out") or scores.get("threshold_set") or [],
        [r.ood_score for r in window if r.ood_score is not None],
    )
    if shift is not None:
        checks["ood_score"] = shift.as_dict()
    for name in MONITORED_STATISTICS:
        values = reference.get("statistics", {}).get(name, {}).get("values", [])
        shift = compare(values, [r.statistics[name] for r in window if name in r.statistics])
        if shift is not None:
            checks[f"input_{name}"] = shift.as_dict()
    answered = [r for r in window if r.probability is not None]
    shift = compare(reference.get("flag_probabilities", []), [r.probability for r in answered])
    if shift is not None:
        checks["probability"] = shift.as_dict()
    if reference.get("flag_rate") is not None and answered:
        checks["flag_rate"] = _rate_check(
            sum(bool(r.flagged) for r in answered), len(answered), reference["flag_rate"]
        )
    if len(window) < MIN_WINDOW:
        for check in checks.values():
            check["alert"] = False
    summary["alerts"] = sorted(k for k, v in checks.items() if v.get("alert"))
    return summary


def _agreement(records: list[AnalysisRecord], feedback: Iterable[dict[str, Any]]) -> dict[str, Any]:
    flags = {(r.study_key, name): flag for r in records for name, flag in r.findings.items()}
    counts = {"flagged_agree": 0, "flagged_disagree": 0, "unflagged_agree": 0}
    counts["unflagged_disagree"] = 0
    for item in feedback:
        flag = flags.get((item["study_key"], item["finding"]))
        if flag is None:
            continue
        side = "flagged" if flag else "unflagged"
        verdict = "agree" if item["verdict"] == "agree" else "disagree"
        counts[f"{side}_{verdict}"] += 1
    confirmed = counts["flagged_agree"] + counts["flagged_disagree"]
    return {
        **counts,
        "ppv_of_flags": round(counts["flagged_agree"] / confirmed, 4) if confirmed else None,
        "possible_misses": counts["unflagged_disagree"],
    }


def monitor(
    records: list[AnalysisRecord],
    *,
    tasks_dirs: Sequence[Path] = (),
    window: int = DEFAULT_WINDOW,
    feedback: Iterable[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The monitoring report: per task version and device, a rolling-window series of
    checks, the newest window's open alerts, and clinician agreement."""
    feedback = list(feedback)
    groups: dict[tuple[str, str], list[AnalysisRecord]] = {}
    for record in records:
        groups.setdefault((record.task_id, record.task_version), []).append(record)
    report: dict[str, Any] = {
        "disclaimer": "research use only, not for diagnostic use",
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "window": window,
        "tasks": [],
        "open_alerts": [],
    }
    for (task_id, version), task_records in sorted(groups.items()):
        reference = _reference_of(task_id, version, tasks_dirs)
        entry: dict[str, Any] = {
            "task": task_id,
            "version": version,
            "analyses": len(task_records),
            "reference": bool(reference),
            "agreement": _agreement(task_records, feedback),
            "groups": [],
        }
        by_device: dict[str, list[AnalysisRecord]] = {"all devices": task_records}
        for record in task_records:
            if record.device:
                by_device.setdefault(f"device {record.device}", []).append(record)
        for label, items in by_device.items():
            series = [
                _window_summary(items[max(0, end - window) : end], reference)
                for end in range(1, len(items) + 1)
            ]
            entry["groups"].append({"group": label, "analyses": len(items), "series": series})
            for name in series[-1]["alerts"] if reference else []:
                report["open_alerts"].append(
                    {
                        "task": task_id,
                        "version": version,
                        "group": label,
                        "check": name,
                        "since": _first_alert(series, name),
                        "detail": series[-1]["checks"][name],
                    }
                )
        report["tasks"].append(entry)
    return report


def _first_alert(series: list[dict[str, Any]], name: str) -> str:
    """When the current run of alerts on ``name`` began (the end of its first window)."""
    start = len(series) - 1
    while start > 0 and name in series[start - 1]["alerts"]:
        start -= 1
    return str(series[start]["to"])
