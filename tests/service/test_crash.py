"""Crash test: while a modality sends studies and medsight analyses them and pushes the
results to a real Orthanc, the server (with its workers) and single workers are killed with
SIGKILL at random moments and restarted. Afterwards: every acknowledged instance is stored
once and intact, nothing half-written is left, every study has exactly one current result,
Orthanc holds each result once under its deterministic UIDs, and the audit chain verifies."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from medsight.analysis.inputs import study_key_of
from medsight.service import InstanceStore
from medsight.service.audit import AuditLog
from medsight.service.outbound import Outbound
from tests._net import free_port
from tests.reporting.test_orthanc import get_json, orthanc  # noqa: F401 - fixture
from tests.service.test_flow import cxr_copy
from tests.service.test_serve_recovery import wait_for

STUDIES = 6


def children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


class Sender(threading.Thread):
    """The modality: sends each study (two instances) until it is acknowledged."""

    def __init__(self, port: int, studies: list[list[Path]]) -> None:
        super().__init__(daemon=True)
        self.port, self.studies = port, studies
        self.failures = 0
        self.acknowledged: list[Path] = []

    def run(self) -> None:
        for files in self.studies:
            for _attempt in range(120):
                sent = subprocess.run(
                    [
                        *("storescu", "-aet", "MODALITY", "-aec", "MEDSIGHT", "127.0.0.1"),
                        *(str(self.port), *map(str, files)),
                    ],
                    capture_output=True,
                    timeout=60,
                )
                if sent.returncode == 0:
                    self.acknowledged += files
                    break
                self.failures += 1  # the server was down or died mid-association: resend
                time.sleep(0.5)
            time.sleep(random.uniform(0.2, 1.0))


@pytest.mark.timeout(600)
def test_kill_9_at_random_moments_loses_and_duplicates_nothing(orthanc, tmp_path):  # noqa: F811
    _orthanc_http, orthanc_dicom = orthanc
    random.seed(20261128)
    studies = []
    for n in range(STUDIES):
        uid = generate_uid()
        studies.append([cxr_copy(tmp_path / f"s{n}-{k}.dcm", uid) for k in range(2)])
    data, port = tmp_path / "data", free_port()
    command = [sys.executable, "-m", "medsight", "serve", "--data-dir", str(data), "--dev"]
    command += ["--dicom-port", str(port), "--quiet-seconds", "3", "--lease-seconds", "8"]
    command += ["--task", "cxr-pneumonia", "--outputs", "json,sr", "--workers", "2"]
    command += ["--push", f"ORTHANC@127.0.0.1:{orthanc_dicom}"]
    logs = []

    def launch() -> subprocess.Popen:
        logs.append(tmp_path / f"serve-{len(logs)}.log")
        extra = ["--http-port", str(free_port())]
        return subprocess.Popen(
            command + extra, stdout=logs[-1].open("w"), stderr=subprocess.STDOUT
        )

    server = launch()
    sender = Sender(port, studies)
    sender.start()
    kills = {"server": 0, "worker": 0}
    try:
        for round_ in range(5):
            time.sleep(random.uniform(2.0, 6.0))
            workers = children(server.pid)
            if round_ % 2 == 1 and workers:  # a worker alone; the server restarts it
                os.kill(random.choice(workers), signal.SIGKILL)
                kills["worker"] += 1
                continue
            os.kill(server.pid, signal.SIGKILL)  # the workers die with it (PDEATHSIG)
            server.wait()
            kills["server"] += 1
            time.sleep(random.uniform(0.0, 1.5))
            server = launch()
        sender.join(timeout=300)
        assert not sender.is_alive(), "the sender did not finish"
        store = InstanceStore(data)
        outbound = Outbound(store.engine, data)

        def settled() -> bool:
            states = store.queue.states()
            deliveries = outbound.records()
            return (
                states.get("done", 0) >= STUDIES
                and not states.get("queued")
                and not states.get("leased")
                and len(deliveries) >= STUDIES
                and all(d["state"] == "done" for d in deliveries)
            )

        wait_for(settled, 300, "every study analysed and pushed", server, logs[-1])
    finally:
        server.kill()
        server.wait()
    assert kills["server"] >= 3 and kills["worker"] >= 1, kills

    # every acknowledged instance is stored exactly once, intact; nothing half-written
    sent = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in sender.acknowledged}
    assert len(sent) == 2 * STUDIES
    stored = {
        i.sop_instance_uid: i
        for files in studies
        for i in store.instances_of(
            pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
        )
    }
    assert set(stored) == sent and store.count() == len(sent)
    assert all(store.verify(instance) for instance in stored.values())
    assert not list((data / "instances").rglob("*.partial"))  # nothing half-written is left
    assert sorted(p.name for p in (data / "instances").rglob("*.dcm")) == sorted(
        f"{uid}.dcm" for uid in sent
    )

    # one current result per study, covering both of its series
    for files in studies:
        uid = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
        key = study_key_of(uid)
        document = json.loads((data / "results" / key / "result.json").read_text())
        assert len(document["analyses"]) == 2 and document["status"] == "final"
        current_srs = {
            pydicom.dcmread(data / "results" / key / p, stop_before_pixels=True).SOPInstanceUID
            for a in document["analyses"]
            for p in a["dicom_outputs"]
        }
        in_orthanc = {
            i["00080018"]["Value"][0]
            for i in get_json(f"{_orthanc_http}/dicom-web/studies/{uid}/instances")
        }
        assert in_orthanc == current_srs  # pushed once each, never under other UIDs
        jobs = store.queue.jobs_of(uid)
        latest = max(j["revision"] for j in jobs)
        assert [j["state"] for j in jobs if j["revision"] == latest] == ["done"]

    verified = AuditLog(store.engine).verify()
    assert verified.ok and verified.rows >= STUDIES
    assert sender.failures >= 1  # the kills were felt by the sender too
