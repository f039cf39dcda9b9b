"""Train a classification task: patient-level split, class weighting, augmentation, early
stopping on validation AUC, resumable checkpoints, then calibration and a locked
high-sensitivity operating point, written as a new task version with its model card."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from medsight.errors import ConfigurationError
from medsight.evaluation import (
    brier_score,
    check_operating_point,
    choose_operating_point,
    expected_calibration_error,
    fit_temperature,
    roc_auc,
    stored_threshold,
    wilson,
)
from medsight.inference.outputs import calibrated_probabilities
from medsight.inference.predictor import network_input
from medsight.models import build_network
from medsight.tasks import Task
from medsight.training.augment import augment_batch
from medsight.training.common import (
    Fitted,
    TrainingResult,
    atomic_write,
    base_task,
    card_head,
    check_fold,
    fit_epochs,
    fold_result,
    interval,
    new_model,
    step_seed,
    time_line,
    training_seconds,
    with_claims_table,
    write_record,
    write_task_version,
)
from medsight.training.config import TrainConfig
from medsight.training.data import (
    Case,
    held_out_folds,
    held_out_parts,
    list_cases,
    read_case_image,
    split_by_patient,
    split_holdback,
)

logger = logging.getLogger(__name__)

__all__ = ["TrainingResult", "train_classifier"]


def cache_inputs(cases: list[Case], base: Task, path: Path, progress: Any) -> np.ndarray:
    """Network inputs of every case, decoded once (float16 on disk)."""
    if path.is_file():
        return np.load(path)
    spec = base.spec
    arrays = []
    job = progress.add_task(f"decoding {path.stem}", total=len(cases)) if progress else None
    for case in cases:
        image = read_case_image(case)
        arrays.append(network_input(image, spec.display, spec.preprocessing)[1].astype(np.float16))
        if progress:
            progress.advance(job)
    stacked = np.stack(arrays)
    atomic_write(path, lambda file: np.save(file, stacked))
    return stacked


def network_logits(model: Any, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    import torch

    model.eval()
    outputs = []
    with torch.no_grad():
        for first in range(0, len(inputs), batch_size):
            batch = torch.from_numpy(inputs[first : first + batch_size].astype(np.float32))
            outputs.append(model(batch).numpy())
    return np.concatenate(outputs).astype(np.float64)


def _loss_function(config: TrainConfig, labels: np.ndarray, outputs: int) -> Any:
    import torch
    from monai.losses import FocalLoss

    counts = np.bincount(labels, minlength=outputs).astype(np.float64)
    weights = np.ones(outputs)
    if config.train.class_weighting == "balanced":
        weights = counts.sum() / (outputs * np.maximum(counts, 1))
    weight = torch.tensor(weights, dtype=torch.float32)
    if config.train.loss == "focal":
        focal = FocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0, weight=weight)
        return lambda logits, target: focal(logits, target[:, None])
    return torch.nn.CrossEntropyLoss(weight=weight)


def _epoch_order(config: TrainConfig, labels: np.ndarray, fold: int, epoch: int) -> np.ndarray:
    """This epoch's case order; with ``sampler`` weighting, drawn so classes come equally."""
    rng = np.random.default_rng([config.train.seed, fold, epoch])
    if config.train.class_weighting != "sampler":
        return rng.permutation(len(labels))
    counts = np.bincount(labels)
    chance = 1.0 / counts[labels]
    return rng.choice(len(labels), size=len(labels), replace=True, p=chance / chance.sum())


