"""Builders of small DICOM series from pydicom's own CT_small.dcm (shipped with pydicom).

Slice ``n`` of a built series holds ``CT_small + 10 * n`` so tests can tell slices apart.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def base_slice() -> Dataset:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None, "pydicom's CT_small.dcm is part of the pydicom wheel"
    dataset = pydicom.dcmread(path)
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return dataset


def base_pixels() -> np.ndarray:
    return np.asarray(base_slice().pixel_array)


def write_series(
    folder: Path,
    count: int = 8,
    *,
    spacing: float = 2.5,
    orientation: Sequence[float] = AXIAL,
    origin: Sequence[float] = (-40.0, -50.0, 100.0),
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_number: int = 1,
    skip: Sequence[int] = (),
    tilt_mm_per_slice: float = 0.0,
    extra: dict[str, object] | None = None,
    per_slice: dict[str, Sequence[object]] | None = None,
    pixels: np.ndarray | None = None,
    value_step: int = 10,
    random_names: bool = True,
    positions_index: Sequence[int] | None = None,
) -> list[Path]:
    """Write ``count`` slices (minus ``skip``) and return their paths in slice order.

    InstanceNumber runs backwards on purpose: readers must sort by position.
    """
    folder.mkdir(parents=True, exist_ok=True)
    base = base_slice()
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    row = np.asarray(orientation[:3], dtype=float)
    column = np.asarray(orientation[3:], dtype=float)
    normal = np.cross(row, column)
    data = base.pixel_array if pixels is None else pixels
    paths: list[Path] = []
    for n in range(count):
        if n in skip:
            continue
        where = n if positions_index is None else positions_index[n]
        dataset = copy.deepcopy(base)
        position = (
            np.asarray(origin) + where * spacing * normal + where * tilt_mm_per_slice * column
        )
        dataset.ImagePositionPatient = [f"{v:.6f}" for v in position]
        dataset.ImageOrientationPatient = [f"{v:g}" for v in orientation]
        dataset.StudyInstanceUID = study_uid
        dataset.SeriesInstanceUID = series_uid
        dataset.SeriesNumber = series_number
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.InstanceNumber = count - n
        dataset.PixelData = (data.astype(np.int16) + value_step * n).astype(np.int16).tobytes()
        for keyword, value in (extra or {}).items():
            setattr(dataset, keyword, value)
        for keyword, values in (per_slice or {}).items():
            setattr(dataset, keyword, values[n])
        name = f"{uuid.uuid4().hex}.dcm" if random_names else f"slice{n:03d}.dcm"
        path = folder / name
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
