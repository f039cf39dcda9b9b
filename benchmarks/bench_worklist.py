"""The worklist API at archive scale, against the way it used to be answered.

Writes N small result.json files (default 50,000: priorities, ages and identifiers spread
like a busy department's), indexes them the way ``medsight serve`` does at start-up, starts
the real server on that data folder, and times GET /api/worklist over HTTP as a clinician:
the default order, a free-text search, a sort by patient name, a priority filter and a deep
page. Prints p50 and p95 per query (the target: p95 under 200 ms at 50,000 studies), and
the ratio against the peer: the earlier worklist, which parsed every result.json on each
request (timed here as one pass over the same files).

Usage: python benchmarks/bench_worklist.py [--studies 50000] [--requests 60] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from medsight.service import InstanceStore
from medsight.service.auth import Users
from medsight.service.worklist import Worklist

LEVELS = ("STAT", "URGENT", "NEEDS_REVIEW", "ROUTINE", "NO_AI_FINDING")
WEIGHTS = (1, 4, 10, 25, 60)
QUERIES = {
    "default order": "/api/worklist?limit=50",
    "text search": "/api/worklist?q=smith&limit=50",
    "sort by patient": "/api/worklist?sort=patient_name&order=desc&limit=50",
    "URGENT only": "/api/worklist?priority=URGENT,STAT&limit=50",
    "deep page": "/api/worklist?limit=50&offset=40000",
}
NAMES = ("SMITH", "JONES", "GARCIA", "MULLER", "ROSSI", "DUBOIS", "TANAKA", "NOVAK")


def write_results(results: Path, count: int, rng: random.Random) -> dict[str, dict]:
    now = _dt.datetime.now(_dt.UTC)
    identifiers = {}
    for number in range(count):
        key = f"{number:016x}"
        level = rng.choices(LEVELS, WEIGHTS)[0]
        created = now - _dt.timedelta(minutes=rng.uniform(0, 72 * 60))
        folder = results / key
        folder.mkdir(parents=True)
        document = {
            "study_key": key,
            "status": "final",
            "created": created.isoformat(),
            "priority": {
                "level": level,
                "score": 50.0,
                "reasons": [f"reason for {level.lower()}"],
                "rules_version": "2",
            },
            "analyses": [{"task": {"id": "cxr-pneumonia", "version": "0.3.0"}, "input": {}}],
        }
        (folder / "result.json").write_text(json.dumps(document))
        identifiers[key] = {
            "patient_name": f"{rng.choice(NAMES)}^{number}",
            "patient_id": f"P{number:07d}",
            "accession_number": f"A{number:08d}",
            "study_date": created.strftime("%Y%m%d"),
            "modality": rng.choice(("CR", "DX", "CT", "MR")),
            "study_description": "benchmark study",
        }
    return identifiers


def file_walk_seconds(results: Path) -> float:
    """The peer: one request of the earlier worklist, which read every result file."""
    started = time.perf_counter()
    for path in results.glob("*/result.json"):
        json.loads(path.read_text())
    return time.perf_counter() - started


def timed(base: str, token: str, path: str, requests: int) -> list[float]:
    seconds = []
    for _ in range(requests):
        request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--keep", type=Path, help="Build the data folder here and keep it.")
    args = parser.parse_args()
    data = args.keep or Path(tempfile.mkdtemp(prefix="bench-worklist-"))
    results = data / "results"
    store = InstanceStore(data)
    rows = Worklist(store.engine)
    if not results.is_dir():
        print(f"writing {args.studies} results under {results} ...", flush=True)
        identifiers = write_results(results, args.studies, random.Random(0))
        started = time.perf_counter()
        indexed = rows.reconcile(results, lambda path: (None, identifiers[path.parent.name]))
        print(f"indexed {indexed} rows in {time.perf_counter() - started:.1f} s")
    walk = file_walk_seconds(results)
    users = Users(store.engine)
    users.add("bench-reader", "clinician", "a-long-benchmark-password")
    token = users.issue_token("bench-reader")

    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        http, dicom = probe.getsockname()[1], probe.getsockname()[1] + 1
    command = [sys.executable, "-m", "medsight", "serve", "--dev", "--data-dir", str(data)]
    server = subprocess.Popen(
        [*command, "--http-port", str(http), "--dicom-port", str(dicom)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{http}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(base + "/healthz", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        print(f"\n{args.studies} studies, {args.requests} requests per query (HTTP, clinician)")
        print(f"{'query':<18}{'p50 ms':>9}{'p95 ms':>9}{'file walk / p95':>18}")
        for name, path in QUERIES.items():
            timed(base, token, path, 3)  # warm the page cache and connections
            seconds = sorted(timed(base, token, path, args.requests))
            p50 = statistics.median(seconds)
            p95 = seconds[int(0.95 * (len(seconds) - 1))]
            print(f"{name:<18}{p50 * 1000:>9.1f}{p95 * 1000:>9.1f}{walk / p95:>17.0f}x")
        print(f"\npeer (every result.json parsed per request): {walk * 1000:.0f} ms")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
