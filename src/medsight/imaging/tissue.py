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

__all__ = [
    "FOCUS_FLOOR",
    "QualityRegion",
    "SlideTissue",
    "Tile",
    "artefact_masks",
    "focus",
    "fold_mask",
    "quality_regions",
    "slide_tissue",
    "tissue_fraction",
    "tissue_mask",
    "tissue_tiles",
]

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


@dataclass(frozen=True)
class SlideTissue:
    """A slide's tissue on one low-resolution level: the mask (rows, columns) without pen
    marks, the artefact masks found on it, and level-0 pixels per mask pixel."""

    mask: np.ndarray
    level: int
    scale: float
    artefacts: dict[str, np.ndarray]


def slide_tissue(
    slide: Slide, level: int | None = None, *, assumed_mpp: float = 0.5
) -> SlideTissue:
    """Tissue of a slide level (default: its smallest), pen marks and folds taken out of
    it; ``assumed_mpp`` sizes the fold search on a slide that states no resolution."""
    level = len(slide.levels) - 1 if level is None else level
    info = slide.levels[level]
    if info.width * info.height > MASK_PIXELS:
        raise InvalidInputError(
            f"level {level} is {info.width}x{info.height} pixels: a pyramid with a "
            "low-resolution level is needed for the tissue mask",
            path=slide.path,
        )
    rgb = slide.read_level(level).array[:3]
    tissue = tissue_mask(rgb)
    pixel_um = (slide.mpp[0] if slide.mpp else assumed_mpp) * info.downsample
    artefacts = artefact_masks(rgb, tissue, pixel_um)
    rows_columns = {kind: mask.T for kind, mask in artefacts.items()}  # (i, j) -> rows, columns
    kept = tissue & ~artefacts["pen mark"] & ~artefacts["fold"]
    return SlideTissue(kept.T, level, info.downsample, rows_columns)


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
    tissue = slide_tissue(slide)
    mask = tissue.mask
    scale = tissue.scale / info.downsample  # level px per mask px
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


# --- tissue quality: pen marks, focus ------------------------------------------------

#: H&E stains lie between blue-violet and pink (hue 240-330 degrees on GBM40); marker ink
#: is green, cyan or blue-green (60-200 degrees) or black
_PEN_HUES = (60.0 / 360.0, 200.0 / 360.0)
#: variance of the Laplacian of a tile's grey level (0-1) over its tissue, at the model's
#: resolution, below which the tile is out of focus: GBM40's 40 sharp tiles measure 6.6e-4
#: to 2.5e-3, the same tiles blurred by a Gaussian of 1.5 pixels at most 3.4e-4
FOCUS_FLOOR = 4.5e-4


@dataclass(frozen=True)
class QualityRegion:
    """An artefact on the slide: its kind, its level-0 box (x0, y0, x1, y1) and area."""

    kind: str  # "pen mark", "fold" or "out of focus"
    box: tuple[int, int, int, int]
    area_pixels: float  # level-0 pixels

    def as_dict(self, mpp: float | None) -> dict[str, object]:
        millimetres = (mpp or 0.0) / 1000.0
        return {
            "kind": self.kind,
            "box_px": list(self.box),
            "box_mm": [round(v * millimetres, 4) for v in self.box] if mpp else None,
            "area_mm2": round(self.area_pixels * millimetres**2, 5) if mpp else None,
        }


def artefact_masks(
    rgb: np.ndarray, tissue: np.ndarray | None = None, pixel_um: float | None = None
) -> dict[str, np.ndarray]:
    """Pen marks and folds (boolean (i, j) masks) on a low-resolution RGB (3, i, j) whose
    pixels are ``pixel_um`` micrometres (folds are looked for only when it is given)."""
    from scipy import ndimage
    from skimage.color import rgb2hsv

    values = np.moveaxis(np.asarray(rgb[:3], dtype=np.float32) / 255.0, 0, -1)
    hsv = rgb2hsv(values)
    hue, saturation, brightness = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    inked = (hue >= _PEN_HUES[0]) & (hue <= _PEN_HUES[1]) & (saturation > 0.25)
    pen = ndimage.binary_dilation(inked | (brightness < 0.15), iterations=1)
    folds = np.zeros_like(pen)
    if pixel_um is not None:
        tissue = tissue_mask(rgb) if tissue is None else tissue
        folds = fold_mask(rgb, tissue & ~pen, pixel_um)
    return {"pen mark": pen, "fold": folds}


# --- folds ---------------------------------------------------------------------------------

#: A fold is the section lying on itself: two layers of tissue, so that both its eosin and
#: its total optical density, averaged over FOLD_WINDOW_UM, are about twice the slide's
#: tissue median; dense nuclear clusters raise haematoxylin but not eosin (a rule on total
#: density alone flagged them). Regions above FOLD_RATIO of at least FOLD_MIN_AREA_UM2 are
#: folds. scripts/fold_evidence.py on GBM40's 40 tiles at 4 um per pixel: clean tiles 0/40
#: flagged; a simulated fold (the tile's own tissue laid over a band of it, transmittances
#: multiplied as two layers do) 50 um wide 38/40, 100 um wide 37/40, 25 um wide 8/40 (thin
#: creases are missed). Folds are simulated, not photographed: GBM40 has none. The ratio
#: and area were chosen on these tiles: no held-out estimate.
FOLD_WINDOW_UM = 50.0
FOLD_RATIO = 1.5
FOLD_MIN_AREA_UM2 = 4000.0
#: the side of the block whose tissue median a fold is also compared with (see _reference)
FOLD_REFERENCE_UM = 250.0
#: the fold search runs at no finer than this (a slide's smallest level is usually coarser)
_FOLD_PIXEL_UM = 4.0
_FOLD_MAX_PIXELS = 2048 * 2048


