"""From an `Image` to network input and back, keeping geometry exact.

Training and inference share these functions, so a model always sees the appearance it was
trained on: the task's display mapping (window / VOI, MONOCHROME1 handling, colour), then its
normalisation, then resizing or resampling.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from medsight.errors import InternalError, InvalidInputError
from medsight.image import Image
from medsight.imaging import apply_voi, apply_window, reorient
from medsight.inference.strips import STRIPS_MIN_PIXELS, percentiles
from medsight.tasks.spec import Display, Preprocessing

__all__ = [
    "MappedVolume",
    "border_band",
    "display_values",
    "equalize",
    "from_network_grid",
    "local_contrast",
    "mask_border",
    "normalize",
    "to_network_grid",
    "voxelwise_display",
]

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def display_values(image: Image, display: Display) -> np.ndarray:
    """Float32 (c, *spatial) values as the task's training data looked (see module doc)."""
    # a reoriented image is a strided view: make it C-ordered once, here, while it is still
    # the small integer array, so every float array after it is C-ordered too
    mapping = voxelwise_display(image, display)
    if mapping is not None:
        return mapping(np.ascontiguousarray(image.array))
    # not voxel by voxel: a DICOM VOI (the image's own LUT), or MONOCHROME1 inverted around
    # the unwindowed value range
    if display.window == "dicom":
        values = np.asarray(apply_voi(image), dtype=np.float32)
    else:
        values = np.ascontiguousarray(image.array).astype(np.float32)
    if _inverted(image, display):
        values = (values.max() + values.min()) - values if display.window == "none" else 1 - values
    return _colour(values, display)


def voxelwise_display(image: Image, display: Display) -> Callable[[np.ndarray], np.ndarray] | None:
    """The display mapping as a function of raw values alone, with its image-wide parameters
    (the minimum and maximum of "minmax", the percentiles) taken from ``image`` here; None
    where it is not voxel by voxel. Applied to any part of the image (a sliding window), it
    gives exactly that part of :func:`display_values`."""
    inverted = _inverted(image, display)
    if display.window == "dicom" or (inverted and display.window == "none"):
        return None
    array = image.array
    if display.window == "fixed":
        assert display.center_width is not None  # enforced by the spec
        center, width = display.center_width
        return partial(
            _mapped,
            window=partial(apply_window, center=center, width=width),
            inverted=inverted,
            display=display,
        )
    if display.window == "range":
        assert display.value_range is not None  # enforced by the spec
        low, high = display.value_range
        clip = display.clip
    elif display.window == "percentile":
        # numpy float64 scalars, as display_values always used: the arithmetic runs in float64;
        # a very large image's from a histogram (the same values, no sorted copy of it)
        if array.size > STRIPS_MIN_PIXELS:
            low, high = (np.float64(v) for v in percentiles(array, display.percentiles))
        else:
            low, high = np.percentile(array, display.percentiles)
        clip = True
    elif display.window == "minmax":
        low, high, clip = float(array.min()), float(array.max()), False
    else:  # "none"
        return partial(_mapped, window=None, inverted=inverted, display=display)
    window = partial(_linear, low=low, high=high, clip=clip)
    return partial(_mapped, window=window, inverted=inverted, display=display)


def _linear(raw: np.ndarray, *, low: float, high: float, clip: bool) -> np.ndarray:
    values = raw.astype(np.result_type(np.float32, low))  # float64 for numpy percentiles
    # in place: one float array, not one per operation (a CT volume is 50 MB in float32)
    values -= low
    values /= max(high - low, 1e-6)
    return np.clip(values, 0, 1, out=values) if clip else values


def _mapped(
    raw: np.ndarray,
    *,
    window: Callable[[np.ndarray], np.ndarray] | None,
    inverted: bool,
    display: Display,
) -> np.ndarray:
    values = raw.astype(np.float32) if window is None else np.asarray(window(raw), np.float32)
    return _colour(1 - values if inverted else values, display)


def _inverted(image: Image, display: Display) -> bool:
    return image.photometric_interpretation == "MONOCHROME1" and display.monochrome1 == "invert"


def _colour(values: np.ndarray, display: Display) -> np.ndarray:
    if display.color == "grayscale" and values.shape[0] == 3:
        return np.tensordot(_LUMA, values, axes=(0, 0))[np.newaxis].astype(np.float32)
    if display.color == "rgb" and values.shape[0] == 1:
        return np.repeat(values, 3, axis=0)
    return values


class MappedVolume:
    """Network input made window by window from the raw image (fused preprocessing): the
    float32 copy of the whole volume, one more volume of memory, is never made. Indexed like
    the (c, *spatial) array :func:`display_values` would return."""

    def __init__(self, raw: np.ndarray, mapping: Callable[[np.ndarray], np.ndarray]) -> None:
        self.raw = raw
        self.mapping = mapping
        corner = (slice(None), *(slice(0, 1) for _ in raw.shape[1:]))
        self.shape = (mapping(raw[corner]).shape[0], *raw.shape[1:])

    def __getitem__(self, window: tuple[slice, ...]) -> np.ndarray:
        return self.mapping(np.ascontiguousarray(self.raw[window]))


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


