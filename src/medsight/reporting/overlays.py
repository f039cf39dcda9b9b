"""Overlay PNGs for a person to look at: the image, mask outlines and the heatmap.

Every overlay carries the words "research use only, not for diagnostic use".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from medsight.image import Image
from medsight.imaging import to_display

__all__ = ["key_slice", "overlay_png"]

BANNER = "medsight - research use only, not for diagnostic use"
_COLOURS = [
    (255, 64, 64),
    (64, 200, 255),
    (255, 210, 0),
    (120, 255, 120),
    (255, 120, 255),
    (255, 160, 60),
]


def key_slice(label_map: np.ndarray | None, heatmap: np.ndarray | None, depth: int) -> int:
    """The slice with the most labelled voxels (else the heatmap peak, else the middle)."""
    if label_map is not None and label_map.ndim == 3 and label_map.any():
        return int(np.argmax((label_map > 0).sum(axis=(0, 1))))
    if heatmap is not None and heatmap.ndim == 3:
        return int(np.unravel_index(np.argmax(heatmap), heatmap.shape)[2])
    return depth // 2


def _outline(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask)


def blend_heatmap(rgb: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """``rgb`` (rows, columns, 3) in 0-1 under a jet-coloured ``heat`` (rows, columns)."""
    import matplotlib

    heat = np.clip(heat, 0, 1).astype(np.float32)
    colour = matplotlib.colormaps["jet"](heat, bytes=True)[..., :3].astype(np.float32) / 255
    alpha = 0.5 * heat[..., np.newaxis]  # strong evidence shows, weak leaves the image as is
    return (1 - alpha) * rgb + alpha * colour


#: rows composed at a time, so a large image's overlay needs a strip of float temporaries
_STRIP_ROWS = 256


def _composed(shown: np.ndarray, heatmap: np.ndarray | None) -> np.ndarray:
    """8-bit RGB (rows, columns, 3) of display values ``shown`` (c, i, j) under ``heatmap``."""
    rows, columns = shown.shape[2], shown.shape[1]
    pixels = np.empty((rows, columns, 3), dtype=np.uint8)
    for top in range(0, rows, _STRIP_ROWS):
        part = shown[:, :, top : top + _STRIP_ROWS]
        rgb = np.repeat(part, 3, axis=0) if part.shape[0] == 1 else part[:3]
        rgb = np.clip(rgb.transpose(2, 1, 0), 0, 1)  # (rows, columns, 3)
        if heatmap is not None:
            rgb = blend_heatmap(rgb, heatmap[:, top : top + _STRIP_ROWS].T)
        pixels[top : top + _STRIP_ROWS] = (np.nan_to_num(rgb) * 255).astype(np.uint8)
    return pixels


def _banner(text: str, width: int) -> PILImage.Image:
    """The research-use banner for an image ``width`` pixels wide: a type size that scales
    with the image (readable on an 1841-pixel radiograph) and words wrapped onto as many lines
    as it takes (never cut off on a small crop)."""
    size = int(np.clip(width / 48, 11, 40))
    font = ImageFont.load_default(size=size)
    measure = ImageDraw.Draw(PILImage.new("RGB", (1, 1)))
    margin = max(2, size // 4)
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and measure.textlength(candidate, font=font) <= width - 2 * margin:
            lines[-1] = candidate
        else:
            lines.append(word)
    step = int(size * 1.25)
    banner = PILImage.new("RGB", (width, step * len(lines) + 2 * margin), (0, 0, 0))
    draw = ImageDraw.Draw(banner)
    for number, line in enumerate(lines):
        draw.text((margin, margin + number * step), line, fill=(255, 255, 0), font=font)
    return banner


#: a 2D image longer than this is drawn reduced (block means) to at most this many pixels a
#: side: a 12,000-pixel film's full-size overlay took 2.9 GB and a minute to encode, for a
#: picture no screen shows whole (every film of 43 cm at 0.1 mm fits as it is)
MAX_OVERLAY_SIDE = 4096


def _reduction(image: Image) -> int:
    longest = max(image.shape) if image.spatial_dims == 2 else 0
    return int(np.ceil(longest / MAX_OVERLAY_SIDE)) if longest > MAX_OVERLAY_SIDE else 1


def _reduced(image: Image, factor: int) -> Image:
    """``image`` as means of ``factor`` x ``factor`` blocks (a partial block at the far edges
    dropped), computed a strip of rows at a time; the affine follows the block centres."""
    channels, size_i, size_j = image.array.shape
    kept_i, kept_j = size_i // factor, size_j // factor
    out = np.empty((channels, kept_i, kept_j), dtype=np.float32)
    step = max(1, (1 << 22) // max(1, size_j * channels * factor))
    for first in range(0, kept_i, step):
        stop = min(kept_i, first + step)
        block = image.array[:, first * factor : stop * factor, : kept_j * factor]
        block = block.astype(np.float32).reshape(channels, stop - first, factor, kept_j, factor)
        out[:, first:stop] = block.mean(axis=(2, 4))
    affine = image.affine.copy()
    affine[:3, 3] = image.affine[:3, :3] @ np.array([(factor - 1) / 2, (factor - 1) / 2, 0.0])
    affine[:3, 3] += image.affine[:3, 3]
    affine[:3, :2] *= factor
    return image.replace(array=out, affine=affine, frames=())


def _draw_boxes(picture: Any, boxes: list[dict[str, Any]], scale: float) -> None:
    """Each box (pixel edges: columns, rows) outlined in yellow with its label and score."""
    draw = ImageDraw.Draw(picture)
    width = max(2, picture.width // 300)
    for box in boxes:
        x0, y0, x1, y1 = (v * scale for v in box["pixel_box"])
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 220, 0), width=width)
        text = f"{box['label']} {box['score']:.2f}"
        draw.text((x0 + 2, max(0, y0 - 12)), text, fill=(255, 220, 0))


def overlay_png(
    image: Image,
    path: Path,
    *,
    label_map: np.ndarray | None = None,
    heatmap: np.ndarray | None = None,
    window: str | tuple[float, float] | None = None,
    boxes: list[dict[str, Any]] | None = None,
) -> Path:
    """Write a PNG of ``image`` (its key slice when 3D) with outlines and heatmap blended,
    and a 2D image's detection boxes drawn with their scores; a 2D image longer than
    MAX_OVERLAY_SIDE is drawn reduced."""

    factor = _reduction(image)
    if factor > 1:
        image = _reduced(image, factor)
        label_map, heatmap = (
            None if grid is None else grid[::factor, ::factor][: image.shape[0], : image.shape[1]]
            for grid in (label_map, heatmap)
        )
    shown = to_display(image, window)  # (c, i, j[, k])
    slice_index = None
    if image.spatial_dims == 3:
        slice_index = key_slice(label_map, heatmap, image.shape[2])
        shown = shown[..., slice_index]
        label_map = label_map[..., slice_index] if label_map is not None else None
        heatmap = heatmap[..., slice_index] if heatmap is not None else None
    pixels = _composed(shown, heatmap)
    if label_map is not None:
        for number, value in enumerate(v for v in np.unique(label_map) if v != 0):
            edge = _outline(value == label_map.T)
            pixels[edge] = _COLOURS[number % len(_COLOURS)]
    picture = PILImage.fromarray(pixels)
    scale = 1
    if picture.width < 256:  # small images: enlarge so the banner fits and lines show
        scale = int(np.ceil(256 / picture.width))
        picture = picture.resize(
            (picture.width * scale, picture.height * scale), PILImage.Resampling.NEAREST
        )
    if boxes and slice_index is None:
        _draw_boxes(picture, boxes, scale / factor)
    label = BANNER if slice_index is None else f"{BANNER} - slice k={slice_index}"
    if factor > 1:
        label += f" - shown at 1/{factor} size"
    banner = _banner(label, picture.width)
    canvas = PILImage.new("RGB", (picture.width, picture.height + banner.height), (0, 0, 0))
    canvas.paste(banner, (0, 0))
    canvas.paste(picture, (0, banner.height))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
