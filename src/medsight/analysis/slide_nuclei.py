"""Nuclei over a whole slide: tissue-only tiles at the model's resolution, each nucleus
counted once, in memory bounded by the tile size whatever the slide's size.

The slide is cut into core tiles of ``tile`` model pixels; each is read with a ``margin``
on every side, so a nucleus on a core's edge is seen whole by the tile whose core holds its
centroid, and by that tile only (the others drop it). Tiles are chosen on a tissue mask of
the slide's smallest level; background tiles are never decoded. Only one tile's pixels
and probabilities are held at a time: nucleus outlines stream to a GeoJSON file as they are
found, and the running totals are each nucleus's area and centroid (24 bytes a nucleus).

Coordinates follow QuPath's GeoJSON: level-0 pixels, x to the right, y down. Findings and
the density map give slide millimetres from the slide's top-left corner.
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from medsight.errors import InvalidInputError
from medsight.findings.measurements import Measurement
from medsight.findings.pathology import nucleus_summary
from medsight.gate import InputGate
from medsight.imaging.tissue import (
    FOCUS_FLOOR,
    QualityRegion,
    focus,
    quality_regions,
    slide_tissue,
    tissue_fraction,
    tissue_mask,
)
from medsight.inference.predictor import Predictor
from medsight.io.slide import Slide
from medsight.tasks.task import Task

__all__ = ["SlideNuclei", "analyse_slide_nuclei", "read_roi"]

#: a core tile with less tissue than this (on the mask) is not analysed
MIN_TISSUE = 0.02
#: tiles the tile gate judges (those at least half tissue, in slide order): enough to tell an
#: H&E slide from another kind of image, few enough to cost little
GATE_TILES = 8


@dataclass
class SlideNuclei:
    """What the slide analysis found (areas in um2 where the slide states its mpp)."""

    level: int
    mpp: float | None  # the slide's level-0 micrometres per pixel (None: not stated)
    model_mpp: float
    tile: int  # core tile side, level-0 pixels
    margin: int
    tiles_total: int
    tiles_with_tissue: int
    tiles_analysed: int
    tissue_area: float  # mm2 (or level-0 pixels)
    areas: np.ndarray
    centroids: np.ndarray  # (n, 2) level-0 pixels (x, y)
    density: np.ndarray  # per density cell: nuclei per mm2 of tissue (NaN: too little tissue)
    density_cell: int  # level-0 pixels a density cell's side
    geojson: Path
    notes: list[str] = field(default_factory=list)
    quality: list[QualityRegion] = field(default_factory=list)
    # the tile gate on up to GATE_TILES tissue tiles: each withheld tile's first reason
    gate_judged: int = 0
    gate_withheld: list[str] = field(default_factory=list)
    left_out: int = 0  # nuclei found under pen marks or in folds, not counted

    @property
    def known(self) -> bool:
        return self.mpp is not None

    def measurements(self) -> list[Measurement]:
        return nucleus_summary(self.areas, self.tissue_area, known=self.known)


def read_roi(path: Path) -> Any:
    """A region of interest from GeoJSON (a geometry, Feature or FeatureCollection, in
    level-0 pixels as QuPath writes them) as one shapely geometry."""
    from shapely.geometry import shape
    from shapely.ops import unary_union

    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read the region of interest ({exc})", path=path) from exc
    features = (
        document.get("features", []) if document.get("type") == "FeatureCollection" else [document]
    )
    shapes = []
    for number, feature in enumerate(features, start=1):
        geometry = feature.get("geometry", feature) if isinstance(feature, dict) else None
        try:
            polygon = shape(geometry)
        except Exception as exc:  # shapely raises several types for bad geometry
            raise InvalidInputError(
                f"region of interest feature {number} is not a geometry ({exc})", path=path
            ) from exc
        if polygon.area <= 0:
            raise InvalidInputError(
                f"region of interest feature {number} has no area (a polygon is needed)",
                path=path,
            )
        shapes.append(polygon)
    if not shapes:
        raise InvalidInputError("the region of interest holds no polygon", path=path)
    return unary_union(shapes)


def _level_for(slide: Slide, model_mpp: float) -> tuple[int, float]:
    """The level to read (its pixels no coarser than the model's) and level-0 pixels per
    model pixel; a slide without mpp is taken at the model's resolution on level 0."""
    if slide.mpp is None:
        return 0, 1.0
    wanted = model_mpp / slide.mpp[0]
    level = 0
    for info in slide.levels:  # finest to coarsest: the last one not coarser than wanted
        if info.downsample <= wanted * 1.01:
            level = info.index
    return level, wanted


def _core_tiles(
    width: int, height: int, tile: int, mask: np.ndarray, scale: float, roi: Any
) -> Iterator[tuple[int, int, float]]:
    """Each core tile's level-0 corner and tissue fraction (inside the ROI, if any)."""
    from shapely.geometry import box

    for y in range(0, height, tile):
        for x in range(0, width, tile):
            if roi is not None and not roi.intersects(box(x, y, x + tile, y + tile)):
                continue
            yield x, y, tissue_fraction(mask, scale, x, y, tile, tile)


#: the window the tile gate judges: a tile's size in training (GBM40, 512 pixels), all tissue
GATE_WINDOW = 512
_GATE_TISSUE = 0.95


def _gate_window(
    slide: Slide,
    region: Any,
    tissue: np.ndarray,
    level: int,
    predictor: Predictor,
    gate: InputGate,
) -> str | None:
    """The tile gate on the first window of GATE_WINDOW level pixels in ``region`` that is
    all tissue (the gate was fitted on whole tissue tiles: glass would read as out of
    distribution; ``tissue`` is the region's (i, j) mask): "" when it passes, its first reason
    when it withholds, None when no window is all tissue."""
    width, height = tissue.shape
    side = GATE_WINDOW
    step = side // 2
    for j in range(0, max(1, height - side + 1), step):
        for i in range(0, max(1, width - side + 1), step):
            window = tissue[i : i + side, j : j + side]
            if window.shape != (side, side) or window.mean() < _GATE_TISSUE:
                continue
            x0, y0 = region.metadata["location"]
            downsample = slide.levels[level].downsample
            at = (round(x0 + i * downsample), round(y0 + j * downsample))
            crop = slide.read_region(at, level, (side, side))
            checked, _ = gate.before_model(crop)
            gate.with_model(checked, predictor.predict(crop), crop, predictor)
            return checked.withhold_reasons[0] if checked.withheld else ""
    return None


def _contour(instance: np.ndarray, offset: tuple[float, float], step: float) -> list[list[float]]:
    """The outline of one instance's boolean crop (i, j) as a closed ring of level-0 (x, y)."""
    from skimage.measure import find_contours

    padded = np.pad(instance, 1)
    rings = find_contours(padded.astype(np.float32), 0.5)
    ring = max(rings, key=len)
    # padded crop indices (pixel centres at integers) -> level-0 image coordinates, where the
    # top-left corner of the first pixel is 0, 0 (QuPath's and DICOM's): a pixel centre of
    # the crop is ``offset`` + (index + 0.5) x ``step``
    points = [
        [round(offset[0] + (i - 0.5) * step, 2), round(offset[1] + (j - 0.5) * step, 2)]
        for i, j in ring
    ]
    if points[0] != points[-1]:
        points.append(points[0])
    return points


def _write_feature(
    out: IO[str], first: bool, ring: list[list[float]], area: float, unit: str
) -> None:
    feature = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "objectType": "detection",
            "classification": {"name": "Nucleus", "color": [0, 90, 200]},
            "measurements": {f"Area {unit}": round(area, 2)},
        },
    }
    out.write(("" if first else ",\n") + json.dumps(feature, separators=(",", ":")))


