"""TTA flips only along the axes the task's training flipped: a flip the model never saw can
swap what it tells apart (the hippocampus model's anterior and posterior)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medsight.errors import TaskDefinitionError
from medsight.image import Image
from medsight.inference import Predictor
from tests._tasks import segmenter_2d_task

pytestmark = pytest.mark.timeout(60)


def _lopsided_runtime(calls: list[torch.Tensor]):
    """A 'model' that finds the structure in the half of the window nearer index 0 along
    axis 1, whatever it sees: tied to an orientation, as a model trained without that flip
    is (and sure that the other half holds nothing)."""

    def runtime(batch: torch.Tensor) -> torch.Tensor:
        calls.append(batch.clone())
        logits = torch.zeros(batch.shape[0], 2, *batch.shape[2:])
        logits[:, 1, :, : batch.shape[3] // 2] = 1.0
        logits[:, 1, :, batch.shape[3] // 2 :] = -6.0
        return logits

    return runtime


def _photo() -> Image:
    array = np.zeros((3, 64, 64), np.uint8)
    array[:, :, :32] = 200  # the left half along axis 1 is bright
    return Image(array=array, affine=np.eye(4), spatial_dims=2, photometric_interpretation="RGB")


@pytest.mark.parametrize(
    ("axes", "runs", "found_left"),
    [
        (None, 3, False),  # every axis (versions that do not say): the flip along axis 1
        # puts the structure in the other half, and the average loses it
        ([0], 2, True),  # as trained: the image and its flip along axis 0 agree
        ([], 1, True),  # nothing was flipped in training: TTA runs the image alone
    ],
)
def test_tta_flips_the_declared_axes_only(tmp_path, axes, runs, found_left):
    extra = "" if axes is None else f"\n[inference]\ntta = true\ntta_axes = {axes}\n"
    task = segmenter_2d_task(tmp_path / "seg", extra=extra)
    calls: list[torch.Tensor] = []
    label_map = Predictor(task, backend=_lopsided_runtime(calls), tta=True).predict(_photo())
    assert len(calls) == runs
    assert label_map.label_map is not None
    labels = label_map.label_map
    left_found = bool(labels[:, :32].mean() > 0.9 and labels[:, 32:].max() == 0)
    assert left_found is found_left


def test_tta_axes_outside_the_image_are_refused(tmp_path):
    with pytest.raises(TaskDefinitionError, match="tta_axes"):
        segmenter_2d_task(tmp_path / "seg", extra="\n[inference]\ntta_axes = [0, 0]\n")


def test_a_version_trained_on_top_of_a_shipped_ensemble_names_one_network(tmp_path):
    """Retraining a k-fold recipe whose base is a shipped ensemble: each fold's task names
    its one network (it named every member's weights, and the fold evaluation stopped)."""
    import tomllib

    from medsight.models import build_network
    from medsight.tasks import load_task
    from medsight.training.common import write_task_version
    from medsight.training.config import TrainConfig

    shipped = load_task(Path(__file__).parents[2] / "src/medsight/tasks/fundus-vessels")
    assert len(shipped.spec.networks) == 5 and shipped.spec.ensemble
    config = TrainConfig.model_validate(
        {
            "base_task": str(shipped.folder),
            "version": "9.0.0",
            "data": {"kind": "image-mask-folders", "root": "x", "images": "*.png", "mask": "{id}"},
            "train": {"flip_axes": [0, 1]},
        }
    )
    model = build_network(shipped.spec.networks[0])
    folder, _ = write_task_version(shipped, config, model, tmp_path, "test")
    document = tomllib.loads((folder / "task.toml").read_text())
    assert "ensemble" not in document and len(document["networks"]) == 1
    assert document["networks"][0]["name"] == "segmenter"
    assert document["inference"]["tta_axes"] == [0, 1]
    task = load_task(folder)
    assert (folder / "weights.pt").is_file() and task.weights_available
    members, _ = write_task_version(shipped, config, [model, model], tmp_path / "e", "test")
    names = [n.name for n in load_task(members).spec.networks]
    assert names == ["segmenter-1", "segmenter-2"]
