"""DICOMweb query and retrieve with a real client (dicomweb-client) against `medsight serve`:
a clinician's personal API token finds and retrieves the stored inputs (a radiograph sent by
storescu, a CT series sent by STOW-RS) and medsight's own SR result; the service role and
anonymous callers are refused; bad queries, unknown UIDs, out-of-range frames and malformed
STOW-RS bodies get the status and reason PS3.18 asks for."""

from __future__ import annotations

import io
import json

import pydicom
import pytest

from medsight.analysis.inputs import study_key_of
from medsight.service import InstanceStore
from tests._net import free_port
from tests.service._client import Api, account
from tests.service.test_serve_recovery import SAMPLE, send, start, wait_for


@pytest.mark.timeout(300)
def test_query_and_retrieve_with_a_real_dicomweb_client(tmp_path):
    from dicomweb_client.api import DICOMwebClient
    from PIL import Image

    from tests.reporting._sources import totalseg_ct_with_uids

    data, port, http = tmp_path / "data", free_port(), free_port()
    log = tmp_path / "serve.log"
    viewer = "http://viewer.example:3000"  # an OHIF on another origin, with a bearer token
    process = start(data, port, log, extra=["--http-port", str(http), "--cors-origin", viewer])
    base = f"http://127.0.0.1:{http}"
    try:
        wait_for(Api(base).up, 60, "the API", process, log)
        clinician = Api(base, account(data, "dr-web", "clinician"))
        service_token = account(data, "bridge", "service")
        created = clinician.call("POST", "/api/tokens", {"label": "weasis"})
        token = json.loads(created[1])["token"]
        send(port)
        files = sorted(totalseg_ct_with_uids(tmp_path / "ct").glob("*.dcm"))[:3]
        stow = DICOMwebClient(
            f"{base}/dicom-web", headers={"Authorization": f"Bearer {service_token}"}
        )
        stow.store_instances([pydicom.dcmread(f) for f in files])
        store = InstanceStore(data)
        wait_for(lambda: store.queue.states().get("done", 0) == 2, 180, "analysis", process, log)

        client = DICOMwebClient(f"{base}/dicom-web", headers={"Authorization": f"Bearer {token}"})
        studies = client.search_for_studies()
        assert len(studies) == 2
        cxr_uid = str(pydicom.dcmread(SAMPLE, stop_before_pixels=True).StudyInstanceUID)
        (cxr,) = client.search_for_studies(search_filters={"PatientID": "KERMANY-SAMPLE-1"})
        assert cxr["0020000D"]["Value"] == [cxr_uid]
        assert cxr["00100010"]["Value"][0]["Alphabetic"] == "SAMPLE^KERMANY"
        assert set(cxr["00080061"]["Value"]) == {"DX", "SR"}  # the input and medsight's SR
        assert client.search_for_studies(search_filters={"PatientName": "sample*"})
        assert client.search_for_studies(search_filters={"StudyDate": "20170101-20181231"})
        assert not client.search_for_studies(search_filters={"StudyDate": "20230101-"})
        with_field = client.search_for_studies(
            search_filters={"PatientID": "KERMANY-SAMPLE-1"}, fields=["BodyPartExamined"]
        )
        assert with_field[0]["00180015"]["Value"] == ["CHEST"]

        series = client.search_for_series(cxr_uid)
        modalities = {s["00080060"]["Value"][0] for s in series}
        assert modalities == {"DX", "SR"}
        sr_series = next(s for s in series if s["00080060"]["Value"][0] == "SR")
        sr_uid = sr_series["0020000E"]["Value"][0]
        (sr_instance,) = client.search_for_instances(cxr_uid, sr_uid)
        sr = client.retrieve_instance(cxr_uid, sr_uid, sr_instance["00080018"]["Value"][0])
        assert sr.Modality == "SR" and sr.StudyInstanceUID == cxr_uid

        ct = pydicom.dcmread(files[0])
        ct_uid, ct_series = str(ct.StudyInstanceUID), str(ct.SeriesInstanceUID)
        assert len(client.search_for_instances(ct_uid, ct_series)) == 3
        retrieved = client.retrieve_instance(ct_uid, ct_series, str(ct.SOPInstanceUID))
        assert retrieved.PatientID == "TOTALSEG-TEST"
        assert retrieved.pixel_array.tobytes() == ct.pixel_array.tobytes()
        whole = client.retrieve_series(ct_uid, ct_series)
        assert sorted(d.SOPInstanceUID for d in whole) == sorted(
            str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files
        )
        meta = client.retrieve_instance_metadata(ct_uid, ct_series, str(ct.SOPInstanceUID))
        assert meta["00100020"]["Value"] == ["TOTALSEG-TEST"] and "BulkDataURI" in meta["7FE00010"]
        (frame,) = client.retrieve_instance_frames(ct_uid, ct_series, str(ct.SOPInstanceUID), [1])
        assert frame == ct.pixel_array.tobytes()
        png = client.retrieve_instance_rendered(ct_uid, ct_series, str(ct.SOPInstanceUID))
        assert Image.open(io.BytesIO(png)).size == (ct.Columns, ct.Rows)
        assert len(client.retrieve_study_metadata(ct_uid)) == 3

        # the named viewer origin may call with a bearer token; any other origin may not
        preflight = {
            "Origin": viewer,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        }
        status, _, headers = Api(base).call("OPTIONS", "/dicom-web/studies", None, preflight)
        assert status == 200 and headers["access-control-allow-origin"] == viewer
        other = {**preflight, "Origin": "http://evil.example"}
        status, _, headers = Api(base).call("OPTIONS", "/dicom-web/studies", None, other)
        assert "access-control-allow-origin" not in {k.lower() for k in headers}
        cross = Api(base, token).call("GET", "/dicom-web/studies", None, {"Origin": viewer})
        assert cross[0] == 200 and cross[2]["access-control-allow-origin"] == viewer

        # refusals: no credentials, the service role, bad queries, unknown UIDs, bad frames
        assert Api(base).call("GET", "/dicom-web/studies")[0] == 401
        assert Api(base, service_token).call("GET", "/dicom-web/studies")[0] == 403
        web = Api(base, token)
        for query, reason in (
            ("StudyDate=2018-01-01", b"is not a date or range"),
            ("StudyDate=20181341", b"not a calendar date"),
            ("Colour=red", b"is not a DICOM attribute"),
            ("SOPInstanceUID=1.2", b"not a matching key at the studies level"),
            ("limit=ten", b"whole number"),
            ("includefield=NotAnAttribute", b"includefield"),
            ("StudyInstanceUID=abc", b"not a list of UIDs"),
        ):
            status, body, _ = web.call("GET", f"/dicom-web/studies?{query}")
            assert status == 400 and reason in body, (query, status, body)
        instance = f"/dicom-web/studies/{ct_uid}/series/{ct_series}/instances/{ct.SOPInstanceUID}"
        assert web.call("GET", "/dicom-web/studies/1.2.3.4")[0] == 404
        assert web.call("GET", f"/dicom-web/studies/{ct_uid}/series/1.2.3/metadata")[0] == 404
        assert web.call("GET", "/dicom-web/studies/not-a-uid")[0] == 400
        assert web.call("GET", f"{instance}/frames/2")[0] == 404
        assert web.call("GET", f"{instance}/frames/x")[0] == 400
        assert web.call("GET", f"{instance}/frames/9/rendered")[0] == 404
        admin = Api(base, account(data, "boss", "admin"))
        actions = [r["action"] for r in admin.json("/api/audit?actor=dr-web&limit=1000")]
        assert "dicomweb-query" in actions and "dicomweb-retrieve" in actions
        retrievals = admin.json(
            f"/api/audit?subject={study_key_of(ct_uid)}&action=dicomweb-retrieve"
        )
        assert retrievals and retrievals[0]["actor"] == "dr-web"

        # STOW-RS: a body with no DICOM part is 400, parts that are all bad are 409
        bridge = Api(base, service_token)
        headers = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b0'}
        status, body, _ = bridge.call("POST", "/dicom-web/studies", b"garbage", headers)
        assert status == 400 and b"no application/dicom parts" in body
        bad = b"--b0\r\nContent-Type: application/dicom\r\n\r\nnot dicom at all\r\n--b0--\r\n"
        status, body, _ = bridge.call("POST", "/dicom-web/studies", bad, headers)
        failure = json.loads(body)["00081198"]["Value"][0]
        assert status == 409 and failure["00081197"]["Value"] == [0xC000]
        assert "not a DICOM instance" in failure["00000902"]["Value"][0]
    finally:
        process.terminate()
        process.wait(timeout=30)
