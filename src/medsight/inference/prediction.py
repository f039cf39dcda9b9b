"""`Prediction`: model output in the source image's exact geometry, plus its provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from medsight.tasks.acceptance import CheckOutcome

__all__ = ["Prediction"]


@dataclass
class Prediction:
    """What a :class:`~medsight.inference.Predictor` returns for one image.

    Detection fills ``boxes`` and, as classification does, ``logits`` and ``probabilities``.
    Classification fills ``logits`` (raw, as the network gave them) and ``probabilities``
    (calibrated: the task's temperature applied once, here). Segmentation fills
    ``segment_probabilities`` (k, *spatial) and ``label_map`` (*spatial), both with exactly
    the source image's spatial shape and ``affine``. ``flags`` holds, per operating point,
    whether the calibrated probability reached its locked threshold.
    """

    task_id: str
    task_version: str
    task_hash: str
    weights_sha256: dict[str, str]
    kind: Literal["classification", "segmentation", "detection"]
    output_names: list[str]
    affine: np.ndarray
    shape: tuple[int, ...]
    backend: str
    state: Literal["OK", "NEEDS_REVIEW"] = "OK"
    acceptance: list[CheckOutcome] = field(default_factory=list)
    logits: np.ndarray | None = None
    probabilities: dict[str, float] | None = None
    # ordinal grades read from cumulative outputs (medsight.inference.outputs.ordinal_grades)
    grades: dict[str, dict[str, Any]] = field(default_factory=dict)
    flags: dict[str, dict[str, object]] = field(default_factory=dict)
    # float32, or for a large volume QuantizedProbabilities (uint8, indexed alike)
    segment_probabilities: Any = None
    label_map: np.ndarray | None = None
    # a task with [instances]: one id per object (uint32, 0 background), source geometry
    instance_map: np.ndarray | None = None
    # a detection task: each box's label, score, pixel_box [x0, y0, x1, y1] (source pixel
    # edges: columns, rows) and lps_box (its two corners in patient mm); ``probabilities``
    # holds the image's calibrated probability of the class
    boxes: list[dict[str, Any]] | None = None
    heatmap: np.ndarray | None = None
    heatmap_grid: tuple[int, ...] | None = None  # the explained layer's grid (its resolution)
    # the network's pooled features (mean over the windows of a sliding window): what the
    # input gate's out-of-distribution score reads; None for a network without a known layer
    features: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    details: dict[str, object] = field(default_factory=dict)  # e.g. the chain's crop box

    @property
    def review_reasons(self) -> list[str]:
        return [o.reason for o in self.acceptance if not o.passed]
