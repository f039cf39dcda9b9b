"""The worklist from the written results: shared by the API and the pages."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from medsight.findings import Priority, WorklistEntry, order_worklist

__all__ = ["worklist_entries"]


def _results(results_dir: Path) -> list[dict[str, Any]]:
    documents = []
    for path in sorted(results_dir.glob("*/result.json")):
        try:
            documents.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # a result being replaced right now; the next request sees it
    return documents


def _models(document: dict[str, Any]) -> tuple[str, ...]:
    """Each task version that answered, once, in order: the worklist names what was used."""
    names = []
    for analysis in document.get("analyses", []):
        task = analysis.get("task") or {}
        name = f"{task.get('id', '?')} {task.get('version', '?')}"
        if name not in names:
            names.append(name)
    return tuple(names)


def worklist_entries(results_dir: Path, now: _dt.datetime) -> list[WorklistEntry]:
    entries = []
    for document in _results(results_dir):
        if document.get("status") == "withdrawn":
            continue
        priority = document["priority"]
        entries.append(
            WorklistEntry(
                study_key=document["study_key"],
                priority=Priority(
                    priority["level"],
                    float(priority["score"]),
                    tuple(priority["reasons"]),
                    priority["rules_version"],
                ),
                received=_dt.datetime.fromisoformat(document["created"]),
                models=_models(document),
            )
        )
    return order_worklist(entries, now=now)
