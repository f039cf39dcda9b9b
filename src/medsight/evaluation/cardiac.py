"""Ejection fractions from a segmentation evaluation: each patient's end-diastole and
end-systole cases (named ``<patient>_ED`` / ``_ES``), the EF from the predicted and from the
reference masks, and the error in percentage points with bootstrap CIs."""

from __future__ import annotations

from typing import Any

import numpy as np

from medsight.evaluation.intervals import bootstrap_ci
from medsight.findings.cardiac import PHASE_FILE
from medsight.tasks.spec import CardiacFunction

__all__ = ["ejection_fraction_errors"]


def _fraction(ed: float, es: float) -> float | None:
    return 100.0 * (ed - es) / ed if ed > 0 else None


def ejection_fraction_errors(
    per_case: list[dict[str, Any]], spec: CardiacFunction
) -> dict[str, Any]:
    """Per ventricle: the patients with both phases, predicted and reference EF, and the
    mean absolute error and mean difference (predicted - reference) with 95% CIs."""
    phases: dict[str, dict[str, dict[str, Any]]] = {}
    for row in per_case:
        match = PHASE_FILE.match(row["case"])
        if match:
            phases.setdefault(match["stem"], {})[match["phase"].upper()] = row
    pairs = {stem: rows for stem, rows in sorted(phases.items()) if {"ED", "ES"} <= set(rows)}
    result: dict[str, Any] = {}
    for structure in (spec.left_ventricle, spec.right_ventricle):
        if structure is None or not pairs:
            continue
        rows: list[dict[str, Any]] = []
        for stem, both in pairs.items():
            ed, es = both["ED"][structure], both["ES"][structure]
            predicted = _fraction(ed["volume"], es["volume"])
            reference = _fraction(ed["reference_volume"], es["reference_volume"])
            if predicted is not None and reference is not None:
                rows.append(
                    {
                        "patient": stem,
                        "predicted": round(predicted, 2),
                        "reference": round(reference, 2),
                    }
                )
        if not rows:
            continue
        error = np.array([r["predicted"] - r["reference"] for r in rows])

        def absolute(indices: np.ndarray, e: np.ndarray = error) -> float:
            return float(np.abs(e[indices]).mean())

        def signed(indices: np.ndarray, e: np.ndarray = error) -> float:
            return float(e[indices].mean())

        result[structure] = {
            "patients": len(rows),
            "mean_absolute_error": bootstrap_ci(absolute, len(rows)).as_dict(),
            "mean_difference": bootstrap_ci(signed, len(rows)).as_dict(),
            "rows": rows,
        }
    return result
