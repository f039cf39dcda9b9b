"""A cardiac cine through the service and into the viewer, in a real browser (Debian
chromium, Playwright): a Sunnybrook short-axis cine of two phases sent by storescu is
analysed by cardiac-mr as one study; the viewer lists both phases, shows each phase's own
pixels with its mask, and the study's ventricular function beside them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from medsight.service import InstanceStore
from medsight.tasks import load_named_task
from tests._net import free_port
from tests.conftest import require_data
from tests.reporting.test_html_screenshots import ARTIFACTS, chromium
from tests.service._client import Api, account
from tests.service.test_serve_recovery import wait_for
from tests.service.test_viewer import sign_in, storescu


@pytest.mark.timeout(600)
def test_both_phases_of_a_cine_with_their_masks_and_the_function(tmp_path):
    from playwright.sync_api import sync_playwright

    if not load_named_task("cardiac-mr").weights_available:
        pytest.skip("cardiac-mr is not trained")
    series = require_data("sunnybrook-cine", "dicoms", "SCD0000101")
    data, port, http = tmp_path / "data", free_port(), free_port()
    log = tmp_path / "serve.log"
    rules = tmp_path / "rules.toml"
    rules.write_text('version = "test-1"\n[[rules]]\ntask = "cardiac-mr"\nmodalities = ["MR"]\n')
    command = [sys.executable, "-m", "medsight", "serve", "--data-dir", str(data)]
    command += ["--dicom-port", str(port), "--http-port", str(http), "--quiet-seconds", "1"]
    command += ["--rules", str(rules), "--outputs", "json,html", "--workers", "1"]
    token = account(data, "dr-cine", "clinician")
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http}"
    try:
        api = Api(base, token)
        wait_for(Api(base).up, 60, "the service", process, log)
        storescu(port, sorted(str(p) for p in Path(series).glob("*.dcm")))
        store = InstanceStore(data)
        wait_for(lambda: store.queue.states().get("done", 0) == 1, 300, "the cine", process, log)
        (item,) = api.json("/api/worklist")["items"]
        key = item["study_key"]
        # each phase's own pixels: the two analyses' middle slices differ
        slices = [api.call("GET", f"/api/studies/{key}/slice?k=5&analysis={i}")[1] for i in (0, 1)]
        assert len(slices[0]) == 256 * 256 * 4 and slices[0] != slices[1]
        masks = [
            api.call("GET", f"/api/studies/{key}/slice?k=5&layer=mask&analysis={i}") for i in (0, 1)
        ]
        assert [m[0] for m in masks] == [200, 200] and masks[0][1] != masks[1][1]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            sign_in(page, base, "dr-cine")
            for index in (0, 1):
                page.goto(f"{base}/studies/{key}/viewer?analysis={index}")
                page.wait_for_function("window.viewerState && window.viewerState.drawn > 0")
                info = page.evaluate("window.viewerState.info")
                assert info["mask"] and info["slices"] == 12, info
                assert "left_ventricle" in page.locator("#legend").text_content()
                links = page.locator("#analyses li").all_inner_texts()
                assert sorted(text.split(":")[0] for text in links) == ["ED", "ES"], links
                side = page.locator(".side").inner_text()
                assert "Finding of left ventricular function" in side
                assert "ejection fraction" in side
                page.screenshot(path=str(ARTIFACTS / f"viewer-cine-{index}.png"), full_page=True)
            # the other phase is one click away
            page.locator("#analyses a").click()
            page.wait_for_url("**analysis=0")
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
