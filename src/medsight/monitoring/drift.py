"""Distribution shift between a reference sample and a window of recent values.

PSI (population stability index) over bins cut at the reference's deciles, and the
two-sample Kolmogorov-Smirnov test (SciPy). PSI says how large a shift is, whatever the
sample size; the KS p-value says whether it could be chance. An alert needs both: a PSI
above ``PSI_ALERT`` and a KS p-value below ``KS_ALERT`` (conventional PSI bands: < 0.1 no
shift, 0.1-0.25 moderate, > 0.25 large).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["KS_ALERT", "PSI_ALERT", "Shift", "compare"]

PSI_ALERT = 0.25
KS_ALERT = 0.001  # per statistic: about 10 are tested per window
_EPSILON = 1e-4  # an empty bin's share, so that the logarithm stays finite


@dataclass(frozen=True)
class Shift:
    psi: float
    ks_statistic: float
    ks_p_value: float
    reference_n: int
    window_n: int

    @property
    def alert(self) -> bool:
        return self.psi > PSI_ALERT and self.ks_p_value < KS_ALERT

    def as_dict(self) -> dict[str, float | int | bool]:
        return {
            "psi": round(self.psi, 4),
            "ks_statistic": round(self.ks_statistic, 4),
            "ks_p_value": float(f"{self.ks_p_value:.3g}"),
            "reference_n": self.reference_n,
            "window_n": self.window_n,
            "alert": self.alert,
        }


def _psi(reference: np.ndarray, window: np.ndarray) -> float:
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, 11)[1:-1]))
    expected = np.bincount(
        np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1
    )
    observed = np.bincount(np.searchsorted(edges, window, side="right"), minlength=len(edges) + 1)
    p = np.maximum(expected / expected.sum(), _EPSILON)
    q = np.maximum(observed / observed.sum(), _EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def compare(reference: Sequence[float | None], window: Sequence[float | None]) -> Shift | None:
    """The shift of ``window`` from ``reference``; None when either is empty."""
    from scipy.stats import ks_2samp

    ref = np.asarray([v for v in reference if v is not None and np.isfinite(v)], dtype=float)
    win = np.asarray([v for v in window if v is not None and np.isfinite(v)], dtype=float)
    if len(ref) == 0 or len(win) == 0:
        return None
    test = ks_2samp(ref, win)
    return Shift(_psi(ref, win), float(test.statistic), float(test.pvalue), len(ref), len(win))
