"""Findings: from a `Prediction` to what a clinician sees (flags at locked operating points,
locations, measurements in real units) and the study's triage priority with its reasons."""

from medsight.findings.finding import Finding, findings_from_prediction, measure_segment
from medsight.findings.measurements import Measurement
from medsight.findings.triage import (
    NO_AI_FINDING_WORDING,
    TRIAGE_RULES_VERSION,
    Priority,
    WorklistEntry,
    order_worklist,
    triage,
)

__all__ = [
    "NO_AI_FINDING_WORDING",
    "TRIAGE_RULES_VERSION",
    "Finding",
    "Measurement",
    "Priority",
    "WorklistEntry",
    "findings_from_prediction",
    "measure_segment",
    "order_worklist",
    "triage",
]
