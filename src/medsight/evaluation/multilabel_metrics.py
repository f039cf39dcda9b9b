"""Figures of a sigmoid classifier (several outputs and ordinal grades per image) from its
probabilities on graded cases: each output's ROC AUC and calibration, each locked point's
sensitivity and specificity with Wilson CIs per image and per patient (worse image), and
each ordinal grade's quadratic-weighted kappa and confusion matrix. Training states them
on out-of-fold predictions; `medsight evaluate` re-checks them on new data."""

from __future__ import annotations

from typing import Any

import numpy as np

from medsight.evaluation.calibration import expected_calibration_error
from medsight.evaluation.cases import Case
from medsight.evaluation.classification import roc_auc
from medsight.evaluation.intervals import bootstrap_ci, wilson
from medsight.tasks.spec import TaskSpec

__all__ = ["evidence_metrics", "graded_output", "median_grades", "patient_worst"]


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


def graded_output(
    spec: TaskSpec, output: str, targets: np.ndarray, probabilities: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    index = next(o.index for o in spec.outputs if o.name == output)
    known = ~np.isnan(targets[:, index])
    return known, targets[:, index], probabilities[:, index]


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


def _at_point(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Sensitivity and specificity at ``threshold`` with Wilson CIs (no CI but a value of
    NaN where the data hold no positives or no negatives)."""
    called = scores >= threshold
    positives, negatives = labels == 1, labels == 0
    return {
        "cases": len(labels),
        "positives": int(positives.sum()),
        "sensitivity": wilson(int((called & positives).sum()), int(positives.sum())).as_dict(),
        "specificity": wilson(int((~called & negatives).sum()), int(negatives.sum())).as_dict(),
    }


def _auc(labels: np.ndarray, scores: np.ndarray) -> dict[str, Any] | None:
    """ROC AUC with its DeLong CI; None when the labels hold one class only."""
    if len(set(labels.astype(int).tolist())) < 2:
        return None
    return roc_auc(labels.astype(int), scores).as_dict()


def evidence_metrics(
    evidence: str,
    spec: TaskSpec,
    cases: list[Case],
    targets: np.ndarray,
    probabilities: np.ndarray,
    points: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Everything the card and the claims state (or `medsight evaluate` re-checks), from
    probabilities of graded cases; ``evidence`` says what they are ({cases} and {patients}
    are filled in)."""
    outputs: dict[str, Any] = {}
    for output in spec.outputs:
        known, labels, scores = graded_output(spec, output.name, targets, probabilities)
        outputs[output.name] = {
            "graded": int(known.sum()),
            "positives": int(labels[known].sum()),
            "roc_auc": _auc(labels[known], scores[known]),
            "ece": expected_calibration_error(labels[known].astype(int), scores[known]),
        }
    at_points: dict[str, Any] = {}
    for name, point in points.items():
        wanted = point["spec"]
        known, labels, scores = graded_output(spec, wanted["output"], targets, probabilities)
        patient_labels, patient_scores = patient_worst(cases, labels, scores)
        at_points[name] = {
            **point,
            "image": _at_point(labels[known], scores[known], wanted["threshold"]),
            "patient": _at_point(patient_labels, patient_scores, wanted["threshold"]),
            "patient_roc_auc": _auc(patient_labels, patient_scores),
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
        "evidence": evidence.format(cases=len(cases), patients=patients),
        "cases": len(cases),
        "patients": patients,
        "outputs": outputs,
        "points": at_points,
        "grades": grades,
    }
