"""Out-of-distribution score: the Mahalanobis distance of the network's pooled features to
the features of the task's training images.

Why this score (measured in scripts/shift_tests.py, docs/gate.md): the shipped classifiers
have two outputs, and a softmax over two classes is confidently wrong on noise (p = 1.00 for
pneumonia), which makes logit-based scores (maximum probability, energy) blind to exactly the
inputs the gate exists for. The features before the head still differ. The covariance is
estimated with Ledoit-Wolf shrinkage, which stays well conditioned when a task has fewer
training images than feature channels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["MahalanobisModel", "fit_mahalanobis", "threshold_at"]


@dataclass(frozen=True)
class MahalanobisModel:
    mean: np.ndarray  # (channels,)
    precision: np.ndarray  # (channels, channels)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Distance of each row of ``features`` (or of one vector) to the training mean."""
        rows = np.atleast_2d(np.asarray(features, dtype=np.float64)) - self.mean
        squared = np.einsum("ij,jk,ik->i", rows, self.precision, rows)
        return np.sqrt(np.maximum(squared, 0.0))

    @property
    def channels(self) -> int:
        return int(self.mean.shape[0])

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, mean=self.mean, precision=self.precision)
        path.write_bytes(buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> MahalanobisModel:
        with np.load(path, allow_pickle=False) as archive:
            return cls(np.asarray(archive["mean"]), np.asarray(archive["precision"]))


def fit_mahalanobis(features: np.ndarray) -> MahalanobisModel:
    """Mean and shrunk inverse covariance of (images, channels) features."""
    from sklearn.covariance import LedoitWolf

    rows = np.asarray(features, dtype=np.float64)
    if rows.ndim != 2 or len(rows) < 2:
        raise ValueError(f"need at least 2 feature rows to fit, got shape {rows.shape}")
    estimator = LedoitWolf().fit(rows)
    return MahalanobisModel(estimator.location_, estimator.precision_)


def threshold_at(scores: np.ndarray, false_rejection: float) -> float:
    """The score above which ``false_rejection`` of in-distribution ``scores`` lie."""
    return float(np.quantile(np.asarray(scores, dtype=np.float64), 1.0 - false_rejection))
