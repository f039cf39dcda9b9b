"""What the input gate adds to each shipped task's analysis time (target: at most 10%).

For each task, a folder of its own kind of images goes through the analysis runner (what
`medsight analyze FOLDER --task ID` does, ONNX Runtime backend, tasks loaded and warmed up
before timing); the gate's share is read from each analysis's `timings_s.gate` (its tag and
pixel checks before the model, its OOD score after), in the same run. Prints the analysis time
without the gate, the gate's time, and their ratio. The OOD score itself reads features the
network computes anyway; what costs is the image statistics and, only when an image fails,
the rotation / inversion probe of radiograph tasks.

Usage: python benchmarks/bench_gate.py [--images 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from medsight.analysis import AnalysisOptions, analyze_studies, find_studies
from medsight.analysis.runner import TaskSource
from medsight.datasets import shared_data_dir

CASES = {
    "cxr-pneumonia": "kermany-cxr/train/NORMAL/*.jpeg",
    "derm-melanoma": "ph2/images/*.jpg",
    "derm-lesion": "ph2/images/*.jpg",
    "fundus-vessels": "drive/training/images/*.tif",
    "hippocampus-mr": "hippocampus-mr/imagesTr/*.nii.gz",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    args = parser.parse_args()
    data = shared_data_dir()
    print(f"{'task':<16} {'images':>6} {'analysis s':>11} {'gate s':>8} {'gate/analysis':>14}")
    for task_id, pattern in CASES.items():
        files = sorted(data.glob(pattern))[: args.images]
        if not files:
            print(f"{task_id:<16} no data under {data}", file=sys.stderr)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "in"
            folder.mkdir()
            for path in files:
                (folder / path.name).symlink_to(path)
            options = AnalysisOptions(task=task_id, backend="onnxruntime", outputs=("json",))
            tasks = TaskSource(options)
            studies = find_studies(folder)
            analyze_studies(studies[:1], Path(tmp) / "warm", options, tasks=tasks)
            started = time.perf_counter()
            outcomes = analyze_studies(studies, Path(tmp) / "out", options, tasks=tasks)
            wall = time.perf_counter() - started
            gate = 0.0
            for outcome in outcomes:
                if outcome.result_path is None:
                    continue
                document = json.loads(outcome.result_path.read_text())
                gate += sum(a["timings_s"].get("gate", 0.0) for a in document["analyses"])
        without = wall - gate
        print(
            f"{task_id:<16} {len(files):>6} {without:>11.2f} {gate:>8.2f} {gate / without:>13.1%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
