"""Pieces every trainer shares: checkpoint files, the configuration hash, the software
record of a model card, and seeded per-step random generators (so a resumed run draws
exactly what an uninterrupted one would)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from medsight.errors import ConfigurationError, InvalidInputError
from medsight.evaluation.intervals import interval
from medsight.tasks import Task, load_task
from medsight.training.config import TrainConfig

logger = logging.getLogger(__name__)

__all__ = [
    "Fitted",
    "TrainingResult",
    "atomic_save",
    "atomic_write",
    "base_task",
    "check_fold",
    "config_hash",
    "fit_epochs",
    "interval",
    "load_checkpoint",
    "refuse_other_training",
    "save_checkpoint",
    "software",
    "step_seed",
    "time_line",
    "training_hash",
    "training_seconds",
    "with_claims_table",
    "write_record",
    "write_task_version",
]


@dataclass
class TrainingResult:
    task: Task
    record: dict[str, Any] = field(default_factory=dict)


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write(file)`` into a partial file, then rename: a kill never leaves half a file, and
    the partial name is the process's own (folds trained side by side share one cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    with partial.open("wb") as file:
        write(file)
    partial.replace(path)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save through :func:`atomic_write` (checkpoints, fold models, case caches)."""
    import torch

    atomic_write(path, lambda file: torch.save(obj, file))


def check_fold(only_fold: int | None, count: int) -> None:
    """``--fold K`` must name one of the recipe's ``count`` held-out parts (1-based)."""
    if only_fold is not None and not 1 <= only_fold <= count:
        raise InvalidInputError(f"fold {only_fold} is outside 1..{count}")


def config_hash(config: TrainConfig) -> str:
    """The whole recipe's hash (what a saved prediction may depend on)."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()


def training_hash(config: TrainConfig) -> str:
    """The hash of what training computes from the recipe: the version's name, the card's
    source line, the evaluation and how the version runs (``[task.inference]``) change no
    weight, so checkpoints, caches and finished fold models are reused across recipes that
    differ only there (the same folds shipped again with TTA) and refused otherwise."""
    document = config.model_dump(mode="json", exclude={"version", "data_source", "evaluation"})
    document["task"] = {k: v for k, v in document["task"].items() if k != "inference"}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def refuse_other_training(saved_hash: object, config: TrainConfig, path: Path) -> None:
    """Refuse a saved training product of another recipe (or of a medsight that did not
    record one): reusing it would pass another recipe's model off as this one's."""
    if saved_hash != training_hash(config):
        raise ConfigurationError(
            "the work folder holds training of another configuration; use a new --work",
            path=path,
        )


def load_checkpoint(path: Path, config: TrainConfig) -> dict[str, Any] | None:
    """The saved checkpoint, or None; one of another configuration is refused."""
    import torch

    if not path.is_file():
        return None
    saved: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    refuse_other_training(saved.get("training_hash"), config, path)
    return saved


def save_checkpoint(
    path: Path, config: TrainConfig, model: Any, optimizer: Any, state: dict[str, Any]
) -> None:
    """The end-of-epoch checkpoint a rerun of the same recipe resumes from."""
    atomic_save(
        {
            "config": config.model_dump(),
            "training_hash": training_hash(config),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "state": state,
        },
        path,
    )


def step_seed(*parts: int) -> int:
    """A 31-bit seed from (run seed, fold, epoch, step...)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0] % (2**31))


