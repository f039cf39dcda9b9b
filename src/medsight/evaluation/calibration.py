"""Calibration: reliability, expected calibration error, Brier score, temperature scaling."""

from __future__ import annotations

import numpy as np
from scipy import optimize

from medsight.errors import InvalidInputError

__all__ = ["brier_score", "expected_calibration_error", "fit_temperature", "reliability"]


def reliability(
    labels: np.ndarray, probabilities: np.ndarray, bins: int = 10
) -> list[dict[str, float]]:
    """Per equal-width bin: mean predicted probability, observed frequency and count."""
    labels = np.asarray(labels, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probabilities, edges[1:-1], right=True), 0, bins - 1)
    table = []
    for index in range(bins):
        inside = which == index
        if inside.any():
            table.append(
                {
                    "low": float(edges[index]),
                    "high": float(edges[index + 1]),
                    "predicted": float(probabilities[inside].mean()),
                    "observed": float(labels[inside].mean()),
                    "count": int(inside.sum()),
                }
            )
    return table


def expected_calibration_error(
    labels: np.ndarray, probabilities: np.ndarray, bins: int = 10
) -> float:
    """Count-weighted mean |observed - predicted| over equal-width bins."""
    table = reliability(labels, probabilities, bins)
    total = sum(row["count"] for row in table)
    return float(
        sum(row["count"] * abs(row["observed"] - row["predicted"]) for row in table) / max(total, 1)
    )


def brier_score(labels: np.ndarray, probabilities: np.ndarray) -> float:
    from sklearn.metrics import brier_score_loss

    return float(brier_score_loss(np.asarray(labels), np.asarray(probabilities)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(logits / T)
    (a sigmoid for a single logit column) on validation data (Guo et al., 2017)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    if logits.ndim == 1:
        logits = logits[:, None]
    if len(logits) != len(labels):
        raise InvalidInputError("logits and labels differ in length")

    def nll(log_temperature: float) -> float:
        scaled = logits / np.exp(log_temperature)
        if scaled.shape[1] == 1:
            z = scaled[:, 0]
            return float(np.mean(np.logaddexp(0, -z) * labels + np.logaddexp(0, z) * (1 - labels)))
        shifted = scaled - scaled.max(axis=1, keepdims=True)
        log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return float(-np.mean(log_probabilities[np.arange(len(labels)), labels]))

    result = optimize.minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))
