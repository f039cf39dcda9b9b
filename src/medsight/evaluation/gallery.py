"""A heatmap gallery for the evaluation report: the most confident correct flags, false
flags and misses, each image with its Grad-CAM overlay and the border band outlined."""

from __future__ import annotations

import base64
import heapq
import io
from dataclasses import dataclass, field
from itertools import count

import numpy as np

__all__ = ["Gallery"]

_TITLES = {
    "true_positive": "correctly flagged",
    "false_positive": "wrongly flagged",
    "false_negative": "missed",
}
_ORDER = count()  # tie-breaker: heap entries never compare their arrays


@dataclass
class Gallery:
    per_kind: int = 4
    band_fraction: float = 0.10
    _kept: dict[str, list[tuple[float, int, str, np.ndarray, np.ndarray]]] = field(
        default_factory=dict
    )

    def wants(self, kind: str, confidence: float) -> bool:
        """Whether :meth:`offer` would keep such a case (so its picture is made only then)."""
        heap = self._kept.get(kind, [])
        return kind in _TITLES and (len(heap) < self.per_kind or confidence > heap[0][0])

    def offer(
        self, kind: str, confidence: float, name: str, picture: np.ndarray, heat: np.ndarray
    ) -> None:
        """Keep the case if it is among the ``per_kind`` most confident of its kind.
        ``picture`` and ``heat`` are 2D arrays in (column, row) order, as Image arrays are."""
        if not self.wants(kind, confidence):
            return
        heap = self._kept.setdefault(kind, [])
        entry = (confidence, next(_ORDER), name, picture, heat)
        if len(heap) < self.per_kind:
            heapq.heappush(heap, entry)
        elif confidence > heap[0][0]:
            heapq.heapreplace(heap, entry)

    def sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """(title, [(case name, PNG as base64)]) per kind, most confident first."""
        result = []
        for kind, title in _TITLES.items():
            kept = sorted(self._kept.get(kind, []), key=lambda e: -e[0])
            if kept:
                result.append((title, [(e[2], self._png(e[3], e[4])) for e in kept]))
        return result

    def _png(self, picture: np.ndarray, heat: np.ndarray) -> str:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import patches
        from matplotlib import pyplot as plt

        rows, columns = picture.T.shape
        figure, axis = plt.subplots(figsize=(2.4, 2.4 * rows / columns))
        axis.imshow(picture.T, cmap="gray")
        axis.imshow(heat.T, cmap="jet", alpha=0.4, vmin=0, vmax=1)
        inset_r, inset_c = rows * self.band_fraction, columns * self.band_fraction
        axis.add_patch(
            patches.Rectangle(
                (inset_c - 0.5, inset_r - 0.5),
                columns - 2 * inset_c,
                rows - 2 * inset_r,
                fill=False,
                edgecolor="white",
                linestyle="--",
                linewidth=0.8,
            )
        )
        axis.set_axis_off()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight", pad_inches=0)
        plt.close(figure)
        return base64.b64encode(buffer.getvalue()).decode()
