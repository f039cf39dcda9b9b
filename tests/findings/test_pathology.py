"""Nucleus count, density and sizes in real units, or in pixels with the reason."""

from __future__ import annotations

import numpy as np
import pytest

from medsight.findings.measurements import spoken_measurement
from medsight.findings.pathology import nucleus_measurements
from medsight.image import Image
from medsight.imaging.tissue import tissue_mask


def _tile(spacing_mm: float | None) -> tuple[Image, np.ndarray]:
    """A 100 x 100 RGB tile: left half pink tissue, right half white glass; three nuclei."""
    rgb = np.full((3, 100, 100), 245, np.uint8)
    rgb[:, :50] = np.array([220, 150, 200], np.uint8)[:, None, None]
    instances = np.zeros((100, 100), np.uint32)
    instances[10:20, 10:20] = 1  # 100 px
    instances[30:36, 30:40] = 2  # 60 px
    instances[40:45, 5:9] = 3  # 20 px
    affine = np.diag([spacing_mm or 1.0, spacing_mm or 1.0, 1.0, 1.0])
    image = Image(
        array=rgb,
        affine=affine,
        spatial_dims=2,
        photometric_interpretation="RGB",
        spacing_known=spacing_mm is not None,
    )
    return image, instances


def test_tissue_is_the_stained_half_not_the_glass():
    image, _ = _tile(None)
    mask = tissue_mask(image.array)
    assert mask[:50].mean() > 0.99 and mask[50:].mean() < 0.01


def test_measurements_in_real_units_at_half_a_micrometre_per_pixel():
    image, instances = _tile(0.0005)
    found = {m.name: m for m in nucleus_measurements(instances, image)}
    assert found["nucleus count"].value == 3
    assert found["tissue area"].unit == "mm2"
    assert found["tissue area"].value == pytest.approx(50 * 100 * 0.25e-6, rel=0.01)
    assert found["nucleus density"].value == pytest.approx(3 / found["tissue area"].value)
    assert found["mean nucleus area"].unit == "um2"
    assert found["mean nucleus area"].value == pytest.approx(60 * 0.25)
    assert found["SD of nucleus area"].value == pytest.approx(np.std([25, 15, 5], ddof=1))


def test_without_spacing_the_units_say_pixels():
    image, instances = _tile(None)
    found = {m.name: m for m in nucleus_measurements(instances, image)}
    assert found["mean nucleus area"].unit == "{px2}"
    density = found["nucleus density"]
    assert density.value == pytest.approx(3 / 5000 * 1e6, rel=0.01)
    assert "per million pixels" in spoken_measurement(density.value, density.unit)
    assert "no pixel spacing" in spoken_measurement(density.value, density.unit)


def test_a_tile_without_nuclei_counts_zero():
    image, instances = _tile(0.0005)
    found = {m.name: m for m in nucleus_measurements(np.zeros_like(instances), image)}
    assert found["nucleus count"].value == 0 and "mean nucleus area" not in found
