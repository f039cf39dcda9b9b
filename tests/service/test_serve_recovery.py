"""`medsight serve` end to end: a study sent by dcmtk storescu is stored, analysed after its
quiet period, and a `kill -9` in the middle of the analysis loses nothing: the restarted
service finishes the study, with exactly one stored instance and one current result."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from medsight.service import InstanceStore
from tests._net import free_port
from tests.service._client import Api, account

SAMPLE = Path(__file__).parents[2] / "src/medsight/samples/cxr/pneumonia_sample_sc.dcm"


def start(
    data: Path, port: int, log: Path, extra: list[str] | None = None, lease_seconds: int = 4
) -> subprocess.Popen:
    command = [sys.executable, "-m", "medsight", "serve", "--data-dir", str(data)]
    command += ["--dicom-port", str(port), "--quiet-seconds", "1"]
    command += ["--lease-seconds", str(lease_seconds)]
    command += ["--task", "cxr-pneumonia", "--outputs", "json,sr,html"]
    command += ["--allow-aet", "MODALITY", "--dev"]
    command += extra or ["--http-port", str(free_port())]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_for(condition, timeout: float, what: str, process=None, log=None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            pytest.fail(f"serve exited early: {log.read_text()[-2000:] if log else ''}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}: {log.read_text()[-2000:] if log else ''}")


def send(port: int) -> None:
    deadline = time.time() + 60
    while True:  # the listener may still be starting
        sent = subprocess.run(
            [
                "storescu",
                "-aet",
                "MODALITY",
                "-aec",
                "MEDSIGHT",
                "127.0.0.1",
                str(port),
                str(SAMPLE),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if sent.returncode == 0 or time.time() > deadline:
            break
        time.sleep(0.3)
    assert sent.returncode == 0, sent.stdout + sent.stderr


@pytest.mark.timeout(300)
def test_kill_9_during_analysis_loses_nothing_and_the_restart_does_not_wait_for_the_lease(
    tmp_path,
):
    if shutil.which("storescu") is None:
        pytest.fail("dcmtk is needed; scripts/test installs it")
    data = tmp_path / "data"
    log = tmp_path / "serve-1.log"
    port = free_port()
    # a 10-minute lease: only reclaiming the dead worker's lease at once can beat it
    first = start(data, port, log, lease_seconds=600)
    try:
        send(port)
        store = InstanceStore(data)
        study = pydicom.dcmread(SAMPLE, stop_before_pixels=True).StudyInstanceUID

        def leased() -> bool:
            return any(j["state"] == "leased" for j in store.queue.jobs_of(study))

        wait_for(leased, 120, "the job to be leased", first, log)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert store.count() == 1  # acknowledged, so durable
    assert not list((data / "results").glob("*/result.json"))  # killed before finishing

    log2 = tmp_path / "serve-2.log"
    http = free_port()
    second = start(data, free_port(), log2, ["--http-port", str(http)], lease_seconds=600)
    restarted = time.time()
    try:
        clinician = Api(f"http://127.0.0.1:{http}", account(data, "dr-crash", "clinician"))

        def on_the_worklist() -> bool:
            return clinician.up() and clinician.json("/api/worklist")["total"] == 1

        wait_for(on_the_worklist, 30, "the study on the worklist after the restart", second, log2)
        assert time.time() - restarted < 30
        assert "event=lease-reclaimed" in log2.read_text()
    finally:
        second.terminate()
        second.wait(timeout=30)
    (job,) = store.queue.jobs_of(study)
    assert job["attempts"] == 2 and job["state"] == "done"
    (result,) = (data / "results").glob("*/result.json")
    document = json.loads(result.read_text())
    assert document["analyses"][0]["task"]["id"] == "cxr-pneumonia"
    assert store.count() == 1
