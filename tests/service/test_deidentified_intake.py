"""`serve --deidentify KEY`: instances are de-identified before they are written, the
worklist shows pseudonyms, and pushing results back to a PACS is refused at start-up."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pydicom
import pytest

from medsight.service import InstanceStore
from tests._net import free_port
from tests.service._client import Api, account
from tests.service.test_serve_recovery import SAMPLE, send, start, wait_for


@pytest.mark.timeout(300)
def test_the_worklist_shows_pseudonyms_and_no_original_reaches_the_disk(tmp_path):
    if shutil.which("storescu") is None:
        pytest.fail("dcmtk is needed; scripts/test installs it")
    key = tmp_path / "site.key"
    key.write_text(os.urandom(32).hex())
    key.chmod(0o600)
    data, port, http = tmp_path / "data", free_port(), free_port()
    log = tmp_path / "serve.log"
    process = start(data, port, log, extra=["--http-port", str(http), "--deidentify", str(key)])
    base = f"http://127.0.0.1:{http}"
    try:
        wait_for(Api(base).up, 60, "the API", process, log)
        send(port)
        store = InstanceStore(data)
        wait_for(lambda: store.queue.states().get("done", 0) == 1, 180, "analysis", process, log)
        clinician = Api(base, account(data, "dr-pseudo", "clinician"))
        (row,) = clinician.json("/api/worklist")["items"]
        original = pydicom.dcmread(SAMPLE)
        assert row["patient_name"].startswith("PSEUDONYM^MS")
        assert row["patient_id"].startswith("MS") and row["patient_id"] != original.PatientID
        on_disk = b"".join(p.read_bytes() for p in (data / "instances").rglob("*.dcm"))
        for value in (str(original.PatientName), original.PatientID, original.SOPInstanceUID):
            assert value.encode() not in on_disk
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_deidentify_with_push_is_refused_at_start_up(tmp_path):
    key = tmp_path / "site.key"
    key.write_text(os.urandom(32).hex())
    key.chmod(0o600)
    command = [sys.executable, "-m", "medsight", "serve", "--data-dir", str(tmp_path / "d")]
    for extra in (["--push", "PACS@127.0.0.1:11112"], ["--stow-url", "http://127.0.0.1:1/x"]):
        done = subprocess.run(
            [*command, "--deidentify", str(key), *extra],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert "cannot be used with --push or --stow-url" in done.stderr
