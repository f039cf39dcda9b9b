"""`medsight serve` over HTTP, started for real: worklist, study detail, feedback with audit,
tasks with model cards, health, Prometheus metrics, the pages, STOW-RS intake and the photo
upload of a dermoscopy image analysed by the task chosen with it."""

from __future__ import annotations

import json
import shutil

import pydicom
import pytest

from medsight.analysis.inputs import study_key_of
from medsight.service import InstanceStore
from medsight.service.audit import AuditLog
from tests._net import free_port
from tests.conftest import require_data
from tests.service._client import Api, account
from tests.service.test_serve_recovery import send, start, wait_for
from tests.service.test_viewer import non_image_instance


@pytest.mark.timeout(300)
def test_worklist_study_feedback_audit_metrics_and_pages(tmp_path):
    if shutil.which("storescu") is None:
        pytest.fail("dcmtk is needed; scripts/test installs it")
    data, port, http = tmp_path / "data", free_port(), free_port()
    log = tmp_path / "serve.log"
    process = start(data, port, log, extra=["--http-port", str(http)])
    base = f"http://127.0.0.1:{http}"
    try:
        wait_for(Api(base).up, 60, "the API", process, log)
        clinician = Api(base, account(data, "dr-test", "clinician"))
        admin = Api(base, account(data, "admin-test", "admin"))
        service = Api(base, account(data, "pacs-bridge", "service"))
        send(port)
        store = InstanceStore(data)
        wait_for(lambda: store.queue.states().get("done", 0) == 1, 180, "analysis", process, log)
        worklist = clinician.json("/api/worklist")
        assert worklist["total"] == 1
        (item,) = worklist["items"]
        assert item["priority"] in {"URGENT", "STAT", "NO_AI_FINDING", "NEEDS_REVIEW"}
        assert item["reasons"] and worklist["disclaimer"].startswith("research use only")
        key = item["study_key"]
        # a clinician can match the row to a patient (storescu intake)
        assert item["patient_name"] == "SAMPLE^KERMANY" and item["patient_id"] == "KERMANY-SAMPLE-1"
        assert item["modality"] == "DX" and item["body_part"] == "CHEST"
        assert item["study_description"].startswith("Sample chest X-ray")
        assert item["study_date"] == "20180101" and item["patient_age"] == "003Y"
        assert (item["series_count"], item["instance_count"]) == (1, 1)
        views = admin.json("/api/audit?action=view-identifiers")
        assert views and views[0]["actor"] == "dr-test" and key in views[0]["detail"]["study_keys"]
        # sorting and filtering on the identifiers, and refusals that say why
        assert clinician.json("/api/worklist?q=kermany&modality=DX")["total"] == 1
        assert clinician.json("/api/worklist?q=nobody")["total"] == 0
        assert clinician.json("/api/worklist?date_from=20180101&date_to=20180102")["total"] == 1
        assert clinician.json("/api/worklist?sort=patient_name&order=desc")["total"] == 1
        for bad, reason in (
            ("date_from=2018-01-01", b"not a date YYYYMMDD"),
            ("date_to=20181341", b"not a date YYYYMMDD"),
            ("priority=SOON", b"unknown priority"),
            ("sort=password_hash", b"cannot sort by"),
        ):
            status, body, _ = clinician.call("GET", f"/api/worklist?{bad}")
            assert status == 400 and reason in body, (bad, status, body)
        # the service role sees no identifier in anything it may read, byte for byte
        assert service.call("GET", "/api/worklist")[0] == 403
        for path in ("/metrics", "/api/me"):
            status, body, _ = service.call("GET", path)
            assert status == 200
            for identifier in (b"KERMANY", b"SAMPLE^", b"Sample chest"):
                assert identifier not in body, (path, identifier)

        study = clinician.json(f"/api/studies/{key}")
        (finding,) = study["analyses"][0]["findings"]
        status, _, _ = clinician.call(
            "POST", f"/api/studies/{key}/feedback", {"finding": finding["name"], "verdict": "agree"}
        )
        assert status == 201
        unknown = clinician.call(
            "POST", f"/api/studies/{key}/feedback", {"finding": "nothing", "verdict": "agree"}
        )
        assert unknown[0] == 422
        audit = admin.json(f"/api/audit?subject={key}")
        assert audit[0]["action"] == "feedback" and audit[0]["actor"] == "dr-test"
        assert {"view", "inference"} <= {row["action"] for row in audit}
        (inference,) = [row for row in audit if row["action"] == "inference"]
        assert inference["detail"]["task"]["id"] == "cxr-pneumonia"
        assert (
            inference["detail"]["input"]["study_instance_uid"]
            == study["analyses"][0]["input"]["study_instance_uid"]
        )
        assert "high_sensitivity" in inference["detail"]["operating_points"]
        gate = inference["detail"]["gate"]
        assert gate["decision"] == study["analyses"][0]["gate"]["decision"]
        assert "out_of_distribution" in {check["name"] for check in gate["checks"]}
        assert admin.json("/api/audit/verify")["ok"] is True
        assert AuditLog(store.engine).verify().ok

        tasks = clinician.json("/api/tasks")
        card = next(t for t in tasks if t["id"] == "cxr-pneumonia")["model_card"]
        assert "Research use only" in card
        assert Api(base).json("/healthz") == {"status": "ok"}  # reveals nothing more
        metrics = service.call("GET", "/metrics")[1].decode()
        assert 'medsight_jobs{state="done"} 1' in metrics
        assert "medsight_instances_stored 1" in metrics
        assert "medsight_result_latency_seconds_count 1" in metrics
        assert 'medsight_result_latency_seconds{quantile="0.95"}' in metrics
        assert "paths" in clinician.json("/openapi.json")
        page = clinician.call("GET", "/")[1].decode()
        assert "Research use only, not for" in page and "/static/worklist/worklist.js" in page
        script = clinician.call("GET", "/static/worklist/worklist.js")
        assert script[0] == 200 and b"/api/worklist" in script[1]
        models = clinician.call("GET", "/models")[1].decode()
        assert "cxr-pneumonia" in models and "<h2" in models and "Research use only" in models
        report = clinician.call("GET", f"/studies/{key}/report.html")
        assert report[0] == 200 and b"not for diagnostic use" in report[1]
        assert clinician.call("GET", f"/studies/{key}/../../medsight.db")[0] == 404
    finally:
        process.terminate()
        process.wait(timeout=30)
    serve_log = log.read_text()
    sample = pydicom.dcmread(
        "src/medsight/samples/cxr/pneumonia_sample_sc.dcm", stop_before_pixels=True
    )
    for identifier in (str(sample.PatientName), str(sample.PatientID)):
        assert not identifier or identifier not in serve_log  # no PHI in the application log
    # one key=value line per event, and no raw warning text from a library
    events = [line for line in serve_log.splitlines() if line.startswith("at=")]
    named = {part for line in events for part in line.split() if part.startswith("event=")}
    assert {"event=received", "event=study-complete", "event=analysed"} <= named, named
    assert sum("event=received" in line for line in events) == 1  # one instance, one line
    loose = [line for line in serve_log.splitlines() if line and not line.startswith("at=")]
    assert all(line.startswith("medsight serve:") for line in loose), loose
    assert "Traceback" not in serve_log


