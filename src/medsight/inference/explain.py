"""Grad-CAM heatmaps for classifiers (MONAI's implementation), in the input's geometry."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["DEFAULT_LAYERS", "gradcam"]

#: architectures whose Grad-CAM layer is the dense block before the last: its grid is twice
#: as fine as the last block's (12x12 at 192 pixels for four blocks, where the classifier's
#: own layer gives 6x6, and 4x4 at 128 pixels: too coarse to localise)
DEFAULT_LAYERS = {"DenseNet": "denseblock", "DenseNet121": "denseblock"}


def _default_layer(module: Any, architecture: str) -> str | None:
    if architecture == "UNetEncoderClassifier":
        return str(module.bottom_name)  # the encoder's bottom: 1/8 of the input grid
    kind = DEFAULT_LAYERS.get(architecture)
    if kind is None:
        return None
    blocks = [name for name, _ in module.named_modules() if name.startswith(f"features.{kind}")]
    blocks = [name for name in blocks if "." not in name.removeprefix("features.")]
    if not blocks:
        return None
    return blocks[-2] if len(blocks) >= 2 else blocks[-1]


def _unit_range(maps: Any) -> Any:
    """Each map scaled so its minimum is 0 and its maximum 1 (a flat map stays 0). MONAI's
    default post-processing maps (min, max) to (1, 0), flipping the map: the strongest
    evidence came out darkest and the maximum, the finding location, fell on the flat
    background, usually at row or column 0."""
    import torch

    flat = maps.flatten(start_dim=1)
    low = flat.min(dim=1).values.view(-1, *([1] * (maps.ndim - 1)))
    span = (flat.max(dim=1).values - flat.min(dim=1).values).view_as(low)
    return torch.where(span > 0, (maps - low) / span.clamp(min=1e-12), torch.zeros_like(maps))


def gradcam(
    module: Any, architecture: str, batch: Any, class_index: int, *, layer: str | None = None
) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """A [0, 1] map on the network input's grid (MONAI upsamples it) and the explained
    layer's own grid, its true resolution; None for architectures without a known layer."""
    from monai.visualize import GradCAM

    layer = layer or _default_layer(module, architecture)
    if layer is None:
        return None
    cam = GradCAM(nn_module=module, target_layers=layer, postprocessing=_unit_range)
    heat = cam(x=batch.clone().requires_grad_(True), class_idx=class_index)
    grid = tuple(int(n) for n in cam.nn_module.activations[layer].shape[2:])
    return np.asarray(heat.detach().cpu().numpy()[0, 0], dtype=np.float32), grid
