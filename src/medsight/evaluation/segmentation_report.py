"""Evaluate a segmentation task on images with reference masks: per-case Dice, IoU, HD95,
surface Dice (and volumes, and pixel AUC for two-class tasks), aggregated with bootstrap
CIs; a JSON of every number and an HTML report with the per-case Dice distribution and a
gallery of the worst cases with overlays.

The cases run through the real Predictor, so the figures are those of the shipped
behaviour (post-processing included) in each image's original geometry.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medsight.evaluation.claims import check_claims, claims_html
from medsight.evaluation.intervals import bootstrap_ci
from medsight.evaluation.segmentation import segmentation_metrics
from medsight.tasks.task import Task

if TYPE_CHECKING:
    from medsight.evaluation.cases import Case

__all__ = ["evaluate_out_of_fold", "evaluate_segmenter", "write_segmentation_report"]

BANNER = "medsight evaluation - research use only, not for diagnostic use"
_GALLERY = 6


def evaluate_segmenter(
    task: Task, cases: Sequence[Case], *, progress: Any = None, tolerance_mm: float = 1.0
) -> dict[str, Any]:
    """Every case through the task's Predictor in its original geometry, then the means
    with bootstrap CIs, subgroups, claims and the worst cases."""
    return evaluate_out_of_fold(task, [(task, cases)], progress=progress, tolerance_mm=tolerance_mm)


def evaluate_out_of_fold(
    task: Task,
    folds: Sequence[tuple[Task, Sequence[Case]]],
    *,
    progress: Any = None,
    tolerance_mm: float = 1.0,
) -> dict[str, Any]:
    """Each fold's cases through that fold's model, pooled and summarised as ``task`` (the
    version the evidence is for): k-fold evidence where every case is out of fold."""
    per_case: list[dict[str, Any]] = []
    views: list[tuple[float, bytes]] = []
    units = "mm"
    for fold_task, cases in folds:
        rows, fold_views, fold_units = _evaluate_cases(fold_task, cases, progress, tolerance_mm)
        per_case += rows
        views += fold_views
        units = "px" if fold_units == "px" else units
    summary = _summary(task, per_case, views, units, tolerance_mm)
    if task.spec.cardiac_function is not None:
        from medsight.evaluation.cardiac import ejection_fraction_errors

        summary["ejection_fraction"] = ejection_fraction_errors(
            per_case, task.spec.cardiac_function
        )
    return summary


def evaluated_segments(task: Task) -> list[Any]:
    """The segments scored: all but background, and an instance task's rim class (merged
    into its objects in every result)."""
    merged = task.spec.instances.boundary if task.spec.instances is not None else None
    return [o for o in task.spec.outputs if o.index > 0 and o.name != merged]


def _evaluate_cases(
    task: Task, cases: Sequence[Case], progress: Any, tolerance_mm: float
) -> tuple[list[dict[str, Any]], list[tuple[float, bytes]], str]:
    from sklearn.metrics import roc_auc_score

    from medsight.evaluation.cases import read_case_image, read_case_instances, read_case_mask
    from medsight.evaluation.instances import instance_metrics
    from medsight.inference import Predictor

    predictor = Predictor(task, explain=False)
    segments = evaluated_segments(task)
    instances = task.spec.instances
    per_case: list[dict[str, Any]] = []
    views: list[tuple[float, bytes]] = []
    units = "mm"
    job = progress.add_task("evaluating", total=len(cases)) if progress else None
    for case in cases:
        image = read_case_image(case)
        truth = read_case_mask(case, image).array[0]
        if instances is not None:  # the rim is part of its nucleus: score whole objects
            by_name = {o.name: o.index for o in task.spec.outputs}
            objects = np.isin(truth, [by_name[instances.interior], by_name[instances.boundary]])
            truth = np.where(objects, by_name[instances.interior], 0)
        roi = read_case_mask(case, image, "roi").array[0] > 0 if case.roi else None
        prediction = predictor.predict(image)
        assert prediction.label_map is not None and prediction.segment_probabilities is not None
        predicted = prediction.label_map
        inside = roi if roi is not None else np.ones(truth.shape, dtype=bool)
        if not image.spacing_known:
            units = "px"
        spacing = [float(s) for s in image.spacing]
        voxel = float(np.prod(spacing))
        row: dict[str, Any] = {
            "case": case.name,
            "patient": case.patient,
            "attributes": dict(case.attributes),
        }
        for segment in segments:
            p = (predicted == segment.index) & inside
            t = (truth == segment.index) & inside
            values = segmentation_metrics(p, t, spacing, tolerance_mm=tolerance_mm)
            values["volume"] = float(p.sum()) * voxel
            values["reference_volume"] = float(t.sum()) * voxel
            if len(task.spec.outputs) == 2 and 0 < t.sum() < inside.sum():
                scores = prediction.segment_probabilities[segment.index][inside]
                values["pixel_auc"] = float(roc_auc_score(t[inside], scores))
            row[segment.name] = values
        if instances is not None and prediction.instance_map is not None:
            reference = read_case_instances(case, image)
            row[instances.interior].update(instance_metrics(reference, prediction.instance_map))
        per_case.append(row)
        mean_dice = float(np.mean([row[s.name]["dice"] for s in segments]))
        views.append((mean_dice, _overlay_png(image, truth, predicted, case.name, mean_dice)))
        if progress:
            progress.advance(job)
    if progress:
        progress.remove_task(job)
    return per_case, views, units


def _summary(
    task: Task,
    per_case: list[dict[str, Any]],
    views: list[tuple[float, bytes]],
    units: str,
    tolerance_mm: float,
) -> dict[str, Any]:
    segments = evaluated_segments(task)
    summary = {s.name: _summarise([row[s.name] for row in per_case]) for s in segments}
    subgroups: dict[str, dict[str, Any]] = {}
    for column in sorted({key for row in per_case for key in row["attributes"]}):
        for value in sorted(
            {r["attributes"][column] for r in per_case if column in r["attributes"]}
        ):
            members = [r for r in per_case if r["attributes"].get(column) == value]
            subgroups[f"{column}={value}"] = {
                s.name: {
                    "cases": len(members),
                    "dice": bootstrap_ci(
                        _mean_of(np.array([r[s.name]["dice"] for r in members])), len(members)
                    ).as_dict(),
                }
                for s in segments
            }
    worst = sorted(range(len(views)), key=lambda i: views[i][0])[:_GALLERY]
    observed: dict[tuple[str, str | None], dict[str, Any]] = {}
    for name, entry in summary.items():
        for metric in ("dice", "pixel_auc", "aji"):
            if metric in entry:
                observed[(metric, name)] = entry[metric]
        if "dice" in entry:
            observed[("f1", name)] = entry["dice"]  # for one binary segment F1 is Dice
    return {
        "claims": [c.as_dict() for c in check_claims(task.spec.claims, observed)],
        "task": {"id": task.id, "version": task.version, "hash": task.task_hash},
        "cases": len(per_case),
        "units": units,
        "volume_units": "mm3" if units == "mm" else "px",
        "tolerance": tolerance_mm,
        "summary": summary,
        "subgroups": subgroups,
        "per_case": per_case,
        "worst_cases": [per_case[i]["case"] for i in worst],
        "_gallery": [views[i][1] for i in worst],
    }


def _summarise(rows: list[dict[str, float]]) -> dict[str, Any]:
    """Mean of each metric over cases with a 95% bootstrap CI; infinite distances (an
    empty prediction) are counted, not averaged."""
    summary: dict[str, Any] = {"cases": len(rows)}
    for name in rows[0]:
        if name in ("volume", "reference_volume", "reference_count", "predicted_count"):
            continue
        values = np.array([r[name] for r in rows if name in r], dtype=np.float64)
        finite = values[np.isfinite(values)]
        if len(finite) == 0:
            continue
        estimate = bootstrap_ci(_mean_of(finite), len(finite))
        summary[name] = estimate.as_dict()
        if len(finite) < len(values):
            summary[name]["infinite_cases"] = int(len(values) - len(finite))
    difference = np.array([abs(r["volume"] - r["reference_volume"]) for r in rows])
    summary["volume_abs_difference"] = bootstrap_ci(
        lambda i: float(difference[i].mean()), len(difference)
    ).as_dict()
    return summary


def _mean_of(values: np.ndarray) -> Callable[[np.ndarray], float]:
    return lambda indices: float(values[indices].mean())


def _overlay_png(
    image: Any, truth: np.ndarray, predicted: np.ndarray, name: str, dice: float
) -> bytes:
    """The image with the reference (green) and prediction (red) outlines; a 3D case shows
    the slice through the reference's largest cross-section."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from medsight.imaging import to_display

    shown = to_display(image)
    if truth.ndim == 3:
        index = int(np.argmax((truth > 0).sum(axis=(0, 1)))) if truth.any() else truth.shape[2] // 2
        shown, truth, predicted = shown[..., index], truth[..., index], predicted[..., index]
    picture = shown.transpose(2, 1, 0) if shown.shape[0] == 3 else shown[0].T
    figure, axis = plt.subplots(figsize=(3.2, 3.2))
    axis.imshow(np.clip(picture, 0, 1), cmap="gray")
    if truth.any():
        axis.contour((truth > 0).T, levels=[0.5], colors="lime", linewidths=0.8)
    if predicted.any():
        axis.contour((predicted > 0).T, levels=[0.5], colors="red", linewidths=0.8)
    axis.set_title(f"{name}: Dice {dice:.3f}", fontsize=8)
    axis.axis("off")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _dice_histogram(evaluation: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(4.2, 3.2))
    for segment in evaluation["summary"]:
        values = [row[segment]["dice"] for row in evaluation["per_case"]]
        axis.hist(values, bins=20, range=(0, 1), alpha=0.6, label=segment)
    axis.set(xlabel="Dice per case", ylabel="cases", title="per-case Dice")
    axis.legend(fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def write_segmentation_report(evaluation: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``evaluation.json``, ``report.html`` and the worst cases as ``worst-N.png``."""
    out.mkdir(parents=True, exist_ok=True)
    gallery = evaluation.get("_gallery", [])
    numbers = {k: v for k, v in evaluation.items() if not k.startswith("_")}
    json_path = out / "evaluation.json"
    json_path.write_text(json.dumps(numbers, indent=2, default=float))
    for number, png in enumerate(gallery, start=1):
        (out / f"worst-{number}.png").write_bytes(png)

    def encode(png: bytes) -> str:
        return base64.b64encode(png).decode()

    unit = evaluation["units"]
    summary_rows = []
    for segment, summary in evaluation["summary"].items():
        for metric, estimate in summary.items():
            if metric == "cases":
                continue
            suffix = f" ({unit})" if metric in ("hd95_mm", "volume_abs_difference") else ""
            summary_rows.append(
                f"<tr><td>{html.escape(segment)}</td><td>{html.escape(metric)}{suffix}</td>"
                f"<td>{estimate['value']:.3f}</td><td>{estimate['low']:.3f}-"
                f"{estimate['high']:.3f}</td></tr>"
            )
    group_rows = [
        f"<tr><td>{html.escape(group)}</td><td>{html.escape(segment)}</td>"
        f"<td>{row['cases']}</td><td>{row['dice']['value']:.3f} ({row['dice']['low']:.3f}-"
        f"{row['dice']['high']:.3f})</td></tr>"
        for group, segments in evaluation.get("subgroups", {}).items()
        for segment, row in segments.items()
    ]
    case_rows = []
    for row in evaluation["per_case"]:
        cells = "".join(
            f"<td>{row[s]['dice']:.3f}</td><td>{row[s]['hd95_mm']:.2f}</td>"
            for s in evaluation["summary"]
        )
        case_rows.append(f"<tr><td>{html.escape(row['case'])}</td>{cells}</tr>")
    headers = "".join(
        f"<th>{html.escape(s)} Dice</th><th>{html.escape(s)} HD95 ({unit})</th>"
        for s in evaluation["summary"]
    )
    task = evaluation["task"]
    histogram = encode(_dice_histogram(evaluation))
    images = "".join(
        f'<img alt="worst case" src="data:image/png;base64,{encode(png)}">' for png in gallery
    )
    subgroups = (
        "<h2>Subgroups</h2><table><tr><th>group</th><th>segment</th><th>cases</th>"
        f"<th>mean Dice (95% CI)</th></tr>{''.join(group_rows)}</table>"
        if group_rows
        else ""
    )
    fractions = _ejection_fraction_html(evaluation.get("ejection_fraction", {}))
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>medsight evaluation {html.escape(task["id"])} {html.escape(task["version"])}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} .banner{{background:#b00;color:#fff;
padding:.5em;font-weight:bold}} td,th{{border:1px solid #ccc;padding:.3em}}
table{{border-collapse:collapse}}</style></head><body>
<div class="banner">{BANNER}</div>
<h1>{html.escape(task["id"])} {html.escape(task["version"])}: segmentation</h1>
<p>{evaluation["cases"]} cases. Means over cases with 95% bootstrap CIs; distances in {unit},
surface Dice at {evaluation["tolerance"]} {unit}.</p>
<table><tr><th>segment</th><th>metric</th><th>mean</th><th>95% CI</th></tr>
{"".join(summary_rows)}</table>
{claims_html(evaluation.get("claims", []), evaluation.get("warning", ""))}
{fractions}
{subgroups}
<h2>Per-case Dice</h2><img alt="Dice distribution" src="data:image/png;base64,{histogram}">
<h2>Worst cases</h2><p>Reference outline green, prediction red.</p>{images}
<h2>Every case</h2><table><tr><th>case</th>{headers}</tr>{"".join(case_rows)}</table>
<p>Task hash <code>{html.escape(task["hash"])}</code>.</p></body></html>"""
    html_path = out / "report.html"
    html_path.write_text(page)
    return json_path, html_path


def _ejection_fraction_html(fractions: dict[str, Any]) -> str:
    """Each ventricle's EF error against the reference masks (omitted when there is none)."""
    if not fractions:
        return ""
    rows = []
    for structure, entry in fractions.items():
        error, bias = entry["mean_absolute_error"], entry["mean_difference"]
        rows.append(
            f"<tr><td>{html.escape(structure)}</td><td>{entry['patients']}</td>"
            f"<td>{error['value']:.1f} ({error['low']:.1f}-{error['high']:.1f})</td>"
            f"<td>{bias['value']:+.1f} ({bias['low']:+.1f} to {bias['high']:+.1f})</td></tr>"
        )
    return (
        "<h2>Ejection fraction</h2><p>Each patient's end-diastole and end-systole cases: the "
        "EF from the predicted masks against the EF from the reference masks, in percentage "
        "points (95% bootstrap CIs).</p><table><tr><th>ventricle</th><th>patients</th>"
        "<th>mean absolute error</th><th>mean difference (predicted - reference)</th></tr>"
        f"{''.join(rows)}</table>"
    )
