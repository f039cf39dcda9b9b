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


def storescu(port: int, files: list[str], *options: str) -> None:
    sent = subprocess.run(
        ["storescu", *options, "-aec", "MEDSIGHT", "127.0.0.1", str(port), *files],
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


def drag(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    """A mouse drag on the canvas between two canvas-pixel positions."""
    box = page.locator("#canvas").bounding_box()
    scale = box["width"] / 720  # the canvas is 720 pixels wide, shown at its box's size
    page.mouse.move(box["x"] + start[0] * scale, box["y"] + start[1] * scale)
    page.mouse.down()
    page.mouse.move(box["x"] + end[0] * scale, box["y"] + end[1] * scale, steps=5)
    page.mouse.up()


def viewer_state(page, expression: str):
    return page.evaluate(f"window.viewerState.{expression}")


def open_viewer(page, base: str, key: str) -> None:
    page.goto(f"{base}/studies/{key}/viewer")
    page.wait_for_function("window.viewerState && window.viewerState.drawn > 0")


@pytest.mark.timeout(600)
def test_sign_in_worklist_viewer_feedback_and_audit_in_a_browser(tmp_path):
    from playwright.sync_api import sync_playwright

    from medsight.analysis.inputs import study_key_of
    from medsight.service.dicomweb import multipart
    from tests.reporting._sources import totalseg_ct_with_uids

    if not load_named_task("hippocampus-mr").weights_available:
        pytest.skip("hippocampus-mr is not trained")
    series = require_data("hippocampus-mr", "dicom_hippocrop", "Study1")
    ct_files = sorted(totalseg_ct_with_uids(tmp_path / "ct").glob("*.dcm"))[:12]
    ct = pydicom.dcmread(ct_files[0], stop_before_pixels=True)
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
        stow = Api(base, account(data, "ct-bridge", "service"))
        body, boundary = multipart((f.read_bytes(), "application/dicom") for f in ct_files)
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
        }
        assert stow.call("POST", "/dicom-web/studies", body, headers)[0] == 200  # JPEG 2000
        photo = require_data("ph2", "images", "IMD063.jpg").read_bytes()
        query = "/api/upload?task=derm-lesion&patient_id=PH2-063&patient_name=Doe%5EJane"
        query += "&accession_number=A63"
        uploaded = stow.call("POST", query, photo, {"Content-Type": "image/jpeg"})
        assert uploaded[0] == 201, uploaded[1]
        store = InstanceStore(data)

        def finished() -> bool:
            states = store.queue.states()
            return states.get("done", 0) + states.get("dead", 0) == 5

        wait_for(finished, 300, "the five studies", process, log)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            sign_in(page, base, "dr-viewer")
            assert "Research use only" in page.locator(".banner").inner_text()
            page.wait_for_function(
                "document.getElementById('updated').textContent.startsWith('updated')"
            )
            levels = page.locator("#rows tr").evaluate_all(
                "rows => rows.map(r => r.dataset.priority)"
            )
            assert levels[0] == "URGENT" and len(levels) == 5, levels
            # a clinician can match each row to a patient
            cxr_row = page.locator("#rows tr").nth(0).inner_text()
            assert "SAMPLE KERMANY" in cxr_row and "KERMANY-SAMPLE-1" in cxr_row
            assert "DX" in cxr_row and "Sample chest X-ray" in cxr_row
            ct_key = study_key_of(str(ct.StudyInstanceUID))
            ct_row = page.locator(f"#rows tr[data-study='{ct_key}']").inner_text()
            assert "ACC-TS-1" in ct_row and "CT" in ct_row and "TotalSegmentator" in ct_row
            photo_row = page.locator("#rows tr", has_text="PH2-063").inner_text()
            assert "Doe Jane" in photo_row and "A63" in photo_row and "XC" in photo_row
            page.screenshot(path=str(ARTIFACTS / "worklist.png"), full_page=True)
            page.fill("input[name=q]", "totalseg")
            page.click("#filters button")
            page.wait_for_function("document.querySelectorAll('#rows tr').length === 1")
            page.click("th a[data-sort='patient_name']")

            # the URGENT chest X-ray: flagged, so its heatmap is shown with a colour scale
            sample = pydicom.dcmread(SAMPLE, stop_before_pixels=True)
            cxr_key = study_key_of(str(sample.StudyInstanceUID))
            open_viewer(page, base, cxr_key)
            patient = page.locator("#patient").inner_text()
            assert "SAMPLE KERMANY" in patient and "KERMANY-SAMPLE-1" in patient and "DX" in patient
            assert viewer_state(page, "heat") is True and page.is_checked("#heatmap")
            assert "heatmap (Grad-CAM relevance)" in page.locator("#legend").inner_text()
            presets = page.locator("#preset option").all_inner_texts()
            assert "stroke" not in presets and "subdural" not in presets  # no CT presets on a DX
            page.click("button[data-tool='distance']")
            drag(page, (200, 360), (500, 360))
            assert "pixels (no pixel spacing" in page.locator("#measured").inner_text()
            page.screenshot(path=str(ARTIFACTS / "viewer-heatmap.png"), full_page=True)
            page.uncheck("#heatmap")
            page.wait_for_function("window.viewerState.heat === false")
            assert "heatmap" not in page.locator("#legend").inner_text()

            # the CT series nothing analysed: scroll, zoom, pan, window, measure in mm
            open_viewer(page, base, ct_key)
            info = page.evaluate("window.viewerState.info")
            assert info["slices"] == 12 and info["kind"] == "CT"
            assert {"stroke", "subdural", "liver"} <= {p["name"] for p in info["presets"]}
            assert info["orientation"] == {"right": "L", "left": "R", "bottom": "P", "top": "A"}
            start_k = viewer_state(page, "k")
            page.locator("#canvas").hover()
            page.mouse.wheel(0, 120)
            page.wait_for_function(f"window.viewerState.loaded === {start_k + 1}")
            page.locator("#canvas").press("ArrowDown")
            page.wait_for_function(f"window.viewerState.loaded === {start_k + 2}")
            page.locator("#canvas").press("PageUp")
            page.wait_for_function("window.viewerState.loaded === 0")
            # one pixel = PixelSpacing mm: a 300-pixel line across the fitted image
            column_mm = float(ct.PixelSpacing[1])
            fit = 720 / 512
            page.click("button[data-tool='distance']")
            drag(page, (100, 300), (100 + 300 * fit, 300))
            measured = viewer_state(page, "measurements[0].value")
            assert abs(measured - 300 * column_mm) <= column_mm, measured
            assert "mm" in page.locator("#measured").inner_text()
            page.click("button[data-tool='area']")
            for x, y in ((100, 100), (100 + 100 * fit, 100), (100 + 100 * fit, 100 + 100 * fit)):
                page.locator("#canvas").click(position={"x": x * 1.0, "y": y * 1.0})
            page.locator("#canvas").dblclick(position={"x": 100.0, "y": 100 + 100 * fit})
            area = viewer_state(page, "measurements[1].value")
            expected = 100 * 100 * column_mm * float(ct.PixelSpacing[0])
            assert abs(area - expected) / expected < 0.05, (area, expected)
            page.select_option("#preset", label="lung")
            page.wait_for_function("window.viewerState.center === -600")
            page.click("button[data-tool='window']")
            drag(page, (360, 360), (420, 330))
            assert viewer_state(page, "center") != -600
            page.locator("#canvas").press("+")
            assert viewer_state(page, "zoom") == pytest.approx(1.25)
            page.click("button[data-tool='pan']")
            drag(page, (360, 360), (400, 380))
            assert viewer_state(page, "panX") == pytest.approx(40, abs=2)
            page.screenshot(path=str(ARTIFACTS / "viewer-ct.png"), full_page=True)
            api = Api(base, account(data, "dr-api", "clinician"))
            assert api.call("GET", f"/api/studies/{ct_key}/slice?k=12")[0] == 404
            assert api.call("GET", f"/api/studies/{ct_key}/slice?k=3&layer=mask")[0] == 404

            # the hippocampus MR: mask layer with its colours; a finding jumps to its slice
            page.goto(base + "/")
            page.wait_for_function(
                "document.getElementById('updated').textContent.startsWith('updated')"
            )
            items = api.json("/api/worklist")["items"]
            mr_key = next(i["study_key"] for i in items if i["modality"] == "MR")
            open_viewer(page, base, mr_key)
            info = page.evaluate("window.viewerState.info")
            assert info["mask"] and info["kind"] == "MR", {k: info[k] for k in ("kind", "mask")}
            legend = page.locator("#legend").text_content()
            assert page.is_checked("#mask") and "hippocampus_anterior" in legend, legend
            assert not page.is_visible("#heat-control")
            page.locator("#findings a.select").first.click()
            target = page.evaluate("window.viewerState.selected.slice")
            page.wait_for_function(f"window.viewerState.loaded === {target}")
            assert "selected" in page.locator("#findings tbody tr").first.get_attribute("class")
            page.fill("#mask-opacity", "80")
            page.dispatch_event("#mask-opacity", "input")
            page.wait_for_function("window.viewerState.maskOpacity === 0.8")
            page.click("button.fb[data-verdict='agree']")
            page.wait_for_function(
                "document.getElementById('feedback-status').textContent"
                ".startsWith('feedback stored')"
            )
            page.screenshot(path=str(ARTIFACTS / "viewer.png"), full_page=True)
            page.uncheck("#mask")
            page.wait_for_function("window.viewerState.mask === false")
            page.screenshot(path=str(ARTIFACTS / "viewer-mask-off.png"), full_page=True)
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
