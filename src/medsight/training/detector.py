"""Train a detection task (``kind = "detection"``) from COCO boxes, with grouped k-fold
evidence.

Each fold is held out in turn (images sharing the recipe's ``group_column`` value, e.g.
near-duplicates, stay in one fold; folds stratified by whether an image holds a box). Its
model chooses its epoch on a random share of its training part (``validation_fraction``),
scored by the mean lesion sensitivity at 0.5-4 false positives per image, never on the
held-out fold. The pooled out-of-fold predictions give the evidence: the temperature of the
image's score, the operating point locked at the target sensitivity, image ROC AUC, lesion
FROC, per subgroup and with and without the recipe's ``train_exclude`` images (left out of
every training, predicted and reported). The shipped model is refitted on all training
images for the folds' median best epoch. Every finished fold is saved: a rerun resumes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from medsight.errors import ConfigurationError
from medsight.evaluation.calibration import fit_temperature
from medsight.evaluation.classification import choose_operating_point
from medsight.evaluation.detection import FROC_RATES, ImageDetections, mean_froc_sensitivity
from medsight.evaluation.detection_report import (
    DetectionCase,
    detection_cases,
    detection_figures,
)
from medsight.inference.boxes import fuse_views
from medsight.tasks import Task
from medsight.training.common import (
    Fitted,
    TrainingResult,
    atomic_write,
    base_task,
    card_head,
    check_fold,
    claims_table,
    fit_epochs,
    fold_result,
    new_model,
    step_seed,
    version_tta_axes,
    write_record,
    write_task_version,
)
from medsight.training.config import CocoBoxes, TrainConfig

__all__ = ["box_data_cases", "train_detector"]


@dataclass
class _Data:
    cases: list[DetectionCase]
    inputs: np.ndarray  # (n, channels, *grid) float16, the network's inputs
    boxes: list[np.ndarray]  # per case, on the network grid
    scale: np.ndarray  # (n, 2): source pixels per network pixel, per axis
    trained: np.ndarray  # bool: may train (not excluded)
    groups: list[str]


def _resolve(path: str) -> Path:
    from medsight.datasets import shared_data_dir

    candidate = Path(path)
    return candidate if candidate.is_absolute() else shared_data_dir() / candidate


def box_data_cases(data: CocoBoxes) -> list[tuple[DetectionCase, str]]:
    """The recipe's images with their boxes and columns, each with its group (the group
    column's value; an image without one is its own group)."""
    columns = [*data.subgroup_columns, *data.train_exclude]
    if data.group_column:
        columns.append(data.group_column)
    labels = _resolve(data.labels) if data.labels else None
    cases = detection_cases(
        _resolve(data.annotations), _resolve(data.images), labels, sorted(set(columns))
    )
    column = data.group_column or ""
    return [(c, c.groups.get(column, "") or c.image.name) for c in cases]


def _load(config: TrainConfig, base: Task, cache: Path, progress: Any) -> _Data:
    """The cases, and their inputs on the network grid (cached)."""
    from medsight.inference.predictor import network_input
    from medsight.io import read_image

    data = config.data
    assert isinstance(data, CocoBoxes)
    grouped = box_data_cases(data)
    cases = [c for c, _ in grouped]
    spec = base.spec
    if cache.is_file():
        stored = np.load(cache)
        inputs, scale = stored["inputs"], stored["scale"]
    else:
        job = progress.add_task("reading images", total=len(cases)) if progress else None
        arrays, scales = [], []
        for case in cases:
            image = read_image(case.image)
            _, values = network_input(image, spec.display, spec.preprocessing)
            arrays.append(values.astype(np.float16))
            scales.append(np.array(image.shape[:2], float) / np.array(values.shape[1:3], float))
            if job is not None:
                progress.advance(job)
        inputs, scale = np.stack(arrays), np.stack(scales)
        atomic_write(cache, lambda file: np.savez(file, inputs=inputs, scale=scale))
    boxes = [c.reference / np.tile(s, 2) for c, s in zip(cases, scale, strict=True)]
    trained = np.array(
        [not any(c.groups.get(k, "") in v for k, v in data.train_exclude.items()) for c in cases]
    )
    groups = [group for _, group in grouped]
    return _Data(cases, inputs, boxes, scale, trained, groups)


