"""The shipped task definitions: valid, refusing what they cannot run on, and exporting to
ONNX with outputs equal to PyTorch's for each of their network architectures."""

from __future__ import annotations

import shutil
import tomllib

import numpy as np
import pytest
import tomli_w

from medsight.errors import TaskMismatchError
from medsight.image import Image
from medsight.inference import Predictor
from medsight.models import build_network, save_weights
from medsight.tasks import discover_tasks, load_task
from medsight.tasks.registry import shipped_tasks_dir

SHIPPED = [
    "cardiac-mr",
    "cxr-pneumonia",
    "derm-lesion",
    "derm-melanoma",
    "fundus-dr",
    "fundus-vessels",
    "hippocampus-mr",
    "pathology-nuclei",
]


def test_all_shipped_tasks_load():
    catalog = discover_tasks()
    assert not catalog.problems
    assert {t.id for t in catalog.tasks if t.shipped} == set(SHIPPED)
    for task in catalog.tasks:
        assert "research use only, not for diagnostic use" in task.spec.intended_use.lower()
        assert "research use only" in task.model_card.lower()


def ct_volume() -> Image:
    return Image(np.zeros((1, 64, 64, 40), np.int16), np.eye(4), 3, modality="CT")


def test_ct_is_refused_by_the_chest_xray_task():
    task = load_task(shipped_tasks_dir() / "cxr-pneumonia")
    with pytest.raises(TaskMismatchError, match="image is 3D, the task needs 2D"):
        Predictor(task).predict(ct_volume())


def test_rgb_photo_is_refused_by_the_hippocampus_task():
    task = load_task(shipped_tasks_dir() / "hippocampus-mr")
    photo = Image(np.zeros((3, 64, 64), np.uint8), np.eye(4), 2, photometric_interpretation="RGB")
    with pytest.raises(TaskMismatchError, match="photometric RGB is not one of MONOCHROME2"):
        Predictor(task).predict(photo)


def _with_random_weights(task_id: str, folder):
    """A copy of a shipped task with seeded random weights in place of the untrained ones."""
    import torch

    shutil.copytree(shipped_tasks_dir() / task_id, folder)
    document = tomllib.loads((folder / "task.toml").read_text())
    spec = load_task(folder).spec
    torch.manual_seed(0)
    for entry, network in zip(document["networks"], spec.networks, strict=True):
        entry["sha256"] = save_weights(build_network(network), folder / network.weights)
    (folder / "task.toml").write_text(tomli_w.dumps(document))
    return load_task(folder)


def _input_for(task) -> Image:
    accept = task.spec.acceptance
    rng = np.random.default_rng(0)
    if accept.spatial_dims == 3:
        size = np.maximum((40, 56, 44), accept.min_size or (0, 0, 0))
        return Image(
            rng.normal(100, 30, size=(1, *size)).astype(np.float32),
            np.diag([-1.0, -1.0, 1.0, 1.0]),
            3,
            modality="MR",
        )
    if accept.photometric == ["RGB"]:
        # at the task's own pixel spacing where it has one (histology: 0.5 um, not 1 mm)
        spacing = task.spec.preprocessing.spacing or [1.0, 1.0]
        return Image(
            rng.integers(0, 255, size=(3, 300, 260)).astype(np.uint8),
            np.diag([*spacing[:2], 1.0, 1.0]),
            2,
            photometric_interpretation="RGB",
        )
    return Image(
        rng.integers(0, 4095, size=(1, 300, 260)).astype(np.uint16),
        np.eye(4),
        2,
        modality="DX",
        metadata={"PatientAge": "003Y", "BitsStored": 12},
    )


@pytest.mark.timeout(600)
@pytest.mark.parametrize("task_id", SHIPPED)
def test_torch_and_onnxruntime_agree_on_every_shipped_architecture(task_id, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSIGHT_CACHE", str(tmp_path / "cache"))
    task = _with_random_weights(task_id, tmp_path / task_id)
    image = _input_for(task)
    ours = Predictor(task, explain=False).predict(image)
    onnx = Predictor(task, backend="onnxruntime", explain=False).predict(image)
    if ours.probabilities is not None:
        assert onnx.probabilities is not None
        for name, value in ours.probabilities.items():
            assert abs(value - onnx.probabilities[name]) <= 1e-4
    else:
        assert ours.segment_probabilities is not None
        assert onnx.segment_probabilities is not None
        assert np.abs(ours.segment_probabilities - onnx.segment_probabilities).max() <= 1e-4
