"""Where a classifier looks: the share of its heatmap mass in the image's border band (and,
where a body mask exists, outside the body), summed over a labelled set. A model that
relies on burnt-in text, markers or collimation edges puts its mass there."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medsight.inference.preprocess import border_band

__all__ = ["AttentionSummary", "heatmap_mass"]


def heatmap_mass(
    heatmap: np.ndarray, band_fraction: float, body: np.ndarray | None = None
) -> dict[str, float]:
    """Shares of the heatmap's total in the border band and (with a mask) outside the body;
    an all-zero map gives NaN (nothing to share)."""
    heat = np.clip(np.asarray(heatmap, dtype=np.float64), 0, None)
    total = heat.sum()
    if total <= 0:
        return {"border": float("nan")} | (
            {"outside_body": float("nan")} if body is not None else {}
        )
    band = border_band(heat.shape, band_fraction)
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    shares = {
        "border": float(heat[band].sum() / total),
        # 1.0 when the maximum, the finding location, lies in the band (then not reported)
        "peak_in_border": float(band[peak]),
    }
    if body is not None:
        shares["outside_body"] = float(heat[~body.astype(bool)].sum() / total)
    return shares


@dataclass
class AttentionSummary:
    band_fraction: float
    shares: list[dict[str, float]] = field(default_factory=list)
    area_shares: list[float] = field(default_factory=list)

    def add(self, heatmap: np.ndarray, body: np.ndarray | None = None) -> dict[str, float]:
        share = heatmap_mass(heatmap, self.band_fraction, body)
        self.shares.append(share)
        self.area_shares.append(float(border_band(heatmap.shape, self.band_fraction).mean()))
        return share

    def as_dict(self) -> dict[str, Any]:
        """Mean and median share per region, beside the band's share of the image area (what
        a map spread evenly over the image would put there)."""
        result: dict[str, Any] = {
            "band_fraction": self.band_fraction,
            "band_area_share": float(np.mean(self.area_shares)) if self.area_shares else 0.0,
            "cases": len(self.shares),
        }
        peaks = [s["peak_in_border"] for s in self.shares if "peak_in_border" in s]
        if peaks:
            result["peak_in_border"] = {"count": int(sum(peaks)), "share": float(np.mean(peaks))}
        for region in ("border", "outside_body"):
            values = np.array([s[region] for s in self.shares if region in s], dtype=float)
            values = values[np.isfinite(values)]
            if len(values):
                result[region] = {
                    "mean": float(values.mean()),
                    "median": float(np.median(values)),
                    "over_half": int((values > 0.5).sum()),
                }
        return result