def zscore_mapping(
    raw: np.ndarray, display: Callable[[np.ndarray], np.ndarray], *, nonzero: bool
) -> Callable[[np.ndarray], np.ndarray]:
    """``display`` followed by :func:`normalize`'s z-score, as a function of raw values: the
    image-wide mean and standard deviation are taken here, slab by slab in float64, so no
    float copy of the whole volume is made (a sliding window maps each window as cut out)."""
    count, total, squares = 0, 0.0, 0.0
    step = max(1, (1 << 20) // max(1, int(np.prod(raw.shape[2:]))))
    for first in range(0, raw.shape[1], step):
        block = display(np.ascontiguousarray(raw[:, first : first + step])).astype(np.float64)
        if nonzero:
            block = block[block != 0]
        count += block.size
        total += float(block.sum())
        squares += float(np.square(block).sum())
    if count == 0:  # nothing non-zero: normalize() leaves the values as they are
        return display
    mean = total / count
    std = max(float(np.sqrt(max(squares / count - mean * mean, 0.0))), 1e-6)
    return partial(_zscored, display=display, mean=mean, std=std, nonzero=nonzero)


def _zscored(
    raw: np.ndarray,
    *,
    display: Callable[[np.ndarray], np.ndarray],
    mean: float,
    std: float,
    nonzero: bool,
) -> np.ndarray:
    values = display(raw)
    scored = ((values - mean) / std).astype(np.float32)
    return np.where(values != 0, scored, np.float32(0)) if nonzero else scored


def equalize(values: np.ndarray) -> np.ndarray:
    """Histogram equalisation of each channel to [0, 1] (scikit-image): every image gets the
    same grey-level distribution, so exposure and contrast stop telling batches apart."""
    from skimage.exposure import equalize_hist

    return np.stack([equalize_hist(channel, nbins=256) for channel in values]).astype(np.float32)


def local_contrast(values: np.ndarray, sigma_fraction: float) -> np.ndarray:
    """(c, h, w) unit-range values as 0.5 + 4 x (value - its Gaussian local mean), clipped to
    [0, 1]; pixels dark in every channel (outside a photograph's field) stay 0. The blur
    covers only the lit field (normalised convolution), so the field's rim does not glow."""
    from scipy.ndimage import gaussian_filter

    sigma = sigma_fraction * min(values.shape[1:])
    lit = (values.max(axis=0) > 0.04).astype(np.float32)
    weight = gaussian_filter(lit, sigma, mode="constant")
    out = np.zeros_like(values, dtype=np.float32)
    for index, channel in enumerate(values):
        mean = gaussian_filter(channel * lit, sigma, mode="constant") / np.maximum(weight, 1e-6)
        out[index] = np.clip(0.5 + 4.0 * (channel - mean), 0.0, 1.0) * lit
    return out


def border_band(shape: tuple[int, ...], fraction: float) -> np.ndarray:
    """True in the outer ``fraction`` of each side of a spatial grid."""
    band = np.zeros(shape, dtype=bool)
    for axis, length in enumerate(shape):
        width = round(length * fraction)
        if width:
            index: list[slice] = [slice(None)] * len(shape)
            index[axis] = slice(0, width)
            band[tuple(index)] = True
            index[axis] = slice(length - width, length)
            band[tuple(index)] = True
    return band


def mask_border(values: np.ndarray, fraction: float) -> np.ndarray:
    """(c, *spatial) values with the outer band set to zero (burnt-in text, markers)."""
    masked = values.copy()
    masked[:, border_band(values.shape[1:], fraction)] = 0
    return masked


def _resize(values: np.ndarray, size: tuple[int, ...], *, mode: str) -> np.ndarray:
    import torch
    from torch.nn import functional

    tensor = torch.from_numpy(np.ascontiguousarray(values))[None]
    if tuple(tensor.shape[2:]) == tuple(size):
        return values
    resized = functional.interpolate(tensor, size=size, mode=mode, align_corners=False)
    return resized[0].numpy()


#: resampling to a task's spacing may not grow an image more than this many times when the
#: result would exceed MAX_NETWORK_VOXELS: a 0.7 mm radiograph taken to a histology model's
#: 0.5 um would need terabytes
MAX_GROWTH = 64.0
MAX_NETWORK_VOXELS = float(1 << 26)


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
        if not work.spacing_known and preprocessing.unknown_spacing == "stored_grid":
            return work, work.shape
        spacing = np.asarray(work.spacing)
        # two values on a 3D image: in-plane only, the slice axis keeps its spacing
        target = np.array(
            [*preprocessing.spacing, *spacing[len(preprocessing.spacing) :]], dtype=np.float64
        )[: work.spatial_dims]
        size = np.maximum(1, np.round(np.asarray(work.shape) * spacing / target)).astype(int)
        grown, stored = float(np.prod(size.astype(np.float64))), float(np.prod(work.shape))
        if grown > MAX_GROWTH * stored and grown > MAX_NETWORK_VOXELS:
            raise InvalidInputError(
                f"resampling to the task's spacing {tuple(preprocessing.spacing)} mm would "
                f"grow the image from {stored:.3g} to {grown:.3g} voxels: its spacing "
                f"{tuple(round(float(v), 6) for v in spacing)} mm is not one this task is for"
            )
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
