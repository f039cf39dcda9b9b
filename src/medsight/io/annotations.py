"""Nucleus contour annotations: polygons in, instance maps out.

The GBM40 tiles (Kong et al., ISBI 2016) carry their nucleus outlines as iPhotoDraw XML:
one ``<Shape>`` per nucleus with ``<Point X= Y=>`` vertices in pixel units (X = column,
Y = row, origin at the top-left pixel's corner). They become an instance map: 0 background,
1..n one id per nucleus, in shape order; where two outlines overlap, the later shape keeps
the shared pixels (the annotation tool draws later shapes on top). A pixel belongs to a
polygon when its centre lies inside (scikit-image's polygon rasterisation), so an outline
traced along pixel edges does not grow by half a pixel.

From an instance map, training targets are three classes: 0 background, 1 nucleus
interior, 2 nucleus boundary (an instance's pixels next to background or to another
instance), the "three-class" target of Caicedo et al. (Cytometry A 2019) that lets a
semantic network keep touching nuclei apart.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from medsight.errors import InvalidInputError

__all__ = [
    "CONTOUR_SUFFIXES",
    "instance_classes",
    "rasterize_instances",
    "read_contour_xml",
]

CONTOUR_SUFFIXES = (".xml",)

#: label values of :func:`instance_classes`
BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2


def read_contour_xml(path: str | Path) -> list[np.ndarray]:
    """Every polygon of an iPhotoDraw XML file as a float array (n, 2) of (x, y) = (column,
    row). A shape without points (left behind by the drawing tool: GBM40 has three) is
    skipped; one with one or two points is refused, naming the file and the shape."""
    path = Path(path)
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as exc:
        raise InvalidInputError(f"cannot read the contour XML ({exc})", path=path) from exc
    polygons: list[np.ndarray] = []
    problems: list[str] = []
    for number, shape in enumerate(root.iter("Shape"), start=1):
        try:
            points = [
                (float(point.attrib["X"]), float(point.attrib["Y"]))
                for point in shape.iter("Point")
            ]
        except (KeyError, ValueError):
            problems.append(f"shape {number} has a point without numeric X and Y")
            continue
        if not points:
            continue
        if len(points) < 3:
            problems.append(f"shape {number} has {len(points)} point(s), a contour needs 3")
            continue
        polygons.append(np.asarray(points, dtype=np.float64))
    if problems:
        shown = "; ".join(problems[:8])
        raise InvalidInputError(f"{path.name}: {len(problems)} bad contour(s): {shown}", path=path)
    return polygons


def rasterize_instances(
    polygons: list[np.ndarray], shape: tuple[int, int], *, source: str | Path = ""
) -> np.ndarray:
    """A uint16 instance map (rows, columns) of ``shape`` from (x, y) polygons. A polygon
    wholly outside the image is refused (its annotation belongs to another image); parts
    outside are cut off at the image edge."""
    from skimage.draw import polygon as fill_polygon

    rows, columns = shape
    if len(polygons) > np.iinfo(np.uint16).max:
        raise InvalidInputError(f"{len(polygons)} contours exceed a 16-bit instance map")
    instances = np.zeros(shape, dtype=np.uint16)
    outside = []
    for number, points in enumerate(polygons, start=1):
        x, y = points[:, 0], points[:, 1]
        # pixel centres sit at integer coordinates + 0.5 in the outline's frame
        rr, cc = fill_polygon(y - 0.5, x - 0.5, shape=(rows, columns))
        if len(rr) == 0:
            if x.max() < 0 or y.max() < 0 or x.min() > columns or y.min() > rows:
                outside.append(number)
            continue  # a sliver narrower than a pixel centre
        instances[rr, cc] = number
    if outside:
        shown = ", ".join(str(n) for n in outside[:8])
        raise InvalidInputError(
            f"{Path(source).name + ': ' if source else ''}{len(outside)} contour(s) lie "
            f"outside the {columns}x{rows} image (shape {shown})",
            path=Path(source) if source else None,
        )
    return instances


def instance_classes(instances: np.ndarray) -> np.ndarray:
    """Three-class target (uint8) from an instance map: background, interior, boundary."""
    from skimage.segmentation import find_boundaries

    classes = np.where(instances > 0, INTERIOR, BACKGROUND).astype(np.uint8)
    classes[find_boundaries(instances, mode="inner") & (instances > 0)] = BOUNDARY
    return classes
