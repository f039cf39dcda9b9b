"""Confidence intervals: Wilson for proportions, DeLong for ROC AUC, bootstrap for the rest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from medsight.errors import InvalidInputError

__all__ = ["Estimate", "bootstrap_ci", "delong_auc", "interval", "wilson"]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval."""

    value: float
    low: float
    high: float
    level: float = 0.95
    method: str = ""

    def as_dict(self) -> dict[str, float | str]:
        return {
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "method": self.method,
        }

    def __str__(self) -> str:
        return f"{self.value:.3f} ({self.level:.0%} CI {self.low:.3f}-{self.high:.3f})"


def interval(estimate: dict[str, Any]) -> str:
    """An estimate and its CI as a card or report shows it: ``0.912 (0.895-0.926)``."""
    return f"{estimate['value']:.3f} ({estimate['low']:.3f}-{estimate['high']:.3f})"


def wilson(successes: int, total: int, level: float = 0.95) -> Estimate:
    """A proportion with its Wilson score interval (SciPy's implementation)."""
    if total <= 0:
        return Estimate(float("nan"), 0.0, 1.0, level, "wilson (no cases)")
    interval = stats.binomtest(int(successes), int(total)).proportion_ci(level, method="wilson")
    return Estimate(successes / total, float(interval.low), float(interval.high), level, "wilson")


def _midranks(values: np.ndarray) -> np.ndarray:
    return stats.rankdata(values, method="average")


def delong_auc(labels: np.ndarray, scores: np.ndarray, level: float = 0.95) -> Estimate:
    """ROC AUC with DeLong's variance (the fast midrank form of Sun and Xu, 2014).

    Written here because neither scikit-learn nor SciPy offers DeLong's interval; the AUC
    itself equals ``sklearn.metrics.roc_auc_score`` (a test checks it). The interval is
    computed on the logit scale and mapped back, so it stays inside [0, 1].
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives, negatives = scores[labels], scores[~labels]
    m, n = len(positives), len(negatives)
    if m == 0 or n == 0:
        raise InvalidInputError("ROC AUC needs both classes; found only one")
    combined = _midranks(np.concatenate([positives, negatives]))
    within_positive = _midranks(positives)
    within_negative = _midranks(negatives)
    auc = (combined[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (combined[:m] - within_positive) / n  # structural components
    v01 = 1.0 - (combined[m:] - within_negative) / m
    variance = np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n if m > 1 and n > 1 else 0.0
    z = stats.norm.ppf(0.5 + level / 2)
    if variance <= 0 or auc in (0.0, 1.0):
        return Estimate(float(auc), float(auc), float(auc), level, "delong (degenerate)")
    logit = np.log(auc / (1 - auc))
    half = z * np.sqrt(variance) / (auc * (1 - auc))
    low, high = 1 / (1 + np.exp(-(logit - half))), 1 / (1 + np.exp(-(logit + half)))
    return Estimate(float(auc), float(low), float(high), level, "delong (logit)")


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    count: int,
    *,
    strata: np.ndarray | None = None,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """Percentile bootstrap of ``statistic(indices)`` over ``count`` cases (stratified when
    ``strata`` is given, so every resample keeps the class counts)."""
    rng = np.random.default_rng(seed)
    all_indices = np.arange(count)
    groups = (
        [all_indices]
        if strata is None
        else [all_indices[strata == value] for value in np.unique(strata)]
    )
    values = []
    for _ in range(resamples):
        sample = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        value = statistic(sample)
        if np.isfinite(value):
            values.append(value)
    point = float(statistic(all_indices))
    if not values:
        return Estimate(point, float("nan"), float("nan"), level, "bootstrap (failed)")
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return Estimate(point, float(low), float(high), level, f"bootstrap ({len(values)} resamples)")
