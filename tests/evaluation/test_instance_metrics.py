"""AJI and panoptic quality on instance maps small enough to work out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from medsight.evaluation.instances import aggregated_jaccard_index, instance_metrics


def _two_nuclei() -> np.ndarray:
    reference = np.zeros((10, 20), np.int32)
    reference[2:6, 2:6] = 1  # 16 pixels
    reference[2:6, 10:14] = 2  # 16 pixels
    return reference


def test_identical_maps_score_one_whatever_the_ids():
    reference = _two_nuclei()
    relabelled = np.where(reference == 1, 7, np.where(reference == 2, 3, 0))
    assert aggregated_jaccard_index(reference, relabelled) == 1.0
    metrics = instance_metrics(reference, relabelled)
    assert metrics["pq"] == 1.0 and metrics["predicted_count"] == 2


def test_merged_prediction_is_penalised_by_hand_worked_values():
    reference = _two_nuclei()
    merged = np.zeros_like(reference)
    merged[2:6, 2:14] = 1  # one object of 48 pixels covering both nuclei and the gap
    # each reference nucleus picks the merged object: C = 16 + 16, U = 48 + 48
    assert aggregated_jaccard_index(reference, merged) == pytest.approx(32 / 96)
    metrics = instance_metrics(reference, merged)
    assert metrics["dq"] == 0.0 and metrics["pq"] == 0.0  # IoU 1/3 is no match


def test_a_false_positive_nucleus_adds_to_the_union():
    reference = _two_nuclei()
    predicted = reference.copy()
    predicted[7:9, 16:18] = 3  # 4 extra pixels
    assert aggregated_jaccard_index(reference, predicted) == pytest.approx(32 / 36)
    metrics = instance_metrics(reference, predicted)
    assert metrics["dq"] == pytest.approx(2 / (2 + 0.5))


def test_a_missed_nucleus_keeps_its_area_in_the_union():
    reference = _two_nuclei()
    predicted = np.where(reference == 1, 1, 0)
    assert aggregated_jaccard_index(reference, predicted) == pytest.approx(16 / 32)


def test_empty_maps():
    empty = np.zeros((5, 5), np.int32)
    assert aggregated_jaccard_index(empty, empty) == 1.0
    assert aggregated_jaccard_index(_two_nuclei(), np.zeros((10, 20), np.int32)) == 0.0
