"""Large 3D volumes are segmented band by band in bounded memory: the same labels as the
general path, probabilities within half a 1/255 step, written as scaled 8-bit NIfTI."""

from __future__ import annotations

import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medsight.analysis.records import write_probability_maps
from medsight.image import Image
from medsight.inference import Predictor
from medsight.inference.preprocess import normalize, voxelwise_display, zscore_mapping
from medsight.inference.quantized import QuantizedProbabilities
from medsight.inference.sliding_window import sliding_window, sliding_window_rows
from tests._tasks import segmenter_3d_task


def _conv(seed: int):
    torch.manual_seed(seed)
    weights = torch.randn(3, 1, 3, 3, 3)

    def network(batch: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv3d(batch, weights, padding=1)

    return network


@pytest.mark.parametrize(
    ("shape", "roi", "overlap", "streams", "axis"),
    [
        ((1, 70, 44, 37), (24, 24, 24), 0.5, 1, 0),
        ((1, 53, 30, 41), (16, 32, 16), 0.25, 2, 2),
        ((1, 10, 50, 20), (24, 24, 24), 0.5, 1, 1),  # shorter than a window: padded, cropped
        ((1, 10, 50, 20), (24, 24, 24), 0.5, 1, 0),
    ],
)
def test_bands_give_the_blended_output_of_the_whole_volume(shape, roi, overlap, streams, axis):
    values = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    network = _conv(0)
    whole = sliding_window(values, roi, network, overlap=overlap, batch_size=3, streams=streams)
    assembled = np.full_like(whole, np.nan)
    bands: list[tuple[int, int]] = []

    def collect(first: int, stop: int, block: np.ndarray) -> None:
        bands.append((first, stop))
        rows = [slice(None)] * 4
        rows[axis + 1] = slice(first, stop)
        assembled[tuple(rows)] = block

    sliding_window_rows(
        values, roi, network, collect, axis=axis, overlap=overlap, batch_size=3, streams=streams
    )
    # every row handed out once, in order, and the values those of the whole-volume blend
    assert bands[0][0] == 0 and bands[-1][1] == shape[axis + 1]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bands))
    np.testing.assert_allclose(assembled, whole, rtol=1e-5, atol=1e-5)
    if shape[axis + 1] > 2 * roi[axis]:
        assert len(bands) > 2  # really banded, not one block at the end


def test_the_fused_zscore_equals_normalize_on_the_whole_volume():
    raw = np.random.default_rng(4).normal(300, 80, size=(1, 40, 30, 20)).astype(np.int16)
    raw[:, :5] = 0  # background that zscore_nonzero leaves out
    image = Image(array=raw, affine=np.eye(4), spatial_dims=3)
    from medsight.tasks.spec import Display

    display = Display(window="none")
    base = voxelwise_display(image, display)
    assert base is not None
    whole = normalize(base(raw), "zscore_nonzero")
    mapping = zscore_mapping(raw, base, nonzero=True)
    window = (slice(None), slice(3, 20), slice(4, 30), slice(0, 9))
    np.testing.assert_allclose(mapping(raw[window]), whole[window], rtol=1e-4, atol=1e-4)


def test_the_streamed_path_matches_the_general_one(tmp_path: Path) -> None:
    task = segmenter_3d_task(tmp_path / "task")
    rng = np.random.default_rng(5)
    raw = (rng.normal(0, 200, size=(1, 60, 48, 40)) + 400).astype(np.int16)
    image = Image(array=raw, affine=np.diag([0.8, 0.8, 2.0, 1.0]), spatial_dims=3, modality="MR")
    general = Predictor(task).predict(image)
    bounded_predictor = Predictor(task)
    bounded_predictor.stream_voxels = 0
    bounded = bounded_predictor.predict(image)

    assert isinstance(bounded.segment_probabilities, QuantizedProbabilities)
    assert "bounded memory" in str(bounded.details["probabilities_stored"])
    changed = np.mean(bounded.label_map != general.label_map)
    assert changed < 1e-4  # the same float argmax: only where two outputs tie within float error
    for index in (1, 2):
        np.testing.assert_allclose(
            np.asarray(bounded.segment_probabilities[index]),
            general.segment_probabilities[index],
            atol=2.2e-3,  # half a 1/255 step, and the fused z-score's statistics in float64
        )
    mask = general.label_map == 1
    assert (
        abs(
            float(bounded.segment_probabilities[1][mask].mean())
            - float(general.segment_probabilities[1][mask].mean())
        )
        < 1e-3
    )

    written = write_probability_maps(
        bounded.segment_probabilities, task, image, tmp_path / "masks", "01_case"
    )
    stored = nib.load(tmp_path / "masks" / written["anterior"]["nifti"])
    assert stored.get_data_dtype() == np.uint8
    assert stored.dataobj.slope == pytest.approx(1 / 255)
    np.testing.assert_allclose(
        np.asarray(stored.dataobj)[..., :],
        np.asarray(bounded.segment_probabilities[1]),
        atol=1e-6,
    )
