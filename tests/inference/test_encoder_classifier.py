"""A classifier built from a U-Net's encoder: it starts from the shipped fundus-vessels
U-Net's weights, runs alike in torch and ONNX Runtime, explains on the encoder's bottom grid
and gives the input gate its pooled features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsight.datasets import repository_root
from medsight.image import Image
from medsight.inference import Predictor
from medsight.models import load_network
from medsight.tasks import load_task
from tests.inference.test_ordinal_outputs import sigmoid_task

ARGUMENTS = {
    "spatial_dims": 2,
    "in_channels": 3,
    "out_channels": 4,
    "channels": [16, 32, 64, 128],
    "strides": [2, 2, 2],
    "num_res_units": 2,
}


@pytest.fixture()
def task(tmp_path):
    return sigmoid_task(
        tmp_path / "task",
        architecture="UNetEncoderClassifier",
        arguments=ARGUMENTS,
        acceptance={"spatial_dims": 2, "photometric": ["RGB"], "modalities": ["OP"]},
        preprocessing={"resize": [128, 128], "normalize": "unit"},
        display={"window": "fixed", "center_width": [127.5, 256.0], "color": "rgb"},
    )


def test_the_encoder_starts_from_the_vessel_segmenter():
    from medsight.models.encoder_classifier import UNetEncoderClassifier

    vessels = load_network(load_task(repository_root() / "recipes/templates/fundus-vessels-0.3.0"))
    model = UNetEncoderClassifier(**ARGUMENTS)
    model.load_encoder_from(vessels)
    for name, value in vessels.state_dict().items():
        assert torch.equal(model.unet.state_dict()[name], value), name
    # the bottom block is the U-Net's deepest: 1/8 of the input on each side
    seen = []
    model.bottom.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    assert model(torch.zeros(1, 3, 128, 128)).shape == (1, 4)
    assert seen == [torch.Size([1, 128, 16, 16])]


def test_torch_and_onnx_agree_and_the_heatmap_uses_the_bottom_grid(task):
    rng = np.random.default_rng(0)
    image = Image(
        rng.integers(0, 255, (3, 160, 160)).astype(np.float32),
        np.eye(4),
        2,
        modality="OP",
        photometric_interpretation="RGB",
    )
    by_torch = Predictor(task).predict(image)
    by_onnx = Predictor(task, backend="onnxruntime", explain=False).predict(image)
    assert by_torch.probabilities is not None and by_onnx.probabilities is not None
    for name, value in by_torch.probabilities.items():
        assert by_onnx.probabilities[name] == pytest.approx(value, abs=1e-5)
    assert by_torch.heatmap is not None and by_torch.heatmap.shape == (160, 160)
    assert by_torch.heatmap_grid == (16, 16)
    assert by_torch.features is not None and by_torch.features.shape == (128,)


def test_the_dr_recipe_starts_from_the_unet_it_names():
    """init_from names a task folder relative to the recipe: the vessel U-Net fundus-dr 0.1.0
    started from, kept beside the recipes when the shipped vessel model grew wider."""
    from pathlib import Path

    from medsight.training import load_config
    from medsight.training.common import base_task, new_model

    config = load_config(repository_root() / "recipes" / "fundus-dr.toml")
    assert Path(str(config.init_from)) == (
        repository_root() / "recipes" / "templates" / "fundus-vessels-0.3.0"
    )
    model, _ = new_model(config, base_task(config), 0)
    vessels = load_network(load_task(Path(str(config.init_from))))
    for name, value in vessels.state_dict().items():
        assert torch.equal(model.unet.state_dict()[name], value), name
