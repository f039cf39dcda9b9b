"""Build a task's networks from literal arguments and load their verified weights.

Weights files are PyTorch state dicts saved with :func:`save_weights` and loaded with
``weights_only=True``, so a weights file can never execute code.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from medsight.errors import ModelLoadError, TaskDefinitionError
from medsight.tasks.spec import NETWORK_ALLOW_LIST, Network
from medsight.tasks.task import Task, sha256_file

__all__ = ["build_network", "load_network", "save_weights"]


def build_network(network: Network) -> Any:
    """An untrained ``torch.nn.Module`` for ``network`` (its architecture must be allowed)."""
    target = NETWORK_ALLOW_LIST.get(network.architecture)
    if target is None or network.architecture == "TorchScript":
        raise TaskDefinitionError(
            f"architecture {network.architecture!r} cannot be built from arguments"
        )
    module_name, _, class_name = target.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    try:
        return cls(**network.arguments)
    except (TypeError, ValueError) as exc:
        raise TaskDefinitionError(
            f"network {network.name!r} ({network.architecture}) rejects its arguments: {exc}"
        ) from exc


def load_network(task: Task, name: str | None = None) -> Any:
    """The network ``name`` (default: the first) of ``task`` with its verified weights, in
    evaluation mode on the CPU."""
    import torch

    network = (
        task.spec.networks[0]
        if name is None
        else next((n for n in task.spec.networks if n.name == name), None)
    )
    if network is None:
        raise TaskDefinitionError(f"task {task.id} has no network named {name!r}")
    path = task.weights_path(network.name)
    if network.architecture == "TorchScript":
        try:
            return torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as exc:  # torch raises several types for non-TorchScript files
            raise ModelLoadError(f"not a loadable TorchScript file ({exc})", path=path) from exc
    module = build_network(network)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for non-checkpoint files
        raise ModelLoadError(f"not a loadable weights file ({exc})", path=path) from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as exc:
        message = " ".join(str(exc).split())[:300]
        raise ModelLoadError(
            f"weights do not fit network {network.name!r} ({network.architecture}): {message}",
            path=path,
        ) from exc
    return module.eval()


def save_weights(module: Any, path: str | Path) -> str:
    """Save a module's state dict and return the file's SHA-256 (for task.toml)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, path)
    return sha256_file(path)
