"""Chained networks, batching, whole-slide tiling and 2D photographs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsight.image import Image
from medsight.inference import Predictor
from medsight.io import read_image
from medsight.io.slide import open_slide
from medsight.models import build_network, save_weights
from medsight.tasks import load_task
from medsight.tasks.spec import Network
from tests._tasks import INTENDED, classifier_task, segmenter_2d_task
from tests.conftest import require_data
from tests.inference.test_predictor import cxr_image


def _chain_task(folder):
    folder.mkdir(parents=True)
    digests = {}
    for name, architecture, arguments in [
        (
            "lesion",
            "UNet",
            {
                "spatial_dims": 2,
                "in_channels": 3,
                "out_channels": 2,
                "channels": [4, 8],
                "strides": [2],
            },
        ),
        (
            "melanoma",
            "DenseNet",
            {
                "spatial_dims": 2,
                "in_channels": 3,
                "out_channels": 2,
                "init_features": 4,
                "growth_rate": 4,
                "block_config": [1],
            },
        ),
    ]:
        network = Network(
            name=name,
            architecture=architecture,
            weights=f"{name}.pt",
            sha256="0" * 64,
            arguments=arguments,
        )
        digests[name] = save_weights(build_network(network), folder / f"{name}.pt")
    (folder / "task.toml").write_text(f'''
id = "test-chain"
version = "1.0.0"
title = "lesion then melanoma"
kind = "classification"
intended_use = "{INTENDED}"
[acceptance]
spatial_dims = 2
photometric = ["RGB"]
[display]
window = "fixed"
center_width = [127.5, 256.0]
[preprocessing]
resize = [32, 32]
[chain]
segmenter = "lesion"
classifier = "melanoma"
margin = 0.5
[chain.preprocessing]
resize = [64, 64]
[[networks]]
name = "lesion"
architecture = "UNet"
weights = "lesion.pt"
sha256 = "{digests["lesion"]}"
[networks.arguments]
spatial_dims = 2
in_channels = 3
out_channels = 2
channels = [4, 8]
strides = [2]
[[networks]]
name = "melanoma"
architecture = "DenseNet"
weights = "melanoma.pt"
sha256 = "{digests["melanoma"]}"
[networks.arguments]
spatial_dims = 2
in_channels = 3
out_channels = 2
init_features = 4
growth_rate = 4
block_config = [1]
[[outputs]]
name = "naevus"
index = 0
code = {{ value = "400010006", scheme = "SCT", meaning = "Naevus" }}
[[outputs]]
name = "melanoma"
index = 1
code = {{ value = "372244006", scheme = "SCT", meaning = "Malignant melanoma" }}
''')
    return load_task(folder)


def test_chain_classifies_the_crop_around_the_segment(tmp_path):
    task = _chain_task(tmp_path / "chain")
    seen = []

    def runtime(batch):
        seen.append(tuple(batch.shape))
        if batch.shape[-1] == 64:  # the segmenter: a lesion in i 16-31, j 32-47 of 64
            logits = torch.zeros(batch.shape[0], 2, 64, 64)
            logits[:, 1, 16:32, 32:48] = 10.0
            return logits
        return torch.tensor([[0.0, 1.0]] * batch.shape[0])

    photo = Image(
        np.full((3, 128, 128), 200, np.uint8), np.eye(4), 2, photometric_interpretation="RGB"
    )
    prediction = Predictor(task, backend=runtime).predict(photo)
    assert seen == [(1, 3, 64, 64), (1, 3, 32, 32)]
    crop = prediction.details["crop"]
    # the segment is i 32-63, j 64-95 at full size (give or take the one pixel that linear
    # upsampling of the probabilities adds); a 50% margin adds about 16 on each side
    low, high = np.array(crop["index_low"]), np.array(crop["index_high"])
    assert (low <= [16, 48]).all() and (low >= [12, 44]).all()
    assert (high >= [80, 112]).all() and (high <= [84, 116]).all()
    assert prediction.state == "OK"
    assert prediction.probabilities is not None
    assert prediction.probabilities["melanoma"] == pytest.approx(np.exp(1) / (1 + np.exp(1)))


def test_chain_without_a_segment_classifies_everything_and_asks_for_review(tmp_path):
    task = _chain_task(tmp_path / "chain")

    def runtime(batch):
        if batch.shape[-1] == 64:
            logits = torch.zeros(batch.shape[0], 2, 64, 64)
            logits[:, 0] = 5.0
            return logits
        return torch.tensor([[1.0, 0.0]] * batch.shape[0])

    photo = Image(np.zeros((3, 50, 60), np.uint8), np.eye(4), 2, photometric_interpretation="RGB")
    prediction = Predictor(task, backend=runtime).predict(photo)
    assert prediction.state == "NEEDS_REVIEW"
    assert any("found no segment" in r for r in prediction.review_reasons)


def test_batched_predictions_equal_single_ones(tmp_path):
    predictor = Predictor(classifier_task(tmp_path / "cls"), explain=False)
    images = [cxr_image() for _ in range(3)]
    for index, image in enumerate(images):
        image.array = image.array // (index + 1)
    batched = predictor.predict_many(images)
    for image, prediction in zip(images, batched, strict=True):
        single = predictor.predict(image)
        assert single.probabilities == pytest.approx(prediction.probabilities, abs=1e-6)


def test_fundus_photo_mask_has_the_photo_geometry(tmp_path):
    path = sorted(require_data("drive", "training", "images").glob("*.tif"))[0]
    image = read_image(path, spacing=(0.01, 0.01))
    prediction = Predictor(segmenter_2d_task(tmp_path / "seg2d"), tta=True).predict(image)
    assert prediction.label_map is not None and prediction.label_map.shape == image.shape
    np.testing.assert_array_equal(prediction.affine, image.affine)


def test_whole_slide_probability_map_is_at_the_chosen_level(tmp_path):
    from tests.io.test_slide import build_slide

    path = tmp_path / "slide.tif"
    build_slide(path)
    predictor = Predictor(segmenter_2d_task(tmp_path / "seg2d"))
    with open_slide(path) as slide:
        probability, affine = predictor.predict_slide(slide, level=1, tile_size=256)
        np.testing.assert_array_equal(affine, slide.level_affine(1))
        level = slide.levels[1]
    assert probability.shape == (2, level.width, level.height)
    np.testing.assert_allclose(probability.sum(0), 1.0, atol=1e-5)
    # glass (the empty top-right tile of the 3x3 canvas) was never run
    assert (probability[0, 512:768, 0:256] == 1.0).all()
    assert (probability[0, 0:256, 0:256] < 1.0).any()
