"""A DICOM whole slide through the service and into the slide viewer, in a real browser
(Debian chromium, Playwright): a pyramid of real GBM40 tiles sent by storescu is analysed by
pathology-nuclei; the Deep Zoom endpoints serve the slide and its outlines; the page opens it
in the vendored OpenSeadragon, zooms to a density hotspot at full resolution, and the density
and outline layers toggle (their pixels appear and go). Screenshots are kept under
test-artifacts/screenshots."""

from __future__ import annotations

import io
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from PIL import Image as PILImage

from medsight.service import InstanceStore
from medsight.tasks import load_named_task
from tests._dicom_wsi import write_dicom_pyramid
from tests._net import free_port
from tests.conftest import require_data
from tests.reporting.test_html_screenshots import ARTIFACTS, chromium
from tests.service._client import Api, account
from tests.service.test_serve_recovery import wait_for
from tests.service.test_viewer import sign_in, storescu

TILE = 512
GLASS = 238


def _canvas() -> np.ndarray:
    """1,024 pixels a side: three GBM40 tiles and a quarter of glass."""
    folder = require_data("pathology-gbm40", "raw_image")
    canvas = np.full((2 * TILE, 2 * TILE, 3), GLASS, np.uint8)
    for name, (row, column) in {"01": (0, 0), "02": (0, 1), "03": (1, 0)}.items():
        pixels = np.asarray(PILImage.open(folder / f"{name}.png").convert("RGB"))
        canvas[row * TILE : (row + 1) * TILE, column * TILE : (column + 1) * TILE] = pixels
    return canvas


def _outline_pixels(png: bytes) -> int:
    """Pixels of the outline colour (bright green) in a screenshot."""
    rgb = np.asarray(PILImage.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int(((rgb[..., 1] > 180) & (rgb[..., 0] < 110) & (rgb[..., 2] < 150)).sum())


@pytest.mark.timeout(600)
def test_a_slide_zooms_pans_and_toggles_its_layers_in_a_browser(tmp_path):
    from playwright.sync_api import sync_playwright

    if not load_named_task("pathology-nuclei").weights_available:
        pytest.skip("pathology-nuclei is not trained")
    files = write_dicom_pyramid(tmp_path / "slide", _canvas())
    data, port, http = tmp_path / "data", free_port(), free_port()
    log = tmp_path / "serve.log"
    rules = tmp_path / "rules.toml"
    rules.write_text(
        'version = "test-1"\n[[rules]]\ntask = "pathology-nuclei"\nmodalities = ["SM"]\n'
    )
    command = [sys.executable, "-m", "medsight", "serve", "--data-dir", str(data)]
    command += ["--dicom-port", str(port), "--http-port", str(http), "--quiet-seconds", "1"]
    command += ["--rules", str(rules), "--outputs", "json,html", "--workers", "1"]
    token = account(data, "dr-slide", "clinician")
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http}"
    try:
        api = Api(base, token)
        wait_for(Api(base).up, 60, "the service", process, log)
        # -R: propose the files' own SOP class (storescu's default list lacks VL WSI)
        storescu(port, [str(p) for p in files], "-R")
        store = InstanceStore(data)
        wait_for(lambda: store.queue.states().get("done", 0) == 1, 300, "the slide", process, log)
        (item,) = api.json("/api/worklist")["items"]
        key = item["study_key"]
        slides = f"/api/studies/{key}/slides/0"

        # the Deep Zoom endpoints: the descriptor, a full-resolution tile, its outlines
        status, body, _ = api.call("GET", f"{slides}.dzi")
        assert status == 200
        size = ElementTree.fromstring(body).find("{*}Size")
        assert (size.get("Width"), size.get("Height")) == ("1024", "1024")
        status, body, _ = api.call("GET", f"{slides}_files/10/0_0.jpeg")
        tile = np.asarray(PILImage.open(io.BytesIO(body)).convert("RGB")).astype(int)
        assert status == 200 and tile.shape == (256, 256, 3)
        # JPEG of the stored pixels: the first 256 pixels of GBM40 tile 01
        assert np.abs(tile - _canvas()[:256, :256].astype(int)).mean() < 6
        status, body, _ = api.call("GET", f"{slides}-outlines_files/10/0_0.png")
        outlines = np.asarray(PILImage.open(io.BytesIO(body)))
        assert status == 200 and outlines.shape == (256, 256, 4) and outlines[..., 3].any()
        status, body, _ = api.call("GET", f"{slides}-outlines_files/10/3_3.png")  # glass
        assert status == 200 and not np.asarray(PILImage.open(io.BytesIO(body)))[..., 3].any()
        assert api.call("GET", f"{slides}_files/10/4_0.jpeg")[0] == 404  # outside the slide
        assert api.call("GET", f"{slides}_files/11/0_0.jpeg")[0] == 404  # no such level
        assert api.call("GET", f"/api/studies/{key}/slides/1.dzi")[0] == 404  # no analysis 1
        info = api.json(f"{slides}/info")
        assert info["width"] == 1024 and info["outlines"] and info["density"]["width"] >= 1.0
        assert info["hotspots"], info

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            sign_in(page, base, "dr-slide")
            page.goto(f"{base}/studies/{key}/viewer")
            assert "Research use only, not for diagnostic use" in page.inner_text("body")
            page.wait_for_function(
                "window.slideState && slideState.opened && slideState.layers.density"
                " && slideState.layers.outlines && slideState.viewer.world.getItemCount() === 3"
            )
            fully_loaded = (
                "[0, 1, 2].every(i => slideState.viewer.world.getItemAt(i).getFullyLoaded())"
            )
            page.wait_for_function(fully_loaded)
            page.screenshot(path=str(ARTIFACTS / "slide-viewer-overview.png"), full_page=True)
            side = page.locator(".side").inner_text()
            assert "nucleus count" in side and "tissue tiles analysed" in side

            # the first hotspot's button zooms to it at full resolution
            page.locator("#hotspots button").first.click()
            page.wait_for_function("slideState.levels.outlines.includes(10)")
            page.wait_for_function(fully_loaded)
            page.wait_for_timeout(1200)  # the zoom animation settles
            page.wait_for_function(fully_loaded)
            zoomed_with = page.locator("#slide").screenshot()
            page.screenshot(path=str(ARTIFACTS / "slide-viewer-zoomed.png"), full_page=True)
            assert max(page.evaluate("slideState.levels.slide")) == 10
            assert _outline_pixels(zoomed_with) > 500

            # the outline layer toggles off and on; the density layer toggles off
            page.locator("#outlines").uncheck()
            assert page.evaluate("slideState.layers.outlines.getOpacity()") == 0
            page.wait_for_timeout(300)
            zoomed_without = page.locator("#slide").screenshot()
            assert _outline_pixels(zoomed_without) < _outline_pixels(zoomed_with) / 20
            page.locator("#outlines").check()
            assert page.evaluate("slideState.layers.outlines.getOpacity()") == pytest.approx(0.9)
            page.locator("#density").uncheck()
            assert page.evaluate("slideState.layers.density.getOpacity()") == 0
            page.locator("#density").check()
            assert page.evaluate("slideState.layers.density.getOpacity()") > 0
            page.screenshot(path=str(ARTIFACTS / "slide-viewer-outlines.png"), full_page=True)
            # the pointer's position in slide millimetres
            box = page.locator("#slide").bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            assert " mm" in page.locator("#status").inner_text()
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
