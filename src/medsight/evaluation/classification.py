"""Classifier evidence: ROC AUC, sensitivity and specificity with CIs, PPV/NPV at a stated
prevalence, and high-sensitivity operating points locked on validation data."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medsight.errors import InvalidInputError
from medsight.evaluation.intervals import Estimate, delong_auc, wilson

__all__ = [
    "OperatingPointCheck",
    "check_operating_point",
    "choose_operating_point",
    "confusion",
    "predictive_values",
    "roc_auc",
    "sensitivity_specificity",
    "stored_threshold",
]


def _binary(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if labels.shape != probabilities.shape or labels.ndim != 1:
        raise InvalidInputError("labels and probabilities must be 1D and of equal length")
    if not np.isin(labels, [0, 1]).all():
        raise InvalidInputError("labels must be 0 or 1")
    return labels.astype(bool), probabilities


def roc_auc(labels: np.ndarray, probabilities: np.ndarray, level: float = 0.95) -> Estimate:
    truth, scores = _binary(labels, probabilities)
    return delong_auc(truth, scores, level)


def confusion(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, int]:
    """True/false positives/negatives when ``probability >= threshold`` is called positive."""
    truth, scores = _binary(labels, probabilities)
    called = scores >= threshold
    return {
        "tp": int((called & truth).sum()),
        "fp": int((called & ~truth).sum()),
        "tn": int((~called & ~truth).sum()),
        "fn": int((~called & truth).sum()),
    }


def sensitivity_specificity(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float, level: float = 0.95
) -> tuple[Estimate, Estimate]:
    counts = confusion(labels, probabilities, threshold)
    sensitivity = wilson(counts["tp"], counts["tp"] + counts["fn"], level)
    specificity = wilson(counts["tn"], counts["tn"] + counts["fp"], level)
    return sensitivity, specificity


def predictive_values(
    sensitivity: float, specificity: float, prevalence: float
) -> tuple[float, float]:
    """PPV and NPV at a stated prevalence (Bayes), not at the test set's case mix."""
    if not 0 < prevalence < 1:
        raise InvalidInputError(f"prevalence must be between 0 and 1, got {prevalence}")
    true_positive = sensitivity * prevalence
    false_positive = (1 - specificity) * (1 - prevalence)
    true_negative = specificity * (1 - prevalence)
    false_negative = (1 - sensitivity) * prevalence
    ppv = (
        true_positive / (true_positive + false_positive) if true_positive + false_positive else 0.0
    )
    npv = (
        true_negative / (true_negative + false_negative) if true_negative + false_negative else 0.0
    )
    return float(ppv), float(npv)


@dataclass(frozen=True)
class OperatingPointCheck:
    """An operating point on some data: the threshold, what it achieved, and whether the
    target sensitivity is demonstrated (the lower CI bound reaches it)."""

    threshold: float
    target_sensitivity: float
    sensitivity: Estimate
    specificity: Estimate
    demonstrated: bool

    @property
    def note(self) -> str:
        if self.demonstrated:
            return (
                f"target sensitivity {self.target_sensitivity:.2f} demonstrated: "
                f"sensitivity {self.sensitivity}"
            )
        return (
            f"target not demonstrated: sensitivity {self.sensitivity} has a lower bound "
            f"below {self.target_sensitivity:.2f}"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "threshold": self.threshold,
            "target_sensitivity": self.target_sensitivity,
            "sensitivity": self.sensitivity.as_dict(),
            "specificity": self.specificity.as_dict(),
            "demonstrated": self.demonstrated,
            "note": self.note,
        }


def check_operating_point(
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    target_sensitivity: float,
    level: float = 0.95,
) -> OperatingPointCheck:
    """Whether a locked threshold still holds on new data (pass = target demonstrated)."""
    sensitivity, specificity = sensitivity_specificity(labels, probabilities, threshold, level)
    return OperatingPointCheck(
        threshold,
        target_sensitivity,
        sensitivity,
        specificity,
        sensitivity.low >= target_sensitivity,
    )


def stored_threshold(threshold: float, digits: int = 6) -> float:
    """A chosen threshold as task.toml stores it: rounded *down*. Thresholds sit at a
    positive case's score, so rounding to nearest could lift one above that score and lose
    the case the sensitivity was counted with."""
    scale = 10**digits
    return math.floor(threshold * scale) / scale


def choose_operating_point(
    labels: np.ndarray,
    probabilities: np.ndarray,
    target_sensitivity: float = 0.95,
    level: float = 0.95,
) -> OperatingPointCheck:
    """The highest threshold whose sensitivity's lower CI bound reaches the target; where the
    data cannot show that, the highest threshold whose point estimate reaches it, reported as
    "target not demonstrated"."""
    truth, scores = _binary(labels, probabilities)
    if truth.sum() == 0 or (~truth).sum() == 0:
        raise InvalidInputError("an operating point needs both classes in the data")
    candidates = np.unique(scores[truth])[::-1]  # thresholds at positive scores, high to low
    fallback = None
    for threshold in candidates:
        check = check_operating_point(
            truth.astype(int), scores, float(threshold), target_sensitivity, level
        )
        if check.demonstrated:
            return check
        if fallback is None and check.sensitivity.value >= target_sensitivity:
            fallback = check
    if fallback is not None:
        return fallback
    return check_operating_point(
        truth.astype(int), scores, float(candidates[-1]), target_sensitivity, level
    )