def software() -> dict[str, Any]:
    import monai
    import torch

    import medsight

    return {
        "medsight": medsight.__version__,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_model(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _cpu_model() -> str:
    """The processor's name (Linux /proc/cpuinfo), for the card's hardware line."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def training_seconds(*histories: list[dict[str, Any]], key: str = "seconds") -> float:
    """Wall time of every epoch run (each history entry records its own); with
    ``key="cpu_seconds"`` the process CPU time, which a paused or crowded run does not
    inflate."""
    return float(sum(entry.get(key, 0.0) for history in histories for entry in history))


def epoch_learning_rate(config: TrainConfig, epoch: int) -> float:
    """The rate for ``epoch`` (0-based). The cosine spans the recipe's ``epochs`` for every
    run, so a refit for the folds' median best epoch count follows the folds' curve."""
    base = config.train.learning_rate
    if config.train.lr_schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * epoch / config.train.epochs))
    return base


def time_line(metrics: dict[str, Any], record: dict[str, Any]) -> str:
    """The card's training time and hardware line."""
    machine = record["software"]
    seconds = metrics.get("training_seconds", 0.0)
    shown = f"{seconds / 60:.0f} minutes" if seconds else "not recorded"
    cpu = metrics.get("training_cpu_seconds", 0.0)
    histories = [metrics.get("history", []), *(f["epochs"] for f in metrics.get("folds", []))]
    epochs = [entry["seconds"] for history in histories for entry in history if "seconds" in entry]
    typical = float(np.median(epochs)) * len(epochs) if epochs else 0.0
    if seconds and cpu:
        shown += f" wall-clock, {cpu / 60:.0f} minutes of process CPU time"
    elif seconds and seconds > 1.5 * typical:
        # a run paused or crowded out by other work (before CPU time was recorded)
        shown = (
            f"about {typical / 60:.0f} minutes ({len(epochs)} epochs at the median "
            f"{typical / len(epochs):.1f} s; the wall-clock sum, {seconds / 60:.0f} minutes, "
            "includes time the run was paused or crowded out by other work)"
        )
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ", no GPU"
    return (
        f"- training time (epochs only, all folds): {shown} on {machine.get('cpu', '?')} "
        f"({_count(machine.get('threads'), 'thread')} of "
        f"{_count(machine.get('cpu_count'), 'core')}{gpu})"
    )


def _count(number: Any, noun: str) -> str:
    return f"? {noun}s" if number is None else f"{number} {noun}{'' if number == 1 else 's'}"


def fold_result(
    result_path: Path,
    fit: Callable[[], Fitted],
    arrays: Callable[[Any], dict[str, np.ndarray]],
    config: TrainConfig,
) -> dict[str, Any]:
    """A held-out fold's result, trained once: ``fit()`` runs only when ``result_path`` is
    missing, then its model (``model.pt``), best epoch, history and ``arrays(model)`` (e.g.
    the held-out logits) are saved atomically beside it, so a rerun resumes at the next
    fold. Returns the saved arrays, with ``best_epoch`` (int) and ``history`` (a list).
    The arrays are predictions (they may depend on every setting, TTA included): a result
    of another recipe is refused, not reused."""
    if not result_path.is_file():
        fitted = fit()
        atomic_save(fitted.model.state_dict(), result_path.with_name("model.pt"))
        payload: dict[str, Any] = {
            "best_epoch": fitted.best_epoch,
            "history": json.dumps(fitted.history),
            "config_hash": config_hash(config),
            **arrays(fitted.model),
        }
        atomic_write(result_path, lambda file: np.savez(file, **payload))
    with np.load(result_path) as saved:
        found: dict[str, Any] = {key: saved[key] for key in saved.files}
    if str(found.pop("config_hash", "")) != config_hash(config):
        raise ConfigurationError(
            "the work folder holds a fold result of another configuration; use a new --work",
            path=result_path,
        )
    found["best_epoch"] = int(found["best_epoch"])
    found["history"] = json.loads(str(found["history"]))
    return found


def card_head(base: Task, config: TrainConfig) -> list[str]:
    """A model card's first lines, the same for every trainer: title, the research-use
    statement, the intended use, and the data source."""
    source = config.data_source or getattr(config.data, "root", None) or str(config.data)
    return [
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
        f"- source: {source}",
    ]


CLAIMS_HEADING = "## Claims (re-checked by `medsight evaluate`)"


def claims_table(claims: list[dict[str, Any]]) -> list[str]:
    """The task.toml claims as the card's table."""
    lines = ["| claim | value (95% CI) | measured on |", "|---|---|---|"]
    for claim in claims:
        about = claim.get("segment") or claim.get("operating_point")
        name = claim["metric"] + (f" ({about})" if about else "")
        value = f"{claim['value']:.3f}"
        if claim.get("low") is not None and claim.get("high") is not None:
            value += f" ({claim['low']:.3f}-{claim['high']:.3f})"
        lines.append(f"| {name} | {value} | {claim['measured_on']} |")
    return lines


def with_claims_table(card: str, claims: list[dict[str, Any]]) -> str:
    """``card`` with the claims table after the claims section's first paragraph (replacing
    one already there)."""
    head, found, rest = card.partition(CLAIMS_HEADING)
    if not found:
        return card
    intro, _, after = rest.lstrip("\n").partition("\n\n")
    if after.startswith("| claim |"):  # an earlier table: drop it
        after = after.partition("\n\n")[2]
    table = "\n".join(claims_table(claims))
    return f"{head}{CLAIMS_HEADING}\n\n{intro}\n\n{table}\n\n{after}"


def _merge(document: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(document)
    for key, value in overrides.items():
        if key == "network_arguments":
            first = dict(merged["networks"][0])
            first["arguments"] = {**first.get("arguments", {}), **value}
            merged["networks"] = [first, *merged["networks"][1:]]
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _document(base: Task, config: TrainConfig) -> dict[str, Any]:
    return _merge(tomllib.loads((base.folder / "task.toml").read_text()), config.task)


def base_task(config: TrainConfig) -> Task:
    """The recipe's base task with the recipe's ``task`` tables merged in: what this version
    will be (preprocessing, network), so training sees what the Predictor will."""
    from pydantic import ValidationError

    from medsight.tasks import load_named_task
    from medsight.tasks.spec import TaskSpec

    base = load_named_task(config.base_task)
    if not config.task:
        return base
    try:
        spec = TaskSpec.model_validate(_document(base, config))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(
            f"the recipe's [task] tables give an invalid task: {problems}"
        ) from exc
    return Task(spec=spec, folder=base.folder, toml_sha256=base.toml_sha256)


def _member_template(member: dict[str, Any]) -> dict[str, Any]:
    """An ensemble's first network entry as the single network it was trained as
    ("segmenter-1", "weights-1.pt" -> "segmenter", "weights.pt"): retraining on top of a
    shipped ensemble wrote fold tasks naming all its members' weights, and stopped."""
    import re

    return {
        **member,
        "name": re.sub(r"-\d+$", "", member["name"]),
        "weights": re.sub(r"-\d+(\.\w+)$", r"\1", member["weights"]),
    }


def trained_flip_axes(base: Task, config: TrainConfig) -> list[int]:
    """The spatial axes training flipped images along, so TTA flips only those (a flip the
    model never saw in training can swap what it tells apart: anterior and posterior)."""
    if base.spec.kind == "detection":
        return [0] if config.train.augment else []  # the detector's trainer mirrors along x
    if base.spec.kind == "segmentation":
        return list(config.train.flip_axes)
    return []  # the classifiers' augmentation flips nothing


def version_tta_axes(base: Task, config: TrainConfig) -> list[int]:
    """The axes the trained version's TTA flips along: the recipe's ``[task.inference]
    tta_axes`` where it says, else the axes training flipped."""
    declared = config.task.get("inference", {}).get("tta_axes")
    return list(declared) if declared is not None else trained_flip_axes(base, config)


def write_task_version(
    base: Task,
    config: TrainConfig,
    model: Any,
    tasks_dir: Path,
    command: str,
    updates: dict[str, Any] | None = None,
) -> tuple[Path, str]:
    """The weights and a task.toml (the base task's, with this version, the weights' hash and
    ``updates``) in ``tasks_dir/<id>/<version>/``; returns the folder and the weights hash."""
    import tomli_w

    from medsight.models import save_weights

    folder = tasks_dir / base.id / config.version
    folder.mkdir(parents=True, exist_ok=True)
    document = _document(base, config)
    document["version"] = config.version
    document.setdefault("inference", {})["tta_axes"] = version_tta_axes(base, config)
    if "ensemble" in document:  # the base is itself an ensemble: start from one member
        document["networks"] = [_member_template(document["networks"][0])]
        del document["ensemble"]
    if isinstance(model, list):  # an ensemble: one network entry and weights file a member
        first = document["networks"][0]
        members = []
        for number, member in enumerate(model, start=1):
            weights = f"{Path(first['weights']).stem}-{number}.pt"
            members.append(
                {
                    **first,
                    "name": f"{first['name']}-{number}",
                    "weights": weights,
                    "sha256": save_weights(member, folder / weights),
                }
            )
        document["networks"] = members
        document["ensemble"] = [m["name"] for m in members]
        digest = members[0]["sha256"]
    else:
        digest = save_weights(model, folder / document["networks"][0]["weights"])
        document["networks"][0]["sha256"] = digest
    document.update(updates or {})
    (folder / "task.toml").write_text(
        f"# trained by: {command or 'medsight train'}\n" + tomli_w.dumps(document)
    )
    return folder, digest


def write_record(
    folder: Path,
    config: TrainConfig,
    command: str,
    metrics: dict[str, Any],
    digest: str,
    model_card: Callable[[dict[str, Any]], str],
) -> TrainingResult:
    """``training_record.json`` and ``MODEL_CARD.md`` beside the task version."""
    record = {
        "config": config.model_dump(),
        "command": command,
        "metrics": metrics,
        "software": software(),
        "weights_sha256": digest,
    }
    (folder / "training_record.json").write_text(json.dumps(record, indent=2, default=float))
    (folder / "MODEL_CARD.md").write_text(model_card(record))
    task = load_task(folder)
    write_development_record(folder, config, task)
    return TrainingResult(task, record)


def write_development_record(folder: Path, config: TrainConfig, task: Task) -> Path:
    """``development_images.json``: the pixels of every image the recipe developed the
    version on (all it lists but the held-back part), so ``medsight evaluate`` can tell when
    it is given them (evaluation/development.py)."""
    from medsight.evaluation.cases import read_case_image
    from medsight.evaluation.development import write_development_images
    from medsight.io import read_image
    from medsight.training.config import CocoBoxes
    from medsight.training.data import list_cases, split_holdback

    if isinstance(config.data, CocoBoxes):
        from medsight.training.detector import box_data_cases

        boxed = [case for case, _ in box_data_cases(config.data)]
        return write_development_images(folder, boxed, lambda case: read_image(case.image))
    cases, _ = split_holdback(list_cases(config.data, task.spec), config.split)
    return write_development_images(folder, cases, read_case_image)


@dataclass
class Fitted:
    model: Any
    history: list[dict[str, Any]]
    best_epoch: int


def fit_epochs(
    config: TrainConfig,
    model: Any,
    optimizer: Any,
    checkpoint_path: Path,
    progress: Any,
    *,
    label: str,
    epochs: int,
    steps: int,
    train_step: Callable[[int, int], float],
    validate: Callable[[], float] | None,
    score_name: str,
) -> Fitted:
    """The epoch loop both trainers share: resume from the checkpoint of this recipe, run
    ``steps`` calls of ``train_step(epoch, step)`` (it returns the step's loss), score with
    ``validate`` (higher is better) and keep the best state, stop after
    ``early_stopping_patience`` epochs without a better score, checkpoint every epoch.
    Without ``validate`` it runs ``epochs`` and keeps the last state."""
    state: dict[str, Any] = {
        "epoch": 0,
        "best_score": -np.inf,
        "best_epoch": 0,
        "best_state": None,
        "bad_epochs": 0,
        "history": [],
    }
    saved = load_checkpoint(checkpoint_path, config)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        logger.info("%s: resuming after epoch %d", label, state["epoch"])
    patience = config.train.early_stopping_patience
    epoch_job = (
        progress.add_task(label, total=epochs, completed=state["epoch"]) if progress else None
    )
    while state["epoch"] < epochs and state["bad_epochs"] < patience:
        epoch = state["epoch"]
        started, started_cpu = time.perf_counter(), time.process_time()
        for group in optimizer.param_groups:
            group["lr"] = epoch_learning_rate(config, epoch)
        model.train()
        losses: list[float] = []
        step_job = progress.add_task(f"epoch {epoch + 1}", total=steps) if progress else None
        for step in range(steps):
            losses.append(train_step(epoch, step))
            if progress:
                progress.update(
                    step_job, advance=1, description=f"epoch {epoch + 1} loss {np.mean(losses):.3f}"
                )
        if progress:
            progress.remove_task(step_job)
        entry: dict[str, Any] = {"epoch": epoch + 1, "loss": float(np.mean(losses))}
        if validate is not None:
            score = validate()
            entry[score_name] = score
        entry["seconds"] = round(time.perf_counter() - started, 1)
        entry["cpu_seconds"] = round(time.process_time() - started_cpu, 1)
        if validate is not None:
            if score > state["best_score"]:
                state.update(best_score=score, best_epoch=epoch + 1, bad_epochs=0)
                state["best_state"] = {k: v.clone() for k, v in model.state_dict().items()}
            else:
                state["bad_epochs"] += 1
        state["history"].append(entry)
        state["epoch"] = epoch + 1
        save_checkpoint(checkpoint_path, config, model, optimizer, state)
        if progress:
            shown = f" ({score_name} {entry[score_name]:.3f})" if validate is not None else ""
            progress.update(epoch_job, completed=state["epoch"], description=f"{label}{shown}")
    if progress:
        progress.remove_task(epoch_job)
    if validate is not None and state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    return Fitted(model, state["history"], state["best_epoch"] or state["epoch"])


def new_model(config: TrainConfig, base: Task, seed: int) -> tuple[Any, Any]:
    """The task's first network, seeded (or started from ``init_from``), and its AdamW."""
    import torch

    from medsight.models import build_network, load_network
    from medsight.tasks import load_named_task

    torch.manual_seed(seed)
    model = build_network(base.spec.networks[0])
    if config.init_from:
        start = load_network(load_named_task(config.init_from))
        if hasattr(model, "load_encoder_from"):  # a classifier started from a segmenter
            model.load_encoder_from(start)
        else:
            model.load_state_dict(start.state_dict())
    options = config.train
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay
    )
    return model, optimizer
