"""Geometry of a stack of DICOM frames: sorting, spacing, gaps and gantry tilt.

Rules (DESIGN.md convention 1): slices are ordered by their position projected on the slice
normal, never by InstanceNumber; the slice step comes from the positions, never from
SliceThickness or SpacingBetweenSlices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsight.errors import GantryTiltError, GeometryError
from medsight.io.dicom._header import FrameInfo

#: relative deviation of a slice step from the median above which spacing is "irregular"
SPACING_TOLERANCE = 0.01
#: in-plane drift (mm) of slice origins above which a stack counts as tilted
TILT_TOLERANCE_MM = 0.01


@dataclass
class StackGeometry:
    """The affine of a stack and what was found on the way."""

    affine: np.ndarray
    distances: np.ndarray  # slice positions along the normal, mm, ascending
    regular: bool = True
    tilt_degrees: float = 0.0
    in_plane_offsets: np.ndarray | None = None  # per slice (i, j) offset in pixels, for tilt
    warnings: list[str] = field(default_factory=list)


def _axes(frame: FrameInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if frame.orientation is None:
        raise GeometryError("no ImageOrientationPatient", path=frame.path)
    row = np.asarray(frame.orientation[:3], dtype=np.float64)
    column = np.asarray(frame.orientation[3:], dtype=np.float64)
    row /= np.linalg.norm(row)
    column /= np.linalg.norm(column)
    return row, column, np.cross(row, column)


def in_plane_affine(frame: FrameInfo) -> np.ndarray:
    """Affine of one positioned frame, as a 2D image (column 2 is the unit normal)."""
    row, column, normal = _axes(frame)
    row_spacing, column_spacing = frame.pixel_spacing or (1.0, 1.0)
    affine = np.eye(4)
    affine[:3, 0] = row * column_spacing
    affine[:3, 1] = column * row_spacing
    affine[:3, 2] = normal
    affine[:3, 3] = frame.position if frame.position is not None else 0.0
    return affine


def stack_geometry(frames: list[FrameInfo], *, gantry_tilt: str = "refuse") -> StackGeometry:
    """Affine and diagnostics of frames already sorted by position along the normal.

    ``gantry_tilt`` is ``"refuse"`` (raise :class:`GantryTiltError`) or ``"correct"`` (return
    the per-slice in-plane offsets that the reader uses to resample onto an orthogonal grid).
    """
    first = frames[0]
    row, column, normal = _axes(first)
    positions = np.array([f.position for f in frames], dtype=np.float64)
    distances = positions @ normal
    steps = np.diff(distances)
    if np.any(steps <= 0):
        raise GeometryError(
            "frames are not sorted by position or share a position", path=first.path
        )
    median = float(np.median(steps))
    affine = in_plane_affine(first)
    affine[:3, 2] = normal * median
    geometry = StackGeometry(affine=affine, distances=distances)

    irregular = np.abs(steps - median) > SPACING_TOLERANCE * median
    if np.any(irregular):
        geometry.regular = False
        gaps = [
            f"{distances[i]:.2f}->{distances[i + 1]:.2f} mm (step {steps[i]:.3g}"
            + (
                f", about {round(steps[i] / median) - 1} missing slice(s))"
                if steps[i] > 1.5 * median
                else ")"
            )
            for i in np.flatnonzero(irregular)[:5]
        ]
        more = f" and {int(irregular.sum()) - 5} more" if irregular.sum() > 5 else ""
        geometry.warnings.append(
            f"irregular slice spacing (median {median:.4g} mm): {'; '.join(gaps)}{more}; "
            "the affine uses the median step, so slices beyond a gap are misplaced; "
            "read with resample_irregular=True (CLI: --resample-irregular) for exact geometry"
        )

    # In-plane drift of each slice origin relative to the first, along the normal projection.
    drift = positions - positions[0] - np.outer(distances - distances[0], normal)
    drift_norm = np.linalg.norm(drift, axis=1)
    if drift_norm.max() > TILT_TOLERANCE_MM:
        span = distances[-1] - distances[0]
        per_mm = drift[-1] / span
        predicted = np.outer(distances - distances[0], per_mm)
        if np.abs(drift - predicted).max() > max(TILT_TOLERANCE_MM * 10, 0.01 * median):
            raise GeometryError(
                "slice origins do not lie on a straight line (not a single volume); "
                "read the stacks separately",
                path=first.path,
            )
        tilt = float(np.degrees(np.arctan(np.linalg.norm(per_mm))))
        geometry.tilt_degrees = tilt
        if gantry_tilt != "correct":
            raise GantryTiltError(
                f"gantry tilt of {tilt:.2f} degrees (slice origins drift in-plane by "
                f"{drift_norm.max():.2f} mm); read with gantry_tilt='correct' "
                "(CLI: --correct-tilt) to resample onto an orthogonal grid",
                path=first.path,
            )
        row_spacing, column_spacing = first.pixel_spacing or (1.0, 1.0)
        geometry.in_plane_offsets = np.column_stack(
            [drift @ row / column_spacing, drift @ column / row_spacing]
        )
        geometry.warnings.append(
            f"gantry tilt of {tilt:.2f} degrees corrected by resampling each slice in-plane"
        )
    return geometry


def projection_affine(
    pixel_spacing: tuple[float, float] | None, patient_orientation: list[str] | None
) -> tuple[np.ndarray, bool]:
    """Affine of a 2D projection image (CR, DX, MG, SC) and whether its orientation is known.

    PatientOrientation gives the patient direction of the rows and the columns as letters
    (PS3.3 C.7.6.1.1.1); the first letter of each is its dominant direction.
    """
    directions = {
        "L": (1, 0, 0),
        "R": (-1, 0, 0),
        "P": (0, 1, 0),
        "A": (0, -1, 0),
        "H": (0, 0, 1),
        "F": (0, 0, -1),
    }
    row_spacing, column_spacing = pixel_spacing or (1.0, 1.0)
    row = np.array([1.0, 0.0, 0.0])
    column = np.array([0.0, 1.0, 0.0])
    known = False
    if patient_orientation and len(patient_orientation) == 2:
        letters = [str(v)[:1].upper() for v in patient_orientation]
        if all(letter in directions for letter in letters):
            candidate_row = np.array(directions[letters[0]], dtype=np.float64)
            candidate_column = np.array(directions[letters[1]], dtype=np.float64)
            if abs(candidate_row @ candidate_column) < 0.5:
                row, column, known = candidate_row, candidate_column, True
    affine = np.eye(4)
    affine[:3, 0] = row * column_spacing
    affine[:3, 1] = column * row_spacing
    affine[:3, 2] = np.cross(row, column)
    return affine, known


def frames_path(frames: list[FrameInfo]) -> Path:
    """The folder (or file) to name in messages about a stack."""
    paths = {f.path for f in frames}
    return next(iter(paths)) if len(paths) == 1 else frames[0].path.parent
