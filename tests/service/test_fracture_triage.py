"""A radiograph through the service under an emergency department's site rules: sent by
storescu, analysed by a detection task (random weights, thresholds at 0, so that it flags),
and the worklist shows the study URGENT with the site's setting in its reason; the viewer
draws its boxes with their scores (chromium, Playwright); the same study under an outpatient
setting is ROUTINE."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from medsight.service import InstanceStore
from tests._net import free_port
from tests._tasks import detector_task
from tests.reporting.test_html_screenshots import ARTIFACTS, chromium
from tests.service._client import Api, account
from tests.service.test_serve_recovery import wait_for
from tests.service.test_viewer import sign_in, storescu

SAMPLE = Path(__file__).parents[2] / "src/medsight/samples/fracture/fracture_sample_cr.dcm"
FLAGGING = (
    "\n[detection]\nfinding_score = 0.0\n"
    '\n[operating_points.high_sensitivity]\noutput = "lesion"\nthreshold = 0.0\n'
)


def _in_the_viewer(base: str, key: str) -> None:
    """The boxes drawn with their scores, and the boxes layer toggled, in chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        sign_in(page, base, "dr-er")
        page.goto(f"{base}/studies/{key}/viewer")
        page.wait_for_function("window.viewerState && window.viewerState.drawn > 0")
        boxes = page.evaluate("window.viewerState.info.boxes")
        assert len(boxes) == 2 and all("score" in b for b in boxes)
        assert page.evaluate("window.viewerState.boxes") is True
        assert page.locator("#findings").inner_text().count("detected box") == 2
        page.screenshot(path=str(ARTIFACTS / "viewer-detection-boxes.png"), full_page=True)
        page.locator("#boxes").uncheck()
        assert page.evaluate("window.viewerState.boxes") is False
        browser.close()


def _level(tmp_path: Path, setting: str, browse: bool = False) -> tuple[str, list[str]]:
    tasks = tmp_path / "tasks"
    detector_task(
        tasks / "test-det",
        arguments={"depth": 10, "fpn_channels": 16, "max_boxes": 2, "score_threshold": 0.0},
        extra=FLAGGING,
    )
    rules = tmp_path / f"{setting}.toml"
    rules.write_text(
        f'version = "site-{setting}"\n[[rules]]\ntask = "test-det"\nmodalities = ["CR"]\n'
        f'[triage]\nsetting = "{setting}"\n'
        '[[triage.urgent]]\nfinding = "lesion"\nsettings = ["emergency"]\n'
    )
    data, port, http = tmp_path / f"data-{setting}", free_port(), free_port()
    log = tmp_path / f"serve-{setting}.log"
    command = [sys.executable, "-m", "medsight", "serve", "--data-dir", str(data)]
    command += ["--dicom-port", str(port), "--http-port", str(http), "--quiet-seconds", "1"]
    command += ["--rules", str(rules), "--tasks-dir", str(tasks), "--workers", "1"]
    token = account(data, "dr-er", "clinician")
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http}"
    try:
        wait_for(Api(base).up, 60, "the service", process, log)
        storescu(port, [str(SAMPLE)])
        store = InstanceStore(data)
        wait_for(lambda: store.queue.states().get("done", 0) == 1, 300, "the film", process, log)
        (item,) = Api(base, token).json("/api/worklist")["items"]
        if browse:
            _in_the_viewer(base, item["study_key"])
        return item["priority"], item["reasons"]
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.timeout(600)
def test_the_emergency_setting_makes_a_flagged_fracture_urgent_on_the_worklist(tmp_path):
    level, reasons = _level(tmp_path, "emergency", browse=True)
    assert level == "URGENT", reasons
    assert any("emergency setting" in r for r in reasons)
    level, _ = _level(tmp_path, "outpatient")
    assert level == "ROUTINE"
