"""Evaluate a classification task on labelled images: numbers (JSON) and a report (HTML).

For each locked operating point the report says whether it still holds on this data
(sensitivity's lower 95% bound at or above the target it was locked for), and each claim of
the model card (task.toml ``[[claims]]``) whether it held, in words.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medsight.errors import InvalidInputError
from medsight.evaluation.calibration import brier_score, expected_calibration_error, reliability
from medsight.evaluation.claims import check_claims, claims_html
from medsight.evaluation.classification import (
    check_operating_point,
    confusion,
    predictive_values,
    roc_auc,
)
from medsight.evaluation.intervals import bootstrap_ci, wilson
from medsight.tasks.task import Task

__all__ = ["evaluate_classifier", "write_report"]

BANNER = "medsight evaluation - research use only, not for diagnostic use"


def evaluate_classifier(
    task: Task,
    labels: Sequence[int],
    probabilities: Sequence[float],
    *,
    subgroups: dict[str, Sequence[str | None]] | None = None,
    prevalence: float | None = None,
) -> dict[str, Any]:
    """All numbers for a binary classifier's positive output (index 1) on labelled cases."""
    y = np.asarray(labels, dtype=int)
    p = np.asarray(probabilities, dtype=np.float64)
    if len(y) != len(p) or len(y) == 0:
        raise InvalidInputError("labels and probabilities must be non-empty and equally long")
    if len(set(y.tolist())) < 2:
        raise InvalidInputError("evaluation needs both classes among the cases")
    auc = roc_auc(y, p)
    auc_bootstrap = bootstrap_ci(
        lambda i: roc_auc(y[i], p[i]).value if len(set(y[i])) > 1 else float("nan"),
        len(y),
        strata=y,
        resamples=1000,
    )
    points = {}
    for name, point in task.spec.operating_points.items():
        target = locked_target(point)
        check = check_operating_point(y, p, point.threshold, target)
        entry: dict[str, Any] = {
            **check.as_dict(),
            "holds": check.demonstrated,
            "confusion": confusion(y, p, point.threshold),
        }
        if prevalence is not None:
            ppv, npv = predictive_values(
                check.sensitivity.value, check.specificity.value, prevalence
            )
            entry.update(prevalence=prevalence, ppv=ppv, npv=npv)
        points[name] = entry
    groups: dict[str, dict[str, Any]] = {}
    for column, values in (subgroups or {}).items():
        for value in sorted({v for v in values if v is not None}):
            members = np.array([v == value for v in values])
            row: dict[str, Any] = {"cases": int(members.sum())}
            for name, point in task.spec.operating_points.items():
                positives = members & (y == 1)
                negatives = members & (y == 0)
                called = p >= point.threshold
                row[name] = {
                    "sensitivity": wilson(
                        int((called & positives).sum()), int(positives.sum())
                    ).as_dict(),
                    "specificity": wilson(
                        int((~called & negatives).sum()), int(negatives.sum())
                    ).as_dict(),
                }
            groups[f"{column}={value}"] = row
    ece = expected_calibration_error(y, p)
    observed: dict[tuple[str, str | None], dict[str, Any]] = {
        ("roc_auc", None): auc.as_dict(),
        ("ece", None): {"value": ece},
    }
    for name, entry in points.items():
        for measure in ("sensitivity", "specificity"):
            observed[(measure, name)] = entry[measure]
    return {
        "task": {"id": task.id, "version": task.version, "hash": task.task_hash},
        "cases": len(y),
        "positives": int(y.sum()),
        "roc_auc": auc.as_dict(),
        "roc_auc_bootstrap": auc_bootstrap.as_dict(),
        "operating_points": points,
        "calibration": {
            "ece": ece,
            "brier": brier_score(y, p),
            "reliability": reliability(y, p),
        },
        "subgroups": groups,
        "claims": [c.as_dict() for c in check_claims(task.spec.claims, observed)],
    }


def locked_target(point: Any) -> float:
    """The sensitivity a point was locked for: its ``target_sensitivity``; for a version from
    before that field, the target its note states ("target sensitivity 0.95 ..."), else the
    sensitivity it states."""
    if point.target_sensitivity is not None:
        return float(point.target_sensitivity)
    stated = re.search(
        r"target sensitivity (0?\.\d+)|lower bound below (0?\.\d+)", point.note or ""
    )
    if stated:
        return float(stated.group(1) or stated.group(2))
    return float(point.sensitivity) if point.sensitivity is not None else 0.95


