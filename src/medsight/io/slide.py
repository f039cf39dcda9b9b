"""Whole-slide images (pyramidal TIFF, SVS...) through tiffslide (extra ``[wsi]``).

Coordinates: ``location`` is (x, y) in level-0 pixels, as in OpenSlide; ``size`` is
(width, height) in pixels of the requested level. A region comes back as an
:class:`~medsight.image.Image` whose affine maps its pixels to slide coordinates in mm
(x along the slide width, y down the slide), so geometry survives tiling.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsight._optional import require
from medsight.errors import InvalidInputError, UnreadableFileError
from medsight.image import FrameReference, Image

__all__ = [
    "SLIDE_SUFFIXES",
    "Slide",
    "SlideLevel",
    "Tile",
    "is_slide_file",
    "open_slide",
    "tissue_mask",
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


@dataclass(frozen=True)
class Tile:
    """A tile of tissue: its level-0 location, level, size (level pixels) and tissue fraction."""

    x: int
    y: int
    level: int
    width: int
    height: int
    tissue_fraction: float


def tissue_mask(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """Tissue mask of an RGB thumbnail (rows, columns, 3) by Otsu on saturation.

    Saturation separates stained tissue from the white or grey background better than
    brightness does, and ignores grey pen-free glass. Returns the mask and the threshold.
    """
    import SimpleITK as sitk

    pixels = rgb[..., :3].astype(np.float32) / 255.0
    high = pixels.max(axis=-1)
    low = pixels.min(axis=-1)
    saturation = np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0)
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.SetInsideValue(0)
    otsu.SetOutsideValue(1)
    otsu.Execute(sitk.GetImageFromArray(saturation.astype(np.float32)))
    threshold = float(otsu.GetThreshold())
    return saturation > threshold, threshold


class Slide:
    """An open whole-slide image; use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path) -> None:
        tiffslide = require("tiffslide", "wsi")
        self.path = Path(path)
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
        self.mpp: tuple[float, float] | None = (
            (float(mpp_x), float(mpp_y)) if mpp_x and mpp_y else None
        )
        self.vendor: str | None = properties.get("tiffslide.vendor")

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

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

    def level_for_downsample(self, downsample: float) -> int:
        return int(self._slide.get_best_level_for_downsample(downsample))

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
        pixels = np.asarray(self._slide.read_region(location, level, size, as_array=True))
        return Image(
            array=pixels[..., :3].transpose(2, 1, 0),
            affine=self.level_affine(level, location),
            spatial_dims=2,
            modality="SM",
            photometric_interpretation="RGB",
            frames=(FrameReference(self.path),),
            spacing_known=self.mpp is not None,
            orientation_known=False,
            metadata={"source_format": "wsi", "level": level, "location": location},
            warnings=() if self.mpp else ("microns per pixel unknown",),
        )

    def read_level(self, level: int) -> Image:
        info = self._level(level)
        return self.read_region((0, 0), level, (info.width, info.height))

    def tissue_mask(self, level: int | None = None) -> tuple[np.ndarray, int]:
        """Tissue mask (rows, columns) at ``level`` (default: the smallest level)."""
        level = len(self.levels) - 1 if level is None else level
        image = self.read_level(level)
        mask, _ = tissue_mask(image.array.transpose(2, 1, 0))
        return mask, level

    def iter_tiles(
        self,
        tile_size: int = 256,
        *,
        level: int = 0,
        min_tissue: float = 0.25,
        mask_level: int | None = None,
    ) -> Iterator[Tile]:
        """Tiles of ``tile_size`` pixels at ``level`` that hold at least ``min_tissue`` tissue.

        Tissue is found once by Otsu on a low-resolution level, then each tile's fraction is
        read off that mask; background tiles are never decoded.
        """
        if tile_size <= 0:
            raise InvalidInputError(f"tile size must be positive, got {tile_size}")
        info = self._level(level)
        mask, used_level = self.tissue_mask(mask_level)
        scale = self.levels[used_level].downsample / info.downsample  # level px per mask px
        for y in range(0, info.height, tile_size):
            for x in range(0, info.width, tile_size):
                width = min(tile_size, info.width - x)
                height = min(tile_size, info.height - y)
                y0, y1 = int(y / scale), max(int(np.ceil((y + height) / scale)), int(y / scale) + 1)
                x0, x1 = int(x / scale), max(int(np.ceil((x + width) / scale)), int(x / scale) + 1)
                fraction = float(mask[y0:y1, x0:x1].mean()) if mask[y0:y1, x0:x1].size else 0.0
                if fraction >= min_tissue:
                    yield Tile(
                        x=round(x * info.downsample),
                        y=round(y * info.downsample),
                        level=level,
                        width=width,
                        height=height,
                        tissue_fraction=fraction,
                    )


def open_slide(path: str | Path) -> Slide:
    return Slide(path)
