"""The selection rule engine and test-time flips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsight.errors import NoMatchingTaskError
from medsight.image import Identifiers, Image
from medsight.inference import Predictor
from medsight.tasks import SelectionRule, select_task
from tests._tasks import classifier_task, segmenter_3d_task


def test_configured_rules_are_tried_in_order_with_reasons(tmp_path):
    cxr = classifier_task(tmp_path / "cxr")
    seg = segmenter_3d_task(
        tmp_path / "seg", acceptance={"spatial_dims": 3, "photometric": ["MONOCHROME2"]}
    )
    volume = Image(
        np.zeros((1, 8, 8, 8), np.float32),
        np.eye(4),
        3,
        modality="MR",
        identifiers=Identifiers(series_description="T1 MPRAGE sag"),
    )
    rules = [
        SelectionRule(task=cxr.id, modalities=["DX"]),
        SelectionRule(task=seg.id, modalities=["MR"], series_description="mprage|t1"),
    ]
    selection = select_task(volume, [cxr, seg], rules)
    assert selection.task.id == seg.id
    assert selection.reasons[0].startswith(f"rule for {seg.id}")
    flair = volume.replace(identifiers=Identifiers(series_description="FLAIR ax"))
    with pytest.raises(NoMatchingTaskError) as caught:
        select_task(flair, [cxr, seg], rules)
    message = str(caught.value)
    assert "modality MR not in DX" in message and "does not match 'mprage|t1'" in message


def test_flips_average_back_into_place(tmp_path):
    task = segmenter_3d_task(
        tmp_path / "seg", preprocessing={"patch_size": [16, 16, 16], "normalize": "none"}
    )
    image = Image(
        np.random.default_rng(0).normal(size=(1, 20, 18, 16)).astype(np.float32),
        np.eye(4),
        3,
        photometric_interpretation="MONOCHROME2",
    )

    def pointwise(batch: torch.Tensor) -> torch.Tensor:
        return torch.cat([batch, -batch, torch.zeros_like(batch)], dim=1)

    plain = Predictor(task, backend=pointwise).predict(image)
    flipped = Predictor(task, backend=pointwise, tta=True).predict(image)
    assert plain.segment_probabilities is not None
    assert flipped.segment_probabilities is not None
    np.testing.assert_allclose(
        plain.segment_probabilities, flipped.segment_probabilities, atol=1e-6
    )


def test_a_task_can_default_to_tta_and_a_caller_can_override_it(tmp_path):
    plain = segmenter_3d_task(tmp_path / "plain", preprocessing={"patch_size": [16, 16, 16]})
    flips = segmenter_3d_task(
        tmp_path / "flips",
        preprocessing={"patch_size": [16, 16, 16]},
        extra="[inference]\ntta = true\n",
    )
    assert not Predictor(plain).tta and Predictor(plain, tta=True).tta
    assert Predictor(flips).tta and not Predictor(flips, tta=False).tta
