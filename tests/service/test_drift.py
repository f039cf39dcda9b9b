"""A simulated deployment: chest films sent with storescu to a real `medsight serve`; halfway,
a software update rescales their intensities. Before the change, no alert; after it, the
drift alert opens within DETECT_WITHIN studies, on /api/monitoring, /metrics, the audit log,
the signed webhook, and the admin's monitoring page (Playwright screenshot). The long stream
is `python scripts/drift_stream.py` (not in CI)."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import threading
from http.server import HTTPServer
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage
from pydicom.uid import generate_uid

from medsight.datasets import repository_root
from medsight.service import InstanceStore
from medsight.training import load_config
from medsight.training.data import list_cases, split_by_patient
from tests._net import free_port
from tests.conftest import require_data
from tests.reporting.test_html_screenshots import ARTIFACTS, chromium
from tests.service._client import Api, account
from tests.service.test_outbound import Receiver
from tests.service.test_serve_recovery import SAMPLE, wait_for
from tests.service.test_viewer import sign_in, storescu

BEFORE, AFTER = 20, 20
DETECT_WITHIN = 15  # studies after the change (the library stream test measures 7-8)
SECRET = "drift-test-secret-0123456789"


def chest_films(folder: Path, scale: float, count: int, offset: int) -> list[str]:
    """``count`` held-back Kermany films as DX instances of one station, each its own study,
    with the tags the task checks set to pass; intensities multiplied by ``scale``."""
    require_data("kermany-cxr")
    config = load_config(repository_root() / "recipes" / "cxr-pneumonia.toml")
    validation = split_by_patient(list_cases(config.data), config.split)[1]
    order = np.random.default_rng(0).permutation(len(validation))[offset : offset + count]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, index in enumerate(order):
        pixels = np.asarray(PILImage.open(validation[index].path).convert("L"), np.float32)
        dataset = pydicom.dcmread(SAMPLE)
        dataset.Rows, dataset.Columns = pixels.shape
        dataset.PixelData = (pixels * scale).astype(np.uint8).tobytes()
        dataset.StudyInstanceUID = generate_uid()
        dataset.SeriesInstanceUID = generate_uid()
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dataset.PatientID = f"DRIFT{offset + number:03d}"
        dataset.Manufacturer, dataset.StationName = "ACME", "ROOM-1"
        path = folder / f"{offset + number:03d}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        paths.append(str(path))
    return paths


@pytest.mark.timeout(420)
def test_intensity_drift_opens_an_alert_everywhere_it_should(tmp_path, monkeypatch):
    from playwright.sync_api import sync_playwright

    receiver = HTTPServer(("127.0.0.1", free_port()), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    Receiver.received.clear()
    Receiver.fail_first = False
    monkeypatch.setenv("MEDSIGHT_WEBHOOK_SECRET", SECRET)
    data, port, http = tmp_path / "data", free_port(), free_port()
    admin_token = account(data, "monitor-admin", "admin")
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "medsight", "serve", "--data-dir", str(data)]
    command += ["--dicom-port", str(port), "--http-port", str(http), "--quiet-seconds", "1"]
    command += ["--task", "cxr-pneumonia", "--outputs", "json", "--monitor-seconds", "2"]
    command += ["--webhook-url", f"http://127.0.0.1:{receiver.server_port}/hook"]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http}"
    admin = Api(base, admin_token)
    store = InstanceStore(data)

    def done(count: int):
        return lambda: store.queue.states().get("done", 0) >= count

    try:
        wait_for(Api(base).up, 60, "the service", process, log)
        storescu(port, chest_films(tmp_path / "before", 1.0, BEFORE, 0))
        wait_for(done(BEFORE), 240, "the first studies", process, log)

        def reported(count: int):
            def check() -> bool:
                tasks = admin.json("/api/monitoring").get("tasks")
                return bool(tasks) and tasks[0]["analyses"] >= count

            return check

        wait_for(reported(BEFORE), 30, "a report of every study", process, log)
        report = admin.json("/api/monitoring")
        assert report["tasks"][0]["analyses"] == BEFORE
        assert report["open_alerts"] == [], "an alert on an unchanged stream"

        storescu(port, chest_films(tmp_path / "after", 0.6, AFTER, BEFORE))
        wait_for(done(BEFORE + AFTER), 240, "the rescaled studies", process, log)
        wait_for(reported(BEFORE + AFTER), 30, "a report of every study", process, log)
        report = admin.json("/api/monitoring")
        series = next(
            g["series"] for g in report["tasks"][0]["groups"] if g["group"] == "all devices"
        )
        first = next(n for n, window in enumerate(series) if window["alerts"])
        assert BEFORE <= first < BEFORE + DETECT_WITHIN, first
        groups = {a["group"] for a in report["open_alerts"]}
        assert "all devices" in groups and any(g.startswith("device ") for g in groups)
        assert not any("ACME" in g or "ROOM-1" in g for g in groups)  # keyed hash only

        metrics = admin.call("GET", "/metrics")[1].decode()
        assert "medsight_monitoring_open_alerts 0" not in metrics
        assert 'medsight_monitoring_alert{task="cxr-pneumonia"' in metrics
        audit = admin.json("/api/audit?action=monitoring_alert")
        assert audit and audit[0]["detail"]["task"] == "cxr-pneumonia"

        def alerted() -> bool:
            return any(b"drift_alert" in body for _, body in Receiver.received)

        wait_for(alerted, 60, "the drift webhook", process, log)
        headers, body = next((h, b) for h, b in Receiver.received if b"drift_alert" in b)
        expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert expected in headers["X-Medsight-Signature"]
        assert "DRIFT" not in body.decode()  # no patient identifiers
        assert json.loads(body)["alert"]["task"] == "cxr-pneumonia"

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            sign_in(page, base, "monitor-admin")
            page.goto(base + "/monitoring")
            assert "open alert" in page.locator("main").inner_text()
            assert page.locator("img[alt='monitoring plots']").count() >= 2
            page.wait_for_function(
                "[...document.images].every(i => i.complete && i.naturalWidth > 0)"
            )
            page.screenshot(path=str(ARTIFACTS / "monitoring.png"), full_page=True)
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
        receiver.shutdown()
