"""`medsight serve` over HTTP, started for real: worklist, study detail, feedback with audit,
tasks with model cards, health, Prometheus metrics, the worklist page and the report."""

from __future__ import annotations

import json
import shutil
import urllib.request

import pydicom
import pytest

from medsight.service import InstanceStore
from tests._net import free_port
from tests.service.test_serve_recovery import send, start, wait_for


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read().decode()


@pytest.mark.timeout(300)
def test_worklist_study_feedback_audit_metrics_and_pages(tmp_path):
    if shutil.which("storescu") is None:
        pytest.fail("dcmtk is needed; scripts/test installs it")
    data, port, http = tmp_path / "data", free_port(), free_port()
    log = tmp_path / "serve.log"
    process = start(data, port, log, extra=["--http-port", str(http)])
    base = f"http://127.0.0.1:{http}"
    try:
        send(port)
        store = InstanceStore(data)

        def analysed() -> bool:
            return store.queue.states().get("done", 0) == 1

        wait_for(analysed, 180, "the study to be analysed", process, log)
        status, body = get(f"{base}/api/worklist")
        worklist = json.loads(body)
        assert status == 200 and worklist["total"] == 1
        (item,) = worklist["items"]
        assert item["priority"] in {"URGENT", "STAT", "NO_AI_FINDING", "NEEDS_REVIEW"}
        assert item["reasons"] and worklist["disclaimer"].startswith("research use only")

        study = json.loads(get(f"{base}/api/studies/{item['study_key']}")[1])
        (finding,) = study["analyses"][0]["findings"]
        request = urllib.request.Request(
            f"{base}/api/studies/{item['study_key']}/feedback",
            data=json.dumps(
                {"finding": finding["name"], "verdict": "agree", "user": "dr.test"}
            ).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 201
        audit = json.loads(get(f"{base}/api/audit?subject={item['study_key']}")[1])
        assert audit[0]["action"] == "feedback" and audit[0]["actor"] == "dr.test"

        tasks = json.loads(get(f"{base}/api/tasks")[1])
        card = next(t for t in tasks if t["id"] == "cxr-pneumonia")["model_card"]
        assert "Research use only" in card
        assert json.loads(get(f"{base}/healthz")[1])["status"] == "ok"
        metrics = get(f"{base}/metrics")[1]
        assert 'medsight_jobs{state="done"} 1' in metrics
        assert "medsight_instances_stored 1" in metrics
        assert "paths" in json.loads(get(f"{base}/openapi.json")[1])
        page = get(f"{base}/")[1]
        assert "Research use only, not for" in page and item["study_key"] in page
        report = get(f"{base}/studies/{item['study_key']}/report.html")
        assert report[0] == 200 and "not for diagnostic use" in report[1]
        with pytest.raises(urllib.error.HTTPError) as missing:
            get(f"{base}/studies/{item['study_key']}/../../medsight.db")
        assert missing.value.code == 404
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.timeout(300)
def test_stow_rs_intake_with_a_real_dicomweb_client(tmp_path):
    from dicomweb_client.api import DICOMwebClient

    from tests.reporting._sources import totalseg_ct_with_uids

    data, http = tmp_path / "data", free_port()
    log = tmp_path / "serve.log"
    process = start(data, free_port(), log, extra=["--http-port", str(http)])
    try:
        wait_for(lambda: _up(f"http://127.0.0.1:{http}/healthz"), 60, "the API", process, log)
        files = sorted(totalseg_ct_with_uids(tmp_path / "ct").glob("*.dcm"))[:4]
        client = DICOMwebClient(f"http://127.0.0.1:{http}/dicom-web")
        response = client.store_instances([pydicom.dcmread(f) for f in files])
        assert len(response.ReferencedSOPSequence) == 4
        assert InstanceStore(data).count() == 4
    finally:
        process.terminate()
        process.wait(timeout=30)


def _up(url: str) -> bool:
    try:
        return get(url)[0] == 200
    except OSError:
        return False
