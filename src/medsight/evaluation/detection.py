"""Detection evaluation: lesion-level FROC with a bootstrap band, and study-level figures
from the boxes (ROC AUC with DeLong's interval, the locked point with Wilson intervals).

Matching (the FROC convention of LUNA16 and of the fracture-detection literature, with
boxes): predictions are taken in descending score within an image; a prediction finds the
not-yet-found reference box it overlaps most when their intersection over union reaches
``iou`` (0.3 by default: fracture boxes are thin and their extent is drawn loosely, so
COCO's 0.5 would count near misses of the right fracture as false positives); a prediction
on a box already found is a duplicate, neither hit nor false positive; every other
prediction is a false positive. Because matching goes by descending score, each
prediction's outcome is the same at every threshold at or below its score, so the whole
curve comes from one pass. Written here because no installed library computes FROC on
boxes (MONAI's detection metrics compute COCO mAP; its FROC helper needs the outcomes this
module derives).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medsight.errors import InvalidInputError
from medsight.evaluation.intervals import Estimate, bootstrap_ci, delong_auc, wilson

__all__ = [
    "FROC_RATES",
    "ImageDetections",
    "Outcomes",
    "box_iou",
    "froc",
    "match_image",
    "study_level",
]

#: false positives per image at which lesion sensitivity is reported
FROC_RATES = (0.5, 1.0, 2.0, 4.0)

HIT, DUPLICATE, FALSE_POSITIVE = 1, 0, -1


@dataclass(frozen=True)
class ImageDetections:
    """One image's reference boxes and predictions, boxes as [x0, y0, x1, y1] pixels."""

    name: str
    reference: np.ndarray  # (n, 4)
    boxes: np.ndarray  # (m, 4)
    scores: np.ndarray  # (m,)
    group: str = ""  # e.g. the body region, for subgroups

    def __post_init__(self) -> None:
        for what, array in (("reference", self.reference), ("predicted", self.boxes)):
            array = np.asarray(array, dtype=np.float64).reshape(-1, 4)
            if (array[:, 2] < array[:, 0]).any() or (array[:, 3] < array[:, 1]).any():
                raise InvalidInputError(f"{self.name}: a {what} box has x1 < x0 or y1 < y0")
        if len(np.asarray(self.scores).reshape(-1)) != len(np.asarray(self.boxes).reshape(-1, 4)):
            raise InvalidInputError(f"{self.name}: {len(self.scores)} scores for the boxes")


