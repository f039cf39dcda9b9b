"""The model card and task.toml claims of a sigmoid classifier (training.multilabel)."""

from __future__ import annotations

import json
from typing import Any

from medsight.tasks import Task
from medsight.training.common import card_head, interval, time_line, training_seconds
from medsight.training.config import TrainConfig

__all__ = ["claims_of", "model_card"]


def _ci(estimate: dict[str, Any]) -> dict[str, float]:
    return {key: round(float(estimate[key]), 4) for key in ("value", "low", "high")}


def _auc(estimate: dict[str, Any] | None) -> str:
    return "not measurable (one class only)" if estimate is None else interval(estimate)


def claims_of(metrics: dict[str, Any], config: TrainConfig) -> list[dict[str, Any]]:
    """Each locked point's output AUC and its sensitivity and specificity at the point's
    level, as task.toml claims that `medsight evaluate` re-checks."""
    measured_on = metrics["evidence"].split(";")[0]
    claims = []
    for name, point in metrics["points"].items():
        output = point["spec"]["output"]
        level = "patient" if point["level"].startswith("patient") else "image"
        auc = metrics["outputs"][output]["roc_auc"]
        if auc is not None:
            claims.append(
                {
                    "metric": "roc_auc",
                    **_ci(auc),
                    "segment": output,
                    "measured_on": f"{measured_on}, per image",
                }
            )
        for measure in ("sensitivity", "specificity"):
            claims.append(
                {
                    "metric": measure,
                    **_ci(point[level][measure]),
                    "operating_point": name,
                    "measured_on": f"{measured_on}, per {point['level']}",
                }
            )
    return claims


def _points(metrics: dict[str, Any]) -> list[str]:
    lines = [
        "| point (output) | locked per | threshold | level | cases (positive) | sensitivity | "
        "specificity |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, point in metrics["points"].items():
        spec = point["spec"]
        for level in ("image", "patient"):
            figures = point[level]
            lines.append(
                f"| {name} ({spec['output']}) | {point['level']} | {spec['threshold']:.4f} | "
                f"{level} | {figures['cases']} ({figures['positives']}) | "
                f"{interval(figures['sensitivity'])} | {interval(figures['specificity'])} |"
            )
    return lines


def _grades(metrics: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, grade in metrics["grades"].items():
        levels = grade["levels"]
        lines += [
            f"**{name}** ({grade['graded']} graded images): quadratic-weighted kappa "
            f"{interval(grade['quadratic_weighted_kappa'])}, exact agreement "
            f"{grade['exact_agreement']:.3f}; confusion (rows: reference, columns: predicted "
            "median grade):",
            "",
            "| reference \\ predicted | " + " | ".join(levels) + " |",
            "|---|" + "---|" * len(levels),
        ]
        for level, row in zip(
            levels, grade["confusion"]["rows_true_columns_predicted"], strict=True
        ):
            lines.append(f"| {level} ({sum(row)}) | " + " | ".join(str(v) for v in row) + " |")
        lines.append("")
    return lines


def model_card(
    base: Task, config: TrainConfig, metrics: dict[str, Any], record: dict[str, Any]
) -> str:
    histories = [fold["epochs"] for fold in metrics["folds"]]
    metrics.setdefault("training_seconds", training_seconds(*histories))
    metrics.setdefault("training_cpu_seconds", training_seconds(*histories, key="cpu_seconds"))
    lines = [
        *card_head(base, config),
        f"- {metrics['cases']} images of {metrics['patients']} patients",
        f"- evidence: {metrics['evidence']}",
        "- the evaluated cases come from the same source as the training data, so these "
        "figures flatter: expect lower performance on data from another site or camera",
        "",
        "## Out-of-fold results (95% confidence intervals)",
        "",
        "| output | graded images (positive) | ROC AUC | ECE after calibration |",
        "|---|---|---|---|",
    ]
    for name, output in metrics["outputs"].items():
        lines.append(
            f"| {name} | {output['graded']} ({output['positives']}) | "
            f"{_auc(output['roc_auc'])} | {output['ece']:.3f} |"
        )
    lines += ["", *_points(metrics), ""]
    for name, point in metrics["points"].items():
        lines.append(
            f"- {name}: patient-level (worse image) ROC AUC {_auc(point['patient_roc_auc'])}"
            f"; {point['spec']['note']}"
        )
    lines += ["", *_grades(metrics)]
    lines += [
        "## Claims (re-checked by `medsight evaluate`)",
        "",
        "Each locked point's output AUC and its sensitivity and specificity are listed in "
        "task.toml `[[claims]]`.",
        "",
        "## Training",
        "",
        f"- command: `{record['command']}`",
        time_line(metrics, record),
        f"- software: {json.dumps(record['software'])}",
        f"- best epochs per fold: {metrics['best_epochs']}; the shipped model is refitted on "
        "all images for their median (the training time above includes that refit)",
        f"- weights SHA-256: `{record['weights_sha256']}`",
        "",
        "## Known limitations",
        "",
        "- no external test set was available to development",
        "- each output's temperature and the operating points were locked on the same "
        "out-of-fold predictions they are reported on (the epochs were not)",
        "",
    ]
    return "\n".join(lines)
