"""SEG and SR stored in a real Orthanc (Debian orthanc + orthanc-dicomweb, started here) next
to their source study: sent with dcmtk storescu, accepted, reported in the same study, and
retrieved by DICOMweb (QIDO-RS and WADO-RS)."""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medsight.findings import findings_from_prediction
from medsight.reporting.dicom_seg import write_seg
from medsight.reporting.dicom_sr import write_sr
from tests._net import free_port
from tests.reporting._sources import prediction_for
from tests.reporting.test_dicom_seg import ct_task, ct_with_labels

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


@pytest.fixture
def orthanc(tmp_path):
    if not ORTHANC.exists() or not DICOMWEB.exists():
        pytest.fail("Debian orthanc and orthanc-dicomweb are needed; scripts/test installs them")
    if shutil.which("storescu") is None:
        pytest.fail("dcmtk storescu is needed; scripts/test installs dcmtk")
    http, dicom = free_port(), free_port()
    config = {
        "Name": "medsight-test",
        "StorageDirectory": str(tmp_path / "orthanc-storage"),
        "IndexDirectory": str(tmp_path / "orthanc-index"),
        "HttpPort": http,
        "DicomPort": dicom,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [str(DICOMWEB)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    path = tmp_path / "orthanc.json"
    path.write_text(json.dumps(config))
    log = (tmp_path / "orthanc.log").open("w")
    process = subprocess.Popen([str(ORTHANC), str(path)], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{base}/system", timeout=2)
            break
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("Orthanc did not start: " + (tmp_path / "orthanc.log").read_text()[-2000:])
    yield base, dicom
    process.terminate()
    process.wait(timeout=30)
    log.close()


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def wado_instance(url: str) -> pydicom.Dataset:
    request = urllib.request.Request(
        url, headers={"Accept": 'multipart/related; type="application/dicom"'}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        header = f"Content-Type: {response.headers['Content-Type']}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            header + response.read()
        )
    (part,) = list(message.iter_parts())
    return pydicom.dcmread(io.BytesIO(part.get_payload(decode=True)))


@pytest.mark.timeout(300)
def test_seg_and_sr_are_stored_beside_their_study_and_retrievable(orthanc, tmp_path):
    base, port = orthanc
    task = ct_task(tmp_path)
    image, label_map = ct_with_labels(tmp_path)
    prediction = prediction_for(task, image, label_map)
    seg_path = write_seg(prediction, task, image, tmp_path / "seg.dcm")
    assert seg_path is not None
    findings = findings_from_prediction(prediction, task, image)
    sr_path = write_sr(findings, task, image, tmp_path / "sr.dcm", seg_path=seg_path)
    sources = sorted((tmp_path / "ct").glob("*.dcm"))
    # the CT is JPEG 2000 lossless (proposed as such); SEG and SR are proposed by their own
    # SOP classes (-R), which are not in storescu's default list
    for options, files in ((["-xv"], sources), (["-R"], [seg_path, sr_path])):
        command = ["storescu", *options, "-aet", "MEDSIGHT", "-aec", "ORTHANC"]
        command += ["127.0.0.1", str(port), *map(str, files)]
        sent = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert sent.returncode == 0, sent.stdout + sent.stderr

    study = pydicom.dcmread(seg_path, stop_before_pixels=True).StudyInstanceUID
    series = get_json(f"{base}/dicom-web/studies/{study}/series")
    modalities = sorted(s["00080060"]["Value"][0] for s in series)
    assert modalities == ["CT", "SEG", "SR"]
    assert len(get_json(f"{base}/studies")) == 1  # Orthanc reports one study

    for path in (seg_path, sr_path):
        written = pydicom.dcmread(path)
        fetched = wado_instance(
            f"{base}/dicom-web/studies/{study}/series/{written.SeriesInstanceUID}"
            f"/instances/{written.SOPInstanceUID}"
        )
        assert fetched.SOPInstanceUID == written.SOPInstanceUID
        assert fetched.SOPClassUID == written.SOPClassUID
    seg = wado_instance(
        f"{base}/dicom-web/studies/{study}/series/"
        f"{pydicom.dcmread(seg_path).SeriesInstanceUID}/instances/"
        f"{pydicom.dcmread(seg_path).SOPInstanceUID}"
    )
    assert np.array_equal(seg.pixel_array, pydicom.dcmread(seg_path).pixel_array)
