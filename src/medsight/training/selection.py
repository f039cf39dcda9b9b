"""Few labels: rank unlabelled cases by model uncertainty for the next annotation round."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from medsight.image import Image
from medsight.inference import Predictor
from medsight.tasks.task import Task

__all__ = ["Ranked", "rank_for_labelling"]

Method = Literal["entropy", "tta"]


@dataclass(frozen=True)
class Ranked:
    path: Path
    score: float  # higher = more uncertain = label first
    probabilities: dict[str, float]


def _entropy(probabilities: np.ndarray) -> float:
    clipped = np.clip(probabilities, 1e-12, 1.0)
    return float(-(clipped * np.log(clipped)).sum())


def rank_for_labelling(
    task: Task, images: Sequence[tuple[Path, Image]], method: Method = "entropy"
) -> list[Ranked]:
    """Cases sorted from most to least uncertain.

    ``entropy``: entropy of the calibrated class probabilities. ``tta``: variance of the
    positive-class probability over flips of each spatial axis (disagreement under
    augmentation), a cheap stand-in for MC dropout that works for any network.
    """
    predictor = Predictor(task, explain=False)
    names = [o.name for o in task.spec.outputs]
    ranked = []
    for path, image in images:
        prediction = predictor.predict(image)
        assert prediction.probabilities is not None
        probabilities = np.array([prediction.probabilities[n] for n in names])
        if method == "entropy":
            score = _entropy(probabilities)
        else:
            samples = [probabilities[-1]]
            for axis in range(1, 1 + image.spatial_dims):
                flipped = image.replace(array=np.flip(image.array, axis=axis))
                flipped_prediction = predictor.predict(flipped)
                assert flipped_prediction.probabilities is not None
                samples.append(flipped_prediction.probabilities[names[-1]])
            score = float(np.var(samples))
        ranked.append(Ranked(path, score, dict(prediction.probabilities)))
    return sorted(ranked, key=lambda r: -r.score)
