"""Deep Zoom tiles of a whole slide and of its nucleus outlines, for the slide viewer.

Deep Zoom (the DZI format OpenSeadragon reads) halves the image from level ``top`` (full
resolution, ``top = ceil(log2(max(width, height)))``) down to level 0 (one pixel); each level
is cut into 256-pixel tiles. A tile is read from the slide's pyramid level closest to it
without being coarser (the way OpenSlide's generator works; we write our own because
OpenSlide's needs its C library and reads neither our DICOM slides nor tiffslide's) and
resized to the tile.

The outlines come from the analysis's QuPath GeoJSON, which holds one nucleus per line: an
index of each line's bounding box and byte offset (24 bytes a nucleus) is built once, and a
tile reads only the lines of the nuclei it shows, so a slide with a million nuclei is drawn
without holding their outlines in memory. Outlines are drawn where a screen pixel covers at
most ``OUTLINE_MAX_SCALE`` slide pixels; coarser tiles are transparent (the density layer
shows the slide's overview).
"""

from __future__ import annotations

import io
import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw

from medsight.io.slide import Slide

__all__ = [
    "OUTLINE_MAX_SCALE",
    "TILE",
    "DeepZoom",
    "OutlineIndex",
    "density_png",
]

TILE = 256
#: outlines are drawn on tiles where one tile pixel covers at most this many slide pixels
OUTLINE_MAX_SCALE = 4
#: a tile is refused rather than read from more than this many slide pixels (a pyramid
#: without coarse levels would otherwise read the whole slide for an overview tile)
MAX_READ_PIXELS = 4096 * 4096
_OUTLINE_RGBA = (0, 255, 90, 255)


class DeepZoom:
    """Deep Zoom geometry and tiles of an open slide (reads are serialised: the readers
    are not documented as thread-safe)."""

    def __init__(self, slide: Slide) -> None:
        self.slide = slide
        first = slide.levels[0]
        self.width, self.height = first.width, first.height
        self.top = max(0, math.ceil(math.log2(max(self.width, self.height))))
        self._lock = threading.Lock()

    def dzi(self, image_format: str) -> str:
        """The DZI descriptor (XML) OpenSeadragon opens."""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
            f'Format="{image_format}" Overlap="0" TileSize="{TILE}">'
            f'<Size Width="{self.width}" Height="{self.height}"/></Image>\n'
        )

    def scale(self, level: int) -> int:
        """Slide (level-0) pixels per pixel of Deep Zoom ``level``."""
        return 2 ** (self.top - level)

    def tile_box(self, level: int, column: int, row: int) -> tuple[int, int, int, int]:
        """(x, y, width, height) of a tile in level-0 pixels; LookupError outside."""
        if not 0 <= level <= self.top:
            raise LookupError(f"no Deep Zoom level {level} (levels 0-{self.top})")
        scale = self.scale(level)
        columns = math.ceil(math.ceil(self.width / scale) / TILE)
        rows = math.ceil(math.ceil(self.height / scale) / TILE)
        if not (0 <= column < columns and 0 <= row < rows):
            raise LookupError(f"no tile {column}_{row} at level {level} ({columns}x{rows})")
        x, y = column * TILE * scale, row * TILE * scale
        return x, y, min(TILE * scale, self.width - x), min(TILE * scale, self.height - y)

    def tile_size(self, level: int, box: tuple[int, int, int, int]) -> tuple[int, int]:
        scale = self.scale(level)
        return max(1, math.ceil(box[2] / scale)), max(1, math.ceil(box[3] / scale))

    def tile(self, level: int, column: int, row: int) -> bytes:
        """A JPEG tile: read from the finest pyramid level that is not finer than needed."""
        box = self.tile_box(level, column, row)
        size = self.tile_size(level, box)
        scale = self.scale(level)
        chosen = max(
            (lv for lv in self.slide.levels if lv.downsample <= scale * 1.001),
            key=lambda lv: lv.downsample,
        )
        read = (
            min(chosen.width, max(1, round(box[2] / chosen.downsample))),
            min(chosen.height, max(1, round(box[3] / chosen.downsample))),
        )
        if read[0] * read[1] > MAX_READ_PIXELS:
            raise LookupError(f"the slide has no pyramid level coarse enough for level {level}")
        with self._lock:
            region = self.slide.read_region((box[0], box[1]), chosen.index, read)
        pixels = np.ascontiguousarray(region.array.transpose(2, 1, 0)).astype(np.uint8)
        picture = PILImage.fromarray(pixels, "RGB")
        if picture.size != size:
            picture = picture.resize(size, PILImage.Resampling.LANCZOS)
        out = io.BytesIO()
        picture.save(out, "JPEG", quality=85)
        return out.getvalue()


