"""`medsight evaluate` for a sigmoid classifier (several outputs and ordinal grades per
image, e.g. fundus-dr) on new labelled data: each image first meets the input gate's pixel
and photograph checks (the ungradable rate), then the gradable images are scored: each
output's ROC AUC and calibration, each locked point's sensitivity and specificity per image
and per patient (worse image), each grade's quadratic-weighted kappa and confusion matrix,
and the model card's claims re-checked."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from medsight.evaluation.cases import Case, read_case_image
from medsight.evaluation.claims import check_claims, claims_html
from medsight.evaluation.intervals import interval
from medsight.tasks import Task

__all__ = ["evaluate_multilabel", "write_multilabel_report"]


def _points(task: Task) -> dict[str, dict[str, Any]]:
    """The task's locked points, each at the level it was locked on (its note says)."""
    return {
        name: {
            "level": "patient (worse image)" if "per patient" in point.note else "image",
            "spec": point.model_dump(),
        }
        for name, point in task.spec.operating_points.items()
        if point.target_sensitivity is not None
    }


def evaluate_multilabel(task: Task, cases: list[Case], progress: Any = None) -> dict[str, Any]:
    from medsight.evaluation.multilabel_metrics import evidence_metrics
    from medsight.gate import InputGate
    from medsight.inference import Predictor

    spec = task.spec
    predictor = Predictor(task, explain=False)
    gate = InputGate(task)
    names = [o.name for o in sorted(spec.outputs, key=lambda o: o.index)]
    rows: list[list[float]] = []
    gradable: list[Case] = []
    ungradable: list[dict[str, Any]] = []
    job = progress.add_task("evaluating", total=len(cases)) if progress else None
    for case in cases:
        image = read_case_image(case)
        checked, _ = gate.before_model(image)
        if checked.withheld:
            ungradable.append({"case": case.name, "reasons": checked.withhold_reasons})
        else:
            prediction = predictor.predict(image)
            assert prediction.probabilities is not None
            rows.append([prediction.probabilities[n] for n in names])
            gradable.append(case)
        if progress:
            progress.advance(job)
    if not gradable:
        raise ValueError("no image passed the input gate: nothing to score")
    targets = np.array([c.targets for c in gradable], dtype=np.float64)
    results = evidence_metrics(
        "the data given ({cases} gradable images of {patients} patients)",
        spec,
        gradable,
        targets,
        np.array(rows),
        _points(task),
    )
    results["task"] = {"id": task.id, "version": task.version, "hash": task.task_hash}
    results["images"] = len(cases)
    results["ungradable"] = {
        "count": len(ungradable),
        "rate": len(ungradable) / len(cases),
        "cases": ungradable,
    }
    observed: dict[tuple[str, str | None], dict[str, Any]] = {}
    for name, output in results["outputs"].items():
        if output["roc_auc"] is not None:
            observed[("roc_auc", name)] = output["roc_auc"]
    for name, point in results["points"].items():
        level = "patient" if point["level"].startswith("patient") else "image"
        for measure in ("sensitivity", "specificity"):
            if np.isfinite(point[level][measure]["value"]):  # NaN: no positives (negatives)
                observed[(measure, name)] = point[level][measure]
    results["claims"] = [c.as_dict() for c in check_claims(spec.claims, observed)]
    return results


def write_multilabel_report(results: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """evaluation.json and a one-page report.html."""
    from medsight.reporting.html_report import BANNER

    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "evaluation.json"
    json_path.write_text(json.dumps(results, indent=2, default=float))
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{o['graded']} ({o['positives']})</td>"
        f"<td>{interval(o['roc_auc']) if o['roc_auc'] else 'one class only'}</td>"
        f"<td>{o['ece']:.3f}</td></tr>"
        for name, o in results["outputs"].items()
    )
    points = "".join(
        f"<tr><td>{html.escape(name)} ({html.escape(p['spec']['output'])})</td><td>{level}</td>"
        f"<td>{p[level]['cases']} ({p[level]['positives']})</td>"
        f"<td>{interval(p[level]['sensitivity'])}</td>"
        f"<td>{interval(p[level]['specificity'])}</td></tr>"
        for name, p in results["points"].items()
        for level in ("image", "patient")
    )
    grades = "".join(
        f"<p>{html.escape(name)}: quadratic-weighted kappa "
        f"{interval(g['quadratic_weighted_kappa'])} over {g['graded']} images</p>"
        for name, g in results["grades"].items()
    )
    ungradable = results["ungradable"]
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>medsight evaluation {html.escape(results["task"]["id"])}</title></head><body>
<p style="background:#b00020;color:#fff;padding:.5em"><b>{BANNER}</b></p>
<h1>{html.escape(results["task"]["id"])} {html.escape(results["task"]["version"])} on
{results["images"]} images</h1>
<p>Ungradable (withheld by the input gate): {ungradable["count"]} of {results["images"]}
({ungradable["rate"]:.1%}); the figures below are on the gradable images.</p>
<table border=1><tr><th>output</th><th>graded (positive)</th><th>ROC AUC</th><th>ECE</th></tr>
{rows}</table>
<table border=1><tr><th>point</th><th>level</th><th>cases (positive)</th><th>sensitivity</th>
<th>specificity</th></tr>{points}</table>
{grades}
{claims_html(results["claims"], results.get("warning", ""))}
</body></html>
"""
    html_path = out / "report.html"
    html_path.write_text(page)
    return json_path, html_path