@pytest.mark.timeout(300)
def test_stow_rs_intake_with_a_real_dicomweb_client(tmp_path):
    from dicomweb_client.api import DICOMwebClient

    from tests.reporting._sources import totalseg_ct_with_uids

    data, http = tmp_path / "data", free_port()
    log = tmp_path / "serve.log"
    process = start(data, free_port(), log, extra=["--http-port", str(http)])
    base = f"http://127.0.0.1:{http}"
    try:
        wait_for(Api(base).up, 60, "the API", process, log)
        token = account(data, "pacs-bridge", "service")
        files = sorted(totalseg_ct_with_uids(tmp_path / "ct").glob("*.dcm"))[:4]
        client = DICOMwebClient(f"{base}/dicom-web", headers={"Authorization": f"Bearer {token}"})
        response = client.store_instances([pydicom.dcmread(f) for f in files])
        assert len(response.ReferencedSOPSequence) == 4
        assert InstanceStore(data).count() == 4
        anonymous = DICOMwebClient(f"{base}/dicom-web")
        with pytest.raises(Exception, match="401"):
            anonymous.store_instances([pydicom.dcmread(files[0])])
        # an instance of a SOP class nobody knows is kept, and its study flagged for review
        private = non_image_instance(tmp_path / "private.dcm")
        unknown = pydicom.dcmread(private)
        unknown.SOPClassUID = "1.2.826.0.1.3680043.8.498.999.1"  # a private SOP class
        unknown.file_meta.MediaStorageSOPClassUID = unknown.SOPClassUID
        client.store_instances([unknown])
        store = InstanceStore(data)
        assert store.count() == 5
        wait_for(
            lambda: (
                data / "results" / study_key_of(unknown.StudyInstanceUID) / "result.json"
            ).is_file(),
            120,
            "the unknown instance's study",
            process,
            log,
        )
        clinician = Api(base, account(data, "dr-stow", "clinician"))
        ct_key = study_key_of(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        wait_for(
            lambda: (data / "results" / ct_key / "result.json").is_file(),
            120,
            "the CT study",
            process,
            log,
        )
        ct = next(i for i in clinician.json("/api/worklist")["items"] if i["study_key"] == ct_key)
        assert ct["patient_name"] == "Test^TotalSegmentator" and ct["patient_id"] == "TOTALSEG-TEST"
        assert ct["accession_number"] == "ACC-TS-1" and ct["modality"] == "CT"
        assert (ct["series_count"], ct["instance_count"]) == (1, 4)
        entry = next(
            i
            for i in clinician.json("/api/worklist")["items"]
            if i["study_key"] == study_key_of(unknown.StudyInstanceUID)
        )
        assert entry["priority"] == "NEEDS_REVIEW" and "no image" in " ".join(entry["reasons"])
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.timeout(300)
def test_photo_upload_is_analysed_by_the_task_chosen_with_it(tmp_path):
    photo = require_data("ph2", "images", "IMD063.jpg")
    data, http = tmp_path / "data", free_port()
    log = tmp_path / "serve.log"
    process = start(data, free_port(), log, extra=["--http-port", str(http), "--task", "auto"])
    base = f"http://127.0.0.1:{http}"
    try:
        wait_for(Api(base).up, 60, "the API", process, log)
        service = Api(base, account(data, "camera-bridge", "service"))
        clinician = Api(base, account(data, "dr-derm", "clinician"))
        query = "/api/upload?task=derm-melanoma&patient_id=PH2-063&accession_number=A63"
        headers = {"Content-Type": "image/jpeg"}
        status, body, _ = service.call("POST", query, photo.read_bytes(), headers)
        assert status == 201, body
        uploaded = json.loads(body)
        assert uploaded["stored"] is True and uploaded["task"] == "derm-melanoma"
        again = json.loads(service.call("POST", query, photo.read_bytes(), headers)[1])
        assert again["stored"] is False  # the same photo for the same study: stored once
        assert service.call("POST", query, b"not a picture", headers)[0] == 422
        wrong_task = query.replace("derm-melanoma", "hippocampus-mr")
        assert service.call("POST", wrong_task, photo.read_bytes(), headers)[0] == 422
        assert service.call("POST", "/api/upload?task=derm-melanoma", b"x", headers)[0] == 422
        assert clinician.call("POST", query, photo.read_bytes(), headers)[0] == 403

        store = InstanceStore(data)
        wait_for(lambda: store.queue.states().get("done", 0) == 1, 180, "analysis", process, log)
        (item,) = clinician.json("/api/worklist")["items"]
        assert item["patient_id"] == "PH2-063" and item["accession_number"] == "A63"
        assert item["modality"] == "XC"
        study = clinician.json(f"/api/studies/{item['study_key']}")
        (analysis,) = study["analyses"]
        assert analysis["task"]["id"] == "derm-melanoma"
        assert analysis["task"]["selection"]["mode"] == "named"
        assert analysis["input"]["modality"] == "XC"
        heatmap = analysis["classification"]["heatmap"]
        status, png, _ = clinician.call("GET", f"/studies/{item['study_key']}/{heatmap}")
        assert status == 200 and png[:4] == b"\x89PNG"
        # the viewer's layers: a photograph has no pixel spacing, and it says so
        volume = clinician.json(f"/api/studies/{item['study_key']}/volume")
        assert volume["kind"] == "photograph" and volume["spacing_known"] is False
        assert volume["heatmap"] is True and volume["orientation"] is None
        pixels = volume["columns"] * volume["rows"]
        image = clinician.call("GET", f"/api/studies/{item['study_key']}/slice?layer=image")
        heat = clinician.call("GET", f"/api/studies/{item['study_key']}/slice?layer=heatmap")
        assert image[0] == heat[0] == 200
        assert len(image[1]) == 3 * 4 * pixels and len(heat[1]) == pixels  # RGB float32, uint8
        assert clinician.call("GET", f"/api/studies/{item['study_key']}/slice?k=1")[0] == 404
        assert clinician.call("GET", f"/api/studies/{item['study_key']}/slice?layer=x")[0] == 422
    finally:
        process.terminate()
        process.wait(timeout=30)
