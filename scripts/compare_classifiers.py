#!/usr/bin/env python
"""Compare two k-fold trainings of a sigmoid (multi-output) classifier on their pooled
out-of-fold predictions: per output, each variant's ROC AUC (DeLong CI) and the paired
difference (B - A) with a bootstrap CI over patients; for one output also per patient
(the worse image). Both recipes must share the data and the folds (same seed), so every
image is scored by both variants' models that never saw it.

    python scripts/compare_classifiers.py RECIPE_A WORK_A RECIPE_B WORK_B [--patient-output NAME]

WORK_A and WORK_B are the finished `medsight train --work` folders (their fold-*/held_out.npz).
The comparison chooses a variant on the same predictions it reports: say so with the figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from medsight.evaluation.intervals import bootstrap_ci, delong_auc
from medsight.training import list_cases, load_config
from medsight.training.common import base_task
from medsight.training.data import held_out_folds, kfold_by_patient, split_holdback


def pooled_logits(recipe: Path, work: Path) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(image names, patients, targets, pooled out-of-fold logits) of one finished training."""
    config = load_config(recipe)
    spec = base_task(config).spec
    cases, _ = split_holdback(list_cases(config.data, spec), config.split)
    assert config.split.folds, "a k-fold recipe is needed"
    targets = np.array([case.targets for case in cases], dtype=np.float64)
    logits = np.full(targets.shape, np.nan)
    folds = kfold_by_patient(cases, config.split.folds, config.split.seed)
    named = [(str(n), fold) for n, fold in enumerate(folds, start=1)]
    for fold in held_out_folds(cases, named, config.split):
        with np.load(work / f"fold-{fold.name}" / "held_out.npz") as saved:
            logits[fold.inside] = saved["held_out"]
    return [c.name for c in cases], [c.patient for c in cases], targets, logits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe_a", type=Path)
    parser.add_argument("work_a", type=Path)
    parser.add_argument("recipe_b", type=Path)
    parser.add_argument("work_b", type=Path)
    parser.add_argument("--patient-output", default="referable")
    args = parser.parse_args()
    names, patients, targets, a = pooled_logits(args.recipe_a, args.work_a)
    names_b, _, targets_b, b = pooled_logits(args.recipe_b, args.work_b)
    if names != names_b or not np.array_equal(np.isnan(targets), np.isnan(targets_b)):
        print("the two recipes do not score the same images: not comparable", file=sys.stderr)
        return 2
    spec = base_task(load_config(args.recipe_b)).spec
    ids = np.unique(patients, return_inverse=True)[1]
    members = [np.flatnonzero(ids == p) for p in range(ids.max() + 1)]

    def paired(labels: np.ndarray, first: np.ndarray, second: np.ndarray, groups) -> str:
        def difference(sample: np.ndarray) -> float:
            index = np.concatenate([groups[s] for s in sample])
            if len(set(labels[index])) < 2:
                return float("nan")
            return roc_auc_score(labels[index], second[index]) - roc_auc_score(
                labels[index], first[index]
            )

        return str(bootstrap_ci(difference, len(groups)))

    print("| output | cases (positive) | A: ROC AUC | B: ROC AUC | B - A (bootstrap, patients) |")
    print("|---|---|---|---|---|")
    for output in spec.outputs:
        known = ~np.isnan(targets[:, output.index])
        labels = targets[known, output.index]
        kept = ids[known]
        groups = [np.flatnonzero(kept == p) for p in np.unique(kept)]
        first, second = a[known, output.index], b[known, output.index]
        print(
            f"| {output.name} | {known.sum()} ({int(labels.sum())}) | {delong_auc(labels, first)} "
            f"| {delong_auc(labels, second)} | {paired(labels, first, second, groups)} |"
        )
    index = next(o.index for o in spec.outputs if o.name == args.patient_output)
    worst = np.array(
        [[targets[m, index].max(), a[m, index].max(), b[m, index].max()] for m in members]
    )
    singles = [np.array([p]) for p in range(len(members))]
    print(
        f"| {args.patient_output}, per patient (worse image) | {len(members)} "
        f"({int(worst[:, 0].sum())}) | {delong_auc(worst[:, 0], worst[:, 1])} | "
        f"{delong_auc(worst[:, 0], worst[:, 2])} | "
        f"{paired(worst[:, 0], worst[:, 1], worst[:, 2], singles)} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
