"""Nucleus contour annotations (iPhotoDraw XML) become instance maps and training targets."""

from __future__ import annotations

import numpy as np
import pytest

from medsight.errors import InvalidInputError
from medsight.evaluation.cases import Case, read_case_instances, read_case_mask
from medsight.io import read_image
from medsight.io.annotations import (
    BOUNDARY,
    INTERIOR,
    instance_classes,
    rasterize_instances,
    read_contour_xml,
)
from tests.conftest import require_data


def _xml(shapes: list[list[tuple[float, float]]]) -> str:
    body = "".join(
        '<Shape Type="SmoothPolygon"><Data><Points>'
        + "".join(f'<Point X="{x}" Y="{y}" />' for x, y in points)
        + "</Points></Data></Shape>"
        for points in shapes
    )
    layers = f"<Layers><Layer><Shapes>{body}</Shapes></Layer></Layers>"
    return f'<Document FileVersion="1.0">{layers}</Document>'


def _square(x0: float, y0: float, side: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x0 + side, y0), (x0 + side, y0 + side), (x0, y0 + side)]


def test_polygons_are_read_in_pixel_units_and_empty_shapes_skipped(tmp_path):
    path = tmp_path / "tile_data.xml"
    path.write_text(_xml([_square(2, 3, 4), [], _square(10, 10, 2)]))
    polygons = read_contour_xml(path)
    assert len(polygons) == 2
    np.testing.assert_allclose(polygons[0][1], [6, 3])  # (x, y) = (column, row)


def test_a_contour_of_two_points_is_refused_naming_the_file_and_shape(tmp_path):
    path = tmp_path / "bad_data.xml"
    path.write_text(_xml([_square(2, 3, 4), [(1, 1), (2, 2)]]))
    with pytest.raises(InvalidInputError, match=r"bad_data\.xml: 1 bad contour.*shape 2 has 2"):
        read_contour_xml(path)


def test_unreadable_xml_is_refused(tmp_path):
    path = tmp_path / "cut_data.xml"
    path.write_text("<Document><Shape>")
    with pytest.raises(InvalidInputError, match="cannot read the contour XML"):
        read_contour_xml(path)


def test_rasterised_square_covers_the_pixels_whose_centres_lie_inside():
    # a 4 x 4 pixel square traced along pixel edges: exactly 16 pixels, rows 3-6, columns 2-5
    instances = rasterize_instances([np.array(_square(2, 3, 4), float)], (12, 12))
    rows, columns = np.nonzero(instances)
    assert len(rows) == 16
    assert (rows.min(), rows.max(), columns.min(), columns.max()) == (3, 6, 2, 5)


def test_the_later_outline_keeps_shared_pixels():
    first = np.array(_square(0, 0, 6), float)
    second = np.array(_square(4, 0, 6), float)
    instances = rasterize_instances([first, second], (8, 12))
    assert instances[2, 5] == 2 and instances[2, 3] == 1
    assert (instances == 1).sum() == 4 * 6  # the overlap went to the second


def test_an_outline_outside_the_image_is_refused():
    far = np.array(_square(100, 100, 5), float)
    with pytest.raises(InvalidInputError, match=r"1 contour.*outside the 20x10 image"):
        rasterize_instances([far], (10, 20), source="tile.xml")


def test_three_classes_mark_each_rim_also_between_touching_nuclei():
    instances = np.zeros((10, 16), np.uint16)
    instances[2:8, 2:8] = 1
    instances[2:8, 8:14] = 2  # touching along a column
    classes = instance_classes(instances)
    assert classes[5, 7] == BOUNDARY and classes[5, 8] == BOUNDARY  # both sides of the contact
    assert classes[5, 5] == INTERIOR and classes[0, 0] == 0
    assert classes[2, 4] == BOUNDARY  # an outer rim


def test_gbm40_tile_gives_an_instance_map_on_the_image_grid():
    folder = require_data("pathology-gbm40")
    case = Case(
        folder / "raw_image" / "01.png",
        "01",
        mask=folder / "contour_annotation_xml" / "01_data.xml",
    )
    image = read_image(case.path)
    instances = read_case_instances(case, image)
    assert instances.shape == image.shape  # (i, j) = (column, row)
    assert 90 <= len(np.unique(instances)) - 1 <= 102  # 102 shapes, 3 empty, some overlap
    target = read_case_mask(case, image).array[0]
    assert set(np.unique(target).tolist()) == {0, 1, 2}
    # the first outline starts at column 170, row 0 (top edge): i = column, j = row
    assert instances[178, 2] > 0
