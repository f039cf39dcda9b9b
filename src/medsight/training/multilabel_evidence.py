"""The operating points a sigmoid classifier locks on its pooled out-of-fold probabilities
(per image, or per patient on the worse image), as the recipe's [evaluation] asks."""

from __future__ import annotations

from typing import Any

import numpy as np

from medsight.evaluation import choose_operating_point, stored_threshold
from medsight.evaluation.cases import Case
from medsight.evaluation.multilabel_metrics import graded_output, patient_worst
from medsight.tasks.spec import TaskSpec
from medsight.training.config import TrainConfig

__all__ = ["locked_points"]


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
        known, labels, scores = graded_output(spec, wanted.output, targets, probabilities)
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
                "threshold": stored_threshold(check.threshold),
                "target_sensitivity": wanted.target_sensitivity,
                "sensitivity": round(check.sensitivity.value, 4),
                "specificity": round(check.specificity.value, 4),
                "note": f"locked per {level} on out-of-fold predictions; {check.note}",
            },
        }
    return points