def analyse_slide_nuclei(
    slide: Slide,
    task: Task,
    predictor: Predictor,
    geojson: Path,
    *,
    tile: int = 1024,
    margin: int = 48,
    density_cell_um: float = 100.0,
    roi: Any = None,
    gate: InputGate | None = None,
) -> SlideNuclei:
    """Nuclei of the slide's tissue (within ``roi``, a shapely geometry in level-0 pixels);
    ``tile`` and ``margin`` in model pixels. Outlines go to ``geojson`` as they are found.
    With ``gate``, the task's tile gate judges the first GATE_TILES tiles of mostly tissue."""
    from shapely import contains_xy
    from skimage.measure import regionprops

    options = task.spec.instances
    if options is None or options.mpp is None:
        raise InvalidInputError(f"task {task.id} does not count nuclei ([instances] with mpp)")
    level, per_model_pixel = _level_for(slide, options.mpp)
    downsample = slide.levels[level].downsample
    core = max(1, round(tile * per_model_pixel))
    border = max(1, round(margin * per_model_pixel))
    width, height = slide.levels[0].width, slide.levels[0].height
    tissue = slide_tissue(slide, assumed_mpp=options.mpp)
    mask, mask_scale = tissue.mask, tissue.scale
    regions = [
        region
        for kind, found in tissue.artefacts.items()
        for region in quality_regions(found, kind, mask_scale)
    ]
    # nuclei under ink or in a fold are not counted (their tissue is not in the tissue area)
    left_out = np.zeros_like(mask)
    for kind in ("pen mark", "fold"):
        if kind in tissue.artefacts:
            left_out |= tissue.artefacts[kind]
    cell = max(1, round(density_cell_um / (slide.mpp[0] if slide.mpp else options.mpp)))
    cell_rows, cell_columns = math.ceil(height / cell), math.ceil(width / cell)
    counts = np.zeros((cell_rows, cell_columns), np.int64)
    pixel_um = (slide.mpp[0] * downsample) if slide.mpp else downsample
    # compact running lists: 24 bytes a nucleus, whatever the slide
    areas, centre_x, centre_y = array("d"), array("d"), array("d")
    totals = {"total": 0, "tissue": 0, "analysed": 0, "left out": 0}
    judged, withheld = 0, []
    notes: list[str] = list(slide.notes)  # e.g. missing tiles of a sparse DICOM pyramid
    geojson.parent.mkdir(parents=True, exist_ok=True)
    first = True
    with geojson.open("w") as out:
        out.write('{"type":"FeatureCollection","features":[\n')
        for x, y, fraction in _core_tiles(width, height, core, mask, mask_scale, roi):
            totals["total"] += 1
            if fraction < MIN_TISSUE:
                continue
            totals["tissue"] += 1
            x0, y0 = max(0, x - border), max(0, y - border)
            x1, y1 = min(width, x + core + border), min(height, y + core + border)
            size = (math.ceil((x1 - x0) / downsample), math.ceil((y1 - y0) / downsample))
            try:
                region = slide.read_region((x0, y0), level, size)
                instances = predictor.predict(region).instance_map
                on_tissue = tissue_mask(region.array[:3])  # once a tile: focus and gate read it
                if gate is not None and judged < GATE_TILES:
                    reason = _gate_window(slide, region, on_tissue, level, predictor, gate)
                    if reason is not None:
                        judged += 1
                        if reason:
                            withheld.append(reason)
                # focus at the model's resolution, where its floor was measured, over tissue
                sharpness = focus(region.array, downsample / per_model_pixel, on_tissue)
                if sharpness is not None and sharpness < FOCUS_FLOOR:
                    regions.append(
                        QualityRegion("out of focus", (x, y, x + core, y + core), core * core)
                    )
            except Exception as exc:  # a corrupt tile: said, and the rest still analysed
                notes.append(f"tile at x={x}, y={y} (level-0 pixels) not analysed: {exc}")
                continue
            totals["analysed"] += 1
            if instances is None:
                continue
            for nucleus in regionprops(instances):
                ci, cj = nucleus.centroid
                # image coordinates of the centroid (pixel centres at index + 0.5)
                cx, cy = x0 + (ci + 0.5) * downsample, y0 + (cj + 0.5) * downsample
                if not (x <= cx < x + core and y <= cy < y + core):
                    continue  # its centroid lies in a neighbour's core: counted there
                if roi is not None and not contains_xy(roi, cx, cy):
                    continue
                row = min(int(cy / mask_scale), left_out.shape[0] - 1)
                if left_out[row, min(int(cx / mask_scale), left_out.shape[1] - 1)]:
                    totals["left out"] += 1
                    continue
                area = float(nucleus.area) * pixel_um * pixel_um
                i0, j0, _, _ = nucleus.bbox
                ring = _contour(
                    nucleus.image, (x0 + i0 * downsample, y0 + j0 * downsample), downsample
                )
                _write_feature(out, first, ring, area, "um2" if slide.mpp else "px2")
                first = False
                areas.append(area)
                centre_x.append(cx)
                centre_y.append(cy)
                counts[
                    min(int(cy // cell), cell_rows - 1), min(int(cx // cell), cell_columns - 1)
                ] += 1
        out.write("\n]}\n")
    tissue_cells = _tissue_per_cell(mask, mask_scale, cell, (cell_rows, cell_columns), roi)
    tissue_pixels = float(tissue_cells.sum())
    level0_um = slide.mpp[0] if slide.mpp else 1.0
    tissue_area = tissue_pixels * level0_um**2 / 1e6 if slide.mpp else tissue_pixels
    cell_tissue = tissue_cells * (level0_um**2 / 1e6 if slide.mpp else 1e-6)
    with np.errstate(invalid="ignore", divide="ignore"):
        density = np.where(
            tissue_cells >= 0.25 * cell * cell, counts / np.maximum(cell_tissue, 1e-12), np.nan
        )
    return SlideNuclei(
        level=level,
        mpp=slide.mpp[0] if slide.mpp else None,
        model_mpp=options.mpp,
        tile=core,
        margin=border,
        tiles_total=totals["total"],
        tiles_with_tissue=totals["tissue"],
        tiles_analysed=totals["analysed"],
        tissue_area=tissue_area,
        areas=np.frombuffer(areas, dtype=np.float64),
        centroids=np.stack(
            [np.frombuffer(centre_x, dtype=np.float64), np.frombuffer(centre_y, dtype=np.float64)],
            axis=1,
        ),
        density=density,
        density_cell=cell,
        geojson=geojson,
        notes=notes,
        quality=regions,
        gate_judged=judged,
        gate_withheld=withheld,
        left_out=totals["left out"],
    )


def _tissue_per_cell(
    mask: np.ndarray, scale: float, cell: int, shape: tuple[int, int], roi: Any
) -> np.ndarray:
    """Level-0 tissue pixels in each density cell, from the mask (within the ROI)."""
    rows, columns = np.nonzero(mask)
    if roi is not None and len(rows):
        from shapely import contains_xy

        inside = contains_xy(roi, (columns + 0.5) * scale, (rows + 0.5) * scale)
        rows, columns = rows[inside], columns[inside]
    tissue = np.zeros(shape, np.float64)
    r = np.minimum(((rows + 0.5) * scale // cell).astype(int), shape[0] - 1)
    c = np.minimum(((columns + 0.5) * scale // cell).astype(int), shape[1] - 1)
    np.add.at(tissue, (r, c), scale * scale)
    return tissue


#: density hotspots reported as findings, at least this many density cells apart
HOTSPOTS = 3
_HOTSPOT_SPACING = 3


def density_hotspots(result: SlideNuclei) -> list[tuple[int, int, float]]:
    """The highest-density regions: (row, column) of a density cell and the mean density of
    its 3 x 3 neighbourhood (cells with too little tissue left out), best first."""
    from scipy import ndimage

    density = result.density
    valid = np.isfinite(density)
    if not valid.any():
        return []
    values = np.where(valid, density, 0.0)
    weights = ndimage.uniform_filter(valid.astype(np.float64), 3, mode="constant")
    smoothed = ndimage.uniform_filter(values, 3, mode="constant") / np.maximum(weights, 1e-9)
    smoothed[~valid] = -np.inf
    found: list[tuple[int, int, float]] = []
    for flat in np.argsort(smoothed, axis=None)[::-1]:
        row, column = divmod(int(flat), density.shape[1])
        if not np.isfinite(smoothed[row, column]) or len(found) == HOTSPOTS:
            break
        if all(max(abs(row - r), abs(column - c)) >= _HOTSPOT_SPACING for r, c, _ in found):
            found.append((row, column, float(smoothed[row, column])))
    return found