def _fit(
    config: TrainConfig,
    base: Task,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray] | None,
    checkpoint_path: Path,
    progress: Any,
    *,
    label: str = "training",
    fold: int = 0,
    epochs: int | None = None,
) -> Fitted:
    """Train one model, choosing its epoch by validation AUC; without validation data it
    runs ``epochs`` and keeps the last."""
    import torch

    options = config.train
    spec = base.spec
    train_x, train_y = train
    model, optimizer = new_model(config, base, step_seed(options.seed, fold))
    loss_function = _loss_function(config, train_y, len(spec.outputs))
    steps = int(np.ceil(len(train_x) / options.batch_size))
    if options.max_steps_per_epoch:
        steps = min(steps, options.max_steps_per_epoch)
    orders: dict[int, np.ndarray] = {}

    def train_step(epoch: int, step: int) -> float:
        order = orders.setdefault(epoch, _epoch_order(config, train_y, fold, epoch))
        index = order[step * options.batch_size : (step + 1) * options.batch_size]
        batch = torch.from_numpy(train_x[index].astype(np.float32))
        if options.augment:
            seed = step_seed(options.seed, fold, epoch, step)
            batch = augment_batch(batch, seed, options.augment_strength)
        optimizer.zero_grad()
        loss = loss_function(model(batch.float()), torch.from_numpy(train_y[index]))
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def validate() -> float:
        assert validation is not None
        logits = network_logits(model, validation[0], options.batch_size)
        return roc_auc(validation[1], calibrated_probabilities(logits, 1.0)[:, 1]).value

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
        validate=validate if validation is not None else None,
        score_name="validation_auc",
    )


def train_classifier(
    config: TrainConfig,
    *,
    tasks_dir: Path,
    work_dir: Path,
    command: str = "",
    progress: Any = None,
    only_fold: int | None = None,
) -> TrainingResult | None:
    """Train the recipe's version; with ``only_fold`` (1-based) train that held-out part of
    a fold or group recipe and stop (None), as the segmenter does."""
    import torch

    base = base_task(config)
    spec = base.spec
    if spec.kind != "classification" or spec.chain is not None:
        raise ConfigurationError(f"task {spec.id} is not a single-network classifier")
    classes = getattr(config.data, "classes", None) or []
    if len(classes) != len(spec.outputs):
        raise ConfigurationError(f"{len(classes)} classes for {len(spec.outputs)} task outputs")
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    cases, _ = split_holdback(list_cases(config.data), config.split)
    if any(case.mask is not None for case in cases):
        raise ConfigurationError("the dataset has masks; a classifier needs labels")
    key = cache_key(config, base, cases)
    if config.split.grouped or config.split.folds:
        kind = "group" if config.split.grouped else "fold"
        held_out = held_out_parts(cases, config.split)
        return _train_held_out(
            config, base, cases, held_out, kind, tasks_dir, work_dir, key, command, progress,
            only_fold=only_fold,
        )  # fmt: skip
    if only_fold is not None:
        raise ConfigurationError("--fold needs a recipe with [split] folds or groups")
    train_cases, validation_cases = split_by_patient(cases, config.split)
    train_x = cache_inputs(train_cases, base, work_dir / f"train-{key}.npy", progress)
    validation_x = cache_inputs(
        validation_cases, base, work_dir / f"validation-{key}.npy", progress
    )
    train_y = np.array([c.label for c in train_cases])
    validation_y = np.array([c.label for c in validation_cases])
    fit = _fit(
        config,
        base,
        (train_x, train_y),
        (validation_x, validation_y),
        work_dir / "checkpoint.pt",
        progress,
    )
    logits = network_logits(fit.model, validation_x, config.train.batch_size)
    evidence = _Evidence(
        logits,
        validation_y,
        validation_cases,
        train_cases,
        "patient-level validation split",
        fit.history,
    )
    return _write_task(config, base, fit.model, evidence, tasks_dir, command)


def cache_key(config: TrainConfig, base: Task, cases: list[Case]) -> str:
    """Cached inputs depend on the cases and on the task's display and preprocessing."""
    import hashlib

    text = config.data.model_dump_json() + base.spec.display.model_dump_json()
    text += base.spec.preprocessing.model_dump_json() + "\n".join(str(c.path) for c in cases)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def logits_on(
    inputs: np.ndarray, batch_size: int, **parts: np.ndarray
) -> Callable[[Any], dict[str, np.ndarray]]:
    """What a fold saves of its model: its logits on each named part of ``inputs``."""
    return lambda model: {
        name: network_logits(model, inputs[index], batch_size) for name, index in parts.items()
    }


