"""Compare training variants on their group-held-out (or out-of-fold) predictions.

Each WORK folder is a `medsight train --work` folder of a recipe with groups or folds; its
`<group|fold>-*/held_out.npz` files hold the held-out logits, and the recipe gives the labels
in the same order. For each variant: ROC AUC (DeLong CI), and at the threshold where the
held-out sensitivity first reaches the target, the specificity, all on the same cases, the
same way `medsight train` locks its point. Use it to choose preprocessing or augmentation
by measurement, never on data the shipped model is later judged by.

Usage: python scripts/compare_held_out.py RECIPE:WORK [RECIPE:WORK ...] [--target 0.95]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from medsight.evaluation import choose_operating_point, fit_temperature, roc_auc
from medsight.inference.outputs import calibrated_probabilities
from medsight.training import list_cases, load_config
from medsight.training.data import split_by_group, split_holdback


def held_out(recipe: Path, work: Path) -> tuple[np.ndarray, np.ndarray]:
    config = load_config(recipe)
    cases, _ = split_holdback(list_cases(config.data), config.split)
    position = {id(case): number for number, case in enumerate(cases)}
    logits = np.full((len(cases), 2), np.nan)
    for name, fold in split_by_group(cases, config.split):
        path = work / f"group-{name}" / "held_out.npz"
        if not path.is_file():
            raise SystemExit(f"{path}: not trained yet")
        with np.load(path) as saved:
            logits[[position[id(c)] for c in fold]] = saved["held_out"]
    return logits, np.array([c.label for c in cases])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", help="RECIPE:WORK")
    parser.add_argument("--target", type=float, default=0.95)
    args = parser.parse_args()
    print("variant | held-out ROC AUC (95% CI) | sensitivity | specificity at the locked point")
    for variant in args.variants:
        recipe, work = variant.split(":", 1)
        logits, labels = held_out(Path(recipe), Path(work))
        temperature = fit_temperature(logits, labels)
        probabilities = calibrated_probabilities(logits, temperature)[:, 1]
        auc = roc_auc(labels, probabilities)
        point = choose_operating_point(labels, probabilities, args.target)
        s, p = point.sensitivity, point.specificity
        print(
            f"{Path(recipe).name} | {auc.value:.3f} ({auc.low:.3f}-{auc.high:.3f}) | "
            f"{s.value:.3f} ({s.low:.3f}-{s.high:.3f}) | {p.value:.3f} ({p.low:.3f}-{p.high:.3f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
