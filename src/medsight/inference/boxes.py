"""Boxes from a detector: undoing a flip, fusing the boxes of flipped views, and mapping a
box from the network's grid to the source image's pixels and to patient millimetres.

Boxes are [x0, y0, x1, y1] in pixel edges along medsight's array axes (i = x = column,
j = y = row): the first pixel spans 0-1. Fusion is weighted box fusion (Solovyev et al.,
2021): boxes of all views, by descending score, join the first cluster whose fused box they
overlap by ``iou``; a cluster's box is the score-weighted mean of its members and its score
the sum of their scores over the number of views, so a box only one of four views saw keeps
a quarter of its score. Written here (20 lines) rather than taking the ensemble-boxes
package for one function that also wants coordinates scaled to 0-1.
"""

from __future__ import annotations

import numpy as np

__all__ = ["box_lps", "fuse_boxes", "fuse_views", "unflip_boxes"]


def unflip_boxes(boxes: np.ndarray, axis: int, extent: int) -> np.ndarray:
    """Boxes found on an image flipped along ``axis`` (0: x, 1: y) of ``extent`` pixels,
    put back on the unflipped image."""
    back = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    low, high = back[:, axis].copy(), back[:, axis + 2].copy()
    back[:, axis], back[:, axis + 2] = extent - high, extent - low
    return back


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    low = np.maximum(box[:2], others[:, :2])
    high = np.minimum(box[2:], others[:, 2:])
    inter = np.clip(high - low, 0, None).prod(axis=1)
    union = (box[2:] - box[:2]).prod() + (others[:, 2:] - others[:, :2]).prod(axis=1) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def fuse_boxes(
    views: list[tuple[np.ndarray, np.ndarray]], iou: float = 0.55
) -> tuple[np.ndarray, np.ndarray]:
    """One set of boxes and scores from several views' (boxes, scores)."""
    if not views:
        return np.zeros((0, 4)), np.zeros(0)
    boxes = np.concatenate([np.asarray(b, dtype=np.float64).reshape(-1, 4) for b, _ in views])
    scores = np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1) for _, s in views])
    members: list[list[int]] = []
    fused = np.zeros((0, 4))
    for k in np.argsort(-scores, kind="stable"):
        overlaps = _iou(boxes[k], fused) if len(fused) else np.zeros(0)
        if len(overlaps) and overlaps.max() >= iou:
            cluster = int(np.argmax(overlaps))
            members[cluster].append(int(k))
            weights = scores[members[cluster]]
            fused[cluster] = (boxes[members[cluster]] * weights[:, None]).sum(0) / weights.sum()
        else:
            members.append([int(k)])
            fused = np.vstack([fused, boxes[k]])
    fused_scores = np.array([scores[m].sum() / len(views) for m in members])
    order = np.argsort(-fused_scores, kind="stable")
    return fused[order], np.minimum(fused_scores[order], 1.0)


def fuse_views(
    views: list[tuple[int | None, np.ndarray]], size: tuple[int, ...], iou: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """A detector's rows (row 0 the image's score, then boxes; a negative score is an empty
    slot) for each view (None, or the axis it was flipped along) of an image of ``size``:
    the fused boxes and scores on the unflipped grid and the image's mean score. The
    Predictor and the trainer's evidence both use it, so the evidence is what analyze does."""
    found = []
    for view, rows in views:
        kept = rows[1:][rows[1:, 4] >= 0]
        boxes = kept[:, :4] if view is None else unflip_boxes(kept[:, :4], view, size[view])
        found.append((boxes, kept[:, 4]))
    boxes, scores = fuse_boxes(found, iou)
    return boxes, scores, float(np.mean([rows[0, 4] for _, rows in views]))


def box_lps(box: np.ndarray, affine: np.ndarray) -> list[float]:
    """A pixel-edge box's two corners in patient millimetres (LPS) through the image's
    affine (which maps pixel centres: the edge at 0 is index -0.5): [x0, y0, z0, x1, y1, z1]."""
    corners = np.array(
        [[box[0] - 0.5, box[1] - 0.5, 0.0, 1.0], [box[2] - 0.5, box[3] - 0.5, 0.0, 1.0]]
    )
    mapped = (np.asarray(affine, dtype=np.float64) @ corners.T).T[:, :3]
    return [round(float(v), 4) for v in mapped.reshape(-1)]
