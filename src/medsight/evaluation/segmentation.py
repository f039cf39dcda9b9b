"""Segmentation metrics in millimetres from the image spacing (MONAI's implementations)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from medsight.errors import InvalidInputError

__all__ = ["segmentation_metrics"]


def segmentation_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: Sequence[float],
    *,
    tolerance_mm: float = 1.0,
) -> dict[str, float]:
    """Dice, IoU, HD95 (mm) and surface Dice at ``tolerance_mm`` for two binary masks.

    Empty masks follow the usual conventions: both empty gives Dice 1 and distances 0; one
    empty gives Dice 0 and infinite distances.
    """
    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    predicted = np.asarray(prediction).astype(bool)
    truth = np.asarray(reference).astype(bool)
    if predicted.shape != truth.shape:
        raise InvalidInputError(f"mask shapes differ: {predicted.shape} vs {truth.shape}")
    if len(spacing) != predicted.ndim:
        raise InvalidInputError(f"spacing {tuple(spacing)} does not match {predicted.ndim}D masks")
    intersection = float((predicted & truth).sum())
    union = float((predicted | truth).sum())
    total = float(predicted.sum() + truth.sum())
    if total == 0:
        return {"dice": 1.0, "iou": 1.0, "hd95_mm": 0.0, "surface_dice": 1.0}
    dice = 2 * intersection / total
    iou = intersection / union
    if not predicted.any() or not truth.any():
        return {"dice": dice, "iou": iou, "hd95_mm": float("inf"), "surface_dice": 0.0}

    def one_hot(mask: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(mask.astype(np.float32))
        return torch.stack([1 - tensor, tensor])[None]

    spacing_list = [float(s) for s in spacing]
    with warnings.catch_warnings():  # MONAI warns about its own deprecated internal argument
        warnings.simplefilter("ignore", FutureWarning)
        hd95 = compute_hausdorff_distance(
            one_hot(predicted), one_hot(truth), percentile=95, spacing=spacing_list
        )
        surface = compute_surface_dice(
            one_hot(predicted),
            one_hot(truth),
            class_thresholds=[tolerance_mm],
            spacing=spacing_list,
        )
    return {
        "dice": dice,
        "iou": iou,
        "hd95_mm": float(hd95.item()),
        "surface_dice": float(surface.item()),
    }
