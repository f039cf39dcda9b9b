"""From an `Image` to network input and back, keeping geometry exact.

Training and inference share these functions, so a model always sees the appearance it was
trained on: the task's display mapping (window / VOI, MONOCHROME1 handling, colour), then its
normalisation, then resizing or resampling.
"""

from __future__ import annotations

import numpy as np

from medsight.errors import InternalError
from medsight.image import Image
from medsight.imaging import apply_voi, apply_window, reorient
from medsight.tasks.spec import Display, Preprocessing

__all__ = ["display_values", "from_network_grid", "normalize", "to_network_grid"]

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def display_values(image: Image, display: Display) -> np.ndarray:
    """Float32 (c, *spatial) values as the task's training data looked (see module doc)."""
    # a reoriented image is a strided view: make it C-ordered once, here, while it is still
    # the small integer array, so every float array after it is C-ordered too
    array = np.ascontiguousarray(image.array)
    if display.window == "dicom":
        values = apply_voi(image)
    elif display.window == "fixed":
        assert display.center_width is not None  # enforced by the spec
        values = apply_window(array, *display.center_width)
    elif display.window == "range":
        assert display.value_range is not None  # enforced by the spec
        low, high = display.value_range
        values = (array.astype(np.float32) - low) / max(high - low, 1e-6)
        if display.clip:
            values = np.clip(values, 0, 1)
    elif display.window == "percentile":
        low, high = np.percentile(array, display.percentiles)
        values = np.clip((array.astype(np.float32) - low) / max(float(high - low), 1e-6), 0, 1)
    elif display.window == "minmax":
        low, high = float(array.min()), float(array.max())
        values = (array.astype(np.float32) - low) / max(high - low, 1e-6)
    else:
        values = array.astype(np.float32)
    values = np.asarray(values, dtype=np.float32)
    if image.photometric_interpretation == "MONOCHROME1" and display.monochrome1 == "invert":
        values = (values.max() + values.min()) - values if display.window == "none" else 1 - values
    if display.color == "grayscale" and values.shape[0] == 3:
        values = np.tensordot(_LUMA, values, axes=(0, 0))[np.newaxis].astype(np.float32)
    elif display.color == "rgb" and values.shape[0] == 1:
        values = np.repeat(values, 3, axis=0)
    return values


def normalize(values: np.ndarray, mode: str) -> np.ndarray:
    """Per-image intensity normalisation ("unit" keeps the display values)."""
    if mode == "zscore":
        return ((values - values.mean()) / max(float(values.std()), 1e-6)).astype(np.float32)
    if mode == "zscore_nonzero":
        inside = values != 0
        if not inside.any():
            return values
        mean, std = float(values[inside].mean()), max(float(values[inside].std()), 1e-6)
        return np.where(inside, (values - mean) / std, 0).astype(np.float32)
    return values


def _resize(values: np.ndarray, size: tuple[int, ...], *, mode: str) -> np.ndarray:
    import torch
    from torch.nn import functional

    tensor = torch.from_numpy(np.ascontiguousarray(values))[None]
    if tuple(tensor.shape[2:]) == tuple(size):
        return values
    resized = functional.interpolate(tensor, size=size, mode=mode, align_corners=False)
    return resized[0].numpy()


def to_network_grid(image: Image, preprocessing: Preprocessing) -> tuple[Image, tuple[int, ...]]:
    """The image reoriented as the task asks, and the grid size the network runs on.

    Resampling to the task spacing (or resizing) happens on the values; the returned image
    keeps the geometry needed to come back (:func:`from_network_grid`).
    """
    work = image
    if preprocessing.reorient and image.spatial_dims == 3:
        work = reorient(image, preprocessing.reorient)
    if preprocessing.resize is not None:
        return work, tuple(preprocessing.resize)
    if preprocessing.spacing is not None:
        spacing = np.asarray(work.spacing)
        target = np.asarray(preprocessing.spacing[: work.spatial_dims], dtype=np.float64)
        size = np.maximum(1, np.round(np.asarray(work.shape) * spacing / target)).astype(int)
        return work, tuple(int(s) for s in size)
    return work, work.shape


def resample(values: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Linear resampling of (c, *spatial) float values to ``size`` (voxel centres aligned)."""
    mode = "bilinear" if len(size) == 2 else "trilinear"
    return _resize(values, size, mode=mode)


def from_network_grid(probabilities: np.ndarray, work: Image, source: Image) -> np.ndarray:
    """Probabilities (k, *network grid) mapped back to the source's exact grid and layout."""
    back = resample(probabilities, work.shape)
    if work is source:
        return back
    restored = reorient(work.replace(array=back, frames=()), source.orientation_code)
    if restored.shape != source.shape or not np.allclose(restored.affine, source.affine, atol=1e-4):
        raise InternalError(
            f"reorientation did not return to the source grid ({restored.shape} vs {source.shape})"
        )
    return restored.array  # a view: no copy of K volumes
