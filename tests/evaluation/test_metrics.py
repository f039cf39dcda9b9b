"""Metrics against independent implementations, hand-computed cases, and CI coverage."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, stats
from sklearn.metrics import brier_score_loss, roc_auc_score

from medsight.evaluation import (
    check_operating_point,
    choose_operating_point,
    delong_auc,
    expected_calibration_error,
    fit_temperature,
    predictive_values,
    segmentation_metrics,
    wilson,
)
from medsight.evaluation.calibration import brier_score


def test_auc_equals_scikit_learn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # rounding makes ties
    assert delong_auc(labels, scores).value == pytest.approx(roc_auc_score(labels, scores))


def test_delong_interval_by_hand():
    positives, negatives = [0.9, 0.8, 0.4], [0.7, 0.3, 0.2]
    labels = np.array([1, 1, 1, 0, 0, 0])
    estimate = delong_auc(labels, np.array(positives + negatives))
    auc = 8 / 9  # 8 of 9 positive-negative pairs ordered correctly
    variance = (1 / 27) / 3 + (1 / 27) / 3  # var(V10)/m + var(V01)/n, worked out by hand
    half = 1.959964 * np.sqrt(variance) / (auc * (1 - auc))
    logit = np.log(auc / (1 - auc))
    assert estimate.value == pytest.approx(auc)
    assert estimate.low == pytest.approx(1 / (1 + np.exp(-(logit - half))), rel=1e-5)
    assert estimate.high == pytest.approx(1 / (1 + np.exp(-(logit + half))), rel=1e-5)


def test_wilson_by_hand():
    estimate = wilson(8, 10)
    assert (estimate.low, estimate.high) == pytest.approx((0.4902, 0.9433), abs=1e-4)


def test_wilson_coverage_by_simulation():
    rng = np.random.default_rng(42)
    truth, n = 0.9, 100
    covered = 0
    for successes in rng.binomial(n, truth, size=2000):
        estimate = wilson(int(successes), n)
        covered += estimate.low <= truth <= estimate.high
    assert 0.93 <= covered / 2000 <= 0.97


def test_delong_coverage_by_simulation():
    rng = np.random.default_rng(7)
    true_auc = stats.norm.cdf(1 / np.sqrt(2))  # binormal, means 0 and 1, unit variances
    labels = np.r_[np.ones(100), np.zeros(100)]
    covered = 0
    for _ in range(2000):
        scores = np.r_[rng.normal(1, 1, 100), rng.normal(0, 1, 100)]
        estimate = delong_auc(labels, scores)
        covered += estimate.low <= true_auc <= estimate.high
    assert 0.93 <= covered / 2000 <= 0.97


def test_operating_point_demonstrated_or_not():
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(400), np.zeros(400)].astype(int)
    scores = np.r_[rng.uniform(0.3, 1, 400), rng.uniform(0, 0.6, 400)]
    point = choose_operating_point(labels, scores, target_sensitivity=0.95)
    assert point.demonstrated and point.sensitivity.low >= 0.95
    # the highest such threshold: one step higher and the lower bound drops below the target
    higher = np.unique(scores[labels == 1])
    higher = higher[higher > point.threshold].min()
    assert check_operating_point(labels, scores, higher, 0.95).sensitivity.low < 0.95
    few = choose_operating_point(labels[::40], scores[::40], target_sensitivity=0.95)
    assert not few.demonstrated and "target not demonstrated" in few.note
    assert few.sensitivity.value >= 0.95


def test_a_stored_threshold_keeps_every_case_the_point_was_counted_with():
    from medsight.evaluation import stored_threshold

    labels = np.array([1, 1, 1, 0, 0])
    scores = np.array([0.2489127, 0.6, 0.9, 0.1, 0.3])
    point = check_operating_point(labels, scores, 0.2489127, 0.9)
    stored = stored_threshold(point.threshold)
    assert stored == 0.248912 and round(point.threshold, 6) > scores[0]  # nearest would lose it
    again = check_operating_point(labels, scores, stored, 0.9)
    assert again.sensitivity.value == point.sensitivity.value == 1.0


def test_predictive_values_at_a_stated_prevalence():
    ppv, npv = predictive_values(0.9, 0.8, prevalence=0.1)
    assert ppv == pytest.approx(0.09 / (0.09 + 0.18))
    assert npv == pytest.approx(0.72 / (0.72 + 0.01))


def test_calibration_metrics():
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([0.1, 0.4, 0.6, 0.9])
    assert brier_score(labels, probabilities) == pytest.approx(
        brier_score_loss(labels, probabilities)
    )
    # bins (10): 0.1 -> observed 0; 0.4 -> 0; 0.6 -> 1; 0.9 -> 1
    expected = (0.1 + 0.4 + 0.4 + 0.1) / 4
    assert expected_calibration_error(labels, probabilities) == pytest.approx(expected)


def test_temperature_scaling_recovers_the_true_temperature():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 4, 20000)
    labels = rng.random(20000) < 1 / (1 + np.exp(-logits / 2.0))
    assert fit_temperature(logits, labels.astype(int)) == pytest.approx(2.0, rel=0.1)


def _hd95_scipy(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """Independent HD95: percentile of surface-to-surface distances, both directions."""

    def surface(mask):
        return mask & ~ndimage.binary_erosion(mask)

    def directed(x, y):
        distance = ndimage.distance_transform_edt(~surface(y), sampling=spacing)
        return np.percentile(distance[surface(x)], 95)

    return max(directed(a, b), directed(b, a))


def test_segmentation_metrics_by_hand_and_against_scipy():
    reference = np.zeros((20, 20, 10), bool)
    reference[5:15, 5:15, 2:8] = True
    prediction = np.roll(reference, 2, axis=2)  # shifted two slices
    spacing = (0.8, 0.8, 3.0)
    metrics = segmentation_metrics(prediction, reference, spacing)
    overlap = 10 * 10 * 4
    assert metrics["dice"] == pytest.approx(2 * overlap / (2 * 600))
    assert metrics["iou"] == pytest.approx(overlap / (600 + 600 - overlap))
    assert metrics["hd95_mm"] == pytest.approx(
        _hd95_scipy(prediction, reference, spacing), rel=1e-3
    )
    assert metrics["hd95_mm"] == pytest.approx(6.0)  # two 3 mm slices
    assert 0 < metrics["surface_dice"] < 1
    empty = segmentation_metrics(np.zeros_like(reference), reference, spacing)
    assert empty["dice"] == 0 and empty["hd95_mm"] == float("inf")
