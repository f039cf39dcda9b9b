"""Tissue on an H&E image: stained pixels, apart from the bright glass between them.

Stained tissue is coloured (haematoxylin blue-purple, eosin pink); glass and white fat are
bright and grey. A pixel is tissue when its saturation reaches ``min_saturation`` and it
is not near-white; small specks are dropped and small gaps inside tissue closed, so that a
nucleus-free lumen of a few cells stays tissue. Fixed thresholds rather than Otsu's: a tile
that is all tissue has no glass for Otsu's method to separate, and would be split in two.
"""

from __future__ import annotations

import numpy as np

__all__ = ["tissue_mask"]


def tissue_mask(
    rgb: np.ndarray,
    *,
    min_saturation: float = 0.07,
    max_brightness: float = 0.92,
    min_region_pixels: int = 64,
) -> np.ndarray:
    """Boolean tissue mask of an RGB array (3, *spatial) with values 0-255."""
    from scipy import ndimage

    values = np.asarray(rgb, dtype=np.float32) / 255.0
    brightest = values.max(axis=0)
    darkest = values.min(axis=0)
    saturation = (brightest - darkest) / np.maximum(brightest, 1e-6)
    stained = (saturation >= min_saturation) & (darkest < max_brightness)
    stained = ndimage.binary_closing(stained, iterations=2, border_value=1)
    # by region size with ndimage (scikit-image renamed these parameters across versions)
    stained = _drop_small(stained, min_region_pixels)
    return ~_drop_small(~stained, min_region_pixels * 4)


def _drop_small(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """``mask`` without its 8-connected regions smaller than ``min_pixels``."""
    from scipy import ndimage

    regions, _ = ndimage.label(mask, structure=np.ones((3,) * mask.ndim))
    sizes = np.bincount(regions.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[regions]
