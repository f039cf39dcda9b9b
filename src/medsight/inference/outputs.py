"""From a classifier's logits to what a task reports: calibrated probabilities per output
(one softmax over the outputs, or a sigmoid each) and ordinal grades read from cumulative
outputs (task.toml ``activation``, ``calibration`` and ``[[ordinal]]``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from medsight.tasks.spec import Ordinal, TaskSpec

__all__ = [
    "calibrated_probabilities",
    "grade_distribution",
    "ordinal_grades",
    "output_probabilities",
]


def calibrated_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Sigmoid (one output) or softmax of logits / temperature."""
    scaled = logits / temperature
    if scaled.shape[-1] == 1:
        return 1.0 / (1.0 + np.exp(-scaled))
    exponent = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    return exponent / exponent.sum(axis=-1, keepdims=True)


def output_probabilities(logits: np.ndarray, spec: TaskSpec) -> np.ndarray:
    """Calibrated probabilities, shaped like ``logits`` (n, outputs): a softmax of logits /
    temperature, or with ``activation = "sigmoid"`` each output's sigmoid of its logit over
    its own temperature (the task-wide one where it has none)."""
    if spec.activation == "softmax":
        return calibrated_probabilities(logits, spec.calibration.temperature)
    temperatures = np.full(logits.shape[-1], spec.calibration.temperature)
    for output in spec.outputs:
        temperatures[output.index] = spec.calibration.temperatures.get(
            output.name, spec.calibration.temperature
        )
    return 1.0 / (1.0 + np.exp(-logits / temperatures))


def grade_distribution(at_least: np.ndarray) -> np.ndarray:
    """P(grade = 0..K) from P(grade >= 1..K) (n, K): the cumulative probabilities are made
    non-increasing first (separately trained outputs can cross), so none is negative."""
    cumulative = np.minimum.accumulate(np.clip(at_least, 0.0, 1.0), axis=-1)
    ones = np.ones((*cumulative.shape[:-1], 1))
    zeros = np.zeros_like(ones)
    padded = np.concatenate([ones, cumulative, zeros], axis=-1)
    return padded[..., :-1] - padded[..., 1:]


def ordinal_grades(probabilities: dict[str, float], spec: TaskSpec) -> dict[str, Any]:
    """Each ordinal grade of the task: its distribution, the median grade and its meaning."""
    return {ordinal.name: _grade(probabilities, ordinal) for ordinal in spec.ordinal}


def _grade(probabilities: dict[str, float], ordinal: Ordinal) -> dict[str, Any]:
    at_least = np.array([probabilities[name] for name in ordinal.cumulative])
    distribution = grade_distribution(at_least)
    cumulative = np.minimum.accumulate(at_least)
    grade = int((cumulative >= 0.5).sum())
    return {
        "grade": grade,
        "level": ordinal.levels[grade],
        "probabilities": {
            level: round(float(p), 6) for level, p in zip(ordinal.levels, distribution, strict=True)
        },
        "at_least": {str(k + 1): round(float(p), 6) for k, p in enumerate(cumulative)},
        "method": "median grade: the highest k with P(grade >= k) >= 0.5",
    }