def _verdict(holds: bool | None) -> str:
    return "not checked" if holds is None else ("holds" if holds else "FAILS")


def _figure_png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _plots(labels: np.ndarray, probabilities: np.ndarray, results: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    images = []
    figure, axis = plt.subplots(figsize=(4.2, 4))
    fpr, tpr, _ = roc_curve(labels, probabilities)
    axis.plot(fpr, tpr, label=f"AUC {results['roc_auc']['value']:.3f}")
    rng = np.random.default_rng(0)
    grid = np.linspace(0, 1, 101)
    curves = []
    for _ in range(200):  # bootstrap band of the ROC curve
        index = rng.integers(0, len(labels), len(labels))
        if len(set(labels[index])) < 2:
            continue
        f, t, _ = roc_curve(labels[index], probabilities[index])
        curves.append(np.interp(grid, f, t))
    low, high = np.percentile(curves, [2.5, 97.5], axis=0)
    axis.fill_between(grid, low, high, alpha=0.25, label="95% bootstrap band")
    for name, point in results["operating_points"].items():
        axis.plot(1 - point["specificity"]["value"], point["sensitivity"]["value"], "o", label=name)
    axis.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC")
    axis.legend(loc="lower right", fontsize=8)
    images.append(_figure_png(figure))
    plt.close(figure)
    figure, axis = plt.subplots(figsize=(4.2, 4))
    table = results["calibration"]["reliability"]
    axis.plot([0, 1], [0, 1], "--", color="grey")
    axis.plot([r["predicted"] for r in table], [r["observed"] for r in table], "o-")
    axis.set(
        xlabel="predicted probability",
        ylabel="observed frequency",
        title=f"calibration (ECE {results['calibration']['ece']:.3f})",
    )
    images.append(_figure_png(figure))
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(4.2, 4))
    precision, recall, _ = precision_recall_curve(labels, probabilities)
    axis.plot(recall, precision)
    axis.axhline(labels.mean(), linestyle="--", color="grey", label="prevalence in these cases")
    axis.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="precision-recall")
    axis.legend(loc="lower left", fontsize=8)
    images.append(_figure_png(figure))
    plt.close(figure)

    for name, point in results["operating_points"].items():
        counts = point["confusion"]
        matrix = np.array([[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]])
        figure, axis = plt.subplots(figsize=(3.4, 3.2))
        axis.imshow(matrix, cmap="Blues")
        for (row, column), value in np.ndenumerate(matrix):
            axis.text(column, row, str(value), ha="center", va="center", fontsize=12)
        axis.set(
            xticks=[0, 1],
            yticks=[0, 1],
            xticklabels=["called negative", "called positive"],
            yticklabels=["negative", "positive"],
            title=f"confusion at {name}",
        )
        images.append(_figure_png(figure))
        plt.close(figure)
    return images


def _estimate(estimate: dict[str, Any]) -> str:
    """An estimate with its CI, or a dash where the group has no such cases."""
    if estimate["value"] != estimate["value"]:  # NaN: no cases
        return "-"
    return f"{estimate['value']:.3f} ({estimate['low']:.3f}-{estimate['high']:.3f})"


def _attention_html(attention: dict[str, Any] | None, gallery: Any) -> str:
    if not attention:
        return ""
    border = attention.get("border")
    text = (
        f"<p>Share of the Grad-CAM heatmap mass (positive output) in the outer "
        f"{attention['band_fraction']:.0%} border band, over {attention['cases']} images: "
        f"mean {border['mean']:.1%}, median {border['median']:.1%}; {border['over_half']} "
        f"images put more than half there. A map spread evenly over the image would put "
        f"{attention['band_area_share']:.1%} there. The maximum (a finding's location) lies in "
        f"the band for {attention.get('peak_in_border', {}).get('count', 0)} images: there "
        f"no location is reported. Heatmap grid: "
        f"{html.escape(attention.get('grid', 'unknown'))}.</p>"
        if border
        else "<p>No heatmap had any mass.</p>"
    )
    flagged = [
        (name, attention.get("by_outcome", {}).get(kind))
        for kind, name in (("true_positive", "correct flags"), ("false_positive", "false flags"))
    ]
    parts = [
        f"{name}: maximum in the band for {summary['peak_in_border']['count']} of "
        f"{summary['cases']}, mean border share {summary['border']['mean']:.1%}"
        for name, summary in flagged
        if summary and "border" in summary
    ]
    if parts:
        text += f"<p>Among flagged images (where a location is shown): {'; '.join(parts)}.</p>"
    if "outside_body" in attention:
        outside = attention["outside_body"]
        text += (
            f"<p>Outside the body mask: mean {outside['mean']:.1%}, median "
            f"{outside['median']:.1%}.</p>"
        )
    figures = ""
    for title, cases in gallery.sections() if gallery is not None else []:
        tiles = "".join(
            f'<figure><img alt="heatmap" src="data:image/png;base64,{png}">'
            f"<figcaption>{html.escape(name)}</figcaption></figure>"
            for name, png in cases
        )
        figures += f'<h3>{html.escape(title)}</h3><div class="gallery">{tiles}</div>'
    return f"<h2>Where the model looks</h2>{text}{figures}"


