"""Whole-slide nuclei with the shipped pathology-nuclei model, on pyramids built from real
GBM40 tiles: tissue tiles only, each nucleus counted once across tile borders, QuPath
GeoJSON read back with shapely, a region of interest, and the bad slides (no mpp, no tissue,
a corrupt tile)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from medsight.analysis.slide_nuclei import analyse_slide_nuclei, read_roi
from medsight.cli import app
from medsight.errors import InvalidInputError
from medsight.inference import Predictor
from medsight.io.annotations import read_contour_xml
from medsight.io.slide import open_slide
from medsight.reporting.json_report import result_schema
from tests._tasks import trained_shipped_task
from tests.conftest import require_data

runner = CliRunner()
TILE = 512
GLASS = 238
#: GBM40 tiles placed on a 2 x 2 canvas, (row, column); the fourth place is glass
PLACES = {"01": (0, 0), "02": (0, 1), "03": (1, 0)}


def _build(
    path: Path,
    *,
    mpp: float | None = 0.5,
    tissue: bool = True,
    pen: bool = False,
    blurred: str | None = None,
    folded: str | None = None,
) -> None:
    """A 1024 x 1024 pyramid (levels 1, 1/2, 1/4) of three real H&E tiles and glass; with
    ``pen`` a green marker stroke across the glass quarter; ``blurred`` names a tile shown
    out of focus (a Gaussian of 3 pixels); ``folded`` names a tile with a fold across it
    (its own tissue, shifted, laid over rows 200-320: two layers multiply transmittances)."""
    import tifffile
    from scipy import ndimage

    folder = require_data("pathology-gbm40", "raw_image")
    canvas = np.full((2 * TILE, 2 * TILE, 3), GLASS, np.uint8)
    for name, (row, column) in PLACES.items():
        if tissue:
            pixels = np.asarray(PILImage.open(folder / f"{name}.png").convert("RGB"))
            if name == blurred:
                pixels = ndimage.gaussian_filter(pixels.astype(np.float32), (3, 3, 0))
            if name == folded:
                layer = np.roll(pixels.astype(np.float32), (91, 53), axis=(0, 1))
                pixels = pixels.copy()
                pixels[200:320] = (pixels[200:320] * layer[200:320] / 255.0).astype(np.uint8)
            canvas[row * TILE : (row + 1) * TILE, column * TILE : (column + 1) * TILE] = pixels
    if pen:
        canvas[700:740, 560:1000] = np.array([40, 160, 90], np.uint8)
    levels = [canvas, canvas[::2, ::2], canvas[::4, ::4]]
    options: dict = {"tile": (256, 256), "photometric": "rgb", "compression": "zlib"}
    with tifffile.TiffWriter(path) as tif:
        for index, level in enumerate(levels):
            extra: dict = {"subifds": 2} if index == 0 else {"subfiletype": 1}
            if mpp is not None:
                scale = 1e4 / (mpp * 2**index)
                extra |= {"resolution": (scale, scale), "resolutionunit": "CENTIMETER"}
            tif.write(level, **options, **extra)


def _outlined() -> int:
    folder = require_data("pathology-gbm40", "contour_annotation_xml")
    return sum(len(read_contour_xml(folder / f"{name}_data.xml")) for name in PLACES)


@pytest.fixture(scope="module")
def task():
    return trained_shipped_task("pathology-nuclei")


@pytest.fixture(scope="module")
def slide_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("slide") / "gbm.tif"
    _build(path)
    return path


@pytest.fixture(scope="module")
def analysed(task, slide_file, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("out")
    result = runner.invoke(
        app, ["analyze", str(slide_file), "--task", "pathology-nuclei", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    folder = next(p for p in out.iterdir() if p.is_dir())
    document = json.loads((folder / "result.json").read_text())
    jsonschema.validate(document, result_schema())
    return folder, document["analyses"][0]


@pytest.mark.timeout(300)
def test_slide_counts_nuclei_on_tissue_tiles_only(analysed):
    _, analysis = analysed
    slide = analysis["slide"]
    assert analysis["state"] == "OK" and slide["mpp"] == pytest.approx(0.5)
    # core tiles of 1024 model pixels: the whole canvas is one tile, with tissue
    assert slide["tiles_analysed"] == slide["tiles_with_tissue"] <= slide["tiles_total"]
    assert slide["nuclei"] == pytest.approx(_outlined(), rel=0.15)
    measured = {m["name"]: m for m in analysis["findings"][0]["measurements"]}
    assert measured["nucleus count"]["value"] == slide["nuclei"]
    # three tiles of 256 x 256 um of tissue, about 0.197 mm2 (the glass is not tissue)
    assert measured["tissue area"]["value"] == pytest.approx(3 * 0.256**2, rel=0.1)
    assert 60 < measured["mean nucleus area"]["value"] < 250  # um2, GBM nuclei
    assert "research use only" in (analysed[0] / "report.html").read_text().lower()


@pytest.mark.timeout(300)
def test_geojson_outlines_read_back_with_shapely(analysed):
    from shapely.geometry import shape

    folder, analysis = analysed
    document = json.loads((folder / analysis["slide"]["geojson"]).read_text())
    features = document["features"]
    assert len(features) == analysis["slide"]["nuclei"]
    polygons = [shape(f["geometry"]) for f in features]
    assert all(p.is_valid or p.buffer(0).area > 0 for p in polygons)
    assert all(f["properties"]["objectType"] == "detection" for f in features)
    # level-0 pixels: every outline on the canvas, none on the glass quarter
    centres = np.array([[p.centroid.x, p.centroid.y] for p in polygons])
    assert centres.min() >= 0 and centres.max() <= 2 * TILE
    on_glass = (centres[:, 0] > TILE + 8) & (centres[:, 1] > TILE + 8)
    assert on_glass.sum() == 0
    areas = np.array([p.area for p in polygons]) * 0.25  # um2 at 0.5 um per pixel
    recorded = [f["properties"]["measurements"]["Area um2"] for f in features]
    assert np.median(areas) == pytest.approx(np.median(recorded), rel=0.15)


@pytest.mark.timeout(300)
def test_hotspots_are_findings_in_slide_millimetres(analysed):
    folder, analysis = analysed
    hotspots = [f for f in analysis["findings"] if f["name"] == "nucleus_density_hotspot"]
    assert 1 <= len(hotspots) <= 3
    for finding in hotspots:
        x_mm, y_mm, _ = finding["location"]["lps_mm"]
        assert 0 <= x_mm <= 0.512 and 0 <= y_mm <= 0.512
        assert not (x_mm > 0.256 and y_mm > 0.256)  # not on the glass quarter
        assert finding["measurements"][0]["unit"] == "/mm2"
    assert (folder / analysis["slide"]["density_map"]).is_file()


@pytest.mark.timeout(300)
def test_a_nucleus_on_a_tile_border_is_counted_once(task, slide_file, tmp_path):
    """Core tiles of 200 model pixels cut through many nuclei; the count stays that of
    one whole-canvas tile."""
    predictor = Predictor(task, explain=False)
    with open_slide(slide_file) as slide:
        whole = analyse_slide_nuclei(slide, task, predictor, tmp_path / "a.geojson", tile=1024)
        cut = analyse_slide_nuclei(slide, task, predictor, tmp_path / "b.geojson", tile=200)
    assert cut.tiles_analysed > whole.tiles_analysed
    assert len(cut.areas) == pytest.approx(len(whole.areas), rel=0.04)


@pytest.mark.timeout(300)
def test_region_of_interest_limits_the_count(task, slide_file, tmp_path):
    roi_file = tmp_path / "roi.geojson"
    square = [[0, 0], [TILE, 0], [TILE, TILE], [0, TILE], [0, 0]]  # the first tile
    roi_file.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square]}}
                ],
            }
        )
    )
    roi = read_roi(roi_file)
    predictor = Predictor(task, explain=False)
    with open_slide(slide_file) as slide:
        inside = analyse_slide_nuclei(slide, task, predictor, tmp_path / "r.geojson", roi=roi)
    first = len(
        read_contour_xml(require_data("pathology-gbm40", "contour_annotation_xml", "01_data.xml"))
    )
    assert len(inside.areas) == pytest.approx(first, rel=0.2)
    assert (inside.centroids <= TILE).all()
    assert inside.tissue_area == pytest.approx(0.256**2, rel=0.1)


def test_bad_region_of_interest_is_refused(tmp_path):
    line = tmp_path / "line.geojson"
    line.write_text(json.dumps({"type": "LineString", "coordinates": [[0, 0], [5, 5]]}))
    with pytest.raises(InvalidInputError, match="no area"):
        read_roi(line)
    broken = tmp_path / "broken.geojson"
    broken.write_text("{not json")
    result = runner.invoke(app, ["analyze", str(tmp_path), "--roi", str(broken)])
    assert result.exit_code == 2 and "broken.geojson" in result.output


@pytest.mark.timeout(300)
def test_slide_without_mpp_is_measured_in_pixels_with_the_reason(task, tmp_path):
    path = tmp_path / "nompp.tif"
    _build(path, mpp=None, pen=True)
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["analyze", str(path), "--task", "pathology-nuclei", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    analysis = json.loads(next(out.glob("*/result.json")).read_text())["analyses"][0]
    assert analysis["state"] == "NEEDS_REVIEW"
    assert any("no microns per pixel" in r for r in analysis["review_reasons"])
    units = {m["name"]: m["unit"] for m in analysis["findings"][0]["measurements"]}
    assert units["mean nucleus area"] == "{px2}" and units["tissue area"] == "{px2}"
    assert analysis["slide"]["nuclei"] > 100
    # the marker stroke is listed, kept out of the tissue, and no reason to review by itself
    (pen,) = [r for r in analysis["slide"]["quality_regions"] if r["kind"] == "pen mark"]
    x0, y0, x1, y1 = pen["box_px"]
    assert x0 <= 564 and x1 >= 996 and y0 <= 704 and y1 >= 736
    assert not any("pen" in reason for reason in analysis["review_reasons"])


@pytest.mark.timeout(120)
def test_slide_without_tissue_is_not_answered(task, tmp_path):
    path = tmp_path / "glass.tif"
    _build(path, tissue=False)
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["analyze", str(path), "--task", "pathology-nuclei", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    analysis = json.loads(next(out.glob("*/result.json")).read_text())["analyses"][0]
    assert analysis["state"] == "NEEDS_REVIEW" and analysis["withheld"]
    assert "no tissue found" in " ".join(analysis["review_reasons"])
    assert analysis["findings"] == [] and analysis["slide"]["tiles_analysed"] == 0


@pytest.mark.timeout(300)
def test_a_corrupt_tile_is_named_and_the_rest_analysed(task, tmp_path):
    import tifffile

    path = tmp_path / "corrupt.tif"
    _build(path)
    with tifffile.TiffFile(path) as tif:  # the level-0 tile at the top left (256 x 256)
        offset = tif.pages[0].dataoffsets[0]
        length = tif.pages[0].databytecounts[0]
    with path.open("r+b") as handle:
        handle.seek(offset)
        handle.write(b"\xff" * length)
    predictor = Predictor(task, explain=False)
    with open_slide(path) as slide:
        result = analyse_slide_nuclei(slide, task, predictor, tmp_path / "c.geojson", tile=400)
    assert any("not analysed" in note and "x=0, y=0" in note for note in result.notes)
    assert result.tiles_analysed >= 2 and len(result.areas) > 100


@pytest.mark.timeout(300)
def test_dicom_pyramids_full_and_sparse_are_analysed_like_the_tiff(task, analysed, tmp_path):
    from tests._dicom_wsi import write_dicom_pyramid

    folder = require_data("pathology-gbm40", "raw_image")
    canvas = np.full((2 * TILE, 2 * TILE, 3), GLASS, np.uint8)
    for name, (row, column) in PLACES.items():
        pixels = np.asarray(PILImage.open(folder / f"{name}.png").convert("RGB"))
        canvas[row * TILE : (row + 1) * TILE, column * TILE : (column + 1) * TILE] = pixels
    write_dicom_pyramid(tmp_path / "full", canvas)
    write_dicom_pyramid(tmp_path / "sparse", canvas, sparse=True, missing={(0, 0)})
    counts = {}
    for kind in ("full", "sparse"):
        out = tmp_path / f"out-{kind}"
        result = runner.invoke(
            app, ["analyze", str(tmp_path / kind), "--task", "pathology-nuclei", "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        analysis = json.loads(next(out.glob("*/result.json")).read_text())["analyses"][0]
        assert analysis["input"]["kind"] == "wsi"
        # the result references the series and the level instance the thumbnail came from
        import pydicom

        first = pydicom.dcmread(next((tmp_path / kind).glob("*.dcm")), stop_before_pixels=True)
        assert analysis["input"]["series_instance_uid"] == first.SeriesInstanceUID
        assert analysis["input"]["study_instance_uid"] == first.StudyInstanceUID
        assert len(analysis["input"]["sop_instance_uids"]) == 1
        counts[kind] = analysis["slide"]["nuclei"]
        if kind == "sparse":  # one 256-pixel tile of the first GBM40 tile is missing
            assert analysis["state"] == "NEEDS_REVIEW"
            assert "1 of 16 tiles missing (TILED_SPARSE)" in " ".join(analysis["review_reasons"])
    tiff_count = analysed[1]["slide"]["nuclei"]
    assert counts["full"] == pytest.approx(tiff_count, abs=2)  # the same pixels, another format
    assert 0.6 * tiff_count < counts["sparse"] < counts["full"]


@pytest.mark.timeout(300)
def test_region_of_interest_gets_its_instance_map_through_analyze(task, slide_file, tmp_path):
    roi_file = tmp_path / "roi.geojson"
    square = [[100, 120], [400, 120], [400, 380], [100, 380], [100, 120]]  # in the first tile
    roi_file.write_text(json.dumps({"type": "Polygon", "coordinates": [square]}))
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "analyze",
            str(slide_file),
            "--task",
            "pathology-nuclei",
            "--roi",
            str(roi_file),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    study = next(p for p in out.iterdir() if p.is_dir())
    document = json.loads((study / "result.json").read_text())
    jsonschema.validate(document, result_schema())
    analysis = document["analyses"][0]
    segmentation = analysis["segmentation"]
    assert segmentation["origin_px"] == [100, 120]
    instances = np.asarray(PILImage.open(study / segmentation["instance_map"]))
    assert instances.shape == (261, 301)  # rows, columns of the region's bounding box
    assert len(np.unique(instances)) - 1 == analysis["slide"]["nuclei"] > 20
    assert segmentation["instances"] == analysis["slide"]["nuclei"]
    labels = np.asarray(PILImage.open(study / segmentation["label_map"]))
    np.testing.assert_array_equal(labels > 0, instances > 0)


@pytest.mark.timeout(300)
def test_a_tile_out_of_focus_is_flagged_and_the_sharp_ones_are_not(task, tmp_path):
    path = tmp_path / "blurred.tif"
    _build(path, blurred="02")  # the top-right tile (x 512-1024, y 0-512)
    predictor = Predictor(task, explain=False)
    with open_slide(path) as slide:
        result = analyse_slide_nuclei(slide, task, predictor, tmp_path / "f.geojson", tile=512)
    flagged = [r.box for r in result.quality if r.kind == "out of focus"]
    assert flagged == [(512, 0, 1024, 512)]


@pytest.mark.timeout(300)
def test_a_slide_of_another_kind_of_image_is_withheld_by_the_tile_gate(task, tmp_path):
    """Dermoscopy photographs tiled into a pyramid: coloured like tissue, not H&E."""
    import tifffile

    photos = sorted(require_data("ph2", "images").glob("*.jpg"))[:4]
    canvas = np.zeros((2 * TILE, 2 * TILE, 3), np.uint8)
    for number, photo in enumerate(photos):
        row, column = divmod(number, 2)
        pixels = np.asarray(PILImage.open(photo).convert("RGB"))[:TILE, :TILE]
        canvas[row * TILE : (row + 1) * TILE, column * TILE : (column + 1) * TILE] = pixels
    path = tmp_path / "skin.tif"
    with tifffile.TiffWriter(path) as tif:
        options: dict = {"tile": (256, 256), "photometric": "rgb", "compression": "zlib"}
        for index, level in enumerate([canvas, canvas[::2, ::2], canvas[::4, ::4]]):
            scale = 1e4 / (0.5 * 2**index)
            extra: dict = {"subifds": 2} if index == 0 else {"subfiletype": 1}
            extra |= {"resolution": (scale, scale), "resolutionunit": "CENTIMETER"}
            tif.write(level, **options, **extra)
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["analyze", str(path), "--task", "pathology-nuclei", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(next(out.glob("*/result.json")).read_text())
    jsonschema.validate(document, result_schema())
    analysis = document["analyses"][0]
    assert analysis["slide"]["tiles_gated"] >= 1
    assert analysis["withheld"] and analysis["findings"] == []
    assert any("withheld by the tile gate" in r for r in analysis["review_reasons"])


@pytest.mark.timeout(300)
def test_a_fold_is_flagged_and_its_tissue_left_out(task, analysed, tmp_path):
    path = tmp_path / "folded.tif"
    _build(path, folded="03")  # the bottom-left tile (x 0-512, y 512-1024): fold at y 712-832
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["analyze", str(path), "--task", "pathology-nuclei", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    analysis = json.loads(next(out.glob("*/result.json")).read_text())["analyses"][0]
    folds = [r for r in analysis["slide"]["quality_regions"] if r["kind"] == "fold"]
    assert len(folds) == 1, analysis["slide"]["quality_regions"]
    x0, y0, x1, y1 = folds[0]["box_px"]
    assert x0 < 256 < x1 <= 512 + 16 and 712 - 40 <= y0 < y1 <= 832 + 40
    assert analysis["state"] == "NEEDS_REVIEW"
    assert any("flagged: fold" in r for r in analysis["review_reasons"])
    # the folded tissue is not counted: fewer nuclei than on the clean slide
    clean = analysed[1]["slide"]["nuclei"]
    assert analysis["slide"]["nuclei"] < clean
    assert analysis["slide"]["nuclei_left_out"] > 10
