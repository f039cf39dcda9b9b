"""The service's pages in a real browser (Debian chromium, Playwright): sign in, the
worklist ordered by priority (a pneumonia CXR, a non-image instance needing review, a
hippocampus MR), the viewer (slices scroll, window presets and the mask toggle re-render),
feedback on a finding, and that feedback in the audit log as an admin sees it.
Screenshots go to test-artifacts/screenshots/ for a person to look at."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medsight.service import InstanceStore
from medsight.tasks import load_named_task
from tests._net import free_port
from tests.conftest import require_data
from tests.reporting.test_html_screenshots import ARTIFACTS, chromium
from tests.service._client import PASSWORD, Api, account
from tests.service.test_serve_recovery import SAMPLE, wait_for

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def non_image_instance(path: Path) -> Path:
    """A valid DICOM instance with no image in it (a Basic Text SR header)."""
    dataset = pydicom.Dataset()
    dataset.SOPClassUID = BASIC_TEXT_SR
    dataset.SOPInstanceUID = generate_uid()
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.Modality = "SR"
    dataset.PatientID = "NOIMAGE"
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.save_as(path, enforce_file_format=True)
    return path


def storescu(port: int, files: list[str]) -> None:
    sent = subprocess.run(
        ["storescu", "-aec", "MEDSIGHT", "127.0.0.1", str(port), *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr


def sign_in(page, base: str, user: str) -> None:
    page.goto(base + "/")
    page.wait_for_url("**/login**")  # no session: sent to the login page
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


@pytest.mark.timeout(500)
def test_sign_in_worklist_viewer_feedback_and_audit_in_a_browser(tmp_path):
    from playwright.sync_api import sync_playwright

    if not load_named_task("hippocampus-mr").weights_available:
        pytest.skip("hippocampus-mr is not trained")
    series = require_data("hippocampus-mr", "dicom_hippocrop", "Study1")
    data, port, http = tmp_path / "data", free_port(), free_port()
    log = tmp_path / "serve.log"
    rules = tmp_path / "rules.toml"
    rules.write_text(
        'version = "test-1"\n[[rules]]\ntask = "hippocampus-mr"\nmodalities = ["MR"]\n'
        '[[rules]]\ntask = "cxr-pneumonia"\nspatial_dims = 2\nphotometric = ["MONOCHROME2"]\n'
    )
    command = [sys.executable, "-m", "medsight", "serve", "--data-dir", str(data)]
    command += ["--dicom-port", str(port), "--http-port", str(http), "--quiet-seconds", "1"]
    command += ["--rules", str(rules), "--outputs", "json,html,seg", "--workers", "2"]
    account(data, "dr-viewer", "clinician")
    account(data, "audit-admin", "admin")  # accounts exist: no --dev needed
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http}"
    try:
        wait_for(Api(base).up, 60, "the service", process, log)
        storescu(port, sorted(str(p) for p in Path(series).iterdir()))
        storescu(port, [str(SAMPLE), str(non_image_instance(tmp_path / "text.dcm"))])
        store = InstanceStore(data)

        def finished() -> bool:
            states = store.queue.states()
            return states.get("done", 0) + states.get("dead", 0) == 3

        wait_for(finished, 300, "the three studies", process, log)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            sign_in(page, base, "dr-viewer")
            assert "Research use only" in page.locator(".banner").inner_text()
            levels = page.locator("#rows tr").evaluate_all(
                "rows => rows.map(r => r.dataset.priority)"
            )
            assert levels[:2] == ["URGENT", "NEEDS_REVIEW"] and len(levels) == 3, levels
            page.wait_for_function(  # the live refresh re-draws the same order
                "document.getElementById('updated').textContent.startsWith('updated')"
            )
            page.screenshot(path=str(ARTIFACTS / "worklist.png"), full_page=True)

            # the URGENT chest X-ray: its Grad-CAM heatmap is a layer to toggle
            page.locator("#rows tr").nth(0).locator("a").first.click()
            page.wait_for_function("document.getElementById('view').naturalWidth > 0")
            assert "heatmap=1" in page.get_attribute("#view", "src")
            page.screenshot(path=str(ARTIFACTS / "viewer-heatmap.png"), full_page=True)
            page.uncheck("#heatmap")
            page.wait_for_function("document.getElementById('view').src.indexOf('heatmap=0') > 0")
            page.go_back()

            page.locator("#rows tr").nth(2).locator("a").first.click()
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
            page.screenshot(path=str(ARTIFACTS / "viewer-mask-off.png"), full_page=True)
            page.check("#mask")
            page.fill("#slice", "16")
            page.dispatch_event("#slice", "input")
            page.wait_for_function("document.getElementById('view').complete")
            page.click("button.fb[data-verdict='agree']")
            page.wait_for_function(
                "document.getElementById('status').textContent.startsWith('feedback stored')"
            )
            page.screenshot(path=str(ARTIFACTS / "viewer.png"), full_page=True)
            assert page.goto(base + "/audit").status == 403  # a clinician: not the audit log

            admin = browser.new_page(viewport={"width": 1400, "height": 900})
            sign_in(admin, base, "audit-admin")
            admin.goto(base + "/audit")
            assert "hash chain verified" in admin.locator("#chain").inner_text()
            entry = admin.locator("tr", has_text="feedback")
            assert "dr-viewer" in entry.first.inner_text()
            admin.screenshot(path=str(ARTIFACTS / "audit.png"), full_page=True)
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert shutil.which("storescu")
