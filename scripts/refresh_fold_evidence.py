#!/usr/bin/env python
"""Add the internal column (each fold model on the split that chose its epoch) to a k-fold
segmentation version trained before medsight wrote it, and rewrite its model card. Needs the
training work folder (the fold models). Run shift_tests.py --card afterwards for the gate
section.

    python scripts/refresh_fold_evidence.py RECIPE TASK_FOLDER --work WORK_DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medsight.training import load_config
from medsight.training.segmenter import refresh_fold_evidence


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("task_folder", type=Path)
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    internal = refresh_fold_evidence(load_config(args.recipe), args.task_folder, args.work)
    for segment, summary in internal["summary"].items():
        print(segment, {k: round(v["value"], 4) for k, v in summary.items() if k != "cases"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
