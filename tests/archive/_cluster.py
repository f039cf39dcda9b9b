"""A real Ray cluster for the archive tests: a head and a second node on this machine, each
with one CPU, a small object store and no dashboard; and the mixed archive they analyse."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import require_data

RAY = str(Path(sys.executable).with_name("ray"))
MEDSIGHT = str(Path(sys.executable).with_name("medsight"))
# token authentication on every side: the head, the second node and the driver
ENV = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_DEDUP_LOGS": "0"}
NODE_OPTIONS = [
    "--num-cpus",
    "1",
    "--object-store-memory",
    str(80 * 1024 * 1024),
    "--disable-usage-stats",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _raylets() -> set[int]:
    found = subprocess.run(["pgrep", "-f", "raylet/raylet"], capture_output=True, text=True)
    return {int(p) for p in found.stdout.split()}


class Cluster:
    """``ray start --head`` and ``ray start --address`` as a second node."""

    def __init__(self) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.second_raylet: int | None = None

    def start(self) -> Cluster:
        self._start_head()
        before = _raylets()
        node = [RAY, "start", "--address", self.address]
        subprocess.run(node + NODE_OPTIONS, env=ENV, check=True, capture_output=True, timeout=90)
        (self.second_raylet,) = _raylets() - before
        return self

    def _start_head(self, attempts: int = 3) -> None:
        """``ray start --head``, tried again on a fresh port when it fails: a local Ray
        instance an earlier test started may still be releasing its ports (seen once in a
        full CI run); the last failure is raised with what Ray printed."""
        for attempt in range(1, attempts + 1):
            subprocess.run([RAY, "stop", "--force"], env=ENV, capture_output=True, timeout=60)
            head = [RAY, "start", "--head", "--port", str(self.port), "--include-dashboard=false"]
            started = subprocess.run(
                head + NODE_OPTIONS, env=ENV, capture_output=True, text=True, timeout=90
            )
            if started.returncode == 0:
                return
            if attempt == attempts:
                raise RuntimeError(
                    f"ray start --head failed {attempts} times; last output:\n"
                    f"{started.stdout[-2000:]}\n{started.stderr[-2000:]}"
                )
            time.sleep(5 * attempt)
            self.port = free_port()
            self.address = f"127.0.0.1:{self.port}"

    def stop_second_node(self) -> None:
        """The second node is lost: its raylet and the workers it started die at once."""
        assert self.second_raylet is not None
        os.kill(self.second_raylet, signal.SIGKILL)

    def stop(self) -> None:
        subprocess.run([RAY, "stop", "--force"], env=ENV, capture_output=True, timeout=60)


def chest_films(folder: Path, count: int, size: int = 224) -> list[Path]:
    """Kermany chest X-rays, both classes, as small JPEGs (the archive issue's 224 px)."""
    root = require_data("kermany-cxr", "train")
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted((root / "PNEUMONIA").glob("*.jpeg"))[: count // 2]
    sources += sorted((root / "NORMAL").glob("*.jpeg"))[: count - len(sources)]
    written = []
    for source in sources:
        target = folder / f"{source.stem}.jpg"
        Image.open(source).convert("L").resize((size, size)).save(target, quality=92)
        written.append(target)
    return written


def mixed_manifest(folder: Path, *, chest: int = 26) -> Path:
    """A manifest of real studies: chest films, fundus and skin photographs and
    hippocampus MR volumes, each row naming its task; skin rows pair as left/right."""
    rows: list[dict[str, str]] = []
    for path in chest_films(folder / "cxr", chest):
        rows.append({"image": f"cxr/{path.name}", "task": "cxr-pneumonia"})
    drive = require_data("drive", "training", "images")
    for path in sorted(drive.glob("*.tif"))[:8]:
        rows.append({"image": str(path), "task": "fundus-vessels"})
    ph2 = require_data("ph2", "images")
    for number, path in enumerate(sorted(ph2.glob("*.jpg"))[:10]):
        rows.append({"image": str(path), "task": "derm-lesion", "laterality": "RL"[number % 2]})
    mr = require_data("hippocampus-mr", "imagesTr")
    for path in sorted(mr.glob("*.nii.gz"))[:6]:
        rows.append({"image": str(path), "task": "hippocampus-mr"})
    manifest = folder / "archive.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=["image", "task", "study", "patient", "laterality", "phase"]
        )
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def state_lines(dest: Path) -> list[dict[str, object]]:
    import json

    path = dest / "archive-state.jsonl"
    if not path.is_file():
        return []
    lines = []
    for raw in path.read_text().splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    return lines


def wait_for_lines(dest: Path, count: int, process: subprocess.Popen[bytes], limit: float) -> int:
    """Wait until the state file holds ``count`` lines (or the run ended); return how many."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and process.poll() is None:
        if len(state_lines(dest)) >= count:
            break
        time.sleep(0.2)
    return len(state_lines(dest))


def _recorded_step(value: float) -> float:
    """The rounding step of a value written with 3 to 6 decimals, else 0."""
    for decimals in range(3, 7):
        if round(value, decimals) == value:
            return 10.0**-decimals
    return 0.0


def same_results(archive: dict[str, object], single: dict[str, object]) -> None:
    """Equal apart from creation times and timings; probabilities within 1e-5."""
    skip = {"created", "timings_s", "timings"}

    def compare(a: object, b: object, where: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            assert set(a) - skip == set(b) - skip, where
            for key in set(a) - skip:
                compare(a[key], b[key], f"{where}.{key}")
        elif isinstance(a, list) and isinstance(b, list):
            assert len(a) == len(b), where
            for index, (x, y) in enumerate(zip(a, b, strict=True)):
                compare(x, y, f"{where}[{index}]")
        elif isinstance(a, float) and isinstance(b, float):
            # a value recorded at 3-6 decimals (a gate score: 4) may sit one recorded step
            # apart when the two runs' sums differ below 1e-5 across a rounding boundary
            step = min(_recorded_step(a), _recorded_step(b))
            assert np.isclose(a, b, rtol=0, atol=max(1e-5, step) + 1e-12), (where, a, b)
        else:
            assert a == b, (where, a, b)

    compare(archive, single, "result")
