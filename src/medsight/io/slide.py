"""Whole-slide images: pyramidal TIFF, SVS... through tiffslide, and DICOM VL Whole Slide
Microscopy series through wsidicom (medsight.io.slide_dicom); both in the extra ``[wsi]``.

Coordinates: ``location`` is (x, y) in level-0 pixels, as in OpenSlide; ``size`` is
(width, height) in pixels of the requested level. A region comes back as an
:class:`~medsight.image.Image` whose affine maps its pixels to slide coordinates in mm
(x along the slide width, y down the slide), so geometry survives tiling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsight._optional import require
from medsight.errors import InvalidInputError, UnreadableFileError
from medsight.image import FrameReference, Identifiers, Image

__all__ = [
    "SLIDE_SUFFIXES",
    "Slide",
    "SlideLevel",
    "TiffSlide",
    "is_slide_file",
    "open_slide",
]

#: whole-slide formats recognised by their suffix (pyramidal TIFFs are recognised by content)
SLIDE_SUFFIXES = (".svs", ".ndpi", ".scn", ".bif", ".mrxs")


def is_slide_file(path: Path) -> bool:
    """A whole-slide file: a slide suffix, or a TIFF whose first series has several levels."""
    suffix = path.suffix.lower()
    if suffix in SLIDE_SUFFIXES:
        return True
    if suffix not in (".tif", ".tiff"):
        return False
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return len(tif.series[0].levels) > 1
    except Exception:  # not a TIFF tifffile can parse: not a slide
        return False


@dataclass(frozen=True)
class SlideLevel:
    index: int
    width: int
    height: int
    downsample: float


class Slide:
    """An open whole-slide image; use as a context manager or call :meth:`close`.

    The reading (levels, microns per pixel, pixels of a region) is each format's own:
    :class:`TiffSlide` (pyramidal TIFF, SVS... through tiffslide) and
    :class:`~medsight.io.slide_dicom.DicomSlide` (DICOM VL Whole Slide Microscopy through
    wsidicom); the geometry and the region as an :class:`Image` are common."""

    path: Path
    mpp: tuple[float, float] | None = None
    vendor: str | None = None
    #: what reading the slide found (e.g. the missing tiles of a sparse DICOM pyramid)
    notes: list[str]
    #: the DICOM identifiers of a DICOM slide (empty for a slide file)
    identifiers: Identifiers = Identifiers()

    def _source_of(self, level: int) -> FrameReference:
        """Where a level's pixels are stored (a DICOM slide: the level's instance)."""
        return FrameReference(self.path)

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError

    @property
    def levels(self) -> list[SlideLevel]:
        raise NotImplementedError

    def _pixels(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Any:
        """(rows, columns, >= 3) pixels of a region at ``level`` from level-0 ``location``."""
        raise NotImplementedError

    def _level(self, level: int) -> SlideLevel:
        levels = self.levels
        if not 0 <= level < len(levels):
            raise InvalidInputError(
                f"level {level} does not exist (the slide has levels 0-{len(levels) - 1})",
                path=self.path,
            )
        return levels[level]

    def level_affine(self, level: int, location: tuple[int, int] = (0, 0)) -> np.ndarray:
        """Affine from (i=x, j=y) pixels of ``level`` starting at level-0 ``location`` to mm."""
        downsample = self._level(level).downsample
        mpp_x, mpp_y = self.mpp or (1000.0, 1000.0)
        affine = np.eye(4)
        affine[0, 0] = mpp_x * downsample / 1000.0
        affine[1, 1] = mpp_y * downsample / 1000.0
        # pixel centres: the first pixel of a downsampled level covers `downsample` level-0 pixels
        affine[0, 3] = (location[0] + (downsample - 1) / 2) * mpp_x / 1000.0
        affine[1, 3] = (location[1] + (downsample - 1) / 2) * mpp_y / 1000.0
        return affine

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Image:
        """RGB pixels of a region as an :class:`Image` (see module doc for coordinates)."""
        info = self._level(level)
        if size[0] <= 0 or size[1] <= 0:
            raise InvalidInputError(f"region size must be positive, got {size}", path=self.path)
        if not (
            0 <= location[0] < info.width * info.downsample
            and 0 <= location[1] < info.height * info.downsample
        ):
            raise InvalidInputError(
                f"region at {location} lies outside the slide "
                f"({self.levels[0].width}x{self.levels[0].height} level-0 pixels)",
                path=self.path,
            )
        pixels = np.asarray(self._pixels(location, level, size))
        return Image(
            array=pixels[..., :3].transpose(2, 1, 0),
            affine=self.level_affine(level, location),
            spatial_dims=2,
            modality="SM",
            photometric_interpretation="RGB",
            frames=(self._source_of(level),),
            identifiers=self.identifiers,
            spacing_known=self.mpp is not None,
            orientation_known=False,
            metadata={"source_format": "wsi", "level": level, "location": location},
            warnings=() if self.mpp else ("microns per pixel unknown",),
        )

    def read_level(self, level: int) -> Image:
        info = self._level(level)
        return self.read_region((0, 0), level, (info.width, info.height))


class TiffSlide(Slide):
    """A pyramidal TIFF, SVS, NDPI... read through tiffslide (extra ``[wsi]``)."""

    def __init__(self, path: str | Path) -> None:
        tiffslide = require("tiffslide", "wsi")
        self.path = Path(path)
        self.notes = []
        if not self.path.is_file():
            raise UnreadableFileError("file not found", path=self.path)
        try:
            self._slide: Any = tiffslide.TiffSlide(self.path)
        except Exception as exc:  # tiffslide/tifffile raise many types for non-slides
            raise UnreadableFileError(
                f"not a readable whole-slide image ({exc})", path=path
            ) from exc
        properties = self._slide.properties
        mpp_x, mpp_y = properties.get("tiffslide.mpp-x"), properties.get("tiffslide.mpp-y")
        self.mpp = (float(mpp_x), float(mpp_y)) if mpp_x and mpp_y else None
        self.vendor = properties.get("tiffslide.vendor")

    def close(self) -> None:
        self._slide.close()

    @property
    def levels(self) -> list[SlideLevel]:
        return [
            SlideLevel(index, int(w), int(h), float(d))
            for index, ((w, h), d) in enumerate(
                zip(self._slide.level_dimensions, self._slide.level_downsamples, strict=True)
            )
        ]

    def _pixels(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Any:
        return self._slide.read_region(location, level, size, as_array=True)


def open_slide(path: str | Path) -> Slide:
    """A slide file (tiffslide), or a DICOM whole-slide series (a folder or one of its
    files: wsidicom)."""
    from medsight.io.slide_dicom import DicomSlide, is_dicom_slide

    path = Path(path)
    if is_dicom_slide(path):
        return DicomSlide(path)
    return TiffSlide(path)
