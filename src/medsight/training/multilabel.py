"""Train a classifier whose outputs are independent probabilities (task.toml ``activation =
"sigmoid"``): several findings of one image and ordinal grades as cumulative outputs, e.g.
referable diabetic retinopathy, DR grade >= k and maculopathy from one fundus photograph.

Few labels, done properly: patient-level k folds (both eyes of a patient on one side), each
fold's model choosing its epoch on a random patient split of its own training part; the
pooled out-of-fold predictions are the evidence, on which each output's temperature and the
recipe's operating points are locked (per image, or per patient on the worse image). Labels a
row does not give (an empty cell) are masked out of the loss; rare positives are weighted
(``class_weighting = "balanced"``: each output's positives weigh negatives / positives).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from medsight.errors import ConfigurationError
from medsight.evaluation import fit_temperature
from medsight.evaluation.multilabel_metrics import evidence_metrics
from medsight.inference.outputs import output_probabilities
from medsight.tasks import Task
from medsight.tasks.spec import TaskSpec
from medsight.training.augment import augment_batch
from medsight.training.classifier import cache_inputs, cache_key, logits_on, network_logits
from medsight.training.common import (
    Fitted,
    TrainingResult,
    base_task,
    check_fold,
    fit_epochs,
    fold_result,
    new_model,
    step_seed,
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
    split_holdback,
)
from medsight.training.multilabel_card import claims_of, model_card
from medsight.training.multilabel_evidence import locked_points

logger = logging.getLogger(__name__)

__all__ = ["mean_auc", "train_multilabel"]


def _loss_function(config: TrainConfig, targets: np.ndarray) -> Any:
    """Binary cross-entropy per output, masked where a case has no label, with each output's
    positives weighted negatives / positives under balanced weighting."""
    import torch

    known = ~np.isnan(targets)
    positives = np.nansum(targets, axis=0)
    negatives = known.sum(axis=0) - positives
    weights = np.ones(targets.shape[1])
    if config.train.class_weighting == "balanced":
        weights = negatives / np.maximum(positives, 1.0)
    pos_weight = torch.tensor(weights, dtype=torch.float32)

    def loss(logits: Any, target: Any) -> Any:
        mask = ~torch.isnan(target)
        filled = torch.nan_to_num(target, nan=0.0)
        each = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, filled, pos_weight=pos_weight, reduction="none"
        )
        return (each * mask).sum() / mask.sum().clamp(min=1)

    return loss


def mean_auc(targets: np.ndarray, logits: np.ndarray) -> float:
    """The mean ROC AUC over outputs with graded positives and negatives (the epoch score)."""
    from sklearn.metrics import roc_auc_score

    scores = []
    for column in range(targets.shape[1]):
        known = ~np.isnan(targets[:, column])
        truth = targets[known, column]
        if 0 < truth.sum() < len(truth):
            scores.append(roc_auc_score(truth, logits[known, column]))
    return float(np.mean(scores)) if scores else 0.0


def _fit(
    config: TrainConfig,
    base: Task,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray] | None,
    checkpoint_path: Path,
    progress: Any,
    *,
    label: str,
    fold: int,
    epochs: int | None = None,
) -> Fitted:
    import torch

    options = config.train
    train_x, train_y = train
    model, optimizer = new_model(config, base, step_seed(options.seed, fold))
    loss_function = _loss_function(config, train_y)
    steps = int(np.ceil(len(train_x) / options.batch_size))
    if options.max_steps_per_epoch:
        steps = min(steps, options.max_steps_per_epoch)
    orders: dict[int, np.ndarray] = {}

    def train_step(epoch: int, step: int) -> float:
        rng = np.random.default_rng([options.seed, fold, epoch])
        order = orders.setdefault(epoch, rng.permutation(len(train_x)))
        index = order[step * options.batch_size : (step + 1) * options.batch_size]
        batch = torch.from_numpy(train_x[index].astype(np.float32))
        if options.augment:
            seed = step_seed(options.seed, fold, epoch, step)
            batch = augment_batch(batch, seed, options.augment_strength)
        optimizer.zero_grad()
        loss = loss_function(model(batch.float()), torch.from_numpy(train_y[index]).float())
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def validate() -> float:
        assert validation is not None
        return mean_auc(validation[1], network_logits(model, validation[0], options.batch_size))

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
        score_name="validation_mean_auc",
    )


@dataclass
class _Folds:
    """The pooled out-of-fold logits and what each fold's run recorded."""

    logits: np.ndarray
    best_epochs: list[int]
    histories: list[dict[str, Any]]


def _check(config: TrainConfig, spec: TaskSpec) -> None:
    if spec.kind != "classification" or spec.activation != "sigmoid" or spec.chain:
        raise ConfigurationError(f"task {spec.id} is not a single-network sigmoid classifier")
    if not config.split.folds:
        raise ConfigurationError(
            "a sigmoid classifier trains with patient-level folds ([split] folds = k): its "
            "evidence and locked points come from the pooled out-of-fold predictions"
        )
    names = {o.name for o in spec.outputs}
    unknown = sorted({p.output for p in config.evaluation.points.values()} - names)
    if unknown or not config.evaluation.points:
        raise ConfigurationError(
            f"[evaluation.points] must lock points on the task's outputs (unknown: {unknown})"
        )


