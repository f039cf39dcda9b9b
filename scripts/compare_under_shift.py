"""Compare training variants by their fold models on a recipe's held-back patients, as given
and under a known acquisition change (gamma 1.6, 0.6 of the resolution, noise: another
site's films). Calibration-free: ROC AUC, and the specificity at the threshold that keeps
sensitivity at 0.95 on the unshifted films, carried over to the shifted ones (what a locked
point meets at a new site). Each WORK is a `medsight train --work` folder of a group or fold
recipe; its fold models come from the folds' checkpoints (best state) or model.pt.

Usage: python scripts/compare_under_shift.py RECIPE:WORK [RECIPE:WORK ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

from medsight.evaluation import roc_auc
from medsight.inference import Predictor
from medsight.io import read_image
from medsight.models import build_network
from medsight.tasks import load_task
from medsight.training import list_cases, load_config
from medsight.training.common import base_task, write_task_version
from medsight.training.data import split_holdback


def shifted(path: Path, scratch: Path, rng: np.random.Generator) -> Path:
    grey = np.asarray(PILImage.open(path).convert("L"), dtype=np.float64) / 255
    image = PILImage.fromarray(np.uint8(255 * grey**1.6))
    image = image.resize((round(image.width * 0.6), round(image.height * 0.6)), PILImage.BILINEAR)
    noisy = np.asarray(image, dtype=np.float64) + rng.normal(0, 4, (image.height, image.width))
    target = scratch / f"{path.stem}.png"
    PILImage.fromarray(np.uint8(np.clip(noisy, 0, 255))).save(target)
    return target


def fold_states(work: Path) -> list[dict]:
    states = []
    for folder in sorted(p for p in work.iterdir() if p.is_dir() and p.name != "final"):
        if (folder / "model.pt").is_file():
            states.append(torch.load(folder / "model.pt", weights_only=True))
        elif (folder / "checkpoint.pt").is_file():
            saved = torch.load(folder / "checkpoint.pt", weights_only=False)
            states.append(saved["state"]["best_state"])
    return states


def scores(task_folder: Path, paths: list[Path]) -> np.ndarray:
    predictor = Predictor(load_task(task_folder), explain=False)
    result = []
    for first in range(0, len(paths), 32):
        images = [read_image(p) for p in paths[first : first + 32]]
        result += [float(p.logits[1] - p.logits[0]) for p in predictor.predict_many(images)]
    return np.array(result)


def specificity_at(labels: np.ndarray, clean: np.ndarray, other: np.ndarray) -> float:
    positives = np.sort(clean[labels == 1])
    threshold = positives[int(np.floor(0.05 * len(positives)))]  # keeps 95% of positives
    return float((other[labels == 0] < threshold).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", help="RECIPE:WORK")
    args = parser.parse_args()
    first = load_config(Path(args.variants[0].split(":", 1)[0]))
    _, held_back = split_holdback(list_cases(first.data), first.split)
    labels = np.array([c.label for c in held_back])
    print(f"{len(held_back)} held-back images ({labels.sum()} positive); per fold model:")
    print("variant | fold | AUC as given | AUC shifted | specificity as given / shifted")
    with tempfile.TemporaryDirectory() as scratch:
        rng = np.random.default_rng(0)
        moved = [shifted(c.path, Path(scratch), rng) for c in held_back]
        for variant in args.variants:
            recipe, work = variant.split(":", 1)
            config = load_config(Path(recipe))
            base = base_task(config)
            for number, state in enumerate(fold_states(Path(work)), start=1):
                model = build_network(base.spec.networks[0])
                model.load_state_dict(state)
                folder, _ = write_task_version(
                    base, config, model, Path(scratch) / f"{Path(recipe).stem}-{number}", ""
                )
                clean = scores(folder, [c.path for c in held_back])
                other = scores(folder, moved)
                print(
                    f"{Path(recipe).stem} | {number} | {roc_auc(labels, clean).value:.3f} | "
                    f"{roc_auc(labels, other).value:.3f} | "
                    f"{specificity_at(labels, clean, clean):.3f} / "
                    f"{specificity_at(labels, clean, other):.3f}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
