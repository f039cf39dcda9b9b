"""Pieces every trainer shares: checkpoint files, the configuration hash, the software
record of a model card, and seeded per-step random generators (so a resumed run draws
exactly what an uninterrupted one would)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsight.errors import ConfigurationError
from medsight.tasks import Task, load_task
from medsight.training.config import TrainConfig

__all__ = [
    "TrainingResult",
    "atomic_save",
    "base_task",
    "config_hash",
    "interval",
    "load_checkpoint",
    "save_checkpoint",
    "software",
    "step_seed",
    "write_record",
    "write_task_version",
]


@dataclass
class TrainingResult:
    task: Task
    record: dict[str, Any] = field(default_factory=dict)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a partial file, then rename: a kill never leaves half a checkpoint."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(obj, partial)
    partial.replace(path)


def config_hash(config: TrainConfig) -> str:
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()


def load_checkpoint(path: Path, config: TrainConfig) -> dict[str, Any] | None:
    """The saved checkpoint, or None; one of another configuration is refused."""
    import torch

    if not path.is_file():
        return None
    saved: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    if saved.get("config_hash") != config_hash(config):
        raise ConfigurationError(
            "the work folder holds a checkpoint of another configuration; use a new --work",
            path=path,
        )
    return saved


def save_checkpoint(
    path: Path, config: TrainConfig, model: Any, optimizer: Any, state: dict[str, Any]
) -> None:
    """The end-of-epoch checkpoint a rerun of the same recipe resumes from."""
    atomic_save(
        {
            "config": config.model_dump(),
            "config_hash": config_hash(config),
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
    }


def interval(estimate: dict[str, Any]) -> str:
    """An estimate and its CI as a model card shows it."""
    return f"{estimate['value']:.3f} ({estimate['low']:.3f}-{estimate['high']:.3f})"


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
        digest = save_weights(model, folder / base.spec.networks[0].weights)
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
    return TrainingResult(load_task(folder), record)
