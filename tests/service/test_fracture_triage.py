"""A radiograph through the service under an emergency department's site rules: sent by
storescu, analysed by a detection task (random weights, thresholds at 0, so that it flags),
and the worklist shows the study URGENT with the site's setting in its reason; the same
study under an outpatient setting is ROUTINE."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from medsight.service import InstanceStore
from tests._net import free_port
from tests._tasks import detector_task
from tests.service._client import Api, account
from tests.service.test_serve_recovery import wait_for
from tests.service.test_viewer import storescu

SAMPLE = Path(__file__).parents[2] / "src/medsight/samples/fracture/fracture_sample_cr.dcm"
FLAGGING = (
    "\n[detection]\nfinding_score = 0.0\n"
    '\n[operating_points.high_sensitivity]\noutput = "lesion"\nthreshold = 0.0\n'
)


def _level(tmp_path: Path, setting: str) -> tuple[str, list[str]]:
    tasks = tmp_path / "tasks"
    detector_task(
        tasks / "test-det",
        arguments={"depth": 10, "fpn_channels": 16, "max_boxes": 2, "score_threshold": 0.0},
        extra=FLAGGING,
    )
    rules = tmp_path / f"{setting}.toml"
    rules.write_text(
        f'version = "site-{setting}"\n[[rules]]\ntask = "test-det"\nmodalities = ["CR"]\n'
        f'[triage]\nsetting = "{setting}"\n'
        '[[triage.urgent]]\nfinding = "lesion"\nsettings = ["emergency"]\n'
    )
    data, port, http = tmp_path / f"data-{setting}", free_port(), free_port()
    log = tmp_path / f"serve-{setting}.log"
    command = [sys.executable, "-m", "medsight", "serve", "--data-dir", str(data)]
    command += ["--dicom-port", str(port), "--http-port", str(http), "--quiet-seconds", "1"]
    command += ["--rules", str(rules), "--tasks-dir", str(tasks), "--workers", "1"]
    token = account(data, "dr-er", "clinician")
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http}"
    try:
        wait_for(Api(base).up, 60, "the service", process, log)
        storescu(port, [str(SAMPLE)])
        store = InstanceStore(data)
        wait_for(lambda: store.queue.states().get("done", 0) == 1, 300, "the film", process, log)
        (item,) = Api(base, token).json("/api/worklist")["items"]
        return item["priority"], item["reasons"]
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.timeout(600)
def test_the_emergency_setting_makes_a_flagged_fracture_urgent_on_the_worklist(tmp_path):
    level, reasons = _level(tmp_path, "emergency")
    assert level == "URGENT", reasons
    assert any("emergency setting" in r for r in reasons)
    level, _ = _level(tmp_path, "outpatient")
    assert level == "ROUTINE"