def train_multilabel(
    config: TrainConfig,
    *,
    tasks_dir: Path,
    work_dir: Path,
    command: str = "",
    progress: Any = None,
    only_fold: int | None = None,
) -> TrainingResult | None:
    """Train the recipe's version; with ``only_fold`` (1-based) train that fold and stop
    (None), as the segmenter does."""
    import torch

    base = base_task(config)
    spec = base.spec
    _check(config, spec)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    cases, _ = split_holdback(list_cases(config.data, spec), config.split)
    if any(case.targets is None for case in cases):
        raise ConfigurationError("a sigmoid classifier needs a manifest with targets")
    assert config.split.folds is not None
    check_fold(only_fold, config.split.folds)
    key = cache_key(config, base, cases)
    inputs = cache_inputs(cases, base, work_dir / f"all-{key}.npy", progress)
    targets = np.array([case.targets for case in cases], dtype=np.float32)
    folds = _run_folds(config, base, cases, inputs, targets, work_dir, progress, only_fold)
    if only_fold is not None:
        return None
    epochs = max(1, int(np.median(folds.best_epochs)))
    final = _fit(
        config,
        base,
        (inputs, targets),
        None,
        work_dir / "final" / "checkpoint.pt",
        progress,
        label=f"final model on all cases ({epochs} epochs)",
        fold=0,
        epochs=epochs,
    )
    folds.histories.append({"fold": "final", "epochs": final.history})  # its time counts too
    return _write_task(config, base, final.model, cases, targets, folds, tasks_dir, command)


def _run_folds(
    config: TrainConfig,
    base: Task,
    cases: list[Case],
    inputs: np.ndarray,
    targets: np.ndarray,
    work_dir: Path,
    progress: Any,
    only_fold: int | None = None,
) -> _Folds:
    """Each patient fold held out in turn (resumable: a finished fold is kept on disk), or
    ``only_fold`` alone."""
    assert config.split.folds is not None
    logits = np.zeros(targets.shape, dtype=np.float64)
    best_epochs: list[int] = []
    histories: list[dict[str, Any]] = []
    held_out = held_out_parts(cases, config.split)
    for fold in held_out_folds(cases, held_out, config.split):
        if only_fold is not None and fold.number != only_fold:
            continue
        saved = fold_result(
            work_dir / f"fold-{fold.name}" / "held_out.npz",
            partial(
                _fit,
                config,
                base,
                (inputs[fold.fit_index], targets[fold.fit_index]),
                (inputs[fold.check_index], targets[fold.check_index]),
                work_dir / f"fold-{fold.name}" / "checkpoint.pt",
                progress,
                label=f"fold {fold.name} held out ({fold.number}/{len(held_out)})",
                fold=fold.number,
            ),
            logits_on(inputs, config.train.batch_size, held_out=fold.inside),
            config,
        )
        logits[fold.inside] = saved["held_out"]
        best_epochs.append(saved["best_epoch"])
        histories.append({"fold": fold.name, "epochs": saved["history"]})
    return _Folds(logits, best_epochs, histories)


def _temperatures(spec: TaskSpec, logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Each output's temperature, fitted on its graded out-of-fold predictions (NLL)."""
    found = {}
    for output in spec.outputs:
        known = ~np.isnan(targets[:, output.index])
        found[output.name] = round(
            fit_temperature(logits[known, output.index], targets[known, output.index]), 6
        )
    return found


def _write_task(
    config: TrainConfig,
    base: Task,
    model: Any,
    cases: list[Case],
    targets: np.ndarray,
    folds: _Folds,
    tasks_dir: Path,
    command: str,
) -> TrainingResult:
    temperatures = _temperatures(base.spec, folds.logits, targets)
    calibration = {
        "temperature": 1.0,
        "temperatures": temperatures,
        "fitted_on": f"out-of-fold predictions of {config.split.folds}-fold patient-level "
        "cross-validation (NLL, graded cases of each output)",
    }
    calibrated_spec = base.spec.model_copy(
        update={"calibration": base.spec.calibration.model_copy(update=calibration)}
    )
    probabilities = output_probabilities(folds.logits, calibrated_spec)
    points = locked_points(config, calibrated_spec, cases, targets, probabilities)
    evidence = (
        f"out-of-fold predictions of {config.split.folds}-fold patient-level cross-validation "
        "({cases} images of {patients} patients); each fold's model chose its epoch on a "
        f"{config.split.validation_fraction:.0%} random patient split of its training part, "
        "never on the held-out fold"
    )
    metrics = evidence_metrics(evidence, calibrated_spec, cases, targets, probabilities, points)
    metrics["folds"] = folds.histories
    metrics["best_epochs"] = folds.best_epochs
    claims = claims_of(metrics, config)
    updates = {
        "calibration": calibration,
        "operating_points": {name: point["spec"] for name, point in points.items()},
        "claims": claims,
    }
    folder, digest = write_task_version(base, config, model, tasks_dir, command, updates)
    return write_record(
        folder,
        config,
        command,
        metrics,
        digest,
        lambda record: with_claims_table(model_card(base, config, metrics, record), claims),
    )