def _reference(channel: np.ndarray, inside: np.ndarray, block: int) -> np.ndarray | None:
    """What a fold is compared with, per pixel: the lower of the slide's tissue median and
    the tissue median of its block of ``block`` pixels. Staining drifts across a slide
    (the local median follows it); a fold larger than its block raises the block's median
    (the slide's does not rise)."""
    slide_median = float(np.median(channel[inside]))
    if slide_median <= 0:
        return None
    reference = np.full(channel.shape, slide_median, np.float32)
    for i in range(0, channel.shape[0], block):
        for j in range(0, channel.shape[1], block):
            cell = (slice(i, i + block), slice(j, j + block))
            tissue = inside[cell]
            if tissue.mean() >= 0.25:
                local = float(np.median(channel[cell][tissue]))
                reference[cell] = min(slide_median, max(local, 1e-6))
    return reference


def fold_mask(rgb: np.ndarray, tissue: np.ndarray, pixel_um: float) -> np.ndarray:
    """Folded tissue (a boolean (i, j) mask on ``rgb``'s grid) of an RGB (3, i, j) image of
    ``pixel_um`` micrometre pixels, ``tissue`` its tissue mask (see FOLD_RATIO)."""
    from scipy import ndimage
    from skimage.color import hed_from_rgb

    shape = tissue.shape
    found = np.zeros(shape, bool)
    if tissue.sum() < 16:
        return found
    # block-average to about 4 um (and at most 2048^2 pixels): float32 throughout, so that
    # a large lowest level costs a few hundred MB at most
    factor = max(
        1,
        math.floor(_FOLD_PIXEL_UM / pixel_um),
        math.ceil(math.sqrt(shape[0] * shape[1] / _FOLD_MAX_PIXELS)),
    )
    rows, columns = shape[0] // factor, shape[1] // factor
    if rows < 4 or columns < 4:
        return found
    cut = (slice(0, rows * factor), slice(0, columns * factor))
    pixels = np.asarray(rgb[:3], dtype=np.float32)[(slice(None), *cut)]
    pixels = pixels.reshape(3, rows, factor, columns, factor).mean(axis=(2, 4))
    inside = tissue[cut].reshape(rows, factor, columns, factor).mean(axis=(1, 3)) > 0.5
    if inside.sum() < 16:
        return found
    density = -np.log(np.clip(pixels, 1.0, 255.0) / 255.0)  # optical density per channel
    eosin = np.tensordot(hed_from_rgb[:, 1].astype(np.float32), density, axes=(0, 0))
    total = density.sum(axis=0)
    size = pixel_um * factor
    window = max(1, round(FOLD_WINDOW_UM / size))
    weight = ndimage.uniform_filter(inside.astype(np.float32), window)
    block = max(4, round(FOLD_REFERENCE_UM / size))
    ratio = np.full(inside.shape, np.inf, np.float32)
    for channel in (eosin, total):
        reference = _reference(channel, inside, block)
        if reference is None:
            return found
        local = ndimage.uniform_filter(np.where(inside, channel, 0), window)
        ratio = np.minimum(ratio, local / np.maximum(weight, 1e-3) / reference)
    raised = (ratio > FOLD_RATIO) & inside
    labelled, count = ndimage.label(raised)
    if count == 0:
        return found
    areas = np.bincount(labelled.ravel()) * size * size
    keep = areas >= FOLD_MIN_AREA_UM2
    keep[0] = False
    small = keep[labelled]
    found[cut] = np.repeat(np.repeat(small, factor, axis=0), factor, axis=1)
    return found


def quality_regions(
    mask: np.ndarray, kind: str, scale: float, min_pixels: int = 4
) -> list[QualityRegion]:
    """Connected regions of a (rows, columns) mask whose pixels cover ``scale`` level-0
    pixels a side, as level-0 boxes; specks under ``min_pixels`` mask pixels ignored."""
    from scipy import ndimage

    labelled, _ = ndimage.label(mask)
    found = []
    for index, box in enumerate(ndimage.find_objects(labelled), start=1):
        if box is None:
            continue
        pixels = int((labelled[box] == index).sum())
        if pixels < min_pixels:
            continue
        rows, columns = box
        found.append(
            QualityRegion(
                kind,
                (
                    round(columns.start * scale),
                    round(rows.start * scale),
                    round(columns.stop * scale),
                    round(rows.stop * scale),
                ),
                pixels * scale * scale,
            )
        )
    return found


def focus(rgb: np.ndarray, zoom: float = 1.0, tissue: np.ndarray | None = None) -> float | None:
    """Variance of the Laplacian of the grey level (0-1) over the tissue of an RGB (3, i, j)
    array, after resizing by ``zoom`` (below 1: to a coarser resolution, where the floor was
    measured); None when under a tenth of it is tissue (glass is flat, not blurred).
    ``tissue``: the array's tissue mask, where the caller already has it."""
    from scipy import ndimage

    tissue = tissue_mask(rgb) if tissue is None else tissue
    grey = np.asarray(rgb[:3], dtype=np.float32).mean(axis=0) / 255.0
    if abs(zoom - 1.0) > 0.01:
        grey = ndimage.zoom(grey, zoom, order=1)
        tissue = ndimage.zoom(tissue.astype(np.uint8), zoom, order=0).astype(bool)
    # the rim of the tissue borders glass: its edge would pass for sharpness
    inside = ndimage.binary_erosion(tissue, iterations=2)
    if inside.mean() < 0.1:
        return None
    return float(ndimage.laplace(grey)[inside].var())
