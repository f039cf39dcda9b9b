"""Pieces every trainer shares: checkpoint files, the configuration hash, the software
record of a model card, and seeded per-step random generators (so a resumed run draws
exactly what an uninterrupted one would)."""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from medsight.errors import ConfigurationError
from medsight.training.config import TrainConfig

__all__ = ["atomic_save", "config_hash", "load_checkpoint", "software", "step_seed"]


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
