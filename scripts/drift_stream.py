#!/usr/bin/env python
"""A long simulated stream for drift monitoring (not in CI; tests/service/test_drift.py runs
a short one through the real service). Held-back Kermany chest films go through the analysis
runner one by one; after --before of them the input changes (--shift scale: intensities x0.6;
size: downsampled to 160 px; none: no change). Prints where the first alert opened, per
repetition with a different sample of films.

    python scripts/drift_stream.py [--before 100] [--after 100] [--shift scale] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from medsight.analysis import AnalysisOptions, analyze_studies, find_studies
from medsight.analysis.runner import TaskSource
from medsight.datasets import repository_root
from medsight.monitoring import collect, monitor
from medsight.training import load_config
from medsight.training.data import list_cases, split_by_patient


def changed(values: np.ndarray, shift: str) -> np.ndarray:
    if shift == "scale":
        return values * 0.6
    if shift == "size":
        small = PILImage.fromarray(values.astype(np.uint8)).resize((160, 160))
        return np.asarray(small, np.float32)
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=int, default=100)
    parser.add_argument("--after", type=int, default=100)
    parser.add_argument("--shift", choices=["scale", "size", "none"], default="scale")
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = load_config(repository_root() / "recipes" / "cxr-pneumonia.toml")
    validation = split_by_patient(list_cases(config.data), config.split)[1]
    options = AnalysisOptions(task="cxr-pneumonia", backend="onnxruntime", outputs=("json",))
    tasks = TaskSource(options)
    for repeat in range(args.repeats):
        order = np.random.default_rng(repeat).permutation(len(validation))
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            for number, index in enumerate(order[: args.before + args.after]):
                values = np.asarray(PILImage.open(validation[index].path).convert("L"), np.float32)
                if number >= args.before:
                    values = changed(values, args.shift)
                path = root / "in" / f"{number:04d}.png"
                path.parent.mkdir(exist_ok=True)
                PILImage.fromarray(values.astype(np.uint8)).save(path)
                analyze_studies(find_studies(path), root / "out", options, tasks=tasks)
            report = monitor(collect(root / "out"), window=args.window)
            series = report["tasks"][0]["groups"][0]["series"]
            alerts = [n + 1 for n, window in enumerate(series) if window["alerts"]]
            early = [n for n in alerts if n <= args.before]
            late = [n - args.before for n in alerts if n > args.before]
            print(
                f"repeat {repeat}: false alerts before the change in {len(early)} of "
                f"{args.before} windows; first alert {late[0] if late else 'none'} analyses "
                f"after the change ({args.shift})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
