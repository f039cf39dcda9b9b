"""A finished fold's saved predictions are reused only by the recipe that made them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsight.errors import ConfigurationError
from medsight.training.common import Fitted, fold_result
from medsight.training.config import TrainConfig


def _config(**inference: object) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "base_task": "x",
            "version": "1.0.0",
            "data": {"kind": "manifest", "csv": "a.csv"},
            "task": {"inference": inference} if inference else {},
        }
    )


def test_fold_result_is_trained_once_and_refused_to_another_recipe(tmp_path):
    calls: list[int] = []

    def fit() -> Fitted:
        calls.append(1)
        return Fitted(torch.nn.Linear(2, 1), [{"epoch": 1, "loss": 0.5}], 1)

    def logits(model: torch.nn.Module) -> dict[str, np.ndarray]:
        return {"held_out": np.arange(3.0)}

    path = tmp_path / "fold-1" / "held_out.npz"
    first = fold_result(path, fit, logits, _config())
    again = fold_result(path, fit, logits, _config())
    assert calls == [1] and again["best_epoch"] == 1 == first["best_epoch"]
    assert np.array_equal(again["held_out"], np.arange(3.0)) and "config_hash" not in again
    # saved predictions may depend on how the model ran (TTA): another recipe is refused
    with pytest.raises(ConfigurationError, match="another configuration"):
        fold_result(path, fit, logits, _config(tta=True))
    assert calls == [1]
