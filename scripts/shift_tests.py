#!/usr/bin/env python
"""Shifted-input tests of the input gate (not in CI: minutes per task).

For each shipped task, builds at least 20 inputs of each kind of shift from ../shared/data
(MEDSIGHT_DATA), upsampled where a source is smaller than the task's minimum size so that the
pixels, not the size check, must catch them, and with the tags a task checks set to pass
(modality, BodyPartExamined, ViewPosition, PatientAge as the task wants: only the pixels can
tell). Each input goes through the same gate and predictor the analysis runs. Prints, per task
and kind, how many ended NEEDS_REVIEW with the answer withheld, and the false rejection on the
task's own held-back validation images; writes the table to --out (markdown and JSON).
With --card, each tested task's MODEL_CARD.md gets (or has replaced) its "When this model does
not answer" section: the gate's threshold, how it was fitted, and these rows.

    python scripts/shift_tests.py [--tasks cxr-pneumonia ...] [--per-kind 20] [--out DIR] [--card]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from scipy import ndimage

from medsight.errors import InvalidInputError
from medsight.gate import InputGate
from medsight.image import Image
from medsight.inference import Predictor
from medsight.io import read_image
from medsight.tasks import Task, load_named_task
from medsight.training import load_config
from medsight.training.data import (
    list_cases,
    read_case_image,
    split_by_patient,
    split_holdback,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__import__("os").environ.get("MEDSIGHT_DATA", ROOT.parent / "shared" / "data"))
TASKS = [
    "cxr-pneumonia",
    "derm-melanoma",
    "derm-lesion",
    "fundus-vessels",
    "fundus-dr",
    "hippocampus-mr",
    "cardiac-mr",
    "pathology-nuclei",
]


def files(pattern: str, count: int) -> list[Path]:
    found = sorted(str(p) for p in DATA.glob(pattern))
    step = max(1, len(found) // count)
    return [Path(p) for p in found[::step][:count]]


def as_task_input(image: Image, task: Task) -> Image:
    """The image dressed with the tags ``task`` checks, grown to its minimum size, and in its
    dimensionality (a 2D task gets the middle slice of a volume, a 3D task a stack)."""
    spec = task.spec.acceptance
    array = image.array.astype(np.float32) if image.array.dtype.kind == "f" else image.array
    if image.spatial_dims == 3 and spec.spatial_dims == 2:
        array = array[..., array.shape[-1] // 2]
    if image.spatial_dims == 2 and spec.spatial_dims == 3:  # a stack at the task's scale
        side = min(max(spec.max_size or [64]), 256)  # a cine-sized stack at most
        zoom = [1, *(min(1.0, side / n) for n in array.shape[1:])]
        array = np.repeat(ndimage.zoom(array, zoom, order=1)[..., None], 24, axis=-1)
    wants_rgb = 3 in spec.channels or ("RGB" in spec.photometric and 1 not in spec.channels)
    if array.shape[0] == 1 and wants_rgb and spec.photometric == ["RGB"]:
        array = np.repeat(array, 3, axis=0)
    if array.shape[0] == 3 and spec.photometric and "RGB" not in spec.photometric:
        array = array.mean(0, keepdims=True).astype(array.dtype)
    minimum = spec.min_size or [0] * spec.spatial_dims
    factors = [max(1.0, m / s) for m, s in zip(minimum, array.shape[1:], strict=False)]
    if any(f > 1 for f in factors):
        array = ndimage.zoom(array, [1, *factors], order=1)
    if (
        array.dtype.kind == "f"
        and spec.modalities
        and spec.modalities[0] in ("DX", "CR", "XC", "OP")
    ):
        low, high = float(array.min()), float(array.max())
        array = ((array - low) / max(high - low, 1e-6) * 255).astype(np.uint8)
    metadata = {
        "BodyPartExamined": (spec.body_parts or [None])[0],
        "ViewPosition": (spec.view_positions or [None])[0],
        "PatientAge": "003Y" if spec.age_years else None,
    }
    return Image(
        array=np.ascontiguousarray(array),
        affine=np.eye(4),
        spatial_dims=spec.spatial_dims,
        modality=(spec.modalities or [None])[0],
        photometric_interpretation="RGB" if array.shape[0] == 3 else "MONOCHROME2",
        metadata={k: v for k, v in metadata.items() if v is not None},
    )


def synthetic(kind: str, count: int, seed: int = 0) -> Iterator[Image]:
    rng = np.random.default_rng(seed)
    for _ in range(count):
        shape = (1, 512, 512)
        if kind == "noise":
            array = rng.integers(0, 256, shape).astype(np.uint8)
        else:
            array = np.full(shape, int(rng.integers(0, 256)), np.uint8)
        yield Image(array=array, affine=np.eye(4), spatial_dims=2)


def own_seen(task: Task) -> bool:
    """Whether the images validation_images returns were all seen by the shipped network."""
    config = load_config(ROOT / "recipes" / f"{task.id}.toml")
    held_back = split_holdback(list_cases(config.data, task.spec), config.split)[1]
    return not held_back and bool(config.split.folds or config.split.grouped)


def validation_images(task: Task, count: int) -> list[Callable[[], Image]]:
    config = load_config(ROOT / "recipes" / f"{task.id}.toml")
    cases, held_back = split_holdback(list_cases(config.data, task.spec), config.split)
    if held_back:  # patients kept from all of training and the gate fit: truly unseen
        held = held_back
    elif config.split.folds or config.split.grouped:  # the shipped network saw every image
        held = cases
    else:
        held = split_by_patient(cases, config.split)[1]
    step = max(1, len(held) // count)
    return [lambda c=c: read_case_image(c) for c in held[::step][:count]]


@functools.lru_cache(maxsize=2)
def _volume(relative: str) -> Image:
    return read_image(DATA / relative)


def crops(
    relative: str, count: int, size: tuple[int, int, int] = (48, 56, 40)
) -> list[Callable[[], Image]]:
    """``count`` crops of a volume at evenly spread positions (a 2D task gets the middle
    slice of each)."""

    def crop(number: int) -> Image:
        volume = _volume(relative)
        sides = [min(n, s) for n, s in zip(volume.shape, size, strict=True)]
        starts = [
            int((n - s) * ((number * 7 + axis * 3) % count) / max(count - 1, 1))
            for axis, (n, s) in enumerate(zip(volume.shape, sides, strict=True))
        ]
        window = tuple(slice(a, a + s) for a, s in zip(starts, sides, strict=True))
        return volume.replace(array=np.ascontiguousarray(volume.array[(slice(None), *window)]))

    return [lambda k=k: crop(k) for k in range(count)]


def kinds_for(task: Task, n: int) -> dict[str, list[Callable[[], Image]]]:
    def read(paths: list[Path]) -> list[Callable[[], Image]]:
        return [lambda p=p: read_image(p) for p in paths]

    sources = {
        "chest X-ray (Kermany)": read(files("kermany-cxr/train/*/*.jpeg", n)),
        "dermoscopy (PH2)": read(files("ph2/images/*.jpg", n)),
        "fundus (DR)": read(files("dr-fundus/images/*.jpg", n)),
        "musculoskeletal X-ray (FracAtlas)": read(files("fracatlas/images/*.jpg", n)),
        "pathology tile (GBM40)": read(files("pathology-gbm40/**/*.png", n)),
        "hippocampus MR crop": read(files("hippocampus-mr/imagesTr/*.nii.gz", n)),
        "cardiac MR (ACDC)": read(files("acdc/train/*_ED.nii.gz", n)),
        "CT crop (TotalSegmentator)": crops("totalseg-ct/example_ct.nii.gz", n),
        "MR crop of another region (TotalSegmentator)": crops(
            "totalseg-ct/example_mr_sm.nii.gz", n
        ),
        "noise": [lambda im=im: im for im in synthetic("noise", n)],
        "blank": [lambda im=im: im for im in synthetic("blank", n)],
    }
    own = {
        "cxr-pneumonia": "chest X-ray (Kermany)",
        "derm-melanoma": "dermoscopy (PH2)",
        "derm-lesion": "dermoscopy (PH2)",
        "fundus-vessels": "fundus (DR)",
        "fundus-dr": "fundus (DR)",
        "hippocampus-mr": "hippocampus MR crop",
        "cardiac-mr": "cardiac MR (ACDC)",
        "pathology-nuclei": "pathology tile (GBM40)",
    }[task.id]
    kinds = {k: v for k, v in sources.items() if k != own}
    if task.id == "cxr-pneumonia":
        chest = validation_images(task, n)
        kinds["chest X-ray rotated 90"] = [lambda f=f: rotate(f(), 1) for f in chest]
        kinds["chest X-ray rotated 180"] = [lambda f=f: rotate(f(), 2) for f in chest]
        kinds["chest X-ray inverted"] = [lambda f=f: invert(f()) for f in chest]
        kinds["adult chest X-ray"] = read(files("cxr-lung-masks-demo/**/*.png", n))
    if task.id in ("fundus-vessels", "fundus-dr"):
        fundus = read(files("dr-fundus/images/*.jpg", n))
        kinds["fundus out of focus"] = [lambda f=f: blur(f()) for f in fundus]
        if task.id == "fundus-dr":  # ungradable photographs: the screening gate's own job
            kinds["fundus underexposed"] = [lambda f=f: darken(f()) for f in fundus]
    if task.id == "pathology-nuclei":
        tiles = read(files("pathology-gbm40/raw_image/*.png", n))
        kinds["pathology tile out of focus"] = [lambda f=f: blur(f()) for f in tiles]
    return kinds


def rotate(image: Image, k: int) -> Image:
    return image.replace(array=np.ascontiguousarray(np.rot90(image.array, k, axes=(1, 2))))


def invert(image: Image) -> Image:
    array = image.array
    return image.replace(
        array=(int(array.max()) + int(array.min()) - array.astype(np.int32)).astype(array.dtype)
    )


def blur(image: Image) -> Image:
    array = ndimage.gaussian_filter(image.array.astype(np.float32), (0, 6, 6))
    return image.replace(array=array.round().astype(image.array.dtype))


def darken(image: Image, gain: float = 0.12) -> Image:
    """An underexposed photograph: every value scaled down (as a flash that did not fire)."""
    array = image.array.astype(np.float32) * gain
    return image.replace(array=array.round().astype(image.array.dtype))


def judge(
    task: Task, gate: InputGate, predictor: Predictor, image: Image
) -> tuple[bool, bool, float | None]:
    """(withheld, passed pixel and OOD checks, energy score of a classifier's logits)."""
    result, _ = gate.before_model(image)
    try:
        prediction = predictor.predict(image)
    except InvalidInputError:  # e.g. a spacing the task's resampling refuses: not answered
        return True, False, None
    gate.with_model(result, prediction, image, predictor)
    content = [c for c in result.checks if c.stage in ("pixels", "photo", "ood")]
    energy = None
    if prediction.logits is not None:  # the alternative score, measured side by side
        logits = np.asarray(prediction.logits, dtype=np.float64)
        energy = -float(logits.max() + np.log(np.exp(logits - logits.max()).sum()))
    return result.withheld, all(c.outcome == "pass" for c in content), energy


CARD_HEADING = "## When this model does not answer"


def card_section(task: Task, rows: dict[str, dict[str, float]], per_kind: int) -> str:
    """The model card's gate section: what withholds an answer, the fitted threshold, and the
    measured shifted-input rows (withheld / n; the energy score alone in brackets)."""
    ood = task.spec.gate.ood if task.spec.gate else None
    lines = [
        CARD_HEADING,
        "",
        "Research use only, not for diagnostic use. Every input passes the input gate first",
        "(docs/gate.md). A failed pixel, photograph, out-of-distribution or contradicting-tag",
        "check withholds the answer: NEEDS_REVIEW, no flag, no measurement.",
        "",
    ]
    if ood is not None:
        rate = ood.false_rejection_rate
        lines += [
            f"The out-of-distribution threshold is {ood.threshold}: a Mahalanobis distance of "
            f"the network's pooled features; {ood.fitted_on}. False rejection measured there: "
            + (f"{rate:.1%}" if rate is not None else "not measured")
            + f" (target {ood.false_rejection_target:.0%}).",
            "",
        ]
    lines += [
        f"Shifted inputs (`python scripts/shift_tests.py --tasks {task.id} --card`, "
        f"{per_kind} per kind, tags set to pass so that only the pixels can tell). The first "
        "row gives the task's own images that pass ("
        + (
            "in-sample: the shipped network was trained on every one of them"
            if own_seen(task)
            else "held back from its training"
        )
        + "); the other rows give the fraction withheld"
        + (
            "; in brackets, the energy score alone at 1% false rejection:"
            if any("energy_rate" in row for row in rows.values())
            else ":"
        ),
        "",
        "| input kind | result |",
        "|---|---|",
    ]
    for kind, row in rows.items():
        n = int(row["n"])
        count = round(row["rate"] * n)
        label = "own images pass" if kind.startswith("own") else kind
        shown = f"{count}/{n}"
        if "energy_rate" in row:
            shown += f" ({round(row['energy_rate'] * n)}/{n})"
        lines.append(f"| {label} | {shown} |")
    return "\n".join(lines) + "\n"


def write_card_section(task: Task, rows: dict[str, dict[str, float]], per_kind: int) -> None:
    card = task.folder / "MODEL_CARD.md"
    text = card.read_text(encoding="utf-8")
    kept = text.split(CARD_HEADING, 1)[0].rstrip()
    card.write_text(kept + "\n\n\n" + card_section(task, rows, per_kind), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=TASKS)
    parser.add_argument("--per-kind", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("shift-tests"))
    parser.add_argument("--kinds", nargs="*", help="only these kinds (default: all)")
    parser.add_argument(
        "--card", action="store_true", help="write the gate section of each task's model card"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for name in args.tasks:
        task = load_named_task(name)
        gate = InputGate(task)
        predictor = Predictor(task, explain=False, backend="onnxruntime")
        rows: dict[str, dict[str, float]] = {}
        own = validation_images(task, 10_000)
        passed = 0
        own_energy = []
        for load in own:
            image = load()
            _, ok, energy = judge(task, gate, predictor, image)
            passed += ok
            own_energy.append(energy)
        # the energy score's threshold at 1% false rejection of the same images
        cut = (
            float(np.quantile(own_energy, 0.99)) if all(e is not None for e in own_energy) else None
        )
        rows["own validation images (pass rate)"] = {"n": len(own), "rate": passed / len(own)}
        print(f"{name}: own validation images pass {passed}/{len(own)}", flush=True)
        for kind, loaders in kinds_for(task, args.per_kind).items():
            if args.kinds and kind not in args.kinds:
                continue
            withheld = 0
            energies = []
            for load in loaders:
                image = as_task_input(load(), task)
                held, _, energy = judge(task, gate, predictor, image)
                withheld += held
                energies.append(energy)
            if loaders:
                rows[kind] = {"n": len(loaders), "rate": withheld / len(loaders)}
                if cut is not None:
                    caught = sum(e is not None and e > cut for e in energies) / len(loaders)
                    rows[kind]["energy_rate"] = caught
                print(
                    f"  {kind}: withheld {withheld}/{len(loaders)}"
                    + (
                        f" (energy alone: {rows[kind]['energy_rate']:.0%})"
                        if cut is not None
                        else ""
                    ),
                    flush=True,
                )
        table[name] = rows
        if args.card:
            write_card_section(task, rows, args.per_kind)
    (args.out / "shift_tests.json").write_text(json.dumps(table, indent=2))
    lines = [
        "| task | input kind | n | withheld (shifted) / passed (own) | energy score alone |",
        "|---|---|---|---|---|",
    ]
    for name, rows in table.items():
        for kind, row in rows.items():
            energy = f"{row['energy_rate']:.0%}" if "energy_rate" in row else ""
            lines.append(f"| {name} | {kind} | {row['n']:.0f} | {row['rate']:.0%} | {energy} |")
    (args.out / "shift_tests.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
