"""Segment probabilities kept as 16-bit integers: the bounded-memory form of a large volume's
``Prediction.segment_probabilities``.

A float32 probability per output on a 512x512x800 CT is 0.8 GB each; as uint16 (steps of
1/65535, under 1.6e-5 from the float) the foreground outputs take half that, and they are
written as they are: a NIfTI with ``scl_slope = 1/65535``, which every NIfTI reader turns
back into probabilities. Indexing one output gives a :class:`QuantizedVolume`, indexed like
the float array (``volume[mask]`` converts only the voxels asked for).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["SCALE", "QuantizedProbabilities", "QuantizedVolume", "quantize"]

SCALE = 1.0 / 65535.0


def quantize(probabilities: np.ndarray, out: np.ndarray) -> None:
    """``out[...] = round(probabilities * 65535)`` without a float temporary of ``out``'s size."""
    np.multiply(probabilities, 65535.0, out=probabilities)
    np.rint(probabilities, out=probabilities)
    out[...] = probabilities


class QuantizedVolume:
    """One output's probabilities (uint16) with the float array's indexing."""

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
    """(k, *spatial) probabilities of which outputs 1..k-1 are stored (uint16, (k-1, ...));
    output 0 (background) is what the others leave."""

    def __init__(self, foreground: np.ndarray) -> None:
        self.foreground = foreground
        self.shape = (foreground.shape[0] + 1, *foreground.shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> QuantizedVolume:
        if index == 0:
            total = self.foreground.sum(axis=0, dtype=np.uint32)
            return QuantizedVolume(np.clip(65535 - total, 0, 65535).astype(np.uint16))
        return QuantizedVolume(self.foreground[index - 1])
