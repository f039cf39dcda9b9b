"""The evidence of a sigmoid classifier from its pooled out-of-fold probabilities: locked
operating points (per image, or per patient on the worse image), each output's ROC AUC and
calibration, sensitivity and specificity at each point with Wilson CIs at image and patient
level, and for each ordinal grade the quadratic-weighted kappa and the confusion matrix."""

from __future__ import annotations

from typing import Any

import numpy as np

from medsight.evaluation import (
    bootstrap_ci,
    check_operating_point,
    choose_operating_point,
    expected_calibration_error,
    roc_auc,
)
from medsight.tasks.spec import TaskSpec
from medsight.training.config import TrainConfig
from medsight.training.data import Case

__all__ = ["evidence_metrics", "locked_points", "median_grades", "patient_worst"]


def patient_worst(
    cases: list[Case], labels: np.ndarray, probabilities: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per patient (graded images only): the highest label and the highest probability, as
    a screening decision from both eyes takes the worse one."""
    by_patient: dict[str, list[int]] = {}
    for number, case in enumerate(cases):
        if not np.isnan(labels[number]):
            by_patient.setdefault(case.patient, []).append(number)
    rows = list(by_patient.values())
    return (
        np.array([labels[r].max() for r in rows]),
        np.array([probabilities[r].max() for r in rows]),
    )


def _graded(
    spec: TaskSpec, output: str, targets: np.ndarray, probabilities: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    index = next(o.index for o in spec.outputs if o.name == output)
    known = ~np.isnan(targets[:, index])
    return known, targets[:, index], probabilities[:, index]


def locked_points(
    config: TrainConfig,
    spec: TaskSpec,
    cases: list[Case],
    targets: np.ndarray,
    probabilities: np.ndarray,
) -> dict[str, dict[str, Any]]:
    """Each recipe point's threshold, chosen on the out-of-fold probabilities at its level
    (image, or patient's worse image) for its target sensitivity."""
    points = {}
    for name, wanted in config.evaluation.points.items():
        known, labels, scores = _graded(spec, wanted.output, targets, probabilities)
        if config.evaluation.lock_on == "patient_worst":
            labels_at, scores_at = patient_worst(cases, labels, scores)
            level = "patient (worse image)"
        else:
            labels_at, scores_at, level = labels[known], scores[known], "image"
        check = choose_operating_point(labels_at.astype(int), scores_at, wanted.target_sensitivity)
        points[name] = {
            "level": level,
            "spec": {
                "output": wanted.output,
                "threshold": round(check.threshold, 6),
                "target_sensitivity": wanted.target_sensitivity,
                "sensitivity": round(check.sensitivity.value, 4),
                "specificity": round(check.specificity.value, 4),
                "note": f"locked per {level} on out-of-fold predictions; {check.note}",
            },
        }
    return points


def median_grades(cumulative: np.ndarray) -> np.ndarray:
    """The median grade of each row of P(grade >= 1..K) (made non-increasing first)."""
    return (np.minimum.accumulate(cumulative, axis=1) >= 0.5).sum(axis=1)


def _kappa(truth: np.ndarray, predicted: np.ndarray, levels: int) -> dict[str, Any]:
    from sklearn.metrics import cohen_kappa_score

    labels = list(range(levels))

    def kappa(index: np.ndarray) -> float:
        return float(
            cohen_kappa_score(truth[index], predicted[index], labels=labels, weights="quadratic")
        )

    return bootstrap_ci(kappa, len(truth)).as_dict()


def _at_point(
    labels: np.ndarray, scores: np.ndarray, threshold: float, target: float
) -> dict[str, Any]:
    check = check_operating_point(labels.astype(int), scores, threshold, target)
    return {
        "cases": len(labels),
        "positives": int(labels.sum()),
        "sensitivity": check.sensitivity.as_dict(),
        "specificity": check.specificity.as_dict(),
    }


def evidence_metrics(
    config: TrainConfig,
    spec: TaskSpec,
    cases: list[Case],
    targets: np.ndarray,
    probabilities: np.ndarray,
    points: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Everything the card and the claims state, from the out-of-fold probabilities."""
    outputs: dict[str, Any] = {}
    for output in spec.outputs:
        known, labels, scores = _graded(spec, output.name, targets, probabilities)
        outputs[output.name] = {
            "graded": int(known.sum()),
            "positives": int(labels[known].sum()),
            "roc_auc": roc_auc(labels[known].astype(int), scores[known]).as_dict(),
            "ece": expected_calibration_error(labels[known].astype(int), scores[known]),
        }
    at_points: dict[str, Any] = {}
    for name, point in points.items():
        wanted = point["spec"]
        known, labels, scores = _graded(spec, wanted["output"], targets, probabilities)
        patient_labels, patient_scores = patient_worst(cases, labels, scores)
        at_points[name] = {
            **point,
            "image": _at_point(
                labels[known], scores[known], wanted["threshold"], wanted["target_sensitivity"]
            ),
            "patient": _at_point(
                patient_labels, patient_scores, wanted["threshold"], wanted["target_sensitivity"]
            ),
            "patient_roc_auc": roc_auc(patient_labels.astype(int), patient_scores).as_dict(),
        }
    grades: dict[str, Any] = {}
    for ordinal in spec.ordinal:
        columns = [next(o.index for o in spec.outputs if o.name == c) for c in ordinal.cumulative]
        graded = ~np.isnan(targets[:, columns]).any(axis=1)
        truth = targets[graded][:, columns].sum(axis=1).astype(int)
        predicted = median_grades(probabilities[graded][:, columns])
        levels = len(ordinal.levels)
        matrix = np.zeros((levels, levels), dtype=int)
        np.add.at(matrix, (truth, predicted), 1)
        grades[ordinal.name] = {
            "graded": int(graded.sum()),
            "quadratic_weighted_kappa": _kappa(truth, predicted, levels),
            "exact_agreement": float((truth == predicted).mean()),
            "confusion": {"rows_true_columns_predicted": matrix.tolist()},
            "levels": ordinal.levels,
        }
    patients = len({case.patient for case in cases})
    return {
        "evidence": f"out-of-fold predictions of {config.split.folds}-fold patient-level "
        f"cross-validation ({len(cases)} images of {patients} patients); each fold's model "
        f"chose its epoch on a {config.split.validation_fraction:.0%} random patient split of "
        "its training part, never on the held-out fold",
        "cases": len(cases),
        "patients": patients,
        "outputs": outputs,
        "points": at_points,
        "grades": grades,
    }
