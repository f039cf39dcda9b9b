"""Segment probabilities kept as 8-bit integers: the bounded-memory form of a large volume's
``Prediction.segment_probabilities``.

A float32 probability per output on a 512x512x800 CT is 0.8 GB each; as uint8 (steps of
1/255, within 0.002 of the float) the foreground outputs take a quarter of that. 8 bits is the
precision DICOM gives a fractional segmentation (MaximumFractionalValue 255), so nothing a
standard output can carry is lost; the label map is never derived from these values (it is
the float argmax, taken band by band). They are written as they are: a NIfTI with
``scl_slope = 1/255``, which every NIfTI reader turns back into probabilities. Indexing one
output gives a :class:`QuantizedVolume`, indexed like the float array (``volume[mask]``
converts only the voxels asked for).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["DTYPE", "LEVELS", "SCALE", "QuantizedProbabilities", "QuantizedVolume", "quantize"]

LEVELS = 255
SCALE = 1.0 / LEVELS
DTYPE = np.uint8


def quantize(probabilities: np.ndarray, out: np.ndarray) -> None:
    """``out[...] = round(probabilities * 255)`` without a float temporary of ``out``'s size
    (``probabilities`` is overwritten)."""
    np.multiply(probabilities, float(LEVELS), out=probabilities)
    np.rint(probabilities, out=probabilities)
    out[...] = probabilities


class QuantizedVolume:
    """One output's probabilities (uint8) with the float array's indexing."""

    def __init__(self, raw: np.ndarray) -> None:
        self.raw = raw
        self.shape = raw.shape
        self.ndim = raw.ndim

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.raw[key].astype(np.float32) * np.float32(SCALE)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self.raw.astype(np.float32) * np.float32(SCALE)
        return values if dtype is None else values.astype(dtype)


class QuantizedProbabilities:
    """(k, *spatial) probabilities of which outputs 1..k-1 are stored (uint8, (k-1, ...));
    output 0 (background) is what the others leave."""

    def __init__(self, foreground: np.ndarray) -> None:
        self.foreground = foreground
        self.shape = (foreground.shape[0] + 1, *foreground.shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> QuantizedVolume:
        if index == 0:
            total = self.foreground.sum(axis=0, dtype=np.uint32)
            return QuantizedVolume(np.clip(LEVELS - total, 0, LEVELS).astype(DTYPE))
        return QuantizedVolume(self.foreground[index - 1])
