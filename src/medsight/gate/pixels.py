"""Pixel and photograph checks: does the image look like one the task may judge at all?

Fixed thresholds catch what no task should judge (blank, noise, non-finite values, implausible
CT numbers, a truncated volume). A fitted task also has a reference distribution of each
statistic over its training images; the band a check holds against is the central 99% of that
distribution widened by half of each side's spread, so that a real image of the training kind
passes (false rejection measured in `medsight gate fit` and `scripts/shift_tests.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from medsight.gate.checks import GateCheck
from medsight.gate.statistics import image_statistics
from medsight.image import Image

__all__ = ["LOG_SCALE_STATISTICS", "Band", "band_from_values", "pixel_checks"]

# fixed limits (any task): below these an image has no content a model can judge
_UNIFORM_FRACTION = 0.95
_MIN_STRUCTURE = 0.5  # neighbour correlation of block means: noise ~0, images > 0.8
_MIN_CONTRAST = 0.01
_MAX_BLANK_SLICES = 0.2
_HU_RANGE = (-1200.0, 4000.0)  # beyond this, more than a trace of the volume is not CT numbers
_HU_OUTSIDE = 0.01

Band = tuple[float, float]


#: statistics that are ratios of positive quantities: their band is widened on a log scale
#: (an additive widening of focus, spread over an order of magnitude, went below zero and
#: let any blur through)
LOG_SCALE_STATISTICS = frozenset({"focus"})


def band_from_values(values: Sequence[float] | np.ndarray, *, log_scale: bool = False) -> Band:
    """The accepted band of a statistic from its values on in-distribution images: the 0.5th
    to 99.5th percentiles, widened outwards by half their distance from the median (on a log
    scale with ``log_scale``, for positive ratio statistics)."""
    array = np.asarray(values, dtype=np.float64)
    if log_scale and np.all(array > 0):
        low, high = band_from_values(np.log(array))
        return float(np.exp(low)), float(np.exp(high))
    low, median, high = np.percentile(array, [0.5, 50, 99.5])
    return float(low - 0.5 * (median - low)), float(high + 0.5 * (high - median))


def _check(
    name: str,
    stage: Literal["pixels", "photo"],
    score: float,
    threshold: float,
    direction: Literal["above", "below"],
    failed_reason: str,
    passed_reason: str,
) -> GateCheck:
    failed = score > threshold if direction == "above" else score < threshold
    return GateCheck(
        name,
        stage,
        "withhold" if failed else "pass",
        failed_reason if failed else passed_reason,
        score,
        threshold,
        direction,
    )


def _hu_check(image: Image) -> GateCheck | None:
    if image.modality != "CT":
        return None
    values = np.asarray(image.array[0], dtype=np.float32)
    step = max(1, values.size // 1_000_000)
    sample = values.ravel()[::step]
    outside = float(((sample < _HU_RANGE[0]) | (sample > _HU_RANGE[1])).mean())
    no_air = float(np.percentile(sample, 1)) > -200  # no air at all: values are not HU
    return GateCheck(
        "ct_numbers",
        "pixels",
        "withhold" if outside > _HU_OUTSIDE else "pass",
        f"{outside:.1%} of the values lie outside {_HU_RANGE[0]:g} to {_HU_RANGE[1]:g} HU: "
        "not CT numbers (wrong rescale or not a CT)"
        if outside > _HU_OUTSIDE
        else "values in the plausible CT number range"
        + (" (no air in the volume)" if no_air else ""),
        outside,
        _HU_OUTSIDE,
        "above",
    )


def pixel_checks(
    image: Image,
    bands: Mapping[str, Band] | None = None,
    photo: Literal["fundus", "skin"] | None = None,
    statistics: Mapping[str, float] | None = None,
    *,
    grey: bool = False,
) -> tuple[list[GateCheck], dict[str, float]]:
    """The pixel (and, for ``photo`` tasks, photograph quality) checks and the statistics;
    ``grey``: the task judges grey-scale images (a colour photograph is withheld)."""
    stats = dict(statistics or image_statistics(image, photo=photo is not None))
    bands = bands or {}
    checks: list[GateCheck] = []
    nonfinite = stats["nonfinite_fraction"]
    checks.append(
        _check(
            "finite_values",
            "pixels",
            nonfinite,
            0.0,
            "above",
            f"{nonfinite:.1%} of the values are NaN or infinite",
            "all values finite",
        )
    )
    uniform = stats["uniform_fraction"] >= _UNIFORM_FRACTION or stats["contrast"] < _MIN_CONTRAST
    checks.append(
        GateCheck(
            "blank",
            "pixels",
            "withhold" if uniform else "pass",
            f"the image is blank or uniform ({stats['uniform_fraction']:.0%} of pixels share "
            "one value)"
            if uniform
            else "the image has content",
            stats["uniform_fraction"],
            _UNIFORM_FRACTION,
            "above",
        )
    )
    checks.append(
        _check(
            "noise",
            "pixels",
            stats["structure"],
            _MIN_STRUCTURE,
            "below",
            f"the image looks like noise, without spatial structure (neighbour correlation "
            f"{stats['structure']:.2f}, at least {_MIN_STRUCTURE:g} expected)",
            "spatial structure present",
        )
    )
    low_contrast = bands.get("contrast", (_MIN_CONTRAST, 1.0))[0]
    checks.append(
        _check(
            "contrast",
            "pixels",
            stats["contrast"],
            max(low_contrast, _MIN_CONTRAST),
            "below",
            f"very low contrast ({stats['contrast']:.3f}; the task's images have at least "
            f"{max(low_contrast, _MIN_CONTRAST):.3f})",
            "contrast within the task's range",
        )
    )
    clipped = bands.get("clipped_high", (0.0, 0.3))[1]
    checks.append(
        _check(
            "saturation",
            "pixels",
            stats["clipped_high"],
            max(clipped, 0.05),
            "above",
            f"{stats['clipped_high']:.0%} of the image is saturated at the top of its range "
            "(over-exposed or clipped)",
            "not saturated",
        )
    )
    if image.spatial_dims == 3:
        checks.append(
            _check(
                "blank_slices",
                "pixels",
                stats["blank_slices"],
                _MAX_BLANK_SLICES,
                "above",
                f"{stats['blank_slices']:.0%} of the slices are blank: a truncated or partial "
                "volume",
                "no blank slices beyond the limit",
            )
        )
    if grey:
        checks.append(
            _check(
                "grey_scale",
                "pixels",
                stats.get("colourfulness", 0.0),
                _MAX_GREY_COLOURFULNESS,
                "above",
                f"a grey-scale image is expected; this one is in colour (colour spread "
                f"{stats.get('colourfulness', 0.0):.3f})",
                "grey-scale image",
            )
        )
    hu = _hu_check(image)
    if hu is not None:
        checks.append(hu)
    if photo is not None:
        checks += _photo_checks(stats, bands, photo)
    return checks, stats


#: a colour photograph task needs colour: below this spread the image is grey
_MIN_COLOURFULNESS = 0.02
#: black pixels a photograph may hold whatever its reference (marker dots, hair shadows)
_MIN_BLACK_ALERT = 0.05
#: a grey-scale task (radiographs) stored as RGB has equal channels (Kermany: spread 0.000)
_MAX_GREY_COLOURFULNESS = 0.05


def _photo_checks(
    stats: Mapping[str, float], bands: Mapping[str, Band], photo: str
) -> list[GateCheck]:
    checks = []
    colour_low = max(bands.get("colourfulness", (0.0, 1.0))[0], _MIN_COLOURFULNESS)
    checks.append(
        _check(
            "colour",
            "photo",
            stats.get("colourfulness", 0.0),
            colour_low,
            "below",
            f"a colour {photo} photograph is expected; this image is grey (colour spread "
            f"{stats.get('colourfulness', 0.0):.3f}, at least {colour_low:.3f} expected)",
            "colour photograph",
        )
    )
    focus_low = bands.get("focus", (0.05, 0.0))[0]
    checks.append(
        _check(
            "focus",
            "photo",
            stats["focus"],
            max(focus_low, 1e-3),
            "below",
            f"the photograph is out of focus (focus score {stats['focus']:.3f}, at least "
            f"{focus_low:.3f} expected)",
            "in focus",
        )
    )
    low, high = bands.get("exposure", (0.08, 0.95))
    exposure = stats["exposure"]
    if exposure < low or exposure > high:
        wrong = "under" if exposure < low else "over"
        checks.append(
            GateCheck(
                "exposure",
                "photo",
                "withhold",
                f"the photograph is {wrong}-exposed (brightness {exposure:.2f}; the task's "
                f"photographs lie in {low:.2f}-{high:.2f})",
                exposure,
                low if exposure < low else high,
                "below" if exposure < low else "above",
            )
        )
    else:
        checks.append(
            GateCheck("exposure", "photo", "pass", "exposure in range", exposure, low, "below")
        )
    if photo == "skin":  # a fundus photograph is black around its field: not checked there
        black_high = max(bands.get("clipped_low", (0.0, 0.0))[1], _MIN_BLACK_ALERT)
        checks.append(
            _check(
                "black_area",
                "photo",
                stats["clipped_low"],
                black_high,
                "above",
                f"{stats['clipped_low']:.0%} of the photograph is black (a masked or cropped "
                f"field); the task's skin photographs have at most {black_high:.0%}",
                "no black area beyond the task's range",
            )
        )
    for share in ("red_share", "blue_share"):  # colour balance, against the fitted band only
        if share not in bands or share not in stats:
            continue
        low, high = bands[share]
        value = stats[share]
        outside = value < low or value > high
        colour = share.split("_")[0]
        checks.append(
            GateCheck(
                f"colour_balance_{colour}",
                "photo",
                "withhold" if outside else "pass",
                f"the colours are not those of a {photo} photograph ({colour} share "
                f"{value:.2f}; the task's photographs lie in {low:.2f}-{high:.2f})"
                if outside
                else f"{colour} share within the task's range",
                value,
                low if value < low else high,
                "below" if value < low else "above",
            )
        )
    if photo == "fundus":
        coverage_low = bands.get("lit_fraction", (0.3, 1.0))[0]
        checks.append(
            _check(
                "field_of_view",
                "photo",
                stats["lit_fraction"],
                max(coverage_low, 0.05),
                "below",
                f"the fundus field of view covers {stats['lit_fraction']:.0%} of the image; "
                f"at least {coverage_low:.0%} expected",
                "field of view covered",
            )
        )
    return checks
