"""Siemens mosaics: fMRI and diffusion volumes stored as one 2D image of tiled slices.

The number of slices, their order and the slice direction live in Siemens' private CSA
header, not in standard attributes; ImagePositionPatient is that of the whole mosaic, not of
the first slice. nibabel's ``nicom`` package reads the CSA header and untiles the slices with
the corrected geometry; it is used here rather than rewritten. nibabel's arrays index (row,
column, slice); medsight's index (column, row, slice), so the first two axes (and affine
columns) are swapped once, here.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medsight.errors import DicomReadError
from medsight.io.dicom._header import FrameInfo
from medsight.io.dicom.pixels import read_dataset

__all__ = ["is_mosaic", "mosaic_geometry", "read_mosaics"]


def is_mosaic(frame: FrameInfo) -> bool:
    return "MOSAIC" in (value.upper() for value in frame.image_type)


def _wrapper(dataset: Dataset, frame: FrameInfo) -> Any:
    from nibabel.nicom import dicomwrappers

    wrapper = dicomwrappers.wrapper_from_data(dataset)
    if not isinstance(wrapper, dicomwrappers.MosaicWrapper):
        raise DicomReadError(
            "ImageType says MOSAIC but the Siemens CSA header that says how the slices are "
            "tiled is missing (removed by de-identification?): the slices cannot be "
            "untiled; read the scanner's original files",
            path=frame.path,
        )
    return wrapper


def _swapped(affine: np.ndarray) -> np.ndarray:
    """nibabel's (row, column, slice) affine as medsight's (column, row, slice) one."""
    swapped = np.asarray(affine, dtype=np.float64).copy()
    swapped[:, [0, 1]] = swapped[:, [1, 0]]
    return swapped


def mosaic_geometry(header: Dataset, frame: FrameInfo) -> tuple[tuple[int, int, int], np.ndarray]:
    """The untiled (columns, rows, slices) and affine, from the header alone."""
    from nibabel.nicom import dicomwrappers

    with warnings.catch_warnings():  # nibabel calls its DICOM readers experimental
        warnings.simplefilter("ignore")
        wrapper = _wrapper(header, frame)
        try:
            affine = wrapper.affine
        except (ValueError, dicomwrappers.WrapperError) as exc:
            raise DicomReadError(
                f"mosaic geometry cannot be read ({exc})", path=frame.path
            ) from None
    tiles = int(np.ceil(np.sqrt(wrapper.n_mosaic)))
    shape = (frame.columns // tiles, frame.rows // tiles, int(wrapper.n_mosaic))
    return shape, _swapped(affine)


def _untiled(dataset: Dataset, frame: FrameInfo) -> tuple[np.ndarray, np.ndarray]:
    """One mosaic as (column, row, slice) values and the LPS affine of those indices."""
    from nibabel.nicom import dicomwrappers

    with warnings.catch_warnings():  # nibabel calls its DICOM readers experimental
        warnings.simplefilter("ignore")
        wrapper = _wrapper(dataset, frame)
        try:
            values = np.asarray(wrapper.get_data())
            affine = np.asarray(wrapper.affine, dtype=np.float64)
        except (ValueError, dicomwrappers.WrapperError) as exc:
            raise DicomReadError(
                f"a mosaic of {wrapper.n_mosaic} slices cannot be untiled from its "
                f"{frame.rows} x {frame.columns} image ({exc})",
                path=frame.path,
            ) from None
    if np.issubdtype(values.dtype, np.floating) and np.array_equal(values, np.round(values)):
        values = values.astype(np.int32) if values.max(initial=0) < 2**31 else values
    return values.transpose(1, 0, 2), _swapped(affine)


def read_mosaics(frames: Sequence[FrameInfo]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Each frame (a whole mosaic file) as a volume: the (column, row, slice, time) values
    (time of length 1 for one file), the affine, and warnings. Volumes of a series must
    share their geometry."""
    volumes: list[np.ndarray] = []
    affine: np.ndarray | None = None
    for frame in frames:
        values, this_affine = _untiled(read_dataset(frame.path), frame)
        if affine is not None and not np.allclose(this_affine, affine, atol=1e-3):
            raise DicomReadError(
                "mosaics of this series differ in geometry; read them separately",
                path=frame.path,
            )
        if volumes and values.shape != volumes[0].shape:
            raise DicomReadError("mosaics of this series differ in size", path=frame.path)
        affine = this_affine
        volumes.append(values)
    assert affine is not None
    note = (
        f"Siemens mosaic: {volumes[0].shape[2]} slices of {volumes[0].shape[0]} x "
        f"{volumes[0].shape[1]} untiled per file (slice order and direction from the CSA header)"
    )
    return np.stack(volumes, axis=-1), affine, [note]
