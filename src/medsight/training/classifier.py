"""Train a classification task: patient-level split, class weighting, augmentation, early
stopping on validation AUC, resumable checkpoints, then calibration and a locked
high-sensitivity operating point, written as a new task version with its model card."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsight.errors import ConfigurationError, InvalidInputError
from medsight.evaluation import (
    brier_score,
    choose_operating_point,
    expected_calibration_error,
    fit_temperature,
    roc_auc,
    wilson,
)
from medsight.inference.predictor import calibrated_probabilities, network_input
from medsight.io import read_image
from medsight.models import build_network, save_weights
from medsight.tasks import Task, load_named_task, load_task
from medsight.training.config import TrainConfig
from medsight.training.data import Case, list_cases, split_by_patient

logger = logging.getLogger(__name__)

__all__ = ["TrainingResult", "train_classifier"]


@dataclass
class TrainingResult:
    task: Task
    record: dict[str, Any] = field(default_factory=dict)


def _cache(cases: list[Case], base: Task, path: Path, progress: Any) -> np.ndarray:
    """Network inputs of every case, decoded once (float16 on disk)."""
    if path.is_file():
        return np.load(path)
    spec = base.spec
    arrays = []
    job = progress.add_task(f"decoding {path.stem}", total=len(cases)) if progress else None
    for case in cases:
        try:
            image = read_image(case.path)
        except Exception as exc:
            raise InvalidInputError(f"cannot read training image ({exc})", path=case.path) from exc
        arrays.append(network_input(image, spec.display, spec.preprocessing)[1].astype(np.float16))
        if progress:
            progress.advance(job)
    stacked = np.stack(arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npy")
    np.save(partial, stacked)
    partial.replace(path)
    return stacked


def _augmenter(seed: int) -> Any:
    from monai.transforms import Compose, RandAdjustContrast, RandAffine

    transform = Compose(
        [
            RandAffine(
                prob=0.8,
                rotate_range=0.17,
                scale_range=0.1,
                translate_range=6,
                padding_mode="zeros",
            ),
            RandAdjustContrast(prob=0.3, gamma=(0.8, 1.25)),
        ]
    )
    transform.set_random_state(seed=seed)
    return transform


def _logits(model: Any, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    import torch

    model.eval()
    outputs = []
    with torch.no_grad():
        for first in range(0, len(inputs), batch_size):
            batch = torch.from_numpy(inputs[first : first + batch_size].astype(np.float32))
            outputs.append(model(batch).numpy())
    return np.concatenate(outputs).astype(np.float64)


def _atomic_save(obj: Any, path: Path) -> None:
    import torch

    partial = path.with_suffix(".partial")
    torch.save(obj, partial)
    partial.replace(path)


def _config_hash(config: TrainConfig) -> str:
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()


def train_classifier(
    config: TrainConfig,
    *,
    tasks_dir: Path,
    work_dir: Path,
    command: str = "",
    progress: Any = None,
) -> TrainingResult:
    import torch

    base = load_named_task(config.base_task)
    spec = base.spec
    if spec.kind != "classification" or spec.chain is not None:
        raise ConfigurationError(f"task {spec.id} is not a single-network classifier")
    if len(config.data.classes) != len(spec.outputs):
        raise ConfigurationError(
            f"{len(config.data.classes)} class folders for {len(spec.outputs)} task outputs"
        )
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    cases = list_cases(config.data)
    train_cases, validation_cases = split_by_patient(cases, config.split)
    key = _config_hash(config)[:12]
    train_x = _cache(train_cases, base, work_dir / f"train-{key}.npy", progress)
    validation_x = _cache(validation_cases, base, work_dir / f"validation-{key}.npy", progress)
    train_y = np.array([c.label for c in train_cases])
    validation_y = np.array([c.label for c in validation_cases])

    options = config.train
    torch.manual_seed(options.seed)
    model = build_network(spec.networks[0])
    if config.init_from:
        from medsight.models import load_network

        start = load_named_task(config.init_from)
        model.load_state_dict(load_network(start).state_dict())
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay
    )
    counts = np.bincount(train_y, minlength=len(spec.outputs)).astype(np.float64)
    weights = (
        counts.sum() / (len(counts) * np.maximum(counts, 1))
        if options.class_weighting == "balanced"
        else np.ones(len(counts))
    )
    loss_function = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))

    checkpoint_path = work_dir / "checkpoint.pt"
    state: dict[str, Any] = {
        "epoch": 0,
        "best_auc": -1.0,
        "best_state": None,
        "bad_epochs": 0,
        "history": [],
    }
    if checkpoint_path.is_file():
        saved = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        if saved.get("config_hash") != _config_hash(config):
            raise ConfigurationError(
                "the work folder holds a checkpoint of another configuration; use a new --work",
                path=checkpoint_path,
            )
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        logger.info("resuming after epoch %d", state["epoch"])

    steps = int(np.ceil(len(train_x) / options.batch_size))
    if options.max_steps_per_epoch:
        steps = min(steps, options.max_steps_per_epoch)
    epoch_job = (
        progress.add_task("training", total=options.epochs, completed=state["epoch"])
        if progress
        else None
    )
    while state["epoch"] < options.epochs and state["bad_epochs"] < options.early_stopping_patience:
        epoch = state["epoch"]
        order = np.random.default_rng([options.seed, epoch]).permutation(len(train_x))
        model.train()
        losses = []
        step_job = progress.add_task(f"epoch {epoch + 1}", total=steps) if progress else None
        for step in range(steps):
            index = order[step * options.batch_size : (step + 1) * options.batch_size]
            batch = torch.from_numpy(train_x[index].astype(np.float32))
            if options.augment:
                augment = _augmenter(
                    seed=(options.seed * 1_000_003 + epoch * 10_007 + step) % (2**31)
                )
                batch = torch.stack([torch.as_tensor(augment(sample)) for sample in batch])
            optimizer.zero_grad()
            loss = loss_function(model(batch.float()), torch.from_numpy(train_y[index]))
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if progress:
                progress.update(
                    step_job, advance=1, description=f"epoch {epoch + 1} loss {np.mean(losses):.3f}"
                )
        if progress:
            progress.remove_task(step_job)
        validation_logits = _logits(model, validation_x, options.batch_size)
        probabilities = calibrated_probabilities(validation_logits, 1.0)[:, 1]
        auc = roc_auc(validation_y, probabilities).value
        improved = auc > state["best_auc"]
        state["history"].append(
            {"epoch": epoch + 1, "loss": float(np.mean(losses)), "validation_auc": auc}
        )
        if improved:
            state["best_auc"] = auc
            state["best_state"] = {k: v.clone() for k, v in model.state_dict().items()}
            state["bad_epochs"] = 0
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        _atomic_save(
            {
                "config": config.model_dump(),
                "config_hash": _config_hash(config),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "state": state,
            },
            checkpoint_path,
        )
        if progress:
            progress.update(
                epoch_job,
                completed=state["epoch"],
                description=f"training (val AUC {auc:.3f}, best {state['best_auc']:.3f})",
            )

    model.load_state_dict(state["best_state"])
    return _write_task(
        config,
        base,
        model,
        validation_cases,
        validation_x,
        validation_y,
        train_cases,
        state,
        tasks_dir,
        command,
    )


def _write_task(
    config: TrainConfig,
    base: Task,
    model: Any,
    validation_cases: list[Case],
    validation_x: np.ndarray,
    validation_y: np.ndarray,
    train_cases: list[Case],
    state: dict[str, Any],
    tasks_dir: Path,
    command: str,
) -> TrainingResult:
    import tomli_w
    import torch

    import medsight

    logits = _logits(model, validation_x, config.train.batch_size)
    temperature = fit_temperature(logits, validation_y)
    probabilities = calibrated_probabilities(logits, temperature)[:, 1]
    target = config.evaluation.target_sensitivity
    point = choose_operating_point(validation_y, probabilities, target)
    subgroups = {}
    for name in sorted({c.subgroup for c in validation_cases if c.subgroup}):
        members = np.array([c.subgroup == name for c in validation_cases])
        positives = members & (validation_y == 1)
        detected = int((probabilities[positives] >= point.threshold).sum())
        subgroups[name] = {
            "sensitivity": wilson(detected, int(positives.sum())).as_dict(),
            "cases": int(members.sum()),
        }
    metrics = {
        "validation_cases": len(validation_cases),
        "validation_patients": len({c.patient for c in validation_cases}),
        "train_cases": len(train_cases),
        "train_patients": len({c.patient for c in train_cases}),
        "class_counts_validation": np.bincount(validation_y).tolist(),
        "roc_auc": roc_auc(validation_y, probabilities).as_dict(),
        "temperature": temperature,
        "ece_before": expected_calibration_error(
            validation_y, calibrated_probabilities(logits, 1.0)[:, 1]
        ),
        "ece_after": expected_calibration_error(validation_y, probabilities),
        "brier_after": brier_score(validation_y, probabilities),
        "operating_point": point.as_dict(),
        "subgroups": subgroups,
        "history": state["history"],
    }
    folder = tasks_dir / base.id / config.version
    folder.mkdir(parents=True, exist_ok=True)
    digest = save_weights(model, folder / base.spec.networks[0].weights)
    document = tomllib.loads((base.folder / "task.toml").read_text())
    document["version"] = config.version
    document["networks"][0]["sha256"] = digest
    positive = base.spec.outputs[1].name
    document["calibration"] = {
        "temperature": round(temperature, 6),
        "fitted_on": "patient-level validation split (NLL)",
    }
    document["operating_points"] = {
        "high_sensitivity": {
            "output": positive,
            "threshold": round(point.threshold, 6),
            "sensitivity": round(point.sensitivity.value, 4),
            "specificity": round(point.specificity.value, 4),
            "note": point.note,
        }
    }
    (folder / "task.toml").write_text(
        f"# trained by: {command or 'medsight train'}\n" + tomli_w.dumps(document)
    )
    record = {
        "config": config.model_dump(),
        "command": command,
        "metrics": metrics,
        "software": {
            "medsight": medsight.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
        },
        "weights_sha256": digest,
    }
    (folder / "training_record.json").write_text(json.dumps(record, indent=2, default=float))
    (folder / "MODEL_CARD.md").write_text(_model_card(base, config, metrics, record))
    return TrainingResult(load_task(folder), record)


def _model_card(
    base: Task, config: TrainConfig, metrics: dict[str, Any], record: dict[str, Any]
) -> str:
    auc = metrics["roc_auc"]
    point = metrics["operating_point"]
    lines = [
        f"# {base.id} {config.version}: model card",
        "",
        "**Research use only, not for diagnostic use.**",
        "",
        "## Intended use",
        "",
        base.spec.intended_use,
        "",
        "## Data",
        "",
        f"- source: {config.data_source or config.data.root}",
        f"- training: {metrics['train_cases']} images of {metrics['train_patients']} patients; "
        f"validation: {metrics['validation_cases']} images of {metrics['validation_patients']} "
        f"patients (patient-level split, seed {config.split.seed}, class counts "
        f"{metrics['class_counts_validation']})",
        "- the validation split comes from the same source as the training data, so these "
        "figures flatter: expect lower performance on data from another site or device",
        "",
        "## Validation results (95% confidence intervals)",
        "",
        f"- ROC AUC {auc['value']:.3f} ({auc['low']:.3f}-{auc['high']:.3f}, {auc['method']})",
        f"- operating point `high_sensitivity` at calibrated probability "
        f"{point['threshold']:.4f}: sensitivity {point['sensitivity']['value']:.3f} "
        f"({point['sensitivity']['low']:.3f}-{point['sensitivity']['high']:.3f}), specificity "
        f"{point['specificity']['value']:.3f} ({point['specificity']['low']:.3f}-"
        f"{point['specificity']['high']:.3f}); {point['note']}",
        f"- calibration: temperature {metrics['temperature']:.3f}; ECE "
        f"{metrics['ece_before']:.3f} before, {metrics['ece_after']:.3f} after; Brier "
        f"{metrics['brier_after']:.3f}",
    ]
    for name, subgroup in metrics["subgroups"].items():
        sensitivity = subgroup["sensitivity"]
        lines.append(
            f"- subgroup {name}: sensitivity {sensitivity['value']:.3f} "
            f"({sensitivity['low']:.3f}-{sensitivity['high']:.3f})"
        )
    lines += [
        "",
        "## Training",
        "",
        f"- command: `{record['command']}`",
        f"- software: {json.dumps(record['software'])}",
        f"- epochs run: {len(metrics['history'])}; history: "
        + "; ".join(
            f"epoch {h['epoch']} loss {h['loss']:.3f} val AUC {h['validation_auc']:.3f}"
            for h in metrics["history"]
        ),
        f"- weights SHA-256: `{record['weights_sha256']}`",
        "",
        "## Known limitations",
        "",
        "- internal validation only; no external test set was available",
        "- the best epoch, the temperature and the operating point were all chosen on the "
        "same validation split, which makes its figures optimistic",
        "- inputs outside the intended use (age, view, modality) are flagged "
        "NEEDS_REVIEW by the task's acceptance checks, never silently scored",
        "",
    ]
    return "\n".join(lines)
