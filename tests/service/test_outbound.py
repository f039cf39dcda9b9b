"""Results pushed back to a real Orthanc by C-STORE, and a signed critical-finding webhook
delivered with a retry, both recorded; the payload carries no patient identifiers."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pydicom
import pytest

from medsight.service import InstanceStore
from medsight.service.outbound import Outbound
from tests._net import free_port
from tests.reporting.test_orthanc import orthanc  # noqa: F401 - fixture
from tests.service.test_serve_recovery import SAMPLE, send, start, wait_for

SECRET = "test-secret"


class Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    fail_first: ClassVar[bool] = True

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((dict(self.headers), body))
        status = 500 if Receiver.fail_first else 200
        Receiver.fail_first = False
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.timeout(300)
def test_results_reach_the_pacs_and_the_webhook(orthanc, tmp_path, monkeypatch):  # noqa: F811
    base, orthanc_port = orthanc
    receiver = HTTPServer(("127.0.0.1", free_port()), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    Receiver.received.clear()
    Receiver.fail_first = True
    data, port = tmp_path / "data", free_port()
    log = tmp_path / "serve.log"
    monkeypatch.setenv("MEDSIGHT_WEBHOOK_SECRET", SECRET)
    hook = f"http://127.0.0.1:{receiver.server_port}/hook"
    process = start(
        data,
        port,
        log,
        extra=[
            "--http-port",
            str(free_port()),
            "--push",
            f"ORTHANC@127.0.0.1:{orthanc_port}",
            "--webhook-url",
            hook,
        ],
    )
    try:
        send(port)
        store = InstanceStore(data)
        outbound = Outbound(store.engine, data)

        def delivered() -> bool:
            records = outbound.records()
            return len(records) >= 1 and all(r["state"] == "done" for r in records)

        wait_for(delivered, 180, "the deliveries", process, log)
    finally:
        process.terminate()
        process.wait(timeout=30)
        receiver.shutdown()
    records = {r["kind"]: r for r in outbound.records()}
    study = pydicom.dcmread(SAMPLE, stop_before_pixels=True)

    # the SR reached Orthanc, in the source's study
    with urllib.request.urlopen(f"{base}/dicom-web/studies/{study.StudyInstanceUID}/series") as r:
        modalities = {s["00080060"]["Value"][0] for s in json.loads(r.read())}
    assert "SR" in modalities and records["pacs"]["attempts"] == 1

    # the webhook: failed once, retried, signed, idempotent, no patient identifiers
    document = json.loads(next((data / "results").glob("*/result.json")).read_text())
    (finding,) = document["analyses"][0]["findings"]
    assert finding["flag"] and finding["critical"]  # the sample's pneumonia is flagged
    assert records["webhook"]["attempts"] == 2
    assert len(Receiver.received) == 2
    headers, body = Receiver.received[-1]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Medsight-Signature"] == expected
    payload = json.loads(body)
    assert headers["Idempotency-Key"] == payload["idempotency_key"]
    assert payload["study_instance_uid"] == study.StudyInstanceUID
    text = body.decode()
    for identifier in (str(study.PatientID), str(study.PatientName)):
        if identifier:
            assert identifier not in text


@pytest.mark.timeout(300)
def test_results_reach_the_pacs_by_stow_rs(orthanc, tmp_path):  # noqa: F811
    base, _orthanc_port = orthanc
    data, port = tmp_path / "data", free_port()
    log = tmp_path / "serve.log"
    extra = ["--http-port", str(free_port()), "--stow-url", f"{base}/dicom-web"]
    process = start(data, port, log, extra=extra)
    try:
        send(port)
        outbound = Outbound(InstanceStore(data).engine, data)

        def delivered() -> bool:
            records = outbound.records()
            return len(records) == 1 and records[0]["state"] == "done"

        wait_for(delivered, 180, "the STOW-RS delivery", process, log)
    finally:
        process.terminate()
        process.wait(timeout=30)
    (record,) = outbound.records()
    assert record["kind"] == "stow" and record["attempts"] == 1
    study = pydicom.dcmread(SAMPLE, stop_before_pixels=True).StudyInstanceUID
    with urllib.request.urlopen(f"{base}/dicom-web/studies/{study}/series") as response:
        modalities = {s["00080060"]["Value"][0] for s in json.loads(response.read())}
    assert modalities == {"SR"}
