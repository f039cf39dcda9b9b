#!/usr/bin/env python
"""Compare two trained versions of a segmentation task on the same internal validation
cases: per structure, each version's mean Dice and the paired difference (B - A) with a
bootstrap CI over the cases. Use it to choose an architecture or a preprocessing by
measurement, on the split the recipes chose their epochs on, never on the evidence data.

    python scripts/compare_segmenters.py RECIPE TASK_A TASK_B

RECIPE gives the cases and the split (its validation part is compared); TASK_A and TASK_B
are trained task folders (e.g. trained-tasks/cardiac-mr/0.1.0-2d-short). Both run through
the Predictor with their post-processing, as `medsight analyze` would run them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from medsight.evaluation.intervals import bootstrap_ci
from medsight.inference import Predictor
from medsight.tasks import load_task
from medsight.training import list_cases, load_config
from medsight.training.data import read_case_image, read_case_mask, split_by_patient, split_holdback


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * (a & b).sum() / total)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("task_a", type=Path)
    parser.add_argument("task_b", type=Path)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    config = load_config(args.recipe)
    cases, _ = split_holdback(list_cases(config.data), config.split)
    _, validation = split_by_patient(cases, config.split)
    tasks = [load_task(args.task_a), load_task(args.task_b)]
    outputs = [o for o in tasks[0].spec.outputs if o.index > 0]
    scores = {t.version: {o.name: [] for o in outputs} for t in tasks}
    seconds = {t.version: 0.0 for t in tasks}
    predictors = [Predictor(t, explain=False) for t in tasks]
    for case in validation:
        image = read_case_image(case)
        reference = np.asarray(read_case_mask(case, image).array[0])
        for task, predictor in zip(tasks, predictors, strict=True):
            started = time.perf_counter()
            labels = predictor.predict(image).label_map
            seconds[task.version] += time.perf_counter() - started
            for output in outputs:
                scores[task.version][output.name].append(
                    dice(labels == output.index, reference == output.index)
                )
    a, b = (t.version for t in tasks)
    print(
        f"{len(validation)} internal validation cases ({config.split.validation_fraction:.0%}"
        f" of the patients, seed {config.split.seed})"
    )
    print(f"structure | {a} Dice | {b} Dice | difference {b} - {a} (95% CI, paired bootstrap)")
    for output in outputs:
        first = np.asarray(scores[a][output.name])
        second = np.asarray(scores[b][output.name])
        paired = second - first
        difference = bootstrap_ci(lambda i, d=paired: float(d[i].mean()), len(paired))
        print(
            f"{output.name} | {first.mean():.3f} | {second.mean():.3f} | "
            f"{difference.value:+.3f} ({difference.low:+.3f} to {difference.high:+.3f})"
        )
    mean_a = np.mean([np.mean(v) for v in scores[a].values()])
    mean_b = np.mean([np.mean(v) for v in scores[b].values()])
    print(f"mean over structures | {mean_a:.3f} | {mean_b:.3f} |")
    print(
        f"inference time over the cases: {a} {seconds[a]:.1f} s, {b} {seconds[b]:.1f} s "
        "(this machine, as it was loaded)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
