"""A very large film reaches the network grid in bounded memory, with the whole-image values."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from medsight.image import Image
from medsight.inference import Predictor, strips
from medsight.inference.predictor import network_input
from medsight.inference.strips import percentiles, resize_mapped
from tests._tasks import detector_task

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
def test_histogram_percentiles_are_numpys(dtype):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(3)
    array = rng.integers(max(info.min, -3000), min(info.max, 4000), size=(1, 301, 257))
    array = array.astype(dtype)
    q = [0.0, 0.5, 33.3, 50.0, 99.5, 100.0]
    np.testing.assert_array_equal(percentiles(array, q), np.percentile(array, q))
    # a strided view (a flipped, transposed image) is counted without a copy of it whole
    view = array[:, ::-1, ::2].transpose(0, 2, 1)
    np.testing.assert_array_equal(percentiles(view, q), np.percentile(view, q))


def test_float_images_go_to_numpy():
    values = np.random.default_rng(0).normal(size=(1, 50, 40)).astype(np.float32)
    np.testing.assert_array_equal(percentiles(values, [5, 95]), np.percentile(values, [5, 95]))


@pytest.mark.parametrize("shape", [(1, 3001, 2000), (3, 90, 70)])
def test_strip_resize_is_torchs_bilinear_resize(shape):
    raw = np.random.default_rng(1).integers(0, 4096, size=shape).astype(np.uint16)

    def mapping(values: np.ndarray) -> np.ndarray:
        return (values.astype(np.float32) - 100.0) / 3000.0

    expected = torch.nn.functional.interpolate(
        torch.from_numpy(mapping(raw))[None], size=(320, 256), mode="bilinear", align_corners=False
    )[0].numpy()
    np.testing.assert_allclose(resize_mapped(raw, mapping, (320, 256)), expected, atol=1e-5)


def _film(side: int) -> Image:
    rng = np.random.default_rng(2)
    array = rng.integers(0, 4096, size=(1, side, side - 37), dtype=np.uint16)
    array[0, side // 3 : side // 2, side // 4 : side // 3] = 4095  # something bright to find
    return Image(array=array, affine=np.diag([0.1, 0.1, 1.0, 1.0]), spatial_dims=2, modality="DX")


def _peak_bytes(function) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_very_large_film_is_prepared_in_bounded_memory_with_the_same_values(
    tmp_path, monkeypatch
):
    task = detector_task(
        tmp_path / "det",
        preprocessing={"resize": [320, 320], "normalize": "unit"},
        display={"window": "percentile", "percentiles": [0.5, 99.5]},
    )
    film = _film(4200)  # 17.5 M pixels: above strips.STRIPS_MIN_PIXELS
    assert film.array[0].size > strips.STRIPS_MIN_PIXELS
    spec = task.spec

    def prepare() -> np.ndarray:
        return network_input(film, spec.display, spec.preprocessing)[1]

    strip_peak = _peak_bytes(prepare)
    by_strips = prepare()
    predicted = Predictor(task, backend="torch", tta=False).predict(film)

    # the whole-image chain, as every film took before (and every smaller one still does)
    monkeypatch.setattr("medsight.inference.predictor.STRIPS_MIN_PIXELS", film.array.size * 2)
    monkeypatch.setattr("medsight.inference.preprocess.STRIPS_MIN_PIXELS", film.array.size * 2)
    whole_peak = _peak_bytes(prepare)
    whole = prepare()
    reference = Predictor(task, backend="torch", tta=False).predict(film)

    np.testing.assert_allclose(by_strips, whole, atol=1e-5)
    # a fixed working set (a block of samples counted, a strip of rows mapped), whatever the
    # film's size: the film itself is the only large array
    assert strip_peak < 32e6 < film.array.nbytes
    assert whole_peak > 4 * film.array.nbytes  # float64 and float32 copies of it
    assert predicted.probabilities == pytest.approx(reference.probabilities, abs=1e-5)
    assert len(predicted.boxes) == len(reference.boxes)
    for ours, theirs in zip(predicted.boxes, reference.boxes, strict=True):
        np.testing.assert_allclose(ours["pixel_box"], theirs["pixel_box"], atol=1e-2)
