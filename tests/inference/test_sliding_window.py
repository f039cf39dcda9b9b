"""Sliding-window blending: exact for pointwise networks, equal to MONAI's up to weighting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsight.inference.sliding_window import sliding_window


def pointwise(batch: torch.Tensor) -> torch.Tensor:
    """A 1x1 'network': every window agrees, so any blending must return it exactly."""
    return torch.cat([batch * 2.0 + 1.0, -batch], dim=1)


@pytest.mark.parametrize("shape", [(1, 50, 41, 23), (1, 17, 9, 40), (1, 70, 33)])
def test_pointwise_network_is_reproduced_exactly(shape):
    values = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    roi = [32, 32, 16][: len(shape) - 1]
    out = sliding_window(values, roi, pointwise, overlap=0.5, batch_size=3)
    assert out.shape == (2, *shape[1:])
    np.testing.assert_allclose(out[0], values[0] * 2 + 1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[1], -values[0], rtol=1e-5, atol=1e-5)


def test_close_to_monai_for_a_real_network():
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    network = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,))
    network.eval()
    values = np.random.default_rng(1).normal(size=(1, 40, 36, 30)).astype(np.float32)
    with torch.no_grad():
        ours = sliding_window(values, [24, 24, 24], network, overlap=0.5)
        theirs = sliding_window_inference(
            torch.from_numpy(values)[None], (24, 24, 24), 4, network, overlap=0.5, mode="gaussian"
        )[0].numpy()
    # both blend overlapping windows with Gaussian weights (window placement and weight floors
    # differ slightly), so the blended logits and the decisions nearly agree
    assert np.abs(ours - theirs).mean() < 0.1 * np.abs(theirs).mean()
    assert (ours.argmax(0) == theirs.argmax(0)).mean() > 0.97


@pytest.mark.parametrize("streams", [2, 3])
def test_concurrent_streams_give_the_serial_result_bit_for_bit(streams):
    import threading
    import time

    torch.manual_seed(0)
    weights = torch.randn(3, 1, 3, 3, 3)
    threads: set[str] = set()

    def network(batch: torch.Tensor) -> torch.Tensor:
        threads.add(threading.current_thread().name)
        time.sleep(0.001 * torch.rand(()).item())  # runs end out of order
        return torch.nn.functional.conv3d(batch, weights, padding=1)

    values = np.random.default_rng(2).normal(size=(1, 50, 44, 37)).astype(np.float32)
    # the same windows per run (batch_size / streams), so only the concurrency differs
    serial = sliding_window(values, [16, 16, 16], network, overlap=0.25, batch_size=2)
    threads.clear()
    concurrent = sliding_window(
        values, [16, 16, 16], network, overlap=0.25, batch_size=2 * streams, streams=streams
    )
    assert len(threads) == streams  # the runs were spread over that many threads
    assert np.array_equal(serial, concurrent)