@dataclass(frozen=True)
class OutlineIndex:
    """Where each nucleus of a QuPath GeoJSON (one feature a line) lies and is stored."""

    path: Path
    boxes: np.ndarray  # (n, 4) float32: x0, y0, x1, y1 in level-0 pixels
    offsets: np.ndarray  # (n,) int64: byte offset of each nucleus's line

    @classmethod
    def build(cls, path: Path) -> OutlineIndex:
        boxes: list[tuple[float, float, float, float]] = []
        offsets: list[int] = []
        with path.open("rb") as lines:
            offset = 0
            for line in lines:
                ring = _ring(line)
                if ring is not None and len(ring):
                    boxes.append((*ring.min(axis=0), *ring.max(axis=0)))
                    offsets.append(offset)
                offset += len(line)
        return cls(
            path,
            np.asarray(boxes, np.float32).reshape(-1, 4),
            np.asarray(offsets, np.int64),
        )

    def rings_in(self, box: tuple[int, int, int, int]) -> list[np.ndarray]:
        """The outlines (level-0 pixels) of the nuclei whose boxes meet ``box``."""
        x, y, width, height = box
        b = self.boxes
        hit = (b[:, 2] >= x) & (b[:, 0] <= x + width) & (b[:, 3] >= y) & (b[:, 1] <= y + height)
        rings = []
        with self.path.open("rb") as source:
            for offset in self.offsets[hit]:
                source.seek(int(offset))
                ring = _ring(source.readline())
                if ring is not None:
                    rings.append(ring)
        return rings

    def tile(self, zoom: DeepZoom, level: int, column: int, row: int) -> bytes:
        """A transparent PNG tile with the nuclei's outlines drawn in (none when coarse)."""
        box = zoom.tile_box(level, column, row)
        size = zoom.tile_size(level, box)
        scale = zoom.scale(level)
        picture = PILImage.new("RGBA", size, (0, 0, 0, 0))
        if scale <= OUTLINE_MAX_SCALE:
            draw = ImageDraw.Draw(picture)
            width = 2 if scale == 1 else 1
            for ring in self.rings_in(box):
                points = (ring - (box[0], box[1])) / scale
                draw.line([tuple(p) for p in points], fill=_OUTLINE_RGBA, width=width)
        out = io.BytesIO()
        picture.save(out, "PNG", optimize=False)
        return out.getvalue()


def _ring(line: bytes) -> np.ndarray | None:
    """The outer ring of the one feature on a GeoJSON line (None: not a feature line)."""
    text = line.strip().rstrip(b",")
    if not text.startswith(b'{"type":"Feature"'):
        return None
    try:
        feature = json.loads(text)
        return np.asarray(feature["geometry"]["coordinates"][0], np.float32)
    except (ValueError, KeyError, IndexError, TypeError):  # a damaged line is not drawn
        return None


def density_png(density_map: Path, *, max_side: int = 2048) -> bytes:
    """The 8-bit density map as a coloured, see-through PNG (low density clear, high
    density opaque red-yellow), enlarged without smoothing so each cell stays a square."""
    import matplotlib

    values = np.asarray(PILImage.open(density_map).convert("L"), np.float32) / 255.0
    colour = matplotlib.colormaps["inferno"](values, bytes=True)
    colour[..., 3] = np.round(np.clip(values * 1.6, 0, 1) * 220).astype(np.uint8)
    colour[values <= 0, 3] = 0
    picture = PILImage.fromarray(colour, "RGBA")
    factor = max(1, max_side // max(picture.size))
    picture = picture.resize(
        (picture.width * factor, picture.height * factor), PILImage.Resampling.NEAREST
    )
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue()
