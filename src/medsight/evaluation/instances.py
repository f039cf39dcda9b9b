"""Instance-segmentation metrics for nuclei: the aggregated Jaccard index (AJI) and
panoptic quality (PQ), from one pixel-overlap table of reference and predicted instances.

No installed library computes either (MONAI, scikit-image and torchmetrics' panoptic quality
wants category maps, not instance maps), so they are written here from their definitions:
AJI after Kumar et al. (IEEE TMI 2017), PQ after Kirillov et al. (CVPR 2019) as HoVer-Net
reports it (matches at IoU > 0.5, which are unique).
"""

from __future__ import annotations

import numpy as np

__all__ = ["aggregated_jaccard_index", "instance_metrics"]


def _overlaps(reference: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, ...]:
    """Intersections (n_ref, n_pred) and the sizes of each instance, ids made sequential."""
    from skimage.segmentation import relabel_sequential

    ref, _, _ = relabel_sequential(np.asarray(reference, dtype=np.int64))
    pred, _, _ = relabel_sequential(np.asarray(predicted, dtype=np.int64))
    n_ref, n_pred = int(ref.max()), int(pred.max())
    pairs = np.bincount(
        ref.ravel() * (n_pred + 1) + pred.ravel(), minlength=(n_ref + 1) * (n_pred + 1)
    ).reshape(n_ref + 1, n_pred + 1)
    ref_sizes = pairs.sum(axis=1)[1:]
    pred_sizes = pairs.sum(axis=0)[1:]
    return pairs[1:, 1:], ref_sizes, pred_sizes


def aggregated_jaccard_index(reference: np.ndarray, predicted: np.ndarray) -> float:
    """AJI: each reference nucleus with the predicted one of highest IoU (intersections
    and unions summed), plus every predicted nucleus never chosen added to the union."""
    intersection, ref_sizes, pred_sizes = _overlaps(reference, predicted)
    if len(ref_sizes) == 0:
        return 1.0 if len(pred_sizes) == 0 else 0.0
    if len(pred_sizes) == 0:
        return 0.0
    union = ref_sizes[:, None] + pred_sizes[None, :] - intersection
    iou = intersection / np.maximum(union, 1)
    best = iou.argmax(axis=1)
    rows = np.arange(len(ref_sizes))
    hit = intersection[rows, best] > 0
    total_intersection = float(intersection[rows, best][hit].sum())
    total_union = float(union[rows, best][hit].sum() + ref_sizes[~hit].sum())
    unused = np.ones(len(pred_sizes), dtype=bool)
    unused[best[hit]] = False
    total_union += float(pred_sizes[unused].sum())
    return total_intersection / total_union if total_union else 1.0


def instance_metrics(reference: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """AJI, PQ with its detection (DQ) and segmentation (SQ) parts, and the counts."""
    intersection, ref_sizes, pred_sizes = _overlaps(reference, predicted)
    union = ref_sizes[:, None] + pred_sizes[None, :] - intersection
    iou = intersection / np.maximum(union, 1)
    matched = iou > 0.5  # at most one match per row and column above 0.5
    true_positive = int(matched.sum())
    false_negative = len(ref_sizes) - true_positive
    false_positive = len(pred_sizes) - true_positive
    denominator = true_positive + 0.5 * (false_negative + false_positive)
    detection = true_positive / denominator if denominator else 1.0
    segmentation = float(iou[matched].mean()) if true_positive else 0.0
    return {
        "aji": aggregated_jaccard_index(reference, predicted),
        "pq": detection * segmentation,
        "dq": detection,
        "sq": segmentation,
        "reference_count": float(len(ref_sizes)),
        "predicted_count": float(len(pred_sizes)),
    }
