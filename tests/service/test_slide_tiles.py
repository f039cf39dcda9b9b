"""Deep Zoom tiles of a slide and of its nucleus outlines (service/viewer/slide_tiles.py) on a
pyramidal TIFF of real GBM40 tiles, without the service: the geometry at the slide's edges,
tiles read from the right pyramid level, outlines found by their boxes and drawn only when
zoomed in, the density map's colours, and the vendored viewer library's checksums."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from medsight.io.slide import open_slide
from medsight.service.viewer import slide_tiles
from medsight.service.viewer.slide_tiles import DeepZoom, OutlineIndex, density_png
from tests.conftest import require_data


@pytest.fixture(scope="module")
def canvas() -> np.ndarray:
    """1,000 x 700 pixels (not powers of two: the edge tiles are partial) of GBM40 tiles
    01-04 in a square."""
    folder = require_data("pathology-gbm40", "raw_image")
    tiles = [np.asarray(PILImage.open(folder / f"0{n}.png").convert("RGB")) for n in "1234"]
    rows = [np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)]
    return np.concatenate(rows, axis=0)[:700, :1000].copy()


def _pyramid(path: Path, canvas: np.ndarray, levels: int) -> Path:
    import tifffile

    with tifffile.TiffWriter(path) as tif:
        for index in range(levels):
            extra: dict = {"subifds": levels - 1} if index == 0 else {"subfiletype": 1}
            level = canvas[:: 2**index, :: 2**index]
            tif.write(level, tile=(256, 256), photometric="rgb", **extra)
    return path


@pytest.fixture(scope="module")
def slide_path(canvas, tmp_path_factory) -> Path:
    return _pyramid(tmp_path_factory.mktemp("dz") / "slide.tif", canvas, 3)


def _decoded(payload: bytes) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(payload)))


def test_geometry_and_edges(slide_path):
    with open_slide(slide_path) as slide:
        zoom = DeepZoom(slide)
        assert zoom.top == 10  # 2**10 = 1024 >= 1000
        assert 'Width="1000" Height="700"' in zoom.dzi("jpeg")
        # the last column and row of full-resolution tiles are partial
        assert zoom.tile_box(10, 3, 2) == (768, 512, 232, 188)
        assert _decoded(zoom.tile(10, 3, 2)).shape == (188, 232, 3)
        # one level down: 500 x 350 pixels, two columns and two rows
        assert zoom.tile_box(9, 1, 1) == (512, 512, 488, 188)
        for bad in ((11, 0, 0), (10, 4, 0), (10, 0, 3), (-1, 0, 0), (9, 2, 0)):
            with pytest.raises(LookupError):
                zoom.tile_box(*bad)
        assert _decoded(zoom.tile(0, 0, 0)).shape == (1, 1, 3)


def test_full_resolution_tiles_are_the_slide_pixels(slide_path, canvas):
    with open_slide(slide_path) as slide:
        zoom = DeepZoom(slide)
        tile = _decoded(zoom.tile(10, 1, 1)).astype(int)
        assert np.abs(tile - canvas[256:512, 256:512].astype(int)).mean() < 6  # JPEG
        # a quarter-resolution tile comes from the pyramid's quarter level
        coarse = _decoded(zoom.tile(8, 0, 0)).astype(int)
        assert coarse.shape == (175, 250, 3)
        assert np.abs(coarse - canvas[::4, ::4].astype(int)).mean() < 8


def test_a_pyramid_without_coarse_levels_refuses_overview_tiles(canvas, tmp_path, monkeypatch):
    monkeypatch.setattr(slide_tiles, "MAX_READ_PIXELS", 256 * 256)
    with open_slide(_pyramid(tmp_path / "two-levels.tif", canvas, 2)) as slide:
        zoom = DeepZoom(slide)
        zoom.tile(10, 0, 0)  # a full-resolution tile: 256 x 256 pixels read
        with pytest.raises(LookupError, match="no pyramid level coarse enough"):
            zoom.tile(8, 0, 0)  # 500 x 350 half-level pixels for one quarter tile


def _geojson(path: Path, rings: list[list[list[float]]]) -> None:
    with path.open("w") as out:
        out.write('{"type":"FeatureCollection","features":[\n')
        for k, ring in enumerate(rings):
            feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}}
            out.write(("" if k == 0 else ",\n") + json.dumps(feature, separators=(",", ":")))
        out.write(',\n{"type":"Feature","geometry":{broken\n')  # a damaged line
        out.write("\n]}\n")


def _square(x: float, y: float, side: float) -> list[list[float]]:
    return [[x, y], [x + side, y], [x + side, y + side], [x, y + side], [x, y]]


def test_outlines_are_found_by_their_boxes_and_drawn_only_when_zoomed_in(slide_path, tmp_path):
    path = tmp_path / "nuclei.geojson"
    _geojson(path, [_square(10, 10, 20), _square(250, 250, 12), _square(900, 600, 30)])
    index = OutlineIndex.build(path)
    assert len(index.boxes) == 3  # the damaged line is skipped
    assert len(index.rings_in((0, 0, 256, 256))) == 2  # the second square touches 256
    assert len(index.rings_in((800, 500, 200, 200))) == 1
    with open_slide(slide_path) as slide:
        zoom = DeepZoom(slide)
        tile = _decoded(index.tile(zoom, 10, 0, 0))
        assert tile.shape == (256, 256, 4)
        assert tile[10, 10:31, 3].all() and not tile[20, 20, 3]  # the outline, not the inside
        assert not _decoded(index.tile(zoom, 10, 2, 0))[..., 3].any()  # no nucleus there
        assert _decoded(index.tile(zoom, 8, 0, 0))[..., 3].any()  # a quarter: still drawn
        assert not _decoded(index.tile(zoom, 7, 0, 0))[..., 3].any()  # an eighth: not


def test_density_map_is_clear_where_empty_and_cells_stay_square(tmp_path):
    path = tmp_path / "density.png"
    values = np.array([[0, 64], [128, 255]], np.uint8)
    PILImage.fromarray(values).save(path)
    picture = _decoded(density_png(path, max_side=64))
    assert picture.shape == (64, 64, 4)
    alpha = picture[..., 3]
    assert alpha[:32, :32].max() == 0 and alpha[40, 40] > alpha[40, 10] > alpha[10, 40] > 0
    assert len(np.unique(alpha[:32, 32:])) == 1  # nearest: a cell is one colour


def test_the_vendored_viewer_library_matches_its_record():
    script = Path(__file__).parents[2] / "scripts" / "vendor_ui.py"
    checked = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout
    vendor = Path(slide_tiles.__file__).parent / "static" / "vendor"
    manifest = json.loads((vendor / "VENDOR.json").read_text())
    (entry,) = manifest.values()
    assert entry["npm"].startswith("openseadragon@") and "LICENSE.txt" in entry["files"]


def test_a_withheld_slide_shows_no_layers(slide_path, tmp_path):
    from medsight.service.viewer.slide_page import slide_info

    (tmp_path / "masks").mkdir()
    _geojson(tmp_path / "masks" / "n.geojson", [_square(10, 10, 20)])
    PILImage.fromarray(np.full((4, 5), 200, np.uint8)).save(tmp_path / "d.png")
    finding = {
        "name": "nucleus_density_hotspot",
        "location": {"voxel": [100, 50], "lps_mm": [0.05, 0.025, 0]},
        "measurements": [{"value": 900.0, "unit": "/mm2"}],
    }
    record = {
        "slide": {"geojson": "masks/n.geojson", "density_map": "d.png", "density_cell_px": 200},
        "findings": [finding],
    }
    with open_slide(slide_path) as slide:
        zoom = DeepZoom(slide)
        shown = slide_info(zoom, record, tmp_path)
        assert shown["outlines"] and shown["density"]["width"] == pytest.approx(1.0)
        assert shown["hotspots"][0]["x"] == pytest.approx(0.1)
        hidden = slide_info(zoom, {**record, "withheld": True}, tmp_path)
        assert not hidden["outlines"] and hidden["density"] is None and not hidden["hotspots"]
