"""`Image`: the one image type of medsight, for every modality.

Axis order (stated here once, used everywhere)
-----------------------------------------------
``Image.array`` is channel-first: ``array[c, i, j]`` for 2D and ``array[c, i, j, k]`` for 3D,
with one more trailing axis ``t`` when the image is a sequence (cine, time series, multi-echo):
``array[c, i, j, (k), t]``.

- ``c`` is the channel: 1 for grayscale, 3 for RGB.
- ``i`` runs along a DICOM row, from one column to the next (the image "x"),
  ``j`` runs down the columns, from one row to the next (the image "y"),
  ``k`` runs from slice to slice along the slice normal, in increasing position.
  This is the index order of ITK, nibabel and MONAI; a DICOM frame ``pixel_array[row, col]``
  is ``array[0, col, row]``.
- ``affine`` is a 4x4 matrix mapping the voxel index ``(i, j, k, 1)`` to LPS patient
  coordinates in millimetres (DICOM's patient coordinate system: +x to the patient's left,
  +y to posterior, +z to head). Column 0 is the row direction cosine times the column spacing,
  column 1 the column direction cosine times the row spacing, column 2 the slice step, column 3
  the centre of the first voxel. A 2D image uses columns 0, 1 and 3; column 2 holds the unit
  normal. The time axis has no geometry.

Memory is often k-major (a DICOM series is stored slice by slice), so ``array`` may be a
non-contiguous view: call :func:`numpy.ascontiguousarray` if a library needs contiguous data.

Geometry that is not known is said so, never invented silently: a photograph without a pixel
size has ``spacing_known=False`` (its affine uses 1 mm pixels as a placeholder) and a
radiograph with no patient orientation has ``orientation_known=False``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsight.errors import InvalidInputError

__all__ = ["FrameReference", "Identifiers", "Image"]


@dataclass(frozen=True)
class Identifiers:
    """DICOM identifiers of the source, so results can reference it (empty when not DICOM)."""

    patient_id: str | None = None
    patient_name: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    frame_of_reference_uid: str | None = None
    sop_class_uid: str | None = None
    accession_number: str | None = None
    study_date: str | None = None
    series_number: int | None = None
    series_description: str | None = None


@dataclass(frozen=True)
class FrameReference:
    """Where one 2D frame of the image came from: a file, its SOP instance and its frame."""

    path: Path | None
    sop_instance_uid: str | None = None
    frame_number: int | None = None  # 1-based, DICOM style; None for a single-frame object


@dataclass
class Image:
    """Pixels plus the geometry and identity that always travel with them (see module doc)."""

    array: np.ndarray
    affine: np.ndarray
    spatial_dims: int
    modality: str | None = None
    photometric_interpretation: str = "MONOCHROME2"
    identifiers: Identifiers = field(default_factory=Identifiers)
    # source frames in array order: frames[k] (or frames[k + nk * t] for a sequence) for 3D,
    # frames[t] for a 2D sequence, one entry for a single 2D image
    frames: tuple[FrameReference, ...] = ()
    is_sequence: bool = False
    spacing_known: bool = True
    orientation_known: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise InvalidInputError(f"affine must be 4x4, got shape {self.affine.shape}")
        if self.spatial_dims not in (2, 3):
            raise InvalidInputError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        expected_ndim = 1 + self.spatial_dims + int(self.is_sequence)
        if self.array.ndim != expected_ndim:
            raise InvalidInputError(
                f"a {self.spatial_dims}D{' sequence' if self.is_sequence else ''} image needs a "
                f"{expected_ndim}-axis array (c, i, j{', k' if self.spatial_dims == 3 else ''}"
                f"{', t' if self.is_sequence else ''}), got shape {self.array.shape}"
            )

    # --- geometry -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape ``(i, j)`` or ``(i, j, k)``."""
        return tuple(self.array.shape[1 : 1 + self.spatial_dims])

    @property
    def num_channels(self) -> int:
        return int(self.array.shape[0])

    @property
    def num_timepoints(self) -> int:
        return int(self.array.shape[-1]) if self.is_sequence else 1

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each spatial axis (i, j[, k])."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return tuple(float(v) for v in norms[: self.spatial_dims])

    @property
    def origin(self) -> tuple[float, float, float]:
        """LPS position (mm) of the centre of voxel (0, 0, 0)."""
        return (float(self.affine[0, 3]), float(self.affine[1, 3]), float(self.affine[2, 3]))

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit vectors of the i, j, k axes in LPS."""
        return self.affine[:3, :3] / np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def orientation_code(self) -> str:
        """Three letters naming where each axis points, e.g. ``LPS`` for a plain axial CT."""
        letters = (("L", "R"), ("P", "A"), ("S", "I"))
        code = ""
        for axis in range(3):
            vector = self.direction[:, axis]
            dominant = int(np.argmax(np.abs(vector)))
            code += letters[dominant][0 if vector[dominant] > 0 else 1]
        return code

    def world_coordinates(self, index: np.ndarray) -> np.ndarray:
        """LPS mm of voxel indices given as rows of (i, j[, k]); 2D indices get k = 0."""
        index = np.atleast_2d(np.asarray(index, dtype=np.float64))
        if index.shape[1] == 2:
            index = np.column_stack([index, np.zeros(len(index))])
        homogeneous = np.column_stack([index, np.ones(len(index))])
        return (self.affine @ homogeneous.T).T[:, :3]

    # --- identity ---------------------------------------------------------------------------
    @property
    def sop_instance_uids(self) -> tuple[str, ...]:
        """Distinct source SOP instance UIDs, in first-seen array order."""
        return tuple(dict.fromkeys(f.sop_instance_uid for f in self.frames if f.sop_instance_uid))

    def timepoint(self, t: int) -> Image:
        """One time point of a sequence (a cine phase) as an image of its own, with the
        frames (instances) that phase was read from."""
        if not self.is_sequence or not 0 <= t < self.num_timepoints:
            raise InvalidInputError(f"time point {t} of an image with {self.num_timepoints}")
        per_phase = len(self.frames) // self.num_timepoints
        frames = (
            self.frames[t * per_phase : (t + 1) * per_phase]
            if per_phase * self.num_timepoints == len(self.frames)
            else ()
        )  # frames are stored phase by phase (medsight.io.dicom.read_volumes)
        return self.replace(
            array=np.ascontiguousarray(self.array[..., t]), is_sequence=False, frames=frames
        )

    def replace(self, **changes: Any) -> Image:
        """A copy with some fields changed (the array is not copied)."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        spacing = ", ".join(f"{s:.4g}" for s in self.spacing)
        known = "" if self.spacing_known else " (spacing unknown)"
        return (
            f"Image({self.modality or '?'} {self.spatial_dims}D shape={self.shape} "
            f"channels={self.num_channels}{f' t={self.num_timepoints}' if self.is_sequence else ''}"
            f" spacing=({spacing}){known} orientation={self.orientation_code} "
            f"dtype={self.array.dtype})"
        )
