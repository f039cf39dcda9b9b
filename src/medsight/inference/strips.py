"""A very large 2D image to a small network grid without a float copy of the whole image.

A 12,000-pixel film resized to a 320-pixel grid went through the whole-image chain: the
percentile window took a sorted copy, the display mapping a float64 and a float32 copy, so
the analysis grew by about six times the film's size (1.7 GB for a 288 MB film). Here the
same values come out in bounded memory:

- the window's percentiles come from a histogram of the integer samples, counted a block of
  rows at a time (numpy's percentile partitions a copy of the whole array); the order
  statistics are exact and joined as numpy's linear method joins them;
- the resize is the bilinear one of :func:`preprocess.resample` (torch ``interpolate``,
  ``align_corners=False``), written as its two-tap weights, so only the source rows an output
  row reads are mapped to float, a few rows at a time. The result equals the whole-image
  chain within float32 rounding (tests/inference/test_strips.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["STRIPS_MIN_PIXELS", "percentiles", "resize_mapped"]

#: images with more pixels than this are resized strip by strip (4096 x 4096)
STRIPS_MIN_PIXELS = 1 << 24
#: source rows mapped to float at once
_ROWS_PER_STRIP = 64


def percentiles(array: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """``np.percentile(array, q)`` (its default linear method), from a histogram for 8- and
    16-bit integers (no copy of the array: counted a block of rows at a time); other types go
    to numpy as they are."""
    if array.dtype.kind not in "iu" or array.dtype.itemsize > 2 or array.size == 0:
        return np.asarray(np.percentile(array, q))
    offset = int(np.iinfo(array.dtype).min)
    counts = np.zeros(1 << (8 * array.dtype.itemsize), dtype=np.int64)
    axis = 1 if array.ndim > 1 else 0
    step = max(1, (1 << 20) // max(1, array.size // max(1, array.shape[axis])))
    for first in range(0, array.shape[axis], step):
        block = array[:, first : first + step] if axis else array[first : first + step]
        samples = np.ascontiguousarray(block).reshape(-1).astype(np.int64)
        counts += np.bincount(samples - offset, minlength=counts.size)
    cumulative = np.cumsum(counts)
    total = array.size
    out = []
    for quantile in np.atleast_1d(np.asarray(q, dtype=np.float64)) / 100.0:
        # numpy's virtual index and interpolation (method "linear")
        position = min(max((total - 1) * quantile, 0.0), total - 1.0)
        low = int(np.floor(position))
        high = min(low + 1, total - 1)
        below, above = (
            float(np.searchsorted(cumulative, rank, side="right") + offset) for rank in (low, high)
        )
        out.append(below + (above - below) * (position - low))
    result = np.asarray(out, dtype=np.float64)
    return result if np.ndim(q) else result[0]


def _taps(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch's bilinear source positions (align_corners=False): first tap, second tap and the
    second tap's weight for each target position."""
    # in float32, as torch computes them (float64 positions move a weight by up to 2e-4)
    scale = np.float32(source / target)
    position = scale * (np.arange(target, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    position = np.maximum(position, np.float32(0.0))
    first = np.minimum(position.astype(np.int64), source - 1)
    second = np.minimum(first + 1, source - 1)
    weight = (position - first.astype(np.float32)).astype(np.float32)
    return first, second, weight


def resize_mapped(
    raw: np.ndarray, mapping: Callable[[np.ndarray], np.ndarray], size: tuple[int, int]
) -> np.ndarray:
    """Bilinear resize of ``mapping(raw)`` ((c, h, w) float32 values) to ``size``, mapping
    only the source rows the output reads, a strip at a time."""
    height, width = int(raw.shape[1]), int(raw.shape[2])
    rows_first, rows_second, row_weight = _taps(height, size[0])
    cols_first, cols_second, col_weight = _taps(width, size[1])
    needed = np.unique(np.concatenate([rows_first, rows_second]))
    resized_rows: dict[int, np.ndarray] = {}  # source row -> its (c, size[1]) resized values
    for start in range(0, len(needed), _ROWS_PER_STRIP):
        rows = needed[start : start + _ROWS_PER_STRIP]
        values = np.asarray(mapping(np.ascontiguousarray(raw[:, rows])), dtype=np.float32)
        across = values[..., cols_first] * (1 - col_weight) + values[..., cols_second] * col_weight
        for index, row in enumerate(rows):
            resized_rows[int(row)] = across[:, index]
    channels = next(iter(resized_rows.values())).shape[0]
    out = np.empty((channels, *size), dtype=np.float32)
    for target_row in range(size[0]):
        upper = resized_rows[int(rows_first[target_row])]
        lower = resized_rows[int(rows_second[target_row])]
        weight = row_weight[target_row]
        out[:, target_row] = upper * (1 - weight) + lower * weight
    return out
