"""Detection evaluation: box matching by descending score, the FROC curve against MONAI's
CAMELYON-derived helper, sensitivities at fixed false-positive rates with a bootstrap band,
study-level figures, and the bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from medsight.errors import InvalidInputError
from medsight.evaluation.detection import (
    DUPLICATE,
    FALSE_POSITIVE,
    HIT,
    ImageDetections,
    box_iou,
    froc,
    match_image,
    outcomes,
    study_level,
)


def test_box_iou():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 5, 5]])
    np.testing.assert_allclose(box_iou(a, b)[0], [1.0, 50 / 150, 0.0, 0.25])


def test_matching_goes_by_score_and_counts_each_lesion_once():
    image = ImageDetections(
        "a",
        reference=np.array([[0, 0, 10, 10], [50, 50, 60, 60]]),
        boxes=np.array(
            [
                [1, 1, 10, 10],  # 0.9: lesion 1
                [0, 0, 9, 9],  # 0.8: lesion 1 again (a duplicate)
                [100, 100, 110, 110],  # 0.7: nothing there
                [53, 50, 63, 60],  # 0.6: lesion 2, IoU 0.54
                [58, 50, 68, 60],  # 0.5: IoU 0.11 with lesion 2: a false positive
            ]
        ),
        scores=np.array([0.9, 0.8, 0.7, 0.6, 0.5]),
    )
    assert match_image(image).tolist() == [HIT, DUPLICATE, FALSE_POSITIVE, HIT, FALSE_POSITIVE]
    # order given does not matter: a lower-scored box on lesion 1 is the duplicate
    flipped = ImageDetections("a", image.reference, image.boxes[[1, 0]], np.array([0.8, 0.9]))
    assert match_image(flipped).tolist() == [DUPLICATE, HIT]
    # a stricter overlap turns the 0.54 match into a false positive
    assert match_image(image, iou=0.6).tolist()[3] == FALSE_POSITIVE


def _random_images(rng: np.random.Generator, count: int) -> list[ImageDetections]:
    images = []
    for k in range(count):
        lesions = rng.integers(0, 3)
        corners = rng.uniform(0, 400, (lesions, 2))
        reference = np.hstack([corners, corners + rng.uniform(20, 60, (lesions, 2))])
        kept = reference[rng.random(lesions) < 0.7]
        hits = kept + rng.normal(0, 3, kept.shape)  # near the lesion: most overlap 0.3+
        noise = rng.uniform(0, 400, (rng.integers(0, 4), 2))
        boxes = np.vstack([hits, np.hstack([noise, noise + 30])])
        scores = np.r_[rng.uniform(0.4, 1.0, len(hits)), rng.uniform(0.0, 0.8, len(noise))]
        images.append(ImageDetections(f"{k}", reference, boxes, scores))
    return images


def test_froc_curve_agrees_with_monai():
    from monai.metrics.froc import compute_froc_curve_data, compute_froc_score

    images = _random_images(np.random.default_rng(3), 60)
    result = froc(images, resamples=50)
    found = outcomes(images)
    fps, sensitivity = compute_froc_curve_data(
        found.scores[found.outcome == FALSE_POSITIVE],
        found.scores[found.outcome == HIT],
        int(found.lesions.sum()),
        len(images),
    )
    curve = np.array(result["curve"])
    # MONAI's points (it leaves out the lowest threshold) all lie on our curve
    ours = {(round(f, 9), round(s, 9)) for f, s in curve}
    assert {(round(f, 9), round(s, 9)) for f, s in zip(fps, sensitivity, strict=True)} <= ours
    # and the score over the rates matches where MONAI's curve reaches them
    rates = (0.25, 0.5, 1.0)
    expected = compute_froc_score(fps, sensitivity, rates)
    got = np.mean([np.interp(r, curve[:, 0], curve[:, 1]) for r in rates])
    assert got == pytest.approx(expected)


def test_sensitivity_at_rates_with_a_band():
    # two images, three lesions; scores chosen so the curve is known by hand
    images = [
        ImageDetections(
            "a",
            np.array([[0, 0, 10, 10], [20, 20, 30, 30]]),
            np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]]),
            np.array([0.9, 0.8, 0.3]),
        ),
        ImageDetections(
            "b",
            np.array([[0, 0, 10, 10]]),
            np.array([[70, 70, 80, 80], [0, 0, 10, 10]]),
            np.array([0.7, 0.6]),
        ),
        ImageDetections("c", np.zeros((0, 4)), np.array([[5, 5, 9, 9]]), np.array([0.95])),
    ]
    result = froc(images, rates=(0.5, 1.0, 2.0), resamples=200)
    # descending: 0.95 FP, 0.9 hit, 0.8 FP, 0.7 FP, 0.6 hit, 0.3 hit
    # points (FP per image, sensitivity): (1/3, 0), (1/3, 1/3), (2/3, 1/3), (1, 1/3),
    # (1, 2/3), (1, 1)
    at = result["sensitivity_at_fp_per_image"]
    assert at["0.5"]["value"] == pytest.approx(1 / 3)
    assert at["1.0"]["value"] == pytest.approx(1.0)
    assert at["2.0"]["value"] == pytest.approx(1.0)  # beyond the last point: its value
    assert result["lesions"] == 3 and result["images"] == 3
    assert 0 <= at["0.5"]["low"] <= at["0.5"]["value"] <= at["0.5"]["high"] <= 1


def test_a_perfect_detector_finds_every_lesion_without_false_positives():
    rng = np.random.default_rng(0)
    images = [
        ImageDetections(f"{k}", box, box.copy(), rng.uniform(0.5, 1, len(box)))
        for k, box in enumerate(
            np.hstack([c, c + 20]) for c in (rng.uniform(0, 100, (2, 2)) for _ in range(10))
        )
    ]
    result = froc(images, resamples=20)
    assert all(v["value"] == 1.0 for v in result["sensitivity_at_fp_per_image"].values())


def test_study_level_figures():
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    probabilities = np.array([0.9, 0.8, 0.2, 0.7, 0.1, 0.05, 0.3])
    figures = study_level(labels, probabilities, threshold=0.5)
    assert figures["sensitivity"].value == pytest.approx(2 / 3)
    assert figures["specificity"].value == pytest.approx(3 / 4)
    assert figures["auc"].value == pytest.approx(10 / 12)


def test_bad_input_is_refused_with_the_image_named():
    with pytest.raises(InvalidInputError, match="img7: a predicted box has x1 < x0"):
        ImageDetections("img7", np.zeros((0, 4)), np.array([[10, 0, 5, 5]]), np.array([0.5]))
    with pytest.raises(InvalidInputError, match="img8: 2 scores"):
        ImageDetections("img8", np.zeros((0, 4)), np.array([[0, 0, 5, 5]]), np.array([0.5, 0.4]))
    with pytest.raises(InvalidInputError, match="needs reference boxes"):
        froc([ImageDetections("x", np.zeros((0, 4)), np.zeros((0, 4)), np.zeros(0))])
    with pytest.raises(InvalidInputError, match="no images"):
        froc([])
