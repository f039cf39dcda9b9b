"""The engine: predictions in the source geometry, calibration, backends, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from medsight.errors import ModelLoadError, TaskMismatchError
from medsight.image import Identifiers, Image
from medsight.inference import Predictor
from tests._tasks import classifier_task, segmenter_3d_task


def cxr_image(age: str = "003Y") -> Image:
    rng = np.random.default_rng(1)
    return Image(
        rng.integers(0, 4096, size=(1, 100, 90)).astype(np.uint16),
        np.diag([0.2, 0.2, 1, 1]),
        2,
        modality="DX",
        photometric_interpretation="MONOCHROME1",
        identifiers=Identifiers(sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1"),
        metadata={"PatientAge": age, "BitsStored": 12},
    )


def mr_volume() -> Image:
    rng = np.random.default_rng(2)
    affine = np.array([[-1.0, 0, 0, 30], [0, -1.1, 0, 40], [0, 0, 1.2, -10], [0, 0, 0, 1]])
    return Image(
        rng.normal(100, 20, size=(1, 35, 50, 37)).astype(np.float32), affine, 3, modality="MR"
    )


def test_classifier_probabilities_are_calibrated_and_flagged(tmp_path):
    task = classifier_task(tmp_path / "cls")
    prediction = Predictor(task).predict(cxr_image())
    assert prediction.state == "OK"
    logits = prediction.logits
    assert logits is not None and logits.shape == (2,)
    expected = np.exp(logits / 1.5) / np.exp(logits / 1.5).sum()
    assert prediction.probabilities == pytest.approx(
        {"normal": expected[0], "pneumonia": expected[1]}
    )
    flag = prediction.flags["high_sensitivity"]
    assert flag["flag"] == (expected[1] >= 0.3)
    assert prediction.heatmap is not None and prediction.heatmap.shape == (100, 90)
    assert prediction.task_hash == task.task_hash and len(prediction.task_hash) == 64


def test_features_come_with_the_prediction_on_both_backends(tmp_path):
    task = classifier_task(tmp_path / "cls")
    torch_features = Predictor(task).predict(cxr_image()).features
    onnx_features = Predictor(task, backend="onnxruntime").predict(cxr_image()).features
    assert torch_features is not None and onnx_features is not None
    np.testing.assert_allclose(torch_features, onnx_features, rtol=1e-3, atol=1e-4)


def test_wrong_inputs_are_refused_with_reasons(tmp_path):
    classifier = Predictor(classifier_task(tmp_path / "cls"))
    with pytest.raises(TaskMismatchError, match="image is 3D, the task needs 2D"):
        classifier.predict(mr_volume())
    photo = Image(np.zeros((3, 40, 40), np.uint8), np.eye(4), 2, photometric_interpretation="RGB")
    segmenter = Predictor(segmenter_3d_task(tmp_path / "seg"))
    with pytest.raises(TaskMismatchError, match="photometric RGB is not one of MONOCHROME2"):
        segmenter.predict(photo)


def test_corrupted_weights_are_refused_by_hash(tmp_path):
    task = classifier_task(tmp_path / "cls")
    weights = tmp_path / "cls" / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="do not match their SHA-256"):
        Predictor(task).predict(cxr_image())


def test_segmentation_comes_back_in_the_source_geometry(tmp_path):
    image = mr_volume()
    prediction = Predictor(segmenter_3d_task(tmp_path / "seg")).predict(image)
    assert prediction.label_map is not None and prediction.label_map.shape == image.shape
    assert prediction.segment_probabilities is not None
    assert prediction.segment_probabilities.shape == (3, *image.shape)
    np.testing.assert_allclose(prediction.segment_probabilities.sum(0), 1, atol=1e-5)
    np.testing.assert_array_equal(prediction.affine, image.affine)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_deterministic_mode_repeats_bit_for_bit(tmp_path, backend, monkeypatch):
    monkeypatch.setenv("MEDSIGHT_CACHE", str(tmp_path / "cache"))
    task = segmenter_3d_task(tmp_path / "seg")
    predictor = Predictor(task, deterministic=True, backend=backend)
    first = predictor.predict(mr_volume()).segment_probabilities
    second = predictor.predict(mr_volume()).segment_probabilities
    assert first is not None and second is not None
    assert np.array_equal(first, second)


@pytest.mark.parametrize("build", [classifier_task, segmenter_3d_task], ids=["densenet", "unet3d"])
def test_torch_and_onnxruntime_agree(tmp_path, build, monkeypatch):
    monkeypatch.setenv("MEDSIGHT_CACHE", str(tmp_path / "cache"))
    task = build(tmp_path / "task")
    image = cxr_image() if task.spec.kind == "classification" else mr_volume()
    torch_prediction = Predictor(task, explain=False).predict(image)
    onnx_prediction = Predictor(task, backend="onnxruntime", explain=False).predict(image)
    if task.spec.kind == "classification":
        assert torch_prediction.probabilities is not None
        assert onnx_prediction.probabilities is not None
        for name, value in torch_prediction.probabilities.items():
            assert abs(value - onnx_prediction.probabilities[name]) <= 1e-4
    else:
        difference = np.abs(
            torch_prediction.segment_probabilities - onnx_prediction.segment_probabilities
        )
        assert difference.max() <= 1e-4
    assert list((tmp_path / "cache" / "onnx" / task.task_hash).glob("*.onnx"))


def test_the_export_runs_single_slope_prelu_as_leaky_relu_with_the_same_output(tmp_path):
    import onnx
    import torch

    from medsight.inference.backends import _single_slope_prelu_as_leaky_relu, export_onnx
    from medsight.models import load_network

    task = segmenter_3d_task(tmp_path / "task")
    original = load_network(task).eval()
    for module in original.modules():  # a trained-looking slope, not PReLU's 0.25 default
        if isinstance(module, torch.nn.PReLU):
            module.weight.data.fill_(0.137)
    rewritten = _single_slope_prelu_as_leaky_relu(load_network(task).eval())
    rewritten.load_state_dict(original.state_dict(), strict=False)
    for module in rewritten.modules():
        if isinstance(module, torch.nn.LeakyReLU):
            module.negative_slope = 0.137
    assert any(isinstance(m, torch.nn.PReLU) for m in original.modules())
    assert not any(isinstance(m, torch.nn.PReLU) for m in rewritten.modules())
    batch = torch.randn(1, *original_shape(task))
    with torch.no_grad():
        assert torch.equal(original(batch), rewritten(batch))  # the same function, bit for bit
    graph = onnx.load(export_onnx(task, tmp_path / "model.onnx")).graph
    operators = {node.op_type for node in graph.node}
    assert "LeakyRelu" in operators and "PRelu" not in operators


def original_shape(task) -> tuple[int, ...]:
    from medsight.inference.backends import network_input_shape

    return network_input_shape(task)[1:]