def _folds(data: _Data, folds: int, seed: int) -> list[np.ndarray]:
    """Held-out index sets: whole groups, stratified by whether a group holds a box."""
    rng = np.random.default_rng(seed)
    members: dict[str, list[int]] = {}
    for index, group in enumerate(data.groups):
        members.setdefault(group, []).append(index)
    fold_of: dict[str, int] = {}
    offset = 0
    for positive in (True, False):
        names = sorted(
            g for g, m in members.items() if any(len(data.boxes[i]) for i in m) is positive
        )
        for position, k in enumerate(rng.permutation(len(names))):
            fold_of[names[k]] = (position + offset) % folds
        offset += len(names)
    result = [
        np.array([i for i, g in enumerate(data.groups) if fold_of[g] == f]) for f in range(folds)
    ]
    if any(len(f) == 0 for f in result):
        raise ConfigurationError(f"too few image groups for {folds} folds")
    return result


def _predict(
    model: Any, data: _Data, index: np.ndarray, batch_size: int, tta: Any = None
) -> np.ndarray:
    """The network's rows (see ``BoxDetector``) for ``index``: (len(index), k + 1, 6). With
    ``tta`` (see ``_tta``) the flipped views are fused as the Predictor fuses them, in
    (len(index), views x k + 1, 6) rows."""
    import torch

    model.eval()
    rows = []
    tta_axes = [] if tta is None else list(tta[1])
    with torch.no_grad():
        for first in range(0, len(index), batch_size):
            chosen = index[first : first + batch_size]
            batch = torch.from_numpy(data.inputs[chosen].astype(np.float32))
            plain = model(batch).numpy()
            if tta is None:
                rows.append(plain)
                continue
            views = [plain]
            for axis in tta_axes:
                views.append(model(torch.flip(batch, dims=[axis + 2])).numpy())
            size = tuple(int(n) for n in batch.shape[2:])
            packed = np.full((len(chosen), len(views) * (plain.shape[1] - 1) + 1, 6), -1.0)
            named: list[int | None] = [None, *tta_axes]
            for position in range(len(chosen)):
                each = [(v, out[position]) for v, out in zip(named, views, strict=True)]
                boxes, scores, image_score = fuse_views(each, size, tta[0].fusion_iou)
                packed[position, 0, 4] = image_score
                packed[position, 1 : len(boxes) + 1, :4] = boxes
                packed[position, 1 : len(boxes) + 1, 4] = scores
            rows.append(packed)
    return np.concatenate(rows) if rows else np.zeros((0, 1, 6))


def _held_out_rows(
    model: Any, *, data: _Data, index: np.ndarray, batch: int, tta: Any = None
) -> dict[str, Any]:
    return {"held_out": _predict(model, data, index, batch, tta)}


def _detections(data: _Data, index: np.ndarray, rows: np.ndarray) -> list[ImageDetections]:
    """Predicted rows as detections on the source pixels, beside the reference boxes."""
    found = []
    for k, row in zip(index, rows, strict=True):
        kept = row[1:][row[1:, 4] >= 0]
        case = data.cases[k]
        found.append(
            ImageDetections(
                case.image.name,
                case.reference,
                kept[:, :4] * np.tile(data.scale[k], 2),
                kept[:, 4],
            )
        )
    return found


def _mean_sensitivity(detections: list[ImageDetections]) -> float:
    if not any(len(d.reference) for d in detections):
        return 0.0
    return mean_froc_sensitivity(detections)


