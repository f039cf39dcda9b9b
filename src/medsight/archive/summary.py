"""``DEST/summary.parquet`` and ``DEST/summary.csv``: one row per analysis of an archive run.

Built from the result.json of every study the state file records (this run's and earlier
runs'), so a resumed run's summary covers the whole archive. Nested values (probabilities,
flags, measurements, timings) are flattened into columns a spreadsheet or a dataframe reads
without parsing: ``p.<output>``, ``flag.<operating point>``, ``m.<structure>.<measurement>``
and ``t.<step>``; the first unit of each measurement is in ``unit.<...>``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

__all__ = ["summary_rows", "write_summary"]

FIXED_COLUMNS = (
    "study_key",
    "priority",
    "priority_reasons",
    "input",
    "task",
    "task_version",
    "state",
    "gate",
    "gate_reasons",
    "review_reasons",
    "failures",
)


def _analysis_row(document: dict[str, Any], analysis: dict[str, Any]) -> dict[str, Any]:
    priority = document.get("priority") or {}
    gate = analysis.get("gate") or {}
    row: dict[str, Any] = {
        "study_key": document["study_key"],
        "priority": priority.get("level"),
        "priority_reasons": "; ".join(priority.get("reasons", [])),
        "input": analysis["input"].get("path") or analysis["input"].get("kind"),
        "task": analysis["task"]["id"],
        "task_version": analysis["task"]["version"],
        "state": analysis["state"],
        "gate": gate.get("decision"),
        "gate_reasons": "; ".join(
            c["reason"] for c in gate.get("checks", []) if c.get("outcome") != "pass"
        ),
        "review_reasons": "; ".join(analysis.get("review_reasons", [])),
        "failures": "; ".join(f"{f['what']}: {f['reason']}" for f in document["failures"]),
    }
    classification = analysis.get("classification") or {}
    for output, probability in (classification.get("probabilities") or {}).items():
        row[f"p.{output}"] = probability
    for name, point in (classification.get("operating_points") or {}).items():
        row[f"flag.{name}"] = bool(point.get("flag"))
    for finding in analysis.get("findings", []):
        for measurement in finding.get("measurements", []):
            column = f"m.{measurement.get('structure') or finding['name']}.{measurement['name']}"
            row[column] = measurement["value"]
            row[f"unit.{column[2:]}"] = measurement["unit"]
    for step, seconds in (analysis.get("timings_s") or {}).items():
        row[f"t.{step}"] = seconds
    return row


def summary_rows(dest: Path, keys: list[str]) -> list[dict[str, Any]]:
    """The rows of the studies ``keys`` (a study without a result.json is skipped: it was
    recorded failed before anything was written)."""
    rows = []
    for key in keys:
        path = dest / key / "result.json"
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        analyses = document.get("analyses", [])
        if not analyses:  # a study that failed as a whole: one row with its failures
            rows.append(
                {
                    "study_key": key,
                    "priority": (document.get("priority") or {}).get("level"),
                    "state": "FAILED",
                    "failures": "; ".join(
                        f"{f['what']}: {f['reason']}" for f in document.get("failures", [])
                    ),
                }
            )
        rows.extend(_analysis_row(document, analysis) for analysis in analyses)
    return rows


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    extra = sorted({c for row in rows for c in row} - set(FIXED_COLUMNS))
    return [*FIXED_COLUMNS, *extra]


def write_summary(dest: Path, keys: list[str]) -> tuple[Path, Path | None]:
    """Write summary.csv (and summary.parquet when pyarrow is installed) atomically."""
    rows = summary_rows(dest, keys)
    columns = _columns(rows)
    csv_path = dest / "summary.csv"
    partial = csv_path.with_suffix(".csv.partial")
    with partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    partial.replace(csv_path)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return csv_path, None
    table = pa.Table.from_pylist(rows, schema=_schema(pa, rows, columns))
    parquet_path = dest / "summary.parquet"
    partial = parquet_path.with_suffix(".parquet.partial")
    pq.write_table(table, partial)
    partial.replace(parquet_path)
    return csv_path, parquet_path


def _schema(pa: Any, rows: list[dict[str, Any]], columns: list[str]) -> Any:
    """Numbers as float64, flags as bool, the rest as text (a column empty in every row is
    text too): the same schema whichever study came first."""

    def kind(column: str) -> Any:
        if column.startswith("flag."):
            return pa.bool_()
        if column.startswith(("p.", "m.", "t.")):
            return pa.float64()
        return pa.string()

    return pa.schema([(column, kind(column)) for column in columns])