def _train_held_out(
    config: TrainConfig,
    base: Task,
    cases: list[Case],
    held_out: list[tuple[str, list[Case]]],
    kind: str,
    tasks_dir: Path,
    work_dir: Path,
    key: str,
    command: str,
    progress: Any,
    *,
    only_fold: int | None = None,
) -> TrainingResult | None:
    """Each fold (a patient k-fold or a group) is held out in turn. Its model chooses its
    epoch on a random patient split of the *training* part (``validation_fraction``), never
    on the held-out fold, so the pooled held-out predictions, on which the temperature and
    the operating point are locked, are free of every choice made in training; the pooled
    internal predictions give the internal (random patient split) figures beside them. The
    shipped model is refitted on all cases for the median best epoch count. Each finished
    fold is saved, so an interrupted run resumes; ``only_fold`` trains that part alone."""
    import torch

    check_fold(only_fold, len(held_out))
    inputs = cache_inputs(cases, base, work_dir / f"all-{key}.npy", progress)
    labels = np.array([c.label for c in cases])
    out_of_fold = np.zeros((len(cases), len(base.spec.outputs)))
    internal_index: list[np.ndarray] = []
    internal_logits: list[np.ndarray] = []
    best_epochs: list[int] = []
    histories: list[dict[str, Any]] = []
    for fold in held_out_folds(cases, held_out, config.split):
        if only_fold is not None and fold.number != only_fold:
            continue
        name, inside, check_index = fold.name, fold.inside, fold.check_index
        if len({c.label for c in fold.rest}) < 2:
            raise ConfigurationError(f"holding out {kind} {name} leaves one class to train on")
        saved = fold_result(
            work_dir / f"{kind}-{name}" / "held_out.npz",
            partial(
                _fit,
                config,
                base,
                (inputs[fold.fit_index], labels[fold.fit_index]),
                (inputs[check_index], labels[check_index]),
                work_dir / f"{kind}-{name}" / "checkpoint.pt",
                progress,
                label=f"{kind} {name} held out ({fold.number}/{len(held_out)})",
                fold=fold.number,
            ),
            logits_on(inputs, config.train.batch_size, held_out=inside, internal=check_index),
            config,
        )
        out_of_fold[inside] = saved["held_out"]
        internal_index.append(check_index)
        internal_logits.append(saved["internal"])
        best_epochs.append(saved["best_epoch"])
        histories.append({"fold": name, "epochs": saved["history"]})
    if only_fold is not None:
        return None
    epochs = max(1, int(np.median(best_epochs)))
    shipped: Any
    if config.split.ship == "ensemble":
        shipped = []
        for name, _ in held_out:
            member = build_network(base.spec.networks[0])
            member.load_state_dict(
                torch.load(work_dir / f"{kind}-{name}" / "model.pt", weights_only=True)
            )
            shipped.append(member)
        ending = (
            f"the shipped model is the ensemble of the {len(held_out)} fold models (mean "
            "logits); the held-out figures are of single fold models"
        )
        history: list[dict[str, Any]] = []
    else:
        final = _fit(
            config,
            base,
            (inputs, labels),
            None,
            work_dir / "final" / "checkpoint.pt",
            progress,
            label=f"final model on all cases ({epochs} epochs)",
            epochs=epochs,
        )
        shipped, history = final.model, final.history
        ending = (
            f"the shipped model is refitted on all cases for {epochs} epochs (median best epoch)"
        )
    pooled = np.concatenate(internal_index)
    if kind == "group":
        names = ", ".join(f"{n} ({len(f)} images)" for n, f in held_out)
        method = f"group-held-out: each of the groups {names} held out in turn"
    else:
        method = f"out-of-fold predictions of {len(held_out)}-fold patient-level cross-validation"
    evidence = _Evidence(
        out_of_fold,
        labels,
        cases,
        cases,
        f"{method}; each model chose its epoch on a {config.split.validation_fraction:.0%} "
        f"random patient split of its training part, never on the held-out part; {ending}",
        history,
        folds=histories,
        internal=(np.concatenate(internal_logits), labels[pooled], [cases[i] for i in pooled]),
        held_out_kind=kind,
    )
    return _write_task(config, base, shipped, evidence, tasks_dir, command)