@dataclass
class Outcomes:
    """Every prediction's score and outcome, and each image's lesion count."""

    scores: np.ndarray  # all predictions
    outcome: np.ndarray  # HIT, DUPLICATE or FALSE_POSITIVE
    image: np.ndarray  # index of each prediction's image
    lesions: np.ndarray  # reference boxes per image
    groups: list[str] = field(default_factory=list)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` (n, 4) with every box in ``b`` (m, 4)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(high - low, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_image(image: ImageDetections, iou: float = 0.3) -> np.ndarray:
    """Each prediction's outcome (in the order given), matched in descending score."""
    boxes = np.asarray(image.boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(image.scores, dtype=np.float64).reshape(-1)
    reference = np.asarray(image.reference, dtype=np.float64).reshape(-1, 4)
    outcome = np.full(len(boxes), FALSE_POSITIVE, np.int8)
    if len(boxes) == 0 or len(reference) == 0:
        return outcome
    overlaps = box_iou(boxes, reference)
    found = np.zeros(len(reference), bool)
    for k in np.argsort(-scores, kind="stable"):
        touching = overlaps[k] >= iou
        if not touching.any():
            continue
        fresh = touching & ~found
        if fresh.any():
            found[int(np.argmax(np.where(fresh, overlaps[k], -1.0)))] = True
            outcome[k] = HIT
        else:
            outcome[k] = DUPLICATE
    return outcome


def outcomes(images: list[ImageDetections], iou: float = 0.3) -> Outcomes:
    if not images:
        raise InvalidInputError("no images to evaluate")
    scores, outcome, index = [], [], []
    for number, image in enumerate(images):
        scores.append(np.asarray(image.scores, dtype=np.float64).reshape(-1))
        outcome.append(match_image(image, iou))
        index.append(np.full(len(scores[-1]), number))
    return Outcomes(
        np.concatenate(scores),
        np.concatenate(outcome),
        np.concatenate(index),
        np.array([len(np.asarray(i.reference).reshape(-1, 4)) for i in images]),
        [i.group for i in images],
    )


def _curve(scores: np.ndarray, outcome: np.ndarray, lesions: int, images: int) -> np.ndarray:
    """(false positives per image, lesion sensitivity) at each distinct score, descending."""
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(outcome[order] == HIT)
    false = np.cumsum(outcome[order] == FALSE_POSITIVE)
    # one point per distinct score: the last prediction of each tie
    last = np.r_[scores[order][1:] != scores[order][:-1], True] if len(order) else order
    points = np.stack([false[last] / images, hits[last] / max(lesions, 1)], axis=1)
    return np.vstack([[0.0, 0.0], points])


def _sensitivity_at(curve: np.ndarray, rate: float) -> float:
    """Lesion sensitivity at ``rate`` false positives per image, interpolated on the curve
    as CAMELYON16 and LUNA16 score it (beyond the curve's last point: its sensitivity)."""
    return float(np.interp(rate, curve[:, 0], curve[:, 1]))


def froc(
    images: list[ImageDetections],
    *,
    iou: float = 0.3,
    rates: tuple[float, ...] = FROC_RATES,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Lesion sensitivity at each rate of false positives per image, with a 95% bootstrap
    band (images resampled, stratified by whether they hold a lesion), the curve itself,
    and the mean over the rates (the CPM score of LUNA16 over these rates)."""
    found, total, curve = _froc_curve(images, iou)
    by_image = [np.nonzero(found.image == k)[0] for k in range(len(images))]

    def at(indices: np.ndarray, rate: float) -> float:
        picked = (
            np.concatenate([by_image[k] for k in indices]).astype(np.int64)
            if len(indices)
            else np.zeros(0, np.int64)
        )
        lesions = int(found.lesions[indices].sum())
        if lesions == 0:
            return float("nan")
        curve = _curve(found.scores[picked], found.outcome[picked], lesions, len(indices))
        return _sensitivity_at(curve, rate)

    strata = (found.lesions > 0).astype(int)
    sensitivities = {
        str(rate): bootstrap_ci(
            functools.partial(_at_rate, at, rate),
            len(images),
            strata=strata,
            resamples=resamples,
            seed=seed,
        ).as_dict()
        for rate in rates
    }
    return {
        "iou": iou,
        "images": len(images),
        "lesions": total,
        "sensitivity_at_fp_per_image": sensitivities,
        "mean_sensitivity": _mean_at(curve, rates),
        "curve": curve.tolist(),
    }


def mean_froc_sensitivity(
    images: list[ImageDetections], *, iou: float = 0.3, rates: tuple[float, ...] = FROC_RATES
) -> float:
    """The FROC summary alone (mean lesion sensitivity over ``rates``), without the bootstrap
    band: what an epoch is chosen on."""
    return _mean_at(_froc_curve(images, iou)[2], rates)


def _froc_curve(images: list[ImageDetections], iou: float) -> tuple[Any, int, np.ndarray]:
    """Each box's outcome, the number of lesions (none is refused) and the FROC curve."""
    found = outcomes(images, iou)
    total = int(found.lesions.sum())
    if total == 0:
        raise InvalidInputError("FROC needs reference boxes; none were given")
    return found, total, _curve(found.scores, found.outcome, total, len(images))


def _mean_at(curve: np.ndarray, rates: tuple[float, ...]) -> float:
    return float(np.mean([_sensitivity_at(curve, rate) for rate in rates]))


def _at_rate(at: Callable[[np.ndarray, float], float], rate: float, idx: np.ndarray) -> float:
    return at(idx, rate)


def study_level(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float
) -> dict[str, Estimate]:
    """Per-study figures from a study's probability (e.g. from its highest box): ROC AUC
    and, at ``threshold``, sensitivity and specificity with Wilson intervals."""
    labels = np.asarray(labels).astype(bool)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    flagged = probabilities >= threshold
    return {
        "auc": delong_auc(labels, probabilities),
        "sensitivity": wilson(int((flagged & labels).sum()), int(labels.sum())),
        "specificity": wilson(int((~flagged & ~labels).sum()), int((~labels).sum())),
    }
