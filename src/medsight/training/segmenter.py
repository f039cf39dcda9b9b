"""Train a segmentation task (2D or 3D U-Net): a patient-level split or k-fold
cross-validation, foreground-oversampled patches, MONAI augmentation, Dice+CE loss, model
selection on validation Dice computed with the same sliding window the Predictor uses,
resumable checkpoints; then the held-back (or every out-of-fold) case is evaluated through
the real Predictor in its original geometry (Dice, IoU, HD95, surface Dice with bootstrap
CIs) and the task version is written with its model card and claims."""

from __future__ import annotations

import json
import logging
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsight.errors import ConfigurationError, InvalidInputError
from medsight.evaluation.segmentation_report import (
    evaluate_out_of_fold,
    evaluate_segmenter,
    write_segmentation_report,
)
from medsight.inference.predictor import network_input
from medsight.inference.preprocess import to_network_grid
from medsight.inference.sliding_window import sliding_window
from medsight.models import build_network
from medsight.tasks import Task, load_task
from medsight.training.common import (
    Fitted,
    TrainingResult,
    atomic_save,
    base_task,
    card_head,
    check_fold,
    fit_epochs,
    interval,
    new_model,
    refuse_other_training,
    step_seed,
    time_line,
    training_hash,
    training_seconds,
    with_claims_table,
    write_record,
    write_task_version,
)
from medsight.training.config import TrainConfig
from medsight.training.data import (
    Case,
    kfold_by_patient,
    list_cases,
    read_case_image,
    read_case_mask,
    split_by_patient,
    split_holdback,
)

logger = logging.getLogger(__name__)

__all__ = ["refresh_fold_evidence", "train_segmenter"]


@dataclass
class _Item:
    """One case on the network grid."""

    values: np.ndarray  # float16 (c, *grid)
    labels: np.ndarray  # uint8 (*grid)
    roi: np.ndarray | None  # bool (*grid)
    foreground: np.ndarray  # int32 (n, dims): voxels to centre foreground patches on


def _labels_on_grid(mask_image: Any, prep: Any, size: tuple[int, ...]) -> np.ndarray:
    import torch
    from torch.nn import functional

    work, _ = to_network_grid(mask_image, prep)
    labels = np.ascontiguousarray(work.array[0])
    if labels.shape != size:
        tensor = torch.from_numpy(labels.astype(np.float32))[None, None]
        labels = functional.interpolate(tensor, size=size, mode="nearest-exact")[0, 0].numpy()
    return labels.astype(np.uint8)


