"""Display mappings, and fused preprocessing: windows mapped as they are cut out equal the
same windows of the whole mapped volume, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsight.image import Image
from medsight.inference.preprocess import MappedVolume, display_values, voxelwise_display
from medsight.inference.sliding_window import sliding_window
from medsight.tasks.spec import Display

RAW = np.random.default_rng(3).integers(-1024, 3000, size=(1, 45, 38, 29)).astype(np.int16)


def ct(photometric: str = "MONOCHROME2", raw: np.ndarray = RAW) -> Image:
    return Image(
        raw, np.diag([0.8, 0.8, 2.0, 1.0]), 3, modality="CT", photometric_interpretation=photometric
    )


def reference(raw: np.ndarray, display: Display) -> np.ndarray:
    """The mappings written out independently, in float64."""
    x = raw.astype(np.float64)
    if display.window == "range":
        low, high = display.value_range
        y = (x - low) / (high - low)
        return np.clip(y, 0, 1) if display.clip else y
    if display.window == "fixed":
        center, width = display.center_width
        return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0, 1)
    if display.window == "minmax":
        return (x - x.min()) / (x.max() - x.min())
    if display.window == "percentile":
        low, high = np.percentile(x, display.percentiles)
        return np.clip((x - low) / (high - low), 0, 1)
    return x


DISPLAYS = [
    Display(window="range", value_range=(-1000, 1000)),
    Display(window="range", value_range=(-1000, 1000), clip=False),
    Display(window="fixed", center_width=(40, 400)),
    Display(window="minmax"),
    Display(window="percentile", percentiles=(1, 99)),
    Display(window="none"),
]


@pytest.mark.parametrize("display", DISPLAYS, ids=lambda d: f"{d.window}-clip{d.clip}")
def test_display_mappings_match_an_independent_reference(display):
    values = display_values(ct(), display)
    assert values.dtype == np.float32 and values.shape == RAW.shape
    np.testing.assert_allclose(values, reference(RAW, display), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("display", DISPLAYS, ids=lambda d: f"{d.window}-clip{d.clip}")
def test_a_mapped_window_is_that_window_of_the_mapped_volume(display):
    image = ct()
    whole = display_values(image, display)
    mapping = voxelwise_display(image, display)
    assert mapping is not None
    volume = MappedVolume(image.array, mapping)
    window = (slice(None), slice(3, 30), slice(10, 38), slice(0, 17))
    assert volume.shape == whole.shape
    assert np.array_equal(volume[window], whole[window])


def test_monochrome1_inversion_of_unwindowed_values_is_not_voxelwise():
    display = Display(window="none")
    assert voxelwise_display(ct("MONOCHROME1"), display) is None
    values = display_values(ct("MONOCHROME1"), display)  # inverted around the value range
    np.testing.assert_array_equal(values, RAW.max() + RAW.min() - RAW.astype(np.float32))
    inverted = voxelwise_display(ct("MONOCHROME1"), Display(window="minmax"))
    assert inverted is not None  # 1 - value is voxel by voxel
    np.testing.assert_allclose(inverted(RAW), 1 - reference(RAW, Display()), atol=1e-6)


@pytest.mark.parametrize("shape", [(45, 38, 29), (20, 12, 29)], ids=["large", "padded"])
def test_sliding_window_on_a_mapped_volume_is_bit_identical(shape):
    raw = RAW[:, : shape[0], : shape[1], : shape[2]]  # the small one is padded to the window
    image = ct(raw=raw)
    display = Display(window="range", value_range=(-1000, 1000))
    torch.manual_seed(0)
    weights = torch.randn(2, 1, 3, 3, 3)

    def network(batch: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv3d(batch, weights, padding=1)

    mapping = voxelwise_display(image, display)
    assert mapping is not None
    eager = sliding_window(display_values(image, display), [24, 24, 24], network, overlap=0.25)
    fused = sliding_window(MappedVolume(image.array, mapping), [24, 24, 24], network, overlap=0.25)
    assert np.array_equal(eager, fused)


@pytest.mark.parametrize(
    ("spacing", "known", "policy", "grid"),
    [
        ([0.8, 0.8, 1.0], True, "review", (45, 38, 58)),  # every axis resampled
        ([1.6, 1.6], True, "review", (22, 19, 29)),  # in plane only: the slices kept
        ([1.6, 1.6], False, "stored_grid", (45, 38, 29)),  # unknown spacing: the stored grid
        ([1.6, 1.6], False, "review", (22, 19, 29)),  # (the gate asks for review instead)
    ],
)
def test_network_grid_in_plane_spacing_and_unknown_spacing(spacing, known, policy, grid):
    from medsight.inference.preprocess import to_network_grid
    from medsight.tasks.spec import Preprocessing

    image = ct().replace(spacing_known=known)
    prep = Preprocessing(spacing=spacing, unknown_spacing=policy, patch_size=[16, 16, 1])
    assert to_network_grid(image, prep)[1] == grid


def test_local_contrast_flattens_illumination_and_keeps_the_unlit_rim_black():
    from medsight.inference.preprocess import local_contrast

    size = 96
    yy, xx = np.mgrid[:size, :size]
    field = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.45 * size) ** 2
    illumination = 0.3 + 0.5 * xx / size  # bright on one side, dim on the other
    values = np.stack([illumination * field] * 3).astype(np.float32)
    values[:, 40:43, 30:33] *= 0.6  # a small dark lesion
    out = local_contrast(values, 1 / 30)
    assert np.all(out[:, ~field] == 0)
    inner = field.copy()
    inner[35:48, 25:38] = False
    inner &= (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.35 * size) ** 2
    # the gradient is gone: background near 0.5 on both sides
    assert abs(out[0][inner & (xx < 30)].mean() - out[0][inner & (xx > 66)].mean()) < 0.05
    assert out[0, 41, 31] < out[0][inner].mean() - 0.2  # the lesion stands out


def test_local_contrast_needs_a_whole_image_network():
    from pydantic import ValidationError

    from medsight.tasks.spec import Preprocessing

    with pytest.raises(ValidationError, match="local_contrast need a whole-image network"):
        Preprocessing(local_contrast=0.03)
    assert Preprocessing(resize=[64, 64], local_contrast=0.03).local_contrast == 0.03
