"""Grad-CAM: the strongest class evidence is the brightest part of the map (MONAI's default
post-processing flips it), on the explained layer's own grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional

from medsight.inference.explain import gradcam
from medsight.models import load_network
from tests._tasks import classifier_task


def _manual_gradcam(module, layer_name: str, batch, class_index: int) -> np.ndarray:
    """Grad-CAM written out: ReLU of the gradient-weighted activations, upsampled."""
    layer = dict(module.named_modules())[layer_name]
    saved = {}
    forward = layer.register_forward_hook(lambda _m, _i, out: saved.update(activation=out))
    backward = layer.register_full_backward_hook(
        lambda _m, _gi, grad_out: saved.update(gradient=grad_out[0])
    )
    module.eval()
    module.zero_grad()
    module(batch)[0, class_index].backward()
    forward.remove()
    backward.remove()
    weights = saved["gradient"].mean(dim=(2, 3), keepdim=True)
    cam = functional.relu((weights * saved["activation"]).sum(dim=1, keepdim=True))
    up = functional.interpolate(cam, size=batch.shape[2:], mode="bilinear", align_corners=False)
    return up[0, 0].detach().numpy()


def test_gradcam_is_bright_where_the_evidence_is(tmp_path):
    task = classifier_task(tmp_path / "cls", preprocessing={"resize": [64, 64]})
    module = load_network(task)
    torch.manual_seed(0)
    batch = torch.rand(1, 1, 64, 64)
    # the class with some positive evidence (a map that is all zero after the ReLU says nothing)
    manuals = [_manual_gradcam(module, "features.denseblock1", batch, k) for k in (0, 1)]
    target = int(np.argmax([m.max() for m in manuals]))
    manual = manuals[target]
    assert manual.max() > 0
    heat, grid = gradcam(module, "DenseNet", batch, target)
    # the test network has two dense blocks: the first one is explained, at 1/8 of 64 px
    assert grid == (16, 16)
    assert heat.min() == 0.0 and abs(heat.max() - 1.0) < 1e-6
    expected = (manual - manual.min()) / (manual.max() - manual.min())
    assert np.unravel_index(heat.argmax(), heat.shape) == np.unravel_index(
        manual.argmax(), manual.shape
    )
    assert np.corrcoef(heat.ravel(), expected.ravel())[0, 1] > 0.99


def test_the_shipped_chest_model_locates_its_finding_inside_the_film():
    from medsight.datasets import repository_root
    from medsight.findings.finding import _heatmap_location
    from medsight.inference import Predictor
    from medsight.io import read_image
    from medsight.tasks import load_named_task

    sample = repository_root() / "src/medsight/samples/cxr/pneumonia_person1000_bacteria_2931.jpeg"
    image = read_image(sample)
    prediction = Predictor(load_named_task("cxr-pneumonia")).predict(image)
    assert prediction.flags["high_sensitivity"]["flag"]
    point, note = _heatmap_location(prediction, image)
    assert point is not None and note == "", note  # the maximum is not in the border band
    assert point["method"] == "maximum of the Grad-CAM heatmap (12x12 grid)"


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_a_flagged_output_is_the_one_explained(tmp_path, monkeypatch, threshold):
    """Flagged below 0.5 (a high-sensitivity point), the finding's heatmap must still show the
    flagged output's evidence; with nothing flagged, the most probable output is explained."""
    from medsight.inference import Predictor, explain
    from tests.inference.test_predictor import cxr_image

    extra = (
        "\n[calibration]\ntemperature = 1.0\n\n[operating_points.high_sensitivity]\n"
        f'output = "pneumonia"\nthreshold = {threshold}\nsensitivity = 0.95\n'
    )
    task = classifier_task(tmp_path / "cls", extra=extra)
    explained: list[int] = []
    original = explain.gradcam

    def recording(module, architecture, batch, class_index, **kw):
        explained.append(class_index)
        return original(module, architecture, batch, class_index, **kw)

    monkeypatch.setattr(explain, "gradcam", recording)
    prediction = Predictor(task).predict(cxr_image())
    assert prediction.probabilities is not None
    if threshold == 0.0:
        assert explained == [1]  # pneumonia, flagged at any probability
    else:
        most_probable = max(prediction.probabilities, key=prediction.probabilities.__getitem__)
        assert explained == [["normal", "pneumonia"].index(most_probable)]
