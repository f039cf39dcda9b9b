"""Tissue on an H&E image: stained pixels, apart from the bright glass between them; and
the tiles of a whole slide that hold tissue, found on its smallest level.

Stained tissue is coloured (haematoxylin blue-purple, eosin pink); glass and white fat are
bright and grey. A pixel is tissue when its saturation reaches ``min_saturation`` and it
is not near-white; small specks are dropped and small gaps inside tissue closed, so that a
nucleus-free lumen of a few cells stays tissue. Fixed thresholds rather than Otsu's: a tile
that is all tissue has no glass for Otsu's method to separate, and would be split in two.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from medsight.errors import InvalidInputError
from medsight.io.slide import Slide

__all__ = ["Tile", "slide_tissue", "tissue_fraction", "tissue_mask", "tissue_tiles"]

#: the largest tissue-mask level read whole (pixels): a slide without a low-resolution level
#: beyond this is refused rather than decoded at full size
MASK_PIXELS = 8192 * 8192


def tissue_mask(
    rgb: np.ndarray,
    *,
    min_saturation: float = 0.07,
    max_brightness: float = 0.92,
    min_region_pixels: int = 64,
) -> np.ndarray:
    """Boolean tissue mask of an RGB array (3, *spatial) with values 0-255."""
    from scipy import ndimage

    values = np.asarray(rgb, dtype=np.float32) / 255.0
    brightest = values.max(axis=0)
    darkest = values.min(axis=0)
    saturation = (brightest - darkest) / np.maximum(brightest, 1e-6)
    stained = (saturation >= min_saturation) & (darkest < max_brightness)
    stained = ndimage.binary_closing(stained, iterations=2, border_value=1)
    # by region size with ndimage (scikit-image renamed these parameters across versions)
    stained = _drop_small(stained, min_region_pixels)
    return ~_drop_small(~stained, min_region_pixels * 4)


def _drop_small(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """``mask`` without its 8-connected regions smaller than ``min_pixels``."""
    from scipy import ndimage

    regions, _ = ndimage.label(mask, structure=np.ones((3,) * mask.ndim))
    sizes = np.bincount(regions.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[regions]


@dataclass(frozen=True)
class Tile:
    """A tile of tissue: its level-0 location, level, size (level pixels) and tissue fraction."""

    x: int
    y: int
    level: int
    width: int
    height: int
    tissue_fraction: float


def slide_tissue(slide: Slide, level: int | None = None) -> tuple[np.ndarray, int]:
    """Tissue mask (rows, columns) of a slide level (default: its smallest) and that level."""
    level = len(slide.levels) - 1 if level is None else level
    info = slide.levels[level]
    if info.width * info.height > MASK_PIXELS:
        raise InvalidInputError(
            f"level {level} is {info.width}x{info.height} pixels: a pyramid with a "
            "low-resolution level is needed for the tissue mask",
            path=slide.path,
        )
    image = slide.read_level(level)
    return tissue_mask(image.array[:3]).T, level  # (i, j) -> rows, columns


def tissue_fraction(
    mask: np.ndarray, scale: float, x: float, y: float, w: float, h: float
) -> float:
    """The tissue share of a rectangle given in the mask's level-``scale`` units times
    ``scale`` (a mask pixel covers ``scale`` of the rectangle's units a side)."""
    rows = slice(int(y / scale), max(math.ceil((y + h) / scale), int(y / scale) + 1))
    columns = slice(int(x / scale), max(math.ceil((x + w) / scale), int(x / scale) + 1))
    part = mask[rows, columns]
    return float(part.mean()) if part.size else 0.0


def tissue_tiles(
    slide: Slide, tile_size: int = 256, *, level: int = 0, min_tissue: float = 0.25
) -> Iterator[Tile]:
    """Tiles of ``tile_size`` pixels at ``level`` that hold at least ``min_tissue`` tissue,
    read off the smallest level's tissue mask: background tiles are never decoded."""
    if tile_size <= 0:
        raise InvalidInputError(f"tile size must be positive, got {tile_size}")
    levels = slide.levels
    if not 0 <= level < len(levels):
        raise InvalidInputError(f"level {level} does not exist", path=slide.path)
    info = levels[level]
    mask, used_level = slide_tissue(slide)
    scale = levels[used_level].downsample / info.downsample  # level px per mask px
    for y in range(0, info.height, tile_size):
        for x in range(0, info.width, tile_size):
            width, height = min(tile_size, info.width - x), min(tile_size, info.height - y)
            fraction = tissue_fraction(mask, scale, x, y, width, height)
            if fraction >= min_tissue:
                yield Tile(
                    x=round(x * info.downsample),
                    y=round(y * info.downsample),
                    level=level,
                    width=width,
                    height=height,
                    tissue_fraction=fraction,
                )
