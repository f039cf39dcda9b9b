"""Heatmap mass in the border band and outside the body, and a finding location that is not
credible (in the band) left unreported."""

from __future__ import annotations

import math

import numpy as np

from medsight.evaluation.attention import AttentionSummary, heatmap_mass
from medsight.findings.finding import BORDER_BAND, _heatmap_location
from medsight.image import Image
from medsight.inference import Prediction


def _blob(centre: tuple[int, int], shape=(100, 80), width=6.0) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * width**2))


def test_border_share_and_peak_follow_where_the_map_lies():
    corner, middle = _blob((3, 3)), _blob((50, 40))
    assert heatmap_mass(corner, 0.1)["border"] > 0.9 and heatmap_mass(corner, 0.1)["peak_in_border"]
    assert heatmap_mass(middle, 0.1)["border"] < 0.01
    assert heatmap_mass(middle, 0.1)["peak_in_border"] == 0.0
    even = heatmap_mass(np.ones((100, 80)), 0.1)["border"]
    assert even == 1 - (80 * 64) / (100 * 80)  # the band's share of the area
    body = np.zeros((100, 80), bool)
    body[30:70, 20:60] = True
    assert heatmap_mass(middle, 0.1, body)["outside_body"] < 0.05
    assert heatmap_mass(corner, 0.1, body)["outside_body"] > 0.99
    assert math.isnan(heatmap_mass(np.zeros((10, 10)), 0.1)["border"])
    summary = AttentionSummary(0.1)
    for heat in (corner, middle, middle):
        summary.add(heat)
    result = summary.as_dict()
    assert result["cases"] == 3 and result["peak_in_border"]["count"] == 1
    assert result["border"]["over_half"] == 1 and abs(result["band_area_share"] - even) < 1e-9


def _prediction(heat: np.ndarray) -> Prediction:
    return Prediction(
        task_id="t",
        task_version="1",
        task_hash="h",
        weights_sha256={},
        kind="classification",
        output_names=["normal", "pneumonia"],
        affine=np.eye(4),
        shape=heat.shape,
        backend="torch",
        heatmap=heat,
        heatmap_grid=(12, 12),
    )


def test_a_heatmap_maximum_in_the_border_band_is_not_a_finding_location():
    image = Image(array=np.zeros((1, 100, 80), np.uint8), affine=np.eye(4), spatial_dims=2)
    point, note = _heatmap_location(_prediction(_blob((2, 40))), image)
    assert point is None and f"outer {BORDER_BAND:.0%} border band" in note
    point, note = _heatmap_location(_prediction(_blob((50, 40))), image)
    assert note == "" and point is not None and point["method"].endswith("(12x12 grid)")
