"""Triage rules, table-driven: every priority, and the age escalation of the worklist."""

from __future__ import annotations

import datetime as dt

import pytest

from medsight.findings import (
    NO_AI_FINDING_WORDING,
    TRIAGE_RULES_VERSION,
    Finding,
    WorklistEntry,
    order_worklist,
    triage,
)

MODEL = {"id": "cxr-pneumonia", "version": "0.2.0", "hash": "0" * 64}
POINT = {"name": "high_sensitivity", "threshold": 0.4, "sensitivity": 0.97, "specificity": 0.9}


def finding(flag, probability=0.9, critical=False, stat=None):
    return Finding(
        name="x",
        code={"value": "1", "scheme": "SCT", "meaning": "Pneumonia"},
        model=MODEL,
        probability=probability,
        flag=flag,
        operating_point=POINT,
        critical=critical,
        stat_probability=stat,
    )


CASES = [
    # findings, review reasons, failures -> level, a word every reason must show
    ([finding(True, 0.95, critical=True, stat=0.9)], [], [], "STAT", "STAT probability"),
    ([finding(True, 0.85, critical=True, stat=0.9)], [], [], "URGENT", "critical"),
    ([finding(True, 0.85, critical=True)], ["view is lateral"], [], "URGENT", "critical"),
    ([finding(False, 0.2, critical=True)], ["age 40 outside 1-6"], [], "NEEDS_REVIEW", "review"),
    ([], [], ["cannot read file"], "NEEDS_REVIEW", "failed"),
    ([finding(True, 0.7)], [], [], "ROUTINE", "flagged"),
    ([finding(False, 0.1), finding(None, None)], [], [], "NO_AI_FINDING", "not a negative"),
]


@pytest.mark.parametrize(("findings", "review", "failures", "level", "word"), CASES)
def test_every_priority(findings, review, failures, level, word):
    priority = triage(findings, review, failures)
    assert priority.level == level
    assert priority.rules_version == TRIAGE_RULES_VERSION
    assert priority.reasons and word in priority.reasons[0]
    assert all(any(r in reason for reason in priority.reasons) for r in review)


def test_no_ai_finding_never_reads_as_negative():
    priority = triage([finding(False, 0.01)])
    assert priority.reasons == (NO_AI_FINDING_WORDING,)
    assert "normal" not in NO_AI_FINDING_WORDING.lower()


def test_a_finding_names_its_model_and_operating_point():
    reason = triage([finding(True, 0.85, critical=True)]).reasons[0]
    assert "cxr-pneumonia 0.2.0" in reason and "high_sensitivity" in reason


NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("level_findings", "waited_hours", "effective"),
    [
        ([finding(True, 0.95, critical=True, stat=0.9)], 100, "STAT"),  # nowhere to go
        ([finding(True, 0.8, critical=True)], 0.5, "URGENT"),
        ([finding(True, 0.8, critical=True)], 2, "STAT"),  # URGENT after 1 h
        ([finding(True, 0.7)], 23, "ROUTINE"),
        ([finding(True, 0.7)], 25, "NEEDS_REVIEW"),  # ROUTINE after 24 h
        ([], 47, "NO_AI_FINDING"),
        ([], 49, "ROUTINE"),  # NO_AI_FINDING after 48 h
    ],
)
def test_age_escalation(level_findings, waited_hours, effective):
    entry = WorklistEntry("s", triage(level_findings), NOW - dt.timedelta(hours=waited_hours))
    (ordered,) = order_worklist([entry], now=NOW)
    assert ordered.effective_level == effective
    if effective != entry.priority.level:
        assert any("escalated" in r for r in ordered.reasons)


def test_worklist_orders_by_priority_then_waiting_time():
    def entry(key, findings, hours):
        return WorklistEntry(key, triage(findings), NOW - dt.timedelta(hours=hours))

    entries = [
        entry("routine-old", [finding(True, 0.7)], 10),
        entry("none", [], 1),
        entry("urgent-new", [finding(True, 0.6, critical=True)], 0.1),
        entry("routine-new", [finding(True, 0.99)], 1),
        entry("urgent-older", [finding(True, 0.5, critical=True)], 0.5),
    ]
    keys = [e.study_key for e in order_worklist(entries, now=NOW)]
    assert keys == ["urgent-older", "urgent-new", "routine-old", "routine-new", "none"]
