"""The whole flow with a real modality and a real PACS: dcmtk storescu sends a two-series
study (a CT and a chest X-ray) to `medsight serve`, Orthanc forwards a second study to it,
the site's rules route each series to its task, the results (SEG, SR, JSON) land on the
worklist with priority and reasons, and the DICOM results come back into Orthanc, where
they are retrieved by DICOMweb."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from medsight.service import InstanceStore
from medsight.service.outbound import Outbound
from medsight.tasks import load_named_task
from tests._net import free_port
from tests.reporting._sources import totalseg_ct_with_uids
from tests.reporting.test_dicom_seg import ct_task
from tests.reporting.test_orthanc import get_json, orthanc, wado_instance  # noqa: F401
from tests.service._client import Api, account
from tests.service.test_serve_recovery import SAMPLE, wait_for


def cxr_copy(path: Path, study: str | None = None) -> Path:
    """The CXR sample as a new instance (and series), in ``study`` or a new study."""
    dataset = pydicom.dcmread(SAMPLE)
    dataset.StudyInstanceUID = study or generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.SeriesNumber = 2
    dataset.save_as(path)
    return path


def orthanc_call(base: str, method: str, path: str, body: object) -> object:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    with urllib.request.urlopen(request, timeout=120) as response:
        text = response.read()
    return json.loads(text) if text.strip() else None


@pytest.mark.timeout(600)
def test_modality_and_pacs_to_worklist_and_back_to_the_pacs(orthanc, tmp_path):  # noqa: F811
    orthanc_http, orthanc_dicom = orthanc
    ct_task(tmp_path / "tasks")
    rules = tmp_path / "rules.toml"
    rules.write_text(
        'version = "site-1"\n'
        '[[rules]]\ntask = "test-ct-organs"\nmodalities = ["CT"]\nspatial_dims = 3\n'
        '[[rules]]\ntask = "cxr-pneumonia"\nspatial_dims = 2\nphotometric = ["MONOCHROME2"]\n'
    )
    ct = sorted(totalseg_ct_with_uids(tmp_path / "ct").glob("*.dcm"))
    study = pydicom.dcmread(ct[0], stop_before_pixels=True).StudyInstanceUID
    cxr_in_study = cxr_copy(tmp_path / "cxr-in-ct-study.dcm", study)
    forwarded = cxr_copy(tmp_path / "forwarded.dcm")
    forwarded_study = pydicom.dcmread(forwarded, stop_before_pixels=True).StudyInstanceUID

    data, port, http = tmp_path / "data", free_port(), free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "medsight", "serve", "--data-dir", str(data), "--dev"]
    command += ["--dicom-port", str(port), "--http-port", str(http), "--quiet-seconds", "2"]
    command += ["--tasks-dir", str(tmp_path / "tasks"), "--rules", str(rules)]
    command += ["--outputs", "seg,sr,json,html", "--workers", "2"]
    command += ["--push", f"ORTHANC@127.0.0.1:{orthanc_dicom}"]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http}"
    try:
        wait_for(Api(base).up, 60, "the service", process, log)
        clinician = Api(base, account(data, "dr-flow", "clinician"))
        # the modality: a two-series study by C-STORE (the CT proposed as JPEG 2000)
        sent = subprocess.run(
            [
                *("storescu", "-xv", "-aet", "CT-SCANNER", "-aec", "MEDSIGHT", "127.0.0.1"),
                *(str(port), *map(str, ct), str(cxr_in_study)),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        # the PACS: a study stored in Orthanc, forwarded by Orthanc to medsight
        uploaded = orthanc_call(orthanc_http, "POST", "/instances", forwarded.read_bytes())
        orthanc_call(
            orthanc_http,
            "PUT",
            "/modalities/medsight",
            {"AET": "MEDSIGHT", "Host": "127.0.0.1", "Port": port},
        )
        orthanc_call(orthanc_http, "POST", "/modalities/medsight/store", [uploaded["ParentStudy"]])

        store = InstanceStore(data)
        wait_for(lambda: sum(store.queue.states().values()) == 2, 60, "two jobs", process, log)

        def finished() -> bool:
            states = store.queue.states()
            return states.get("done", 0) + states.get("dead", 0) == 2

        wait_for(finished, 300, "analysis", process, log)
        assert store.queue.states().get("done") == 2, log.read_text()[-3000:]
        assert store.count() == len(ct) + 2
        outbound = Outbound(store.engine, data)

        def pushed() -> bool:
            records = outbound.records()
            return len(records) == 2 and all(r["state"] == "done" for r in records)

        wait_for(pushed, 120, "the results pushed to Orthanc", process, log)

        worklist = clinician.json("/api/worklist")
        assert worklist["total"] == 2
        for item in worklist["items"]:
            assert item["priority"] == "URGENT"  # the sample's pneumonia, in both studies
            assert any("Pneumonia" in reason for reason in item["reasons"])
            # the worklist names the task version that answered (a site version shows here)
            assert f"cxr-pneumonia {load_named_task('cxr-pneumonia').version}" in item["models"]
        results = {}
        for item in worklist["items"]:
            document = clinician.json(f"/api/studies/{item['study_key']}")
            results[document["analyses"][0]["input"]["study_instance_uid"]] = document
        two_series = results[study]
        tasks = sorted(a["task"]["id"] for a in two_series["analyses"])
        assert tasks == ["cxr-pneumonia", "test-ct-organs"]
        for analysis in two_series["analyses"]:
            assert "site routing rules version site-1" in analysis["task"]["selection"]["reasons"]
        outputs = [p for a in two_series["analyses"] for p in a.get("dicom_outputs", [])]
        assert any(p.endswith("_seg.dcm") for p in outputs), outputs
        assert any(p.endswith("_sr.dcm") for p in outputs), outputs
        assert (data / "results" / two_series["study_key"] / "result.json").is_file()
    finally:
        process.terminate()
        process.wait(timeout=30)

    # the results are in Orthanc, in their source studies, and retrievable
    modalities = {
        s["00080060"]["Value"][0]
        for s in get_json(f"{orthanc_http}/dicom-web/studies/{study}/series")
    }
    assert modalities == {"SEG", "SR"}  # the results only: the images went to medsight
    back = {
        s["00080060"]["Value"][0]
        for s in get_json(f"{orthanc_http}/dicom-web/studies/{forwarded_study}/series")
    }
    assert "SR" in back
    folder = data / "results" / two_series["study_key"]
    for relative in outputs:
        written = pydicom.dcmread(folder / relative, stop_before_pixels=True)
        fetched = wado_instance(
            f"{orthanc_http}/dicom-web/studies/{study}/series/{written.SeriesInstanceUID}"
            f"/instances/{written.SOPInstanceUID}"
        )
        assert fetched.SOPClassUID == written.SOPClassUID
    instances = get_json(f"{orthanc_http}/dicom-web/studies/{study}/instances")
    assert len(instances) == len(outputs)  # each result pushed once