def _cache_items(cases: list[Case], base: Task, path: Path, progress: Any) -> list[_Item]:
    """Every case decoded once; masks checked against their images (all problems at once)."""
    import torch

    if path.is_file():
        return [_Item(**item) for item in torch.load(path, weights_only=False)]
    spec = base.spec
    classes = len(spec.outputs)
    items: list[_Item] = []
    problems: list[str] = []
    job = progress.add_task(f"decoding {path.stem}", total=len(cases)) if progress else None
    for case in cases:
        image = read_case_image(case)
        try:
            mask = read_case_mask(case, image)
            roi = read_case_mask(case, image, "roi") if case.roi else None
        except InvalidInputError as exc:
            problems.append(exc.message)
            continue
        if int(mask.array.max()) >= classes or int(mask.array.min()) < 0:
            found = sorted(set(np.unique(mask.array).tolist()))
            problems.append(f"{case.name}: mask values {found} outside 0..{classes - 1}")
            continue
        _, values = network_input(image, spec.display, spec.preprocessing)
        size = values.shape[1:]
        labels = _labels_on_grid(mask, spec.preprocessing, size)
        roi_grid = _labels_on_grid(roi, spec.preprocessing, size) > 0 if roi else None
        foreground = np.argwhere(labels > 0).astype(np.int32)
        items.append(_Item(values.astype(np.float16), labels, roi_grid, foreground))
        if progress:
            progress.advance(job)
    if problems:
        shown = "; ".join(problems[:8])
        raise InvalidInputError(f"{len(problems)} mask problem(s): {shown}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save([item.__dict__ for item in items], path)
    return items


def _patch(
    item: _Item, size: tuple[int, ...], rng: np.random.Generator, foreground_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """A patch of ``size`` (zero-padded where the case is smaller), centred on a foreground
    voxel with probability ``foreground_fraction``. Written here rather than with MONAI's
    RandCropByPosNegLabel because the foreground voxels are found once per cached case,
    not on every draw."""
    values, labels = item.values, item.labels
    shape = labels.shape
    pad = [max(0, s - n) for s, n in zip(size, shape, strict=True)]
    if any(pad):
        values = np.pad(values, [(0, 0)] + [(0, p) for p in pad])
        labels = np.pad(labels, [(0, p) for p in pad])
        shape = labels.shape
    if len(item.foreground) and rng.random() < foreground_fraction:
        centre = item.foreground[rng.integers(len(item.foreground))]
        starts = [
            int(np.clip(c - s // 2, 0, n - s)) for c, s, n in zip(centre, size, shape, strict=True)
        ]
    else:
        starts = [int(rng.integers(0, n - s + 1)) for s, n in zip(size, shape, strict=True)]
    window = tuple(slice(a, a + s) for a, s in zip(starts, size, strict=True))
    return values[(slice(None), *window)].astype(np.float32), labels[window]


def _augmenter(
    seed: int, patch: tuple[int, ...], flip_axes: list[int], strength: str = "standard"
) -> Any:
    """Flips, an affine and intensity changes; a 3D patch one voxel thick (a slice-wise
    network on thick-slice volumes) is rotated and scaled only in its plane. "histology"
    adds quarter turns (a slide has no up) and H&E stain jitter."""
    from monai.transforms import (
        Compose,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandRotate90d,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    from medsight.training.stain import RandHEDJitterd

    keys = ["image", "label"]
    rotate: Any = 0.26
    scale: Any = 0.1
    if len(patch) == 3 and patch[2] == 1:  # about the slice axis only
        rotate, scale = (0.0, 0.0, 0.26), (0.1, 0.1, 0.0)
    elif len(patch) == 3:
        rotate = (0.17, 0.17, 0.17)
    transforms: list[Any] = [RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in flip_axes]
    if strength == "histology" and len(patch) == 2:
        transforms += [RandRotate90d(keys, prob=0.75), RandHEDJitterd("image")]
    transforms += [
        RandAffined(
            keys,
            prob=0.5,
            rotate_range=rotate,
            scale_range=scale,
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
        ),
        RandScaleIntensityd("image", factors=0.1, prob=0.3),
        RandShiftIntensityd("image", offsets=0.1, prob=0.3),
        RandGaussianNoised("image", prob=0.15, std=0.03),
    ]
    transform = Compose(transforms)
    transform.set_random_state(seed=seed)
    return transform


def _validation_dice(model: Any, items: list[_Item], spec: Any) -> float:
    """Mean foreground Dice over cases and classes on the network grid (inside the roi)."""
    import torch

    prep = spec.preprocessing
    model.eval()
    scores = []

    def run(batch: Any) -> Any:
        return model(batch.float())

    with torch.no_grad():
        for item in items:
            values = item.values.astype(np.float32)
            if prep.patch_size is not None:
                logits = sliding_window(
                    values, prep.patch_size, run, overlap=prep.overlap, batch_size=prep.batch_size
                )
            else:
                logits = run(torch.from_numpy(values)[None])[0].numpy()
            predicted = logits.argmax(axis=0)
            inside = item.roi if item.roi is not None else np.ones(predicted.shape, dtype=bool)
            for label in range(1, len(spec.outputs)):
                p = (predicted == label) & inside
                t = (item.labels == label) & inside
                total = p.sum() + t.sum()
                scores.append(1.0 if total == 0 else 2.0 * (p & t).sum() / total)
    return float(np.mean(scores))


def _fit_segmenter(
    config: TrainConfig,
    base: Task,
    train_items: list[_Item],
    validation_items: list[_Item] | None,
    checkpoint_path: Path,
    progress: Any,
    *,
    label: str = "training",
    fold: int = 0,
    epochs: int | None = None,
) -> Fitted:
    """One model on foreground-oversampled patches, its epoch chosen by validation Dice;
    without validation items it runs ``epochs`` and keeps the last."""
    import torch
    from monai.losses import DiceCELoss

    spec = base.spec
    options = config.train
    patch = tuple(spec.preprocessing.patch_size or train_items[0].labels.shape)
    model, optimizer = new_model(
        config, base, options.seed if not fold else step_seed(options.seed, fold)
    )
    loss_function = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)
    steps = options.steps_per_epoch
    if options.max_steps_per_epoch:
        steps = min(steps, options.max_steps_per_epoch)

    def train_step(epoch: int, step: int) -> float:
        # the unfolded run keeps its historical seeds (fold 0): resumes stay bit-identical
        seed = (
            step_seed(options.seed, epoch, step)
            if not fold
            else step_seed(options.seed, fold, epoch, step)
        )
        rng = np.random.default_rng(seed)
        augment = (
            _augmenter(seed, patch, options.flip_axes, options.augment_strength)
            if options.augment
            else None
        )
        images, labels = [], []
        for index in rng.integers(0, len(train_items), options.batch_size):
            values, label = _patch(train_items[index], patch, rng, options.foreground_fraction)
            sample = {"image": values, "label": label[np.newaxis].astype(np.float32)}
            if augment is not None:
                sample = augment(sample)
            images.append(torch.as_tensor(sample["image"]))
            labels.append(torch.as_tensor(sample["label"]))
        optimizer.zero_grad()
        loss = loss_function(model(torch.stack(images).float()), torch.stack(labels).float())
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def validate() -> float:
        assert validation_items is not None
        return _validation_dice(model, validation_items, spec)

    return fit_epochs(
        config,
        model,
        optimizer,
        checkpoint_path,
        progress,
        label=label,
        epochs=epochs or options.epochs,
        steps=steps,
        train_step=train_step,
        validate=validate if validation_items is not None else None,
        score_name="validation_dice",
    )


def train_segmenter(
    config: TrainConfig,
    *,
    tasks_dir: Path,
    work_dir: Path,
    command: str = "",
    progress: Any = None,
    only_fold: int | None = None,
) -> TrainingResult | None:
    """Train the recipe's version; with ``only_fold`` (1-based) train that fold of a fold
    recipe and stop (None): folds can run as processes side by side, and a run without it
    resumes every finished fold and completes the version."""
    import torch

    base = base_task(config)
    spec = base.spec
    if only_fold is not None and not config.split.folds:
        raise ConfigurationError("--fold needs a recipe with [split] folds")
    if spec.kind != "segmentation" or spec.chain is not None:
        raise ConfigurationError(f"task {spec.id} is not a single-network segmentation task")
    if config.split.grouped:
        raise ConfigurationError("group-held-out validation is for classifiers; give folds")
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    cases, _ = split_holdback(list_cases(config.data), config.split)
    unmasked = [c.name for c in cases if c.mask is None]
    if unmasked:
        raise InvalidInputError(f"{len(unmasked)} case(s) without a mask: {unmasked[:5]}")
    key = training_hash(config)[:12]
    if only_fold is not None:
        _train_one_fold(config, base, cases, work_dir, key, only_fold, progress)
        return None
    if config.split.folds:
        return _train_folds(config, base, cases, tasks_dir, work_dir, key, command, progress)
    train_cases, validation_cases = split_by_patient(cases, config.split)
    train_items = _cache_items(train_cases, base, work_dir / f"train-{key}.pt", progress)
    validation_items = _cache_items(
        validation_cases, base, work_dir / f"validation-{key}.pt", progress
    )
    fit = _fit_segmenter(
        config, base, train_items, validation_items, work_dir / "checkpoint.pt", progress
    )
    folder, digest = write_task_version(base, config, fit.model, tasks_dir, command)
    task = load_task(folder)
    # the held-back cases through the real Predictor, in their original geometry
    evaluation = evaluate_segmenter(task, validation_cases, progress=progress)
    measured_on = (
        f"{len(validation_cases)} held-back cases of a random patient split (which also "
        "chose the epoch)"
    )
    return _finish(
        config,
        base,
        folder,
        digest,
        evaluation,
        measured_on,
        train_cases,
        validation_cases,
        fit.history,
        [],
        work_dir,
        command,
    )


def _fold_model(
    config: TrainConfig,
    base: Task,
    parts: tuple[list[Case], list[Case]],
    item_of: dict[int, _Item],
    fold_dir: Path,
    number_of: tuple[int, int],
    progress: Any,
) -> tuple[Any, int, list[dict[str, Any]]]:
    """Fold ``number`` of ``count``'s model, best epoch and history: trained on the first
    part, its epoch chosen on the second, and saved, or loaded when a run of the same
    training saved it (one of another recipe is refused)."""
    import torch

    weights = fold_dir / "model.pt"
    model = build_network(base.spec.networks[0])
    if weights.is_file():
        saved = torch.load(weights, weights_only=False)
        refuse_other_training(saved.get("training_hash"), config, weights)
        model.load_state_dict(saved["model"])
        return model, int(saved["best_epoch"]), saved["history"]
    fit_cases, check_cases = parts
    number, count = number_of
    fit = _fit_segmenter(
        config,
        base,
        [item_of[id(c)] for c in fit_cases],
        [item_of[id(c)] for c in check_cases],
        fold_dir / "checkpoint.pt",
        progress,
        label=f"fold {number}/{count}",
        fold=number,
    )
    atomic_save(
        {
            "model": fit.model.state_dict(),
            "best_epoch": fit.best_epoch,
            "history": fit.history,
            "training_hash": training_hash(config),
        },
        weights,
    )
    return fit.model, fit.best_epoch, fit.history


def _train_one_fold(
    config: TrainConfig,
    base: Task,
    cases: list[Case],
    work_dir: Path,
    key: str,
    number: int,
    progress: Any,
) -> None:
    folds = _fold_cases(config, cases)
    check_fold(number, len(folds))
    items = _cache_items(cases, base, work_dir / f"all-{key}.pt", progress)
    item_of = {id(case): item for case, item in zip(cases, items, strict=True)}
    _, fit_cases, check_cases = folds[number - 1]
    parts = (fit_cases, check_cases)
    _fold_model(
        config, base, parts, item_of, work_dir / f"fold-{number}", (number, len(folds)), progress
    )


def _train_folds(
    config: TrainConfig,
    base: Task,
    cases: list[Case],
    tasks_dir: Path,
    work_dir: Path,
    key: str,
    command: str,
    progress: Any,
) -> TrainingResult:
    """k models, each choosing its epoch on an internal patient split of its training part;
    every case is scored by the model that did not see it (the pooled out-of-fold evidence,
    the card's figures and claims); then one model refitted on all cases for the median
    best epoch count, or the fold models shipped as an ensemble. Finished folds resume."""

    assert config.split.folds is not None
    folds = _fold_cases(config, cases)
    items = _cache_items(cases, base, work_dir / f"all-{key}.pt", progress)
    item_of = {id(case): item for case, item in zip(cases, items, strict=True)}
    fold_tasks: list[tuple[Task, list[Case]]] = []
    members: list[Any] = []
    best_epochs: list[int] = []
    histories: list[dict[str, Any]] = []
    for number, (fold, fit_cases, check_cases) in enumerate(folds, start=1):
        fold_dir = work_dir / f"fold-{number}"
        model, best, history = _fold_model(
            config,
            base,
            (fit_cases, check_cases),
            item_of,
            fold_dir,
            (number, len(folds)),
            progress,
        )
        folder, _ = write_task_version(base, config, model, fold_dir / "task", command)
        fold_tasks.append((load_task(folder), fold))
        members.append(model)
        best_epochs.append(best)
        histories.append({"fold": number, "epochs": history})
    if config.split.ship == "ensemble":
        shipped: Any = members
        history_final: list[dict[str, Any]] = []
        ending = f"the shipped model is the ensemble of the {len(folds)} fold models"
    else:
        epochs = max(1, int(np.median(best_epochs)))
        final = _fit_segmenter(
            config,
            base,
            items,
            None,
            work_dir / "final" / "checkpoint.pt",
            progress,
            label=f"final model on all cases ({epochs} epochs)",
            epochs=epochs,
        )
        shipped, history_final = final.model, final.history
        ending = f"the shipped model is refitted on all cases for {epochs} epochs"
    folder, digest = write_task_version(base, config, shipped, tasks_dir, command)
    evaluation = evaluate_out_of_fold(load_task(folder), fold_tasks, progress=progress)
    internal = evaluate_internal(config, base, cases, work_dir, load_task(folder), progress)
    measured_on = (
        f"out-of-fold: {len(folds)}-fold patient-level cross-validation, {len(cases)} cases "
        "each scored by the model that did not see it; each fold's model chose its epoch on "
        "an internal split of its training part"
    )
    return _finish(
        config,
        base,
        folder,
        digest,
        evaluation,
        f"{measured_on}; {ending}",
        cases,
        cases,
        history_final,
        histories,
        work_dir,
        command,
        internal=internal,
    )


def _fold_cases(
    config: TrainConfig, cases: list[Case]
) -> list[tuple[list[Case], list[Case], list[Case]]]:
    """Per fold: its held-out cases, the cases its model trained on, and the internal
    patient split of its training part that chose the model's epoch."""
    assert config.split.folds is not None
    parts = []
    for fold in kfold_by_patient(cases, config.split.folds, config.split.seed):
        inside = {id(c) for c in fold}
        fit_cases, check_cases = split_by_patient(
            [c for c in cases if id(c) not in inside], config.split
        )
        parts.append((fold, fit_cases, check_cases))
    return parts


def evaluate_internal(
    config: TrainConfig,
    base: Task,
    cases: list[Case],
    work_dir: Path,
    task: Task,
    progress: Any = None,
) -> dict[str, Any]:
    """The internal figures beside the out-of-fold ones: each fold model on the random
    patient split that chose its epoch, pooled (they flatter: that split made a choice)."""
    pairs = []
    for number, (_, _, check_cases) in enumerate(_fold_cases(config, cases), start=1):
        folder = work_dir / f"fold-{number}" / "task" / base.id / config.version
        pairs.append((load_task(folder), check_cases))
    return evaluate_out_of_fold(task, pairs, progress=progress)


def _finish(
    config: TrainConfig,
    base: Task,
    folder: Path,
    digest: str,
    evaluation: dict[str, Any],
    measured_on: str,
    train_cases: list[Case],
    validation_cases: list[Case],
    history: list[dict[str, Any]],
    folds: list[dict[str, Any]],
    work_dir: Path,
    command: str,
    *,
    internal: dict[str, Any] | None = None,
) -> TrainingResult:
    write_segmentation_report(evaluation, work_dir / "validation-report")
    claims = _write_claims(folder, evaluation["summary"], measured_on.split(";")[0])
    metrics = {
        "evidence": measured_on,
        "train_cases": len(train_cases),
        "train_patients": len({c.patient for c in train_cases}),
        "validation_cases": len(validation_cases),
        "validation_patients": len({c.patient for c in validation_cases}),
        "validation": evaluation["summary"],
        "units": evaluation["units"],
        "volume_units": evaluation["volume_units"],
        "history": history,
        "folds": folds,
        "training_seconds": training_seconds(history, *(f["epochs"] for f in folds)),
        "internal": internal["summary"] if internal else None,
        "internal_cases": internal["cases"] if internal else None,
        "training_cpu_seconds": training_seconds(
            history, *(f["epochs"] for f in folds), key="cpu_seconds"
        ),
    }
    return write_record(
        folder,
        config,
        command,
        metrics,
        digest,
        lambda r: with_claims_table(_model_card(base, config, metrics, r), claims),
    )


def _write_claims(folder: Path, summary: dict[str, Any], measured_on: str) -> list[dict[str, Any]]:
    """Each segment's Dice (and pixel AUC) as task.toml claims `medsight evaluate` re-checks;
    the weights are unchanged, so only task.toml is rewritten."""
    import tomli_w

    claims = []
    for segment, entry in summary.items():
        for metric in ("dice", "pixel_auc", "aji"):
            if metric in entry:
                estimate = {k: round(float(entry[metric][k]), 4) for k in ("value", "low", "high")}
                claims.append(
                    {"metric": metric, **estimate, "segment": segment, "measured_on": measured_on}
                )
    path = folder / "task.toml"
    text = path.read_text()
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    document = tomllib.loads(text)
    document["claims"] = claims
    path.write_text(header + tomli_w.dumps(document))
    return claims


SIDE_BY_SIDE = ("dice", "pixel_auc", "aji", "pq", "hd95", "hd95_mm", "surface_dice")


def _side_by_side(metrics: dict[str, Any]) -> list[str]:
    """Internal (each fold's epoch-choosing split) and out-of-fold figures, one table."""
    internal, held = metrics["internal"], metrics["validation"]
    lines = [
        "| segment: figure (95% CI) | internal: each fold's epoch-choosing split "
        f"({metrics['internal_cases']} cases) | out-of-fold "
        f"({metrics['validation_cases']} cases) |",
        "|---|---|---|",
    ]
    for segment, summary in held.items():
        for name in SIDE_BY_SIDE:
            if name in summary and name in internal.get(segment, {}):
                shown = name.removesuffix("_mm")
                lines.append(
                    f"| {segment}: {shown} | {interval(internal[segment][name])} | "
                    f"{interval(summary[name])} |"
                )
    lines += [
        "",
        "The internal column pools each fold model on the random patient split of its own "
        "training part that chose its epoch (a choice made on those cases, which usually "
        "flatters them); the out-of-fold column scores every case with the model that never "
        "saw it and made no choice on it.",
    ]
    return lines


def _target_lines(targets: dict[Any, Any], summary: dict[str, Any]) -> list[str]:
    """The recipe's accuracy targets, each reached or missed on the evidence estimate."""
    lines = ["Targets (the recipe's; judged on the estimate above, not on its CI):", ""]
    for segment, entry in summary.items():
        for metric, wanted in targets.items():
            target = wanted.get(segment) if isinstance(wanted, dict) else wanted
            if metric not in entry or target is None:
                continue
            value = entry[metric]["value"]
            gap = target - value
            estimate = interval(entry[metric])
            if value >= target:
                verdict = "reached"
            elif gap >= 0.0005:
                verdict = f"**missed** by {gap:.3f}"
            else:  # a miss below the third decimal: at the fourth, rounded away from reached
                verdict = f"**missed** by {math.ceil(gap * 1e4) / 1e4:.4f}"
                estimate = f"{math.floor(value * 1e4) / 1e4:.4f}; {estimate}"
            lines.append(f"- {segment} {metric} at least {target}: {verdict} ({estimate})")
    return lines


def _model_card(
    base: Task, config: TrainConfig, metrics: dict[str, Any], record: dict[str, Any]
) -> str:
    unit = metrics["units"]
    lines = [
        *card_head(base, config),
        f"- training: {metrics['train_cases']} images of {metrics['train_patients']} patients; "
        f"evaluated: {metrics['validation_cases']} images of "
        f"{metrics['validation_patients']} patients (seed {config.split.seed})",
        f"- evidence: {metrics['evidence']}",
        "- validation cases come from the same source as the training data, so these figures "
        "flatter: expect lower performance on data from another site or device",
        "",
        "## Validation results (mean over the evaluated cases, 95% bootstrap CIs)",
        "",
        f"Computed by the Predictor on the original images (original geometry), post-processing "
        f"included; HD95 in {unit}, surface Dice at 1 {unit} tolerance, volume differences in "
        f"{metrics['volume_units']}; pixel AUC (two-class tasks) over the pixels inside the "
        "region of interest.",
        "",
    ]
    for segment, summary in metrics["validation"].items():
        parts = [
            f"{name.removesuffix('_mm')} {interval(summary[name])}"
            for name in summary
            if name != "cases"
        ]
        lines.append(f"- {segment}: " + "; ".join(parts))
    if metrics.get("internal"):
        lines += ["", *_side_by_side(metrics)]
    if config.evaluation.targets:
        lines += ["", *_target_lines(config.evaluation.targets, metrics["validation"])]
    lines += [
        "",
        "## Claims (re-checked by `medsight evaluate`)",
        "",
        "task.toml `[[claims]]` holds each segment's Dice and pixel AUC above with its 95% CI "
        f"({metrics['evidence'].split(';')[0]}); `medsight evaluate` re-checks each on new "
        "data and says which held (a claim fails when the new 95% CI lies wholly below the "
        "claimed lower bound).",
    ]

    def epochs(history: list[dict[str, Any]]) -> str:
        return "; ".join(
            f"epoch {h['epoch']} loss {h['loss']:.3f}"
            + (f" val Dice {h['validation_dice']:.3f}" if "validation_dice" in h else "")
            for h in history
        )

    history = epochs(metrics["history"])
    lines += [
        "",
        "## Training",
        "",
        f"- command: `{record['command']}`",
        time_line(metrics, record),
        f"- software: {json.dumps(record['software'])}",
        (
            f"- epochs run: {len(metrics['history'])}; history: {history}"
            if metrics["history"]
            else "- no model trained after the folds: the fold models below are what ships"
        ),
        *(f"- fold {f['fold']}: {epochs(f['epochs'])}" for f in metrics["folds"]),
        f"- weights SHA-256: `{record['weights_sha256']}`",
        "",
        "## Known limitations",
        "",
        "- internal validation only; no external test set was available",
        "- with a random split the best epoch was chosen on the evaluated cases, which makes "
        "those figures slightly optimistic; out-of-fold figures are free of that choice",
        "- inputs outside the intended use are flagged NEEDS_REVIEW by the task's acceptance "
        "checks, never silently segmented",
        "",
    ]
    return "\n".join(lines)


def refresh_fold_evidence(
    config: TrainConfig, folder: Path, work_dir: Path, progress: Any = None
) -> dict[str, Any]:
    """For a k-fold version trained before the internal column existed: score each fold
    model (from ``work_dir``) on its epoch-choosing split, add those figures to
    ``folder``'s training record and rewrite its model card (the weights, task.toml and
    claims stay as they are). Returns the internal evaluation."""
    base = base_task(config)
    if not config.split.folds:
        raise ConfigurationError("the internal column needs a k-fold recipe")
    cases, _ = split_holdback(list_cases(config.data), config.split)
    internal = evaluate_internal(config, base, cases, work_dir, load_task(folder), progress)
    path = folder / "training_record.json"
    record = json.loads(path.read_text())
    metrics = record["metrics"]
    metrics["internal"] = internal["summary"]
    metrics["internal_cases"] = internal["cases"]
    path.write_text(json.dumps(record, indent=2, default=float))
    claims = tomllib.loads((folder / "task.toml").read_text()).get("claims", [])
    card = with_claims_table(_model_card(base, config, metrics, record), claims)
    (folder / "MODEL_CARD.md").write_text(card)
    return internal