@dataclass
class _Evidence:
    """What the temperature, the operating point and the model card are computed from."""

    logits: np.ndarray
    labels: np.ndarray
    cases: list[Case]
    train_cases: list[Case]
    method: str
    history: list[dict[str, Any]]
    folds: list[dict[str, Any]] = field(default_factory=list)
    # pooled predictions on each fold's internal (random patient) split: the internal figures
    internal: tuple[np.ndarray, np.ndarray, list[Case]] | None = None
    held_out_kind: str | None = None  # "group" or "fold"; None: the split chose the epoch


def _subgroups(
    cases: list[Case], labels: np.ndarray, probabilities: np.ndarray, threshold: float
) -> dict[str, Any]:
    """Sensitivity and specificity at the locked point per subgroup column value."""
    called = probabilities >= threshold
    groups: dict[str, Any] = {}
    for column in sorted({key for case in cases for key in case.attributes}):
        for value in sorted({c.attributes[column] for c in cases if column in c.attributes}):
            members = np.array([c.attributes.get(column) == value for c in cases])
            positives = members & (labels == 1)
            negatives = members & (labels == 0)
            row: dict[str, Any] = {"cases": int(members.sum())}
            if positives.any():
                detected = int((called & positives).sum())
                row["sensitivity"] = wilson(detected, int(positives.sum())).as_dict()
            if negatives.any():
                cleared = int((~called & negatives).sum())
                row["specificity"] = wilson(cleared, int(negatives.sum())).as_dict()
            groups[f"{column}={value}"] = row
    return groups


def _figures(
    logits: np.ndarray, labels: np.ndarray, temperature: float, threshold: float, target: float
) -> dict[str, Any]:
    """AUC, the locked point's sensitivity and specificity, and calibration on one set."""
    probabilities = calibrated_probabilities(logits, temperature)[:, 1]
    check = check_operating_point(labels, probabilities, threshold, target)
    return {
        "cases": len(labels),
        "positives": int(labels.sum()),
        "roc_auc": roc_auc(labels, probabilities).as_dict(),
        "sensitivity": check.sensitivity.as_dict(),
        "specificity": check.specificity.as_dict(),
        "ece": expected_calibration_error(labels, probabilities),
    }


def _claims(metrics: dict[str, Any], measured_on: str) -> list[dict[str, Any]]:
    """The card's headline figures as task.toml claims that `medsight evaluate` re-checks."""
    claims = [{"metric": "roc_auc", **_ci(metrics["roc_auc"]), "measured_on": measured_on}]
    for measure in ("sensitivity", "specificity"):
        claims.append(
            {
                "metric": measure,
                **_ci(metrics["operating_point"][measure]),
                "operating_point": "high_sensitivity",
                "measured_on": measured_on,
            }
        )
    claims.append(
        {
            "metric": "ece",
            "value": round(metrics["ece_after"], 4),
            "measured_on": f"{measured_on}; after the temperature fitted on the same predictions",
        }
    )
    return claims


def _ci(estimate: dict[str, Any]) -> dict[str, float]:
    return {key: round(float(estimate[key]), 4) for key in ("value", "low", "high")}


