"""Reorient an image to a named axis code by permuting and flipping axes (no resampling)."""

from __future__ import annotations

import numpy as np

from medsight.errors import InvalidInputError
from medsight.image import Image

_OPPOSITE = {"L": "R", "R": "L", "P": "A", "A": "P", "S": "I", "I": "S"}
_AXIS_OF = {"L": 0, "R": 0, "P": 1, "A": 1, "S": 2, "I": 2}


def reorient(image: Image, code: str = "LPS") -> Image:
    """Permute and flip the spatial axes of a 3D image so they point along ``code``.

    ``code`` names where each of (i, j, k) points in the patient, e.g. ``"LPS"`` (i towards
    the patient's left, j posterior, k superior) or ``"RAS"``. Voxel values are not resampled;
    the affine changes so that every voxel keeps its world position.
    """
    code = code.upper()
    if image.spatial_dims != 3:
        raise InvalidInputError("reorient works on 3D images")
    if len(code) != 3 or sorted(_AXIS_OF[c] for c in code if c in _AXIS_OF) != [0, 1, 2]:
        raise InvalidInputError(f"orientation code must name each body axis once, got {code!r}")
    current = image.orientation_code
    permutation = [current.index(c) if c in current else current.index(_OPPOSITE[c]) for c in code]
    flips = [current[permutation[n]] != code[n] for n in range(3)]

    array = image.array
    offset = 1  # channel axis first
    axes = [0, *(p + offset for p in permutation)] + ([4] if image.is_sequence else [])
    array = array.transpose(axes)
    affine = image.affine.copy()
    affine[:, :3] = image.affine[:, permutation]
    for n, flip in enumerate(flips):
        if flip:
            length = array.shape[n + offset]
            array = np.flip(array, axis=n + offset)
            affine[:3, 3] += affine[:3, n] * (length - 1)
            affine[:3, n] = -affine[:3, n]
    frames = image.frames
    if permutation[2] != 2 or flips[2]:
        frames = ()  # the slice order changed: per-slice source references no longer line up
    return image.replace(array=array, affine=affine, frames=frames)
