"""Image statistics the pixel and photograph checks judge, and monitoring compares over time.

All are computed on a small copy of the image (block means to at most ``_SIDE`` pixels a
side, luminance for colour), so the gate costs milliseconds whatever the input size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from medsight.image import Image

__all__ = ["STATISTICS", "image_statistics", "nominal_range"]

_SIDE = 128
_LUMA = np.array([0.299, 0.587, 0.114])

#: name -> what it measures (monitoring shows these; the checks use a subset)
STATISTICS: dict[str, str] = {
    "nonfinite_fraction": "fraction of NaN or infinite values",
    "uniform_fraction": "fraction of values equal to the most common value",
    "structure": "neighbour correlation of the block-averaged image (noise is near 0)",
    "contrast": "5th to 95th percentile spread over the nominal value range",
    "clipped_high": "fraction of values at the top of the nominal range",
    "clipped_low": "fraction of values at the bottom of the nominal range",
    "brightness": "mean value over the nominal range",
    "blank_slices": "fraction of slices of a volume that hold one value only",
    "focus": "variance of the Laplacian of the normalised image (blur lowers it)",
    "lit_fraction": "fraction of the image brighter than a tenth of its range (fundus field)",
    "exposure": "mean brightness of the lit part, over the nominal range",
    "size": "largest side in pixels",
    "colourfulness": "mean spread between the colour channels over the nominal range (0: grey)",
    "red_share": "mean red / (red + green + blue) of the lit pixels (1/3 for grey)",
    "blue_share": "mean blue / (red + green + blue) of the lit pixels (1/3 for grey)",
}


def nominal_range(image: Image, values: np.ndarray) -> tuple[float, float]:
    """The range the stored values can take: from the bit depth for integers, the values'
    own range for floats (NIfTI, rescaled data)."""
    array = image.array
    if np.issubdtype(array.dtype, np.integer):
        bits = image.metadata.get("BitsStored")
        info = np.iinfo(array.dtype)
        if bits and np.issubdtype(array.dtype, np.unsignedinteger):
            return 0.0, float(min(2 ** int(bits) - 1, info.max))
        if array.dtype == np.uint8:
            return 0.0, 255.0
        finite = values[np.isfinite(values)]
        return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)


#: values read at most: a larger image is read with an in-plane stride (a CT volume would
#: otherwise cost float copies of the whole volume on the analysis path)
_MAX_VALUES = 1 << 22


def _luminance(image: Image) -> np.ndarray:
    array = image.array
    if image.is_sequence:
        array = array[..., 0]
    step = int(np.ceil(np.sqrt(array[0].size / _MAX_VALUES))) if array[0].size > _MAX_VALUES else 1
    if step > 1:
        array = array[:, ::step, ::step]
    if array.shape[0] == 3:
        # float32: the statistics need no more, and it halves the copies' cost
        red, green, blue = (np.float32(w) for w in _LUMA)
        luma = np.asarray(array[0] * red, dtype=np.float32)
        luma += array[1] * green
        luma += array[2] * blue
        return luma
    return np.asarray(array[0], dtype=np.float32)


def _block_mean(values: np.ndarray, side: int) -> np.ndarray:
    """Means of blocks so that no axis (of the first two) exceeds ``side``."""
    factors = [
        max(1, int(np.ceil(n / side))) if axis < 2 else 1 for axis, n in enumerate(values.shape)
    ]
    if all(f == 1 for f in factors):
        return values
    trimmed = values[
        tuple(slice(0, (n // f) * f) for n, f in zip(values.shape, factors, strict=True))
    ]
    if trimmed.size == 0:
        return values
    shape: list[int] = []
    for n, f in zip(trimmed.shape, factors, strict=True):
        shape += [n // f, f]
    return trimmed.reshape(shape).mean(axis=tuple(range(1, 2 * values.ndim, 2)))


def _neighbour_correlation(small: np.ndarray) -> float:
    """The smaller of the lag-1 correlations along the first two axes (1: smooth, 0: noise)."""
    correlations = []
    for axis in (0, 1):
        if small.shape[axis] < 3:
            continue
        a = np.take(small, range(small.shape[axis] - 1), axis=axis).ravel()
        b = np.take(small, range(1, small.shape[axis]), axis=axis).ravel()
        if a.std() == 0 or b.std() == 0:
            correlations.append(1.0)  # flat: no noise (the uniform check speaks)
            continue
        with np.errstate(invalid="ignore", divide="ignore"):  # near-flat: handled below
            correlation = float(np.corrcoef(a, b)[0, 1])
        correlations.append(correlation if np.isfinite(correlation) else 1.0)
    return min(correlations) if correlations else 1.0


def _colourfulness(image: Image) -> float:
    """0 for a grey image (one channel, or three equal ones): a colour photograph task given
    a radiograph or an MR slice sees exactly that."""
    array = image.array[..., 0] if image.is_sequence else image.array
    if array.shape[0] != 3:
        return 0.0
    step = int(np.ceil(np.sqrt(array[0].size / _MAX_VALUES))) if array[0].size > _MAX_VALUES else 1
    array = array[:, ::step, ::step]
    small = np.stack([_block_mean(np.asarray(c, dtype=np.float64), _SIDE) for c in array])
    small = small[np.isfinite(small).all(axis=0)[None].repeat(3, 0)].reshape(3, -1)
    if small.size == 0:
        return 0.0
    span = float(np.iinfo(array.dtype).max) if np.issubdtype(array.dtype, np.integer) else 1.0
    if not np.issubdtype(array.dtype, np.integer):
        span = float(small.max() - small.min()) or 1.0
    return float((small.max(0) - small.min(0)).mean() / span)


def _chromaticity(image: Image) -> tuple[float, float]:
    """The colour balance of the lit part: skin is red-brown, H&E stain pink-purple, the
    fundus orange-red. A grey image gives (1/3, 1/3)."""
    array = image.array[..., 0] if image.is_sequence else image.array
    if array.shape[0] != 3:
        return 1 / 3, 1 / 3
    step = int(np.ceil(np.sqrt(array[0].size / _MAX_VALUES))) if array[0].size > _MAX_VALUES else 1
    channels = np.asarray(array[:, ::step, ::step], dtype=np.float32).reshape(3, -1)
    if not np.issubdtype(array.dtype, np.integer):
        channels = channels[:, np.isfinite(channels).all(axis=0)]
    total = channels.sum(0)
    if total.size == 0 or total.max() <= 0:
        return 1 / 3, 1 / 3
    lit = total > 0.1 * total.max()
    lit_total = total[lit]
    red = float((channels[0][lit] / lit_total).mean(dtype=np.float64))
    blue = float((channels[2][lit] / lit_total).mean(dtype=np.float64))
    return red, blue


#: computed only when asked (``photo=True``): the photograph checks read them
PHOTO_STATISTICS = ("lit_fraction", "focus", "exposure", "red_share", "blue_share")


def image_statistics(image: Image, *, photo: bool = True) -> dict[str, float]:
    """Every statistic of ``STATISTICS`` for ``image`` (never raises on odd pixels);
    without ``photo``, all but ``PHOTO_STATISTICS`` (the gate of a radiograph or a volume
    task skips them on the analysis path)."""
    values = _luminance(image)
    finite_mask = np.isfinite(values)
    stats: dict[str, Any] = {
        "nonfinite_fraction": 1.0 - float(finite_mask.mean()) if values.size else 1.0
    }
    stats["size"] = float(max(image.shape))
    stats["colourfulness"] = _colourfulness(image)
    if photo:
        stats["red_share"], stats["blue_share"] = _chromaticity(image)
    if not finite_mask.any():
        stats.update(dict.fromkeys(set(STATISTICS) - set(stats), 0.0))
        stats["uniform_fraction"] = 1.0
        return stats
    if not finite_mask.all():
        values = np.where(finite_mask, values, np.nanmin(np.where(finite_mask, values, np.nan)))
    low, high = nominal_range(image, values)
    span = high - low if high > low else 1.0
    unit = np.clip((values - low) / span, 0.0, 1.0)

    flat = values.ravel()
    _, counts = np.unique(flat[:: max(1, flat.size // 20_000)], return_counts=True)
    stats["uniform_fraction"] = float(counts.max() / counts.sum())
    small = _block_mean(unit, _SIDE)
    if small.ndim == 3:  # a volume: the middle slice's in-plane structure
        small = small[:, :, small.shape[2] // 2]
    stats["structure"] = _neighbour_correlation(small)
    p5, p95 = np.percentile(unit, [5, 95])
    stats["contrast"] = float(p95 - p5)
    stats["clipped_high"] = float((unit >= 1.0 - 1e-6).mean()) if high > low else 1.0
    stats["clipped_low"] = float((unit <= 1e-6).mean()) if high > low else 1.0
    stats["brightness"] = float(unit.mean())
    if unit.ndim == 3:
        per_slice = unit.reshape(-1, unit.shape[2])
        stats["blank_slices"] = float((per_slice.max(0) == per_slice.min(0)).mean())
    else:
        stats["blank_slices"] = 0.0
    if not photo:
        return {k: float(v) for k, v in stats.items()}
    # photograph quality, on a fixed-size copy so that the scores do not depend on resolution
    plane = unit if unit.ndim == 2 else unit[:, :, unit.shape[2] // 2]
    fixed = _block_mean(plane, 256)
    spread = float(fixed.max() - fixed.min()) or 1.0
    norm = (fixed - fixed.min()) / spread
    lit = ndimage.uniform_filter(norm, 5) > 0.1
    stats["lit_fraction"] = float(lit.mean())
    laplacian = ndimage.laplace(ndimage.uniform_filter(norm, 2))
    inner = ndimage.binary_erosion(lit, iterations=4) if lit.any() else np.ones_like(lit)
    stats["focus"] = float(laplacian[inner].var() * 1e3) if inner.any() else 0.0
    stats["exposure"] = float(fixed[lit].mean()) if lit.any() else 0.0
    return {k: float(v) for k, v in stats.items()}
