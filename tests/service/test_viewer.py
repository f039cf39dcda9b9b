"""The worklist page and the study viewer in a real browser (Debian chromium, Playwright):
a 3D MR series received by DICOM and segmented by the shipped hippocampus model; slices
scroll, window presets and the mask toggle re-render, feedback is stored. Screenshots go to
test-artifacts/screenshots/ for a person to look at."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from medsight.service import InstanceStore
from medsight.tasks import load_named_task
from tests._net import free_port
from tests.conftest import require_data
from tests.reporting.test_html_screenshots import ARTIFACTS, chromium
from tests.service.test_serve_recovery import wait_for


@pytest.mark.timeout(400)
def test_viewer_scrolls_windows_toggles_and_takes_feedback(tmp_path):
    from playwright.sync_api import sync_playwright

    if not load_named_task("hippocampus-mr").weights_available:
        pytest.skip("hippocampus-mr is not trained")
    series = require_data("hippocampus-mr", "dicom_hippocrop", "Study1")
    data, port, http = tmp_path / "data", free_port(), free_port()
    log = tmp_path / "serve.log"
    import sys

    command = [sys.executable, "-m", "medsight", "serve", "--data-dir", str(data)]
    command += ["--dicom-port", str(port), "--http-port", str(http), "--quiet-seconds", "1"]
    command += ["--task", "hippocampus-mr", "--outputs", "json,html,seg"]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http}"
    try:
        wait_for(lambda: _up(f"{base}/healthz"), 60, "the service", process, log)
        files = sorted(str(p) for p in Path(series).iterdir())
        sent = subprocess.run(
            ["storescu", "-aec", "MEDSIGHT", "127.0.0.1", str(port), *files],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        store = InstanceStore(data)
        wait_for(lambda: store.queue.states().get("done", 0) == 1, 240, "analysis", process, log)
        (item,) = json.loads(urllib.request.urlopen(f"{base}/api/worklist").read())["items"]
        key = item["study_key"]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(base + "/")
            assert "Research use only" in page.locator(".banner").inner_text()
            page.screenshot(path=str(ARTIFACTS / "worklist.png"), full_page=True)
            page.click(f"a[href='/studies/{key}/viewer']")
            page.wait_for_function("document.getElementById('view').naturalWidth > 0")
            first = page.get_attribute("#view", "src")
            page.fill("#slice", "3")  # range input: set a value and fire input
            page.dispatch_event("#slice", "input")
            page.wait_for_function(
                "document.getElementById('view').src.indexOf('slice=3') > 0 && "
                "document.getElementById('view').complete"
            )
            page.select_option("#window", "brain")
            page.uncheck("#mask")
            page.wait_for_function("document.getElementById('view').src.indexOf('mask=0') > 0")
            assert page.get_attribute("#view", "src") != first
            page.check("#mask")
            page.fill("#slice", "16")
            page.dispatch_event("#slice", "input")
            page.wait_for_function("document.getElementById('view').complete")
            page.click("button.fb[data-verdict='agree']")
            page.wait_for_function(
                "document.getElementById('status').textContent.startsWith('feedback stored')"
            )
            page.screenshot(path=str(ARTIFACTS / "viewer.png"), full_page=True)
            browser.close()
        feedback = json.loads(urllib.request.urlopen(f"{base}/api/studies/{key}/feedback").read())
        assert feedback and feedback[0]["verdict"] == "agree"
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert shutil.which("storescu")


def _up(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=5).status == 200
    except OSError:
        return False