def _write_task(
    config: TrainConfig,
    base: Task,
    model: Any,
    evidence: _Evidence,
    tasks_dir: Path,
    command: str,
) -> TrainingResult:
    logits, labels = evidence.logits, evidence.labels
    temperature = fit_temperature(logits, labels)
    probabilities = calibrated_probabilities(logits, temperature)[:, 1]
    target = config.evaluation.target_sensitivity
    point = choose_operating_point(labels, probabilities, target)
    metrics: dict[str, Any] = {
        "evidence": evidence.method,
        "validation_cases": len(evidence.cases),
        "validation_patients": len({c.patient for c in evidence.cases}),
        "train_cases": len(evidence.train_cases),
        "train_patients": len({c.patient for c in evidence.train_cases}),
        "class_counts_validation": np.bincount(labels).tolist(),
        "roc_auc": roc_auc(labels, probabilities).as_dict(),
        "temperature": temperature,
        "ece_before": expected_calibration_error(
            labels, calibrated_probabilities(logits, 1.0)[:, 1]
        ),
        "ece_after": expected_calibration_error(labels, probabilities),
        "brier_after": brier_score(labels, probabilities),
        "operating_point": point.as_dict(),
        "subgroups": _subgroups(evidence.cases, labels, probabilities, point.threshold),
        "history": evidence.history,
        "folds": evidence.folds,
        "training_seconds": training_seconds(
            evidence.history, *(f["epochs"] for f in evidence.folds)
        ),
        "training_cpu_seconds": training_seconds(
            evidence.history, *(f["epochs"] for f in evidence.folds), key="cpu_seconds"
        ),
    }
    if evidence.internal is not None and evidence.held_out_kind is not None:
        internal_logits, internal_labels, _ = evidence.internal
        metrics["internal"] = _figures(
            internal_logits, internal_labels, temperature, point.threshold, target
        )
        metrics["held_out"] = _figures(logits, labels, temperature, point.threshold, target)
        metrics["held_out_kind"] = evidence.held_out_kind
    measured_on = evidence.method.split(";")[0]
    positive = base.spec.outputs[1].name
    claims = _claims(metrics, measured_on)
    updates = {
        "calibration": {
            "temperature": round(temperature, 6),
            "fitted_on": f"{measured_on} (NLL)",
        },
        "operating_points": {
            "high_sensitivity": {
                "output": positive,
                "threshold": stored_threshold(point.threshold),
                "target_sensitivity": target,
                "sensitivity": round(point.sensitivity.value, 4),
                "specificity": round(point.specificity.value, 4),
                "note": point.note,
            }
        },
        "claims": claims,
    }
    folder, digest = write_task_version(base, config, model, tasks_dir, command, updates)
    return write_record(
        folder,
        config,
        command,
        metrics,
        digest,
        lambda r: with_claims_table(_model_card(base, config, metrics, r), claims),
    )


def _side_by_side(metrics: dict[str, Any]) -> list[str]:
    """Internal (random patient split) and held-out figures in one table."""
    internal, held = metrics["internal"], metrics["held_out"]
    title = "group-held-out" if metrics["held_out_kind"] == "group" else "out-of-fold"
    lines = [
        f"| figure (95% CI) | internal: random patient split | {title} |",
        "|---|---|---|",
        f"| images (positive) | {internal['cases']} ({internal['positives']}) | "
        f"{held['cases']} ({held['positives']}) |",
    ]
    for key, label in (
        ("roc_auc", "ROC AUC"),
        ("sensitivity", "sensitivity at the locked point"),
        ("specificity", "specificity at the locked point"),
    ):
        lines.append(f"| {label} | {interval(internal[key])} | {interval(held[key])} |")
    lines.append(f"| ECE after calibration | {internal['ece']:.3f} | {held['ece']:.3f} |")
    return lines


def _undemonstrated(metrics: dict[str, Any], target: float) -> list[str]:
    """Why a target was not demonstrated, and how many positives it would take."""
    from medsight.training.site_calibration import positives_needed

    point = metrics["operating_point"]
    if point["sensitivity"]["low"] >= target:
        return []
    positives = int(metrics["class_counts_validation"][1])
    best = wilson(positives, positives).low
    needed = positives_needed(target)
    return [
        f"- why the target is not demonstrated: with {positives} positives, even every one "
        f"detected gives a lower 95% bound of {best:.3f}, below {target}; at least {needed} "
        f"positives (every one detected) are needed, more in practice (e.g. 148 of 150)"
    ]


