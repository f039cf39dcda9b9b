#!/usr/bin/env python
"""Nucleus instance methods side by side on pooled out-of-fold tiles: the trained network
with each watershed seeding (interior regions, distance peaks), and the classical
QuPath-style watershed (medsight.evaluation.nuclei_baseline), which needs no training.

    python scripts/compare_nuclei.py RECIPE WORK_DIR

RECIPE and WORK_DIR are those of a finished `medsight train` with folds (each fold's task
is WORK_DIR/fold-N/task/<id>/<version>). Every tile is scored by the fold model that did not
train on it. Prints mean pixel Dice (all nucleus pixels), AJI and PQ with bootstrap CIs over
tiles, and paired differences (tile-level bootstrap). The choice of seeding it informs is
made on these same tiles: the card says so.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

import numpy as np

from medsight.evaluation.cases import read_case_image, read_case_instances
from medsight.evaluation.instances import instance_metrics
from medsight.evaluation.intervals import bootstrap_ci
from medsight.evaluation.nuclei_baseline import watershed_nuclei
from medsight.inference import Predictor
from medsight.inference.instances import instance_map
from medsight.tasks import load_task
from medsight.training import list_cases, load_config
from medsight.training.data import kfold_by_patient

METHODS = ("network, interior seeds", "network, distance seeds", "classical watershed")


def _scores(reference: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    found, truth = predicted > 0, reference > 0
    total = found.sum() + truth.sum()
    dice = 1.0 if total == 0 else float(2.0 * (found & truth).sum() / total)
    return {"dice": dice, **instance_metrics(reference, predicted)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("work", type=Path)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    config = load_config(args.recipe)
    assert config.split.folds, "the recipe has no folds"
    cases = list_cases(config.data)
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
    for number, fold in enumerate(
        kfold_by_patient(cases, config.split.folds, config.split.seed), start=1
    ):
        folder = next((args.work / f"fold-{number}" / "task").glob(f"*/{config.version}"))
        task = load_task(folder)
        spec = task.spec
        assert spec.instances is not None, f"{spec.id} has no [instances]"
        index = {o.name: o.index for o in spec.outputs}
        predictor = Predictor(task, explain=False)
        for case in fold:
            image = read_case_image(case)
            reference = read_case_instances(case, image)
            probabilities = np.asarray(predictor.predict(image).segment_probabilities)
            for method, seeds in zip(METHODS[:2], ("interior", "distance"), strict=True):
                options = spec.instances.model_copy(update={"seeds": seeds})
                predicted = instance_map(
                    probabilities,
                    index[options.interior],
                    index[options.boundary],
                    options,
                    None,  # GBM40 states no spacing: the tiles are at the model's resolution
                )
                rows[method].append(_scores(reference, predicted))
            classical = watershed_nuclei(image.array[:3], mpp=spec.instances.mpp or 0.5)
            rows[METHODS[2]].append(_scores(reference, classical))
    print(f"{len(cases)} tiles, each scored by the fold model that did not train on it")
    print("method | Dice | AJI | PQ | nuclei found / outlined")
    for method, scored in rows.items():
        shown = []
        for metric in ("dice", "aji", "pq"):
            values = np.array([r[metric] for r in scored])
            ci = bootstrap_ci(lambda i, v=values: float(v[i].mean()), len(values))
            shown.append(f"{ci.value:.3f} ({ci.low:.3f}-{ci.high:.3f})")
        found = sum(r["predicted_count"] for r in scored)
        outlined = sum(r["reference_count"] for r in scored)
        print(f"{method} | {' | '.join(shown)} | {found:.0f} / {outlined:.0f}")
    print("paired difference (95% CI, tile bootstrap)")
    first = METHODS[0]
    for other in METHODS[1:]:
        for metric in ("dice", "aji"):
            paired = np.array(
                [a[metric] - b[metric] for a, b in zip(rows[first], rows[other], strict=True)]
            )
            ci = bootstrap_ci(lambda i, d=paired: float(d[i].mean()), len(paired))
            print(f"{first} - {other}: {metric} {ci.value:+.3f} ({ci.low:+.3f} to {ci.high:+.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
