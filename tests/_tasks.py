"""Tiny task folders with freshly initialised networks, for engine tests (built, not shipped),
and the shipped tasks as tests need them trained."""

from __future__ import annotations

from pathlib import Path

import torch

from medsight.models import build_network, save_weights
from medsight.tasks import Task, load_task
from medsight.tasks.registry import shipped_tasks_dir
from medsight.tasks.spec import Network

INTENDED = "Test task. Research use only, not for diagnostic use."


def trained_shipped_task(task_id: str) -> Task:
    """A shipped task with its weights; the test is skipped where they are not installed."""
    import pytest

    task = load_task(shipped_tasks_dir() / task_id)
    if not task.weights_available:
        pytest.skip(f"{task_id} has no trained weights yet")
    return task


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def write_task(
    folder: Path,
    *,
    task_id: str,
    kind: str,
    architecture: str,
    arguments: dict[str, object],
    outputs: list[tuple[str, int]],
    acceptance: dict[str, object],
    preprocessing: dict[str, object],
    display: dict[str, object] | None = None,
    extra: str = "",
    head: str = "",  # top-level keys (before the tables), e.g. 'schema_version = 2'
    seed: int = 0,
    weights: bool = True,
) -> Path:
    """Write ``folder/task.toml`` and seeded random weights; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    probe = Network(
        name="main",
        architecture=architecture,
        weights="weights.pt",
        sha256="0" * 64,
        arguments=arguments,
    )  # type: ignore[arg-type]
    digest = save_weights(build_network(probe), folder / "weights.pt") if weights else "0" * 64
    lines = [
        f'id = "{task_id}"',
        'version = "0.0.1"',
        f'title = "{task_id} test task"',
        f'kind = "{kind}"',
        f'intended_use = "{INTENDED}"',
        'explanation = "gradcam"' if kind == "classification" else 'explanation = "none"',
        head,
        "",
        "[acceptance]",
        *(f"{k} = {_toml_value(v)}" for k, v in acceptance.items()),
        "",
        "[display]",
        *(f"{k} = {_toml_value(v)}" for k, v in (display or {}).items()),
        "",
        "[preprocessing]",
        *(f"{k} = {_toml_value(v)}" for k, v in preprocessing.items()),
        "",
        "[[networks]]",
        'name = "main"',
        f'architecture = "{architecture}"',
        'weights = "weights.pt"',
        f'sha256 = "{digest}"',
        "[networks.arguments]",
        *(f"{k} = {_toml_value(v)}" for k, v in arguments.items()),
    ]
    for name, index in outputs:
        lines += [
            "",
            "[[outputs]]",
            f'name = "{name}"',
            f"index = {index}",
            f'code = {{ value = "{100000 + index}", scheme = "99TEST", meaning = "{name}" }}',
        ]
    (folder / "task.toml").write_text("\n".join(lines) + "\n" + extra)
    (folder / "MODEL_CARD.md").write_text(f"# {task_id}\n\n{INTENDED}\n")
    return folder


def classifier_task(folder: Path, **overrides: object):
    options: dict[str, object] = dict(
        task_id="test-cxr",
        kind="classification",
        architecture="DenseNet",
        arguments={
            "spatial_dims": 2,
            "in_channels": 1,
            "out_channels": 2,
            "init_features": 8,
            "growth_rate": 4,
            "block_config": [2, 2],
            "bn_size": 2,
        },
        outputs=[("normal", 0), ("pneumonia", 1)],
        acceptance={
            "spatial_dims": 2,
            "photometric": ["MONOCHROME1", "MONOCHROME2"],
            "modalities": ["DX", "CR"],
            "age_years": [1, 6],
        },
        preprocessing={"resize": [64, 64], "normalize": "unit"},
        display={"window": "minmax", "color": "grayscale"},
        extra="\n[calibration]\ntemperature = 1.5\n\n[operating_points.high_sensitivity]\n"
        'output = "pneumonia"\nthreshold = 0.3\nsensitivity = 0.95\n',
    )
    options.update(overrides)
    return load_task(write_task(folder, **options))  # type: ignore[arg-type]


def segmenter_3d_task(folder: Path, **overrides: object):
    options: dict[str, object] = dict(
        task_id="test-seg3d",
        kind="segmentation",
        architecture="UNet",
        arguments={
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": 3,
            "channels": [4, 8, 16],
            "strides": [2, 2],
            "num_res_units": 1,
        },
        outputs=[("background", 0), ("anterior", 1), ("posterior", 2)],
        acceptance={"spatial_dims": 3, "photometric": ["MONOCHROME2"]},
        preprocessing={
            "patch_size": [32, 32, 32],
            "normalize": "zscore_nonzero",
            "reorient": "RAS",
            "overlap": 0.25,
            "batch_size": 2,
        },
        display={"window": "none"},
    )
    options.update(overrides)
    return load_task(write_task(folder, **options))  # type: ignore[arg-type]


def segmenter_2d_task(folder: Path, **overrides: object):
    options: dict[str, object] = dict(
        task_id="test-seg2d",
        kind="segmentation",
        architecture="UNet",
        arguments={
            "spatial_dims": 2,
            "in_channels": 3,
            "out_channels": 2,
            "channels": [4, 8],
            "strides": [2],
            "num_res_units": 1,
        },
        outputs=[("background", 0), ("vessel", 1)],
        acceptance={"spatial_dims": 2, "photometric": ["RGB"]},
        preprocessing={
            "patch_size": [64, 64],
            "normalize": "unit",
            "overlap": 0.25,
            "batch_size": 8,
        },
        display={"window": "fixed", "center_width": [127.5, 256.0]},
    )
    options.update(overrides)
    return load_task(write_task(folder, **options))  # type: ignore[arg-type]


def detector_task(folder: Path, **overrides: object):
    """A 2D grayscale detection task (BoxDetector, random weights), one class "lesion"."""
    options: dict[str, object] = dict(
        task_id="test-det",
        kind="detection",
        architecture="BoxDetector",
        arguments={"depth": 10, "fpn_channels": 32, "max_boxes": 10},
        outputs=[("lesion", 0)],
        acceptance={"spatial_dims": 2},
        preprocessing={"resize": [128, 128], "normalize": "none"},
        display={"window": "minmax"},
        head="schema_version = 2",
        extra="\n[detection]\nfinding_score = 0.3\n",
    )
    options.update(overrides)
    return load_task(write_task(folder, **options))  # type: ignore[arg-type]
