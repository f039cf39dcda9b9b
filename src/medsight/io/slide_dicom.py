"""DICOM whole-slide images (VL Whole Slide Microscopy Image Storage) as a pyramid, through
wsidicom (extra ``[wsi]``): one instance per level, TILED_FULL or TILED_SPARSE.

wsidicom was chosen over highdicom after trying both on pyramids built from GBM40 tiles
(tests/_dicom_wsi.py): highdicom 0.28 reads one instance at a time (no levels), gives float
pixel values (within 1 of the stored ones after its colour handling) and refuses a region
that holds a missing tile of a TILED_SPARSE instance unless told to allow it; wsidicom 0.36
reads the series as a pyramid (levels, microns per pixel, regions across tiles) the way
OpenSlide reads a file, returns the stored pixels exactly, and fills missing tiles. Those are
read as glass, and the slide says how many are missing (``Slide.notes``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from medsight._optional import require
from medsight.errors import UnreadableFileError
from medsight.image import FrameReference, Identifiers
from medsight.io.slide import Slide, SlideLevel

__all__ = ["WSI_SOP_CLASS", "DicomSlide", "is_dicom_slide"]

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
_FOLDER_PEEK = 16  # files of a folder read (headers only) to tell whether it holds a slide


def _header(path: Path) -> Any:
    import pydicom

    try:
        return pydicom.dcmread(
            path,
            stop_before_pixels=True,
            specific_tags=["SOPClassUID", "SeriesInstanceUID"],
        )
    except Exception:  # not DICOM, or not readable: not a slide file
        return None


def is_dicom_slide(path: Path) -> bool:
    """A DICOM whole-slide file, or a folder whose first files include one."""
    if path.is_file():
        header = _header(path)
        return header is not None and str(header.get("SOPClassUID", "")) == WSI_SOP_CLASS
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())[:_FOLDER_PEEK]
        return any(is_dicom_slide(p) for p in files)
    return False


def _series_files(path: Path) -> list[Path]:
    """The whole-slide instances of ``path``'s series (a file: its siblings of the same
    series; a folder: its first whole-slide series)."""
    folder = path if path.is_dir() else path.parent
    headers = {p: _header(p) for p in sorted(folder.iterdir()) if p.is_file()}
    slides = {
        p: str(h.SeriesInstanceUID)
        for p, h in headers.items()
        if h is not None and str(h.get("SOPClassUID", "")) == WSI_SOP_CLASS
    }
    wanted = slides.get(path) if path.is_file() else next(iter(slides.values()), None)
    return [p for p, series in slides.items() if series == wanted]


def _identifiers(files: list[Path]) -> tuple[Identifiers, dict[int, tuple[Path, str]]]:
    """The series' identifiers (from its first file) and each level's instance, by the
    level's width in pixels (a result references the instance its pixels came from)."""
    import pydicom

    instances: dict[int, tuple[Path, str]] = {}
    first = None
    for path in files:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        first = first or header
        width = int(header.get("TotalPixelMatrixColumns", 0))
        if width and width not in instances:  # the first of a level's instances
            instances[width] = (path, str(header.SOPInstanceUID))
    if first is None:
        return Identifiers(), instances

    def text(keyword: str) -> str | None:
        value = first.get(keyword)
        return str(value) if value not in (None, "") else None

    number = first.get("SeriesNumber")
    return (
        Identifiers(
            patient_id=text("PatientID"),
            patient_name=text("PatientName"),
            study_instance_uid=text("StudyInstanceUID"),
            series_instance_uid=text("SeriesInstanceUID"),
            frame_of_reference_uid=text("FrameOfReferenceUID"),
            sop_class_uid=text("SOPClassUID"),
            accession_number=text("AccessionNumber"),
            study_date=text("StudyDate"),
            series_number=int(number) if number not in (None, "") else None,
            series_description=text("SeriesDescription"),
        ),
        instances,
    )


def _missing_tiles(files: list[Path]) -> list[str]:
    """For each TILED_SPARSE instance: how many of its tiles the file does not hold."""
    import pydicom

    notes = []
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.get("DimensionOrganizationType") != "TILED_SPARSE":
            continue
        grid = math.ceil(int(ds.TotalPixelMatrixColumns) / int(ds.Columns)) * math.ceil(
            int(ds.TotalPixelMatrixRows) / int(ds.Rows)
        )
        frames = int(ds.get("NumberOfFrames", 1))
        if frames < grid:
            notes.append(
                f"{path.name}: {grid - frames} of {grid} tiles missing (TILED_SPARSE), read as "
                "glass"
            )
    return notes


class DicomSlide(Slide):
    """A DICOM whole-slide series read as a pyramid (wsidicom)."""

    def __init__(self, path: str | Path) -> None:
        wsidicom = require("wsidicom", "wsi")
        self.path = Path(path)
        if not self.path.exists():
            raise UnreadableFileError("file not found", path=self.path)
        files = _series_files(self.path)
        if not files:
            raise UnreadableFileError("no DICOM whole-slide image found", path=self.path)
        try:
            self._slide: Any = wsidicom.WsiDicom.open(files)
        except Exception as exc:  # wsidicom raises many types for broken series
            if not self.path.is_file() or len(files) == 1:
                raise UnreadableFileError(
                    f"not a readable DICOM whole-slide series ({exc})", path=self.path
                ) from exc
            # the series' files do not make one pyramid (duplicates, another scan):
            # the file given is read on its own
            try:
                self._slide = wsidicom.WsiDicom.open([self.path])
            except Exception as alone:
                raise UnreadableFileError(
                    f"not a readable DICOM whole-slide image ({alone})", path=self.path
                ) from alone
            files = [self.path]
        self.files = files
        self.notes = _missing_tiles(files)
        base = self._slide.levels[0].size.width
        self._levels = [  # read once: every region read looks up its level's downsample
            SlideLevel(index, int(lv.size.width), int(lv.size.height), base / lv.size.width)
            for index, lv in enumerate(self._slide.levels)
        ]
        mpp = self._slide.mpp
        self.mpp = (float(mpp.width), float(mpp.height)) if mpp else None
        self.vendor = "DICOM"
        self.identifiers, self._instances = _identifiers(files)

    def close(self) -> None:
        self._slide.close()

    @property
    def levels(self) -> list[SlideLevel]:
        return list(self._levels)

    def _source_of(self, level: int) -> FrameReference:
        width = self._levels[level].width
        path, uid = self._instances.get(width, (self.path, None))
        return FrameReference(path, uid)

    def _pixels(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Any:
        chosen = self._slide.levels[level]
        downsample = self._levels[level].downsample
        # wsidicom places a region in the level's own pixels, not level 0's
        at = (round(location[0] / downsample), round(location[1] / downsample))
        return np.asarray(self._slide.read_region(at, chosen.level, size).convert("RGB"))