def _model_card(
    base: Task, config: TrainConfig, metrics: dict[str, Any], record: dict[str, Any]
) -> str:
    auc = metrics["roc_auc"]
    point = metrics["operating_point"]
    held_out = "held_out" in metrics
    lines = [
        *card_head(base, config),
        f"- training: {metrics['train_cases']} images of {metrics['train_patients']} patients; "
        f"evaluated: {metrics['validation_cases']} images of {metrics['validation_patients']} "
        f"patients (seed {config.split.seed}, class counts "
        f"{metrics['class_counts_validation']})",
        f"- evidence: {metrics['evidence']}",
    ]
    if config.split.groups_note:
        lines.append(f"- what the groups simulate: {config.split.groups_note}")
    lines.append(
        "- the evaluated cases come from the same source as the training data, so these "
        "figures flatter: expect lower performance on data from another site or device"
    )
    lines += ["", "## Validation results (95% confidence intervals)", ""]
    if held_out:
        lines += [
            *_side_by_side(metrics),
            "",
            "The temperature and the operating point were locked on the held-out predictions "
            "(right column: no epoch was chosen on them, but those two choices were); the "
            "internal column uses them unchanged and is the split each model chose its epoch "
            "on, so it flatters.",
            "",
        ]
    lines += [
        f"- ROC AUC {interval(auc)} ({auc['method']})",
        f"- operating point `high_sensitivity` at calibrated probability "
        f"{point['threshold']:.4f}: sensitivity {interval(point['sensitivity'])}, specificity "
        f"{interval(point['specificity'])}; {point['note']}",
        *_undemonstrated(metrics, config.evaluation.target_sensitivity),
        f"- calibration: temperature {metrics['temperature']:.3f}; ECE "
        f"{metrics['ece_before']:.3f} before, {metrics['ece_after']:.3f} after; Brier "
        f"{metrics['brier_after']:.3f}",
    ]
    for name, subgroup in metrics["subgroups"].items():
        shown = [
            f"{measure} {interval(subgroup[measure])}"
            for measure in ("sensitivity", "specificity")
            if measure in subgroup
        ]
        lines.append(f"- subgroup {name} ({subgroup['cases']} cases): " + ", ".join(shown))

    def epochs(history: list[dict[str, Any]]) -> str:
        return "; ".join(
            f"epoch {h['epoch']} loss {h['loss']:.3f}"
            + (f" val AUC {h['validation_auc']:.3f}" if "validation_auc" in h else "")
            for h in history
        )

    lines += [
        "",
        "## Claims (re-checked by `medsight evaluate`)",
        "",
        "Each figure above that `medsight evaluate` re-checks on new data is listed in "
        "task.toml `[[claims]]`: ROC AUC, sensitivity and specificity at the locked point "
        "(a claim fails when the new data's 95% CI lies wholly below the claimed lower "
        "bound) and the ECE.",
        "",
        "## Training",
        "",
        f"- command: `{record['command']}`",
        time_line(metrics, record),
        f"- software: {json.dumps(record['software'])}",
        (
            f"- epochs run: {len(metrics['history'])}; history: {epochs(metrics['history'])}"
            if metrics["history"]
            else "- no model trained after the folds: the fold models below are what ships"
        ),
    ]
    for fold in metrics["folds"]:
        lines.append(f"- held out {fold['fold']}: {epochs(fold['epochs'])}")
    lines += [
        f"- weights SHA-256: `{record['weights_sha256']}`",
        "",
        "## Known limitations",
        "",
        "- no external test set was available to development",
    ]
    if held_out:
        lines.append(
            "- the temperature and the operating point were locked on the held-out "
            "predictions, so the held-out ECE, sensitivity and specificity are in-sample for "
            "those two choices (but not for the epochs, chosen on internal splits)"
        )
    else:
        lines.append(
            "- the best epoch, the temperature and the operating point were all chosen on the "
            "evaluated cases, which makes these figures optimistic"
        )
    lines += [
        "- inputs outside the intended use (age, view, modality) are flagged "
        "NEEDS_REVIEW by the task's acceptance checks, never silently scored",
        "",
    ]
    return "\n".join(lines)
