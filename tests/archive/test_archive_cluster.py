"""analyze-archive on a real two-node Ray cluster: a node lost mid-run, every study analysed
exactly once, results identical to single-process ``medsight analyze``."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.archive._cluster import (
    ENV,
    MEDSIGHT,
    Cluster,
    mixed_manifest,
    same_results,
    state_lines,
    wait_for_lines,
)

pytestmark = pytest.mark.timeout(420)


@pytest.fixture
def cluster() -> object:
    started = Cluster().start()
    yield started
    started.stop()


def test_node_lost_mid_run_every_study_once_and_equal_to_analyze(
    tmp_path: Path, cluster: Cluster
) -> None:
    manifest = mixed_manifest(tmp_path / "archive")
    studies = sum(1 for _ in manifest.open()) - 1
    assert studies >= 50
    dest = tmp_path / "dest"
    command = [
        MEDSIGHT,
        "analyze-archive",
        str(manifest),
        "--out",
        str(dest),
        "--outputs",
        "json",
        "--ray-address",
        cluster.address,
    ]
    run = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    before = wait_for_lines(dest, 8, run, limit=240)
    assert run.poll() is None, "the run ended before the node could be stopped"
    cluster.stop_second_node()
    output, _ = run.communicate(timeout=300)
    text = output.decode(errors="replace")
    assert run.returncode == 0, text
    assert 8 <= before < studies

    lines = state_lines(dest)
    keys = Counter(str(line["key"]) for line in lines)
    assert len(keys) == studies and set(keys.values()) == {1}, keys.most_common(3)
    assert {line["state"] for line in lines} == {"done"}
    # only the driver appends provenance: one entry per analysis, none from a lost worker
    provenance = [json.loads(x) for x in (dest / "provenance.jsonl").read_text().splitlines()]
    assert len(provenance) == studies

    single = tmp_path / "single"
    analyze = subprocess.run(
        [
            MEDSIGHT,
            "analyze",
            "--manifest",
            str(manifest),
            "--out",
            str(single),
            "--outputs",
            "json",
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert analyze.returncode == 0, analyze.stderr
    for key in keys:
        archived = json.loads((dest / key / "result.json").read_text())
        alone = json.loads((single / key / "result.json").read_text())
        same_results(archived, alone)

    table = pq.read_table(dest / "summary.parquet").to_pylist()
    assert len(table) == studies
    assert Counter(r["task"] for r in table) == Counter(
        {"cxr-pneumonia": 26, "fundus-vessels": 8, "derm-lesion": 10, "hippocampus-mr": 6}
    )
    chest = [r for r in table if r["task"] == "cxr-pneumonia"]
    assert all(0.0 <= r["p.pneumonia"] <= 1.0 for r in chest)
    mr = [r for r in table if r["task"] == "hippocampus-mr"]
    assert all(r["m.hippocampus_anterior.volume"] > 0 for r in mr)
    csv_lines = (dest / "summary.csv").read_text().splitlines()
    assert len(csv_lines) == studies + 1