def write_report(
    results: dict[str, Any],
    labels: Sequence[int],
    probabilities: Sequence[float],
    out: Path,
    *,
    gallery: Any = None,
) -> tuple[Path, Path]:
    """``evaluation.json`` (every number) and ``report.html`` (plots and tables; a section
    with nothing to show is left out)."""
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "evaluation.json"
    json_path.write_text(json.dumps(results, indent=2, default=float))
    plots = _plots(np.asarray(labels), np.asarray(probabilities, dtype=float), results)
    auc = results["roc_auc"]
    rows = []
    for name, point in results["operating_points"].items():
        sensitivity, specificity = point["sensitivity"], point["specificity"]
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{point['threshold']:.4f}</td>"
            f"<td>{sensitivity['value']:.3f} ({sensitivity['low']:.3f}-{sensitivity['high']:.3f})"
            f"</td><td>{specificity['value']:.3f} ({specificity['low']:.3f}-"
            f"{specificity['high']:.3f})</td><td>{_verdict(point['holds'])}</td>"
            f"<td>{html.escape(point['note'])}</td></tr>"
        )
    group_rows = []
    for group, row in results["subgroups"].items():
        for name in results["operating_points"]:
            shown = [_estimate(row[name][m]) for m in ("sensitivity", "specificity")]
            group_rows.append(
                f"<tr><td>{html.escape(group)}</td><td>{row['cases']}</td>"
                f"<td>{html.escape(name)}</td><td>{shown[0]}</td><td>{shown[1]}</td></tr>"
            )
    task = results["task"]
    subgroups = (
        "<h2>Subgroups</h2><table><tr><th>group</th><th>cases</th><th>point</th>"
        f"<th>sensitivity</th><th>specificity</th></tr>{''.join(group_rows)}</table>"
        if group_rows
        else ""
    )
    points = (
        "<h2>Operating points</h2><table><tr><th>point</th><th>threshold</th>"
        "<th>sensitivity</th><th>specificity</th><th>on this data</th><th>note</th></tr>"
        f"{''.join(rows)}</table>"
        if rows
        else ""
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>medsight evaluation {html.escape(task["id"])} {html.escape(task["version"])}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} .banner{{background:#b00;color:#fff;
padding:.5em;font-weight:bold}} td,th{{border:1px solid #ccc;padding:.3em}}
table{{border-collapse:collapse}} li.fails{{color:#b00;font-weight:bold}}
.gallery{{display:flex;flex-wrap:wrap;gap:.5em}} figure{{margin:0}}
figcaption{{font-size:.75em;max-width:12em;overflow-wrap:anywhere}}</style></head><body>
<div class="banner">{BANNER}</div>
<h1>{html.escape(task["id"])} {html.escape(task["version"])}</h1>
<p>{results["cases"]} cases, {results["positives"]} positive. ROC AUC {auc["value"]:.3f}
(95% CI {auc["low"]:.3f}-{auc["high"]:.3f}, {html.escape(auc["method"])}).</p>
{claims_html(results.get("claims", []), results.get("warning", ""))}
{points}
{subgroups}
{_attention_html(results.get("attention"), gallery)}
<h2>Plots</h2>{"".join(f'<img alt="plot" src="data:image/png;base64,{p}">' for p in plots)}
<p>Brier score {results["calibration"]["brier"]:.4f}. Task hash
<code>{html.escape(task["hash"])}</code>.</p></body></html>"""
    html_path = out / "report.html"
    html_path.write_text(page)
    return json_path, html_path