def _fit(
    config: TrainConfig,
    base: Task,
    data: _Data,
    fit_index: np.ndarray,
    check_index: np.ndarray | None,
    checkpoint: Path,
    progress: Any,
    *,
    label: str,
    fold: int = 0,
    epochs: int | None = None,
) -> Fitted:
    import torch

    options = config.train
    model, optimizer = new_model(config, base, step_seed(options.seed, fold))
    steps = int(np.ceil(len(fit_index) / options.batch_size))
    if options.max_steps_per_epoch:
        steps = min(steps, options.max_steps_per_epoch)
    width = data.inputs.shape[2]

    def train_step(epoch: int, step: int) -> float:
        rng = np.random.default_rng(step_seed(options.seed, fold, epoch))
        order = rng.permutation(fit_index)
        chosen = order[step * options.batch_size : (step + 1) * options.batch_size]
        batch = torch.from_numpy(data.inputs[chosen].astype(np.float32))
        targets = []
        flips = np.random.default_rng(step_seed(options.seed, fold, epoch, step)).random(
            len(chosen)
        )
        for position, k in enumerate(chosen):
            boxes = torch.from_numpy(np.asarray(data.boxes[k], np.float32)).reshape(-1, 4)
            if options.augment and flips[position] < 0.5:  # mirror along x: boxes follow
                batch[position] = torch.flip(batch[position], dims=[1])
                boxes = torch.stack(
                    [width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1
                )
            targets.append({"box": boxes, "label": torch.zeros(len(boxes), dtype=torch.long)})
        optimizer.zero_grad()
        losses = model.losses(batch, targets)
        loss = losses["classification"] + losses["box_regression"]
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def validate() -> float:
        assert check_index is not None
        rows = _predict(model, data, check_index, options.batch_size)
        return _mean_sensitivity(_detections(data, check_index, rows))

    return fit_epochs(
        config,
        model,
        optimizer,
        checkpoint,
        progress,
        label=label,
        epochs=epochs or options.epochs,
        steps=steps,
        train_step=train_step,
        validate=validate if check_index is not None and len(check_index) else None,
        score_name="validation_mean_lesion_sensitivity",
    )


def train_detector(
    config: TrainConfig,
    *,
    tasks_dir: Path,
    work_dir: Path,
    command: str = "",
    progress: Any = None,
    only_fold: int | None = None,
) -> TrainingResult | None:
    """Train the recipe's version; with ``only_fold`` (1-based) train that fold and stop
    (None): folds can run side by side, or on machines sharing the work folder."""
    import torch

    base = base_task(config)
    if base.spec.kind != "detection" or not isinstance(config.data, CocoBoxes):
        raise ConfigurationError("a detection recipe needs a detection task and COCO data")
    if not config.split.folds:
        raise ConfigurationError("a detection recipe gives [split] folds (grouped k-fold)")
    check_fold(only_fold, config.split.folds)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    data = _load(config, base, work_dir / "inputs.npz", progress)
    folds = _folds(data, config.split.folds, config.split.seed)
    rows = np.zeros((len(data.cases), *_predict_shape(base, config)))
    best_epochs, histories = [], []
    for number, held in enumerate(folds, start=1):
        if only_fold is not None and number != only_fold:
            continue
        rest = np.setdiff1d(np.arange(len(data.cases)), held)
        rest = rest[data.trained[rest]]
        rng = np.random.default_rng(step_seed(config.split.seed, number))
        shuffled = rng.permutation(rest)
        count = max(1, round(config.split.validation_fraction * len(shuffled)))
        check, fit_index = np.sort(shuffled[:count]), np.sort(shuffled[count:])
        fold_dir = work_dir / f"fold-{number}"
        fit = partial(
            _fit,
            config,
            base,
            data,
            fit_index,
            check,
            fold_dir / "checkpoint.pt",
            progress,
            label=f"fold {number} held out ({number}/{len(folds)})",
            fold=number,
        )
        predict = partial(
            _held_out_rows,
            data=data,
            index=held,
            batch=config.train.batch_size,
            tta=_tta(base, config),
        )
        saved = fold_result(fold_dir / "held_out.npz", fit, predict, config)
        rows[held] = saved["held_out"]
        best_epochs.append(saved["best_epoch"])
        histories.append({"fold": number, "epochs": saved["history"]})
    if only_fold is not None:
        return None
    epochs = max(1, int(np.median(best_epochs)))
    everything = np.arange(len(data.cases))
    final = _fit(
        config,
        base,
        data,
        everything[data.trained],
        None,
        work_dir / "final" / "checkpoint.pt",
        progress,
        label=f"final model on all training images ({epochs} epochs)",
        epochs=epochs,
    )
    return _write(config, base, data, rows, final, histories, tasks_dir, command)


def _tta(base: Task, config: TrainConfig) -> Any:
    """(the task's detection spec, the axes the trained version flips) when its analyses
    fuse flipped views (the evidence then does too), else None."""
    if not base.spec.inference.tta:
        return None
    return base.spec.detection, [a for a in version_tta_axes(base, config) if a < 2]


def _predict_shape(base: Task, config: TrainConfig) -> tuple[int, int]:
    arguments = base.spec.networks[0].arguments
    tta = _tta(base, config)
    views = 1 + len(tta[1]) if tta is not None else 1
    return views * int(arguments.get("max_boxes", 20)) + 1, 6  # type: ignore[arg-type]


def _write(
    config: TrainConfig,
    base: Task,
    data: _Data,
    rows: np.ndarray,
    final: Fitted,
    histories: list[dict[str, Any]],
    tasks_dir: Path,
    command: str,
) -> TrainingResult:
    everything = np.arange(len(data.cases))
    detections = _detections(data, everything, rows)
    labels = np.array([len(d.reference) > 0 for d in detections])
    score = np.clip(rows[:, 0, 4], 1e-7, 1 - 1e-7)
    logits = np.log(score / (1 - score))
    temperature = fit_temperature(logits, labels.astype(int))
    probabilities = 1.0 / (1.0 + np.exp(-logits / temperature))
    target = config.evaluation.target_sensitivity
    point = choose_operating_point(labels.astype(int), probabilities, target)
    threshold = float(point.threshold)
    metrics: dict[str, Any] = {
        "evidence": f"out-of-fold predictions of {config.split.folds}-fold cross-validation "
        "by image group; each fold model chose its epoch on a "
        f"{config.split.validation_fraction:.0%} random share of its training part",
        "temperature": temperature,
        "operating_point": {
            "threshold": threshold,
            "target_sensitivity": target,
            "demonstrated": bool(point.demonstrated),
        },
        "all": detection_figures(detections, probabilities, threshold),
        "folds": histories,
        "final_history": final.history,
    }
    excluded = ~data.trained
    if excluded.any():
        kept = np.nonzero(data.trained)[0]
        metrics["without_excluded"] = detection_figures(
            [detections[i] for i in kept], probabilities[kept], threshold
        )
    subgroups: dict[str, Any] = {}
    assert isinstance(config.data, CocoBoxes)
    for column in config.data.subgroup_columns:
        for value in sorted({c.groups.get(column, "") for c in data.cases}):
            chosen = [i for i, c in enumerate(data.cases) if c.groups.get(column, "") == value]
            subgroups[f"{column}={value}"] = detection_figures(
                [detections[i] for i in chosen], probabilities[chosen], threshold
            )
    metrics["subgroups"] = subgroups
    figures = metrics["all"]
    measured_on = metrics["evidence"]
    claims = []
    if "auc" in figures:
        claims.append({"metric": "roc_auc", **_ci(figures["auc"]), "measured_on": measured_on})
        for name in ("sensitivity", "specificity"):
            claims.append(
                {
                    "metric": name,
                    **_ci(figures[name]),
                    "operating_point": "high_sensitivity",
                    "measured_on": measured_on,
                }
            )
    updates = {
        "calibration": {"temperature": round(float(temperature), 6), "fitted_on": measured_on},
        "operating_points": {
            "high_sensitivity": {
                "output": base.spec.outputs[0].name,
                "threshold": round(threshold, 6),
                "target_sensitivity": target,
                "sensitivity": round(float(point.sensitivity.value), 4),
                "specificity": round(float(point.specificity.value), 4),
            }
        },
        "claims": claims,
    }
    folder, digest = write_task_version(base, config, final.model, tasks_dir, command, updates)
    return write_record(
        folder, config, command, metrics, digest, partial(_card, base, config, claims)
    )


def _ci(estimate: dict[str, Any]) -> dict[str, float]:
    return {k: round(float(estimate[k]), 4) for k in ("value", "low", "high")}


def _row(name: str, figures: dict[str, Any]) -> str:
    def shown(entry: dict[str, Any] | None) -> str:
        return f"{entry['value']:.3f} ({entry['low']:.3f}-{entry['high']:.3f})" if entry else "-"

    at = figures.get("froc", {}).get("sensitivity_at_fp_per_image", {})
    cells = [shown(figures.get(k)) for k in ("auc", "sensitivity", "specificity")]
    cells += [shown(at.get(str(rate))) for rate in FROC_RATES]
    return f"| {name} | {figures['images']} | " + " | ".join(cells) + " |"


def _card(
    base: Task, config: TrainConfig, claims: list[dict[str, Any]], record: dict[str, Any]
) -> str:
    metrics = record["metrics"]
    point = metrics["operating_point"]
    lines = [
        *card_head(base, config),
        f"- evidence: {metrics['evidence']}",
        f"- temperature {metrics['temperature']:.3f}; operating point high_sensitivity at "
        f"threshold {point['threshold']:.4f} (target sensitivity {point['target_sensitivity']}"
        f"{'' if point['demonstrated'] else ', not demonstrated: its lower 95% bound is below'})",
        "",
        "## Out-of-fold evidence",
        "",
        "| group | images | image ROC AUC | sensitivity | specificity | lesion sensitivity at "
        "0.5 FP/image | at 1 | at 2 | at 4 |",
        "|---|---|---|---|---|---|---|---|---|",
        _row("all", metrics["all"]),
    ]
    if "without_excluded" in metrics:
        lines.append(_row("without the images left out of training", metrics["without_excluded"]))
    lines += [_row(name, figures) for name, figures in metrics["subgroups"].items()]
    lines += ["", *claims_table(claims), "", "## Training", "", f"- command: `{record['command']}`"]
    lines += [f"- fold {h['fold']}: " + json.dumps(h["epochs"]) for h in metrics["folds"]]
    return "\n".join(lines) + "\n"
