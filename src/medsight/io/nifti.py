"""NIfTI read and write (nibabel), with the RAS <-> LPS conversion made explicit.

NIfTI (and nibabel) world coordinates are RAS+: +x towards the patient's right, +y anterior,
+z superior. medsight's world is DICOM LPS+: +x towards the patient's left, +y posterior, +z
superior. The two differ by negating x and y, done here and nowhere else:
``LPS = diag(-1, -1, 1, 1) @ RAS``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medsight.errors import InvalidInputError, UnreadableFileError
from medsight.image import FrameReference, Image
from medsight.io.limits import ResourceLimitError, current_limits

__all__ = ["RAS_TO_LPS", "read_nifti", "write_nifti"]

#: multiply a RAS affine by this (on the left) to get the LPS affine, and vice versa
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _check_declared(nifti: Any, path: Path) -> None:
    """File size, slice size and decoded size from the header, before nibabel reads the data
    (a gzip of zeros declaring 2048^3 voxels would otherwise inflate to gigabytes)."""
    limits = current_limits()
    size = path.stat().st_size
    limits.check("file_bytes", size, f"a file of {size:,} bytes", path)
    shape = tuple(int(n) for n in nifti.header.get_data_shape())
    itemsize = int(nifti.header.get_data_dtype().itemsize)
    rows, columns = (*shape, 1, 1)[:2]
    limits.check_frame(rows, columns, 1, itemsize, path)
    voxels = int(np.prod(shape, dtype=object))
    limits.check("image_bytes", voxels * itemsize, f"an image of {voxels * itemsize:,} bytes", path)


def read_nifti(path: str | Path) -> Image:
    """Read a 2D, 3D or 4D NIfTI (the 4th axis becomes the time axis ``t``)."""
    path = Path(path)
    quiet = logging.getLogger("nibabel")  # its log lines repeat what the error below says
    level = quiet.level
    quiet.setLevel(logging.CRITICAL + 1)
    try:
        nifti: Any = nib.load(path)
        _check_declared(nifti, path)
        data = np.asanyarray(nifti.dataobj)
    except FileNotFoundError as exc:
        raise UnreadableFileError("file not found", path=path) from exc
    except ResourceLimitError:
        raise
    except Exception as exc:  # nibabel raises many types for broken or truncated files
        raise UnreadableFileError(f"cannot read NIfTI ({exc})", path=path) from exc
    finally:
        quiet.setLevel(level)
    if data.ndim == 2:
        data = data[:, :, np.newaxis]
    while data.ndim > 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 4:
        raise InvalidInputError(
            f"NIfTI with {data.ndim} axes {data.shape} is not supported", path=path
        )
    if data.size == 0:
        raise InvalidInputError(f"NIfTI with an empty axis {data.shape}: no voxels", path=path)
    try:  # header fields nibabel only interprets on demand
        with np.errstate(all="ignore"):  # a NaN or huge affine is refused just below
            affine = RAS_TO_LPS @ np.asarray(nifti.affine, dtype=np.float64)
        units = (
            nifti.header.get_xyzt_units()[0] if hasattr(nifti.header, "get_xyzt_units") else "mm"
        )
    except Exception as exc:
        raise UnreadableFileError(f"cannot read the NIfTI header ({exc!r})", path=path) from exc
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InvalidInputError(
            "the NIfTI affine is not a valid geometry (not finite, or a zero voxel size)",
            path=path,
        )
    warnings: tuple[str, ...] = ()
    if units not in ("mm", "unknown"):
        scale = {"meter": 1000.0, "micron": 0.001}.get(units, 1.0)
        affine[:3, :3] *= scale
        affine[:3, 3] *= scale
        warnings = (f"spatial units were {units}; converted to mm",)
    is_sequence = data.ndim == 4
    return Image(
        array=data[np.newaxis],
        affine=affine,
        spatial_dims=3,
        modality=None,
        frames=(FrameReference(path),),
        is_sequence=is_sequence,
        spacing_known=not _placeholder_grid(affine, units),
        metadata={
            "source_format": "nifti",
            "qform_code": int(nifti.header["qform_code"]) if "qform_code" in nifti.header else None,
        },
        warnings=warnings,
    )


def _placeholder_grid(affine: np.ndarray, units: str) -> bool:
    """Unknown units and a unit voxel on the axes: a converter's placeholder (e.g. ACDC's
    copy that lost its spacing), not a measured 1 mm grid."""
    rotation = np.abs(affine[:3, :3])
    return units == "unknown" and bool(np.allclose(rotation, np.eye(3)))


def write_nifti(image: Image, path: str | Path, *, slope: float | None = None) -> Path:
    """Write a grayscale image (3D, or 3D+t as 4D) to NIfTI with its RAS affine; ``slope``:
    the stored integers times it are the values (scl_slope), e.g. uint8 probabilities."""
    path = Path(path)
    if image.num_channels != 1:
        raise InvalidInputError(
            f"NIfTI output holds one channel; this image has {image.num_channels}", path=path
        )
    data = image.array[0]
    if image.spatial_dims == 2:
        data = data[:, :, np.newaxis] if not image.is_sequence else data[:, :, np.newaxis, :]
    affine = RAS_TO_LPS @ image.affine
    nifti = nib.Nifti1Image(np.asarray(data), affine)
    nifti.header.set_xyzt_units("mm" if image.spacing_known else "unknown", "sec")
    if data.ndim == 4:  # the time step: the repetition time (ms in DICOM, s in NIfTI)
        repetition = image.metadata.get("RepetitionTime")
        if isinstance(repetition, int | float | str) and float(repetition) > 0:
            zooms = nifti.header.get_zooms()[:3]
            nifti.header.set_zooms((*zooms, float(repetition) / 1000.0))
    code = 1 if image.modality or image.identifiers.frame_of_reference_uid else 2
    nifti.set_sform(affine, code=code)
    nifti.set_qform(affine, code=code)
    if slope is not None:
        nifti.header.set_slope_inter(slope, 0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nifti, path)
    return path
