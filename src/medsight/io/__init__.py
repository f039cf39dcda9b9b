"""Readers and writers: every input becomes an :class:`~medsight.image.Image`."""

from __future__ import annotations

from pathlib import Path

from medsight.errors import NoImageFoundError
from medsight.image import Image
from medsight.io.nifti import read_nifti, write_nifti
from medsight.io.raster import RASTER_SUFFIXES, read_raster

__all__ = [
    "NIFTI_SUFFIXES",
    "RASTER_SUFFIXES",
    "read_image",
    "read_nifti",
    "read_raster",
    "write_nifti",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz", ".hdr", ".img")


def read_image(path: str | Path, **options: object) -> Image:
    """Read one image from any supported file or DICOM folder, chosen by what the path holds.

    NIfTI and raster files go by suffix; everything else is read as DICOM (file, folder tree
    or DICOMDIR). Options go to the chosen reader.
    """
    from medsight.io.dicom import read_dicom

    path = Path(path)
    if not path.exists():
        raise NoImageFoundError("no such file or folder", path=path)
    name = path.name.lower()
    if path.is_file() and name.endswith(NIFTI_SUFFIXES):
        return read_nifti(path)
    if path.is_file() and path.suffix.lower() in RASTER_SUFFIXES:
        return read_raster(path, **options)  # type: ignore[arg-type]
    return read_dicom(path, **options)  # type: ignore[arg-type]
